"""The one way to build the process-wide :class:`~npu.runtime.UnifiedNPURuntime` from
:class:`~app.settings.Settings`, for the service, the worker, the CLI and the benchmarks."""

from __future__ import annotations

from app.settings import Settings
from npu.runtime import UnifiedNPURuntime


def create_runtime(settings: Settings, n_mels: int = 80) -> UnifiedNPURuntime:
    """The process-wide runtime for ``settings.mel_backend`` (``cpu`` never touches the NPU)."""
    return UnifiedNPURuntime.from_config(settings.front_end_config(n_mels))
