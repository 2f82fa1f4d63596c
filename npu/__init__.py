"""The compute runtime: mel back-ends (NPU batch, NPU frame, CPU), GELU and attention, fallbacks."""

from npu.mel.processor import NPUMelProcessorBatch
from npu.runtime import UnifiedNPURuntime

__all__ = ["NPUMelProcessorBatch", "UnifiedNPURuntime"]
