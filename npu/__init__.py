"""The compute runtime: mel back-ends (NPU batch, NPU frame, CPU), GELU and attention, fallbacks."""
