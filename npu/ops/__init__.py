"""Transformer operations the runtime dispatches (GELU, attention): CPU implementations, and the
NPU kernels' golden models and back-ends."""
