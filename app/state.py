"""What the routes share: the settings, the metrics, the admission controller, and the runtime and
engine once they are loaded (or why they are not)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.admission import AdmissionController, AdmissionLimits, AdmissionMetrics
from app.errors import NotReady
from app.jobs.service import JobService
from app.metrics import ServiceMetrics
from app.settings import Settings
from npu.runtime import UnifiedNPURuntime

if TYPE_CHECKING:  # WhisperX takes seconds to import: the engine module loads with the model
    from app.transcription.engine import Engine


@dataclass
class ServiceState:
    """What the routes share: settings, metrics, and the runtime and engine once loaded."""

    settings: Settings
    runtime: UnifiedNPURuntime | None = None
    engine: Engine | None = None
    problem: str | None = "the model is still loading"
    problem_code: str = "model_loading"
    started_at: float = field(default_factory=time.time)
    jobs: JobService | None = None
    """Job submission, records and execution; started with the service."""
    owned: list[Engine | UnifiedNPURuntime] = field(default_factory=list)
    """What the service built itself and closes at shutdown (not what a caller handed it)."""
    start_up: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Start-up phases that ran (``engine_import``, ``runtime``, ``model``, ``warm_up``,
    ``collect``): start and end, seconds from the start of loading; ``engine_import`` overlaps
    ``runtime``, ``warm_up`` overlaps ``collect``."""
    realtime_sessions: int = 0
    """Realtime WebSocket sessions open now (at most ``settings.realtime_max_sessions``)."""
    metrics: ServiceMetrics = field(init=False)
    admission: AdmissionController = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = ServiceMetrics(self.runtime_metrics, self.settings.encoder_backend)
        self.admission = AdmissionController(
            AdmissionLimits(
                max_concurrent=self.settings.max_concurrent,
                max_queue=self.settings.max_queue,
                timeout_base_seconds=self.settings.request_timeout_base_seconds,
                timeout_per_audio_second=self.settings.request_timeout_per_audio_second,
            ),
            AdmissionMetrics(self.metrics.registry),
        )

    def runtime_metrics(self) -> dict | None:
        return self.runtime.get_performance_metrics() if self.runtime is not None else None

    @property
    def model_id(self) -> str:
        """The loaded model as clients name it (``tiny.en``, ``base``, a directory's name)."""
        return self.settings.model_choice.id

    def ready_engine(self) -> Engine:
        """The engine, or 503 saying why there is none."""
        if self.engine is None:
            raise NotReady(self.problem or "the model is not loaded", code=self.problem_code)
        return self.engine
