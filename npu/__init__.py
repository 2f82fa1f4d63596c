"""The compute runtime: mel back-ends (NPU batch, NPU frame, CPU), GELU and attention, fallbacks."""

from npu.runtime import UnifiedNPURuntime

__all__ = ["UnifiedNPURuntime"]
