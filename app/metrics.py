"""Prometheus metrics, one registry per app (names are a contract with the dashboard).

Request-side metrics are updated by the request middleware and the transcription route; the
runtime's own counts (fallbacks by reason, which back-end is active - for the mel front-end and
for each op, GELU and attention - and the ops' calls per back-end) are read from
``runtime.get_performance_metrics()`` at scrape time, so they are never out of step with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.settings import EncoderBackend
from npu.backend import CPU, NO_BACKEND, NPU, NPU_BATCH, NPU_FRAME, OPS, FallbackReason

MEL_BACKENDS = (NPU_BATCH, NPU_FRAME, CPU)
OP_BACKENDS = (NPU, CPU)
ENCODER_BACKENDS = get_args(EncoderBackend)
STAGES = ("decode", "mel", "asr", "align", "format")
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
REALTIME_BUCKETS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)


class ServiceMetrics:
    """Every ``amanuensis_*`` metric of one app."""

    def __init__(self, runtime_metrics: Callable[[], dict | None],
                 encoder_backend: EncoderBackend) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes, CPU, fds
        self.requests = Counter(
            "amanuensis_requests", "HTTP requests by endpoint and status",
            ["endpoint", "status"], registry=self.registry)
        self.request_duration = Histogram(
            "amanuensis_request_duration_seconds", "HTTP request duration",
            ["endpoint"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.audio_seconds = Counter(
            "amanuensis_audio_seconds", "seconds of audio transcribed", registry=self.registry)
        self.processing_seconds = Counter(
            "amanuensis_processing_seconds",
            "seconds spent transcribing, from the slot granted to the response formatted "
            "(decode to format; queue wait excluded)", registry=self.registry)
        self.realtime_factor = Histogram(
            "amanuensis_realtime_factor",
            "audio seconds per processing second, per request (queue wait excluded)",
            buckets=REALTIME_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram(
            "amanuensis_queue_wait_seconds",
            "time a transcription request waited for a model slot, per request",
            buckets=DURATION_BUCKETS, registry=self.registry)
        self.stage_duration = Histogram(
            "amanuensis_stage_duration_seconds", "time per request stage",
            ["stage", "mel_backend"], buckets=DURATION_BUCKETS, registry=self.registry)
        self.in_flight = Gauge(
            "amanuensis_requests_in_flight", "requests being handled", registry=self.registry)
        self.model_load_seconds = Gauge(
            "amanuensis_model_load_seconds", "time the model took to load (and warm up)",
            registry=self.registry)
        self.streaming_requests = Counter(
            "amanuensis_streaming_requests", "transcription requests answered with stream=true",
            registry=self.registry)
        self.realtime_sessions = Counter(
            "amanuensis_realtime_sessions", "realtime WebSocket sessions opened",
            registry=self.registry)
        self.realtime_sessions_active = Gauge(
            "amanuensis_realtime_sessions_active", "realtime WebSocket sessions open now",
            registry=self.registry)
        self.realtime_turn_latency = Histogram(
            "amanuensis_realtime_turn_latency_seconds",
            "realtime turns: from the end of the turn's audio to its completed transcript",
            buckets=DURATION_BUCKETS, registry=self.registry)
        self.encoder_backend = Gauge(
            "amanuensis_encoder_backend_info",
            "1 for the configured Whisper encoder (AMANUENSIS_ENCODER_BACKEND), 0 for the other",
            ["backend"], registry=self.registry)
        for backend in ENCODER_BACKENDS:
            self.encoder_backend.labels(backend=backend).set(float(backend == encoder_backend))
        self.registry.register(_RuntimeCollector(runtime_metrics))

    def observe_transcription(self, *, audio_seconds: float, processing_seconds: float,
                              queue_wait_seconds: float, stage_seconds: dict[str, float],
                              mel_backend: str) -> None:
        self.audio_seconds.inc(audio_seconds)
        self.processing_seconds.inc(processing_seconds)
        self.queue_wait.observe(queue_wait_seconds)
        if processing_seconds > 0:
            self.realtime_factor.observe(audio_seconds / processing_seconds)
        for stage, seconds in stage_seconds.items():
            self.stage_duration.labels(stage=stage, mel_backend=mel_backend).observe(seconds)


class _RuntimeCollector(Collector):
    """Fallback counts and the active back-end, read from the runtime when scraped."""

    def __init__(self, runtime_metrics: Callable[[], dict | None]) -> None:
        self._runtime_metrics = runtime_metrics

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        metrics = self._runtime_metrics() or {}
        fallbacks = metrics.get("fallbacks", {})
        counter = CounterMetricFamily("amanuensis_mel_fallbacks", "mel back-end fallbacks by reason",
                                      labels=["reason"])
        for reason in FallbackReason:
            counter.add_metric([reason.value], float(fallbacks.get(reason.value, 0)))
        yield counter
        active = metrics.get("mel_backend")
        info = GaugeMetricFamily("amanuensis_mel_backend_info",
                                 "1 for the active mel back-end, 0 for the others",
                                 labels=["backend"])
        for backend in MEL_BACKENDS:
            info.add_metric([backend], 1.0 if backend == active else 0.0)
        yield info
        yield from _mel_backend_families(metrics.get("backends", {}))
        yield from _op_families(metrics.get("ops", {}))


def _mel_backend_families(backends: dict[str, dict]) -> Iterable[Any]:
    """What each mel back-end has computed since start-up, as ``/status`` shows it: audio seconds,
    compute seconds and their ratio (x-realtime; 0 for a back-end that has not run)."""
    audio = CounterMetricFamily("amanuensis_mel_audio_seconds",
                                "seconds of audio whose log-mel features each back-end computed",
                                labels=["backend"])
    compute = CounterMetricFamily("amanuensis_mel_compute_seconds",
                                  "seconds each mel back-end spent computing features",
                                  labels=["backend"])
    realtime = GaugeMetricFamily("amanuensis_mel_realtime_factor",
                                 "audio seconds per compute second of each mel back-end, since "
                                 "start-up", labels=["backend"])
    for backend in MEL_BACKENDS:
        counts = backends.get(backend, {})
        audio.add_metric([backend], float(counts.get("audio_seconds", 0.0)))
        compute.add_metric([backend], float(counts.get("compute_seconds", 0.0)))
        realtime.add_metric([backend], float(counts.get("x_realtime", 0.0)))
    yield from (audio, compute, realtime)


def _op_families(ops: dict) -> Iterable[Any]:
    """GELU and attention: fallbacks by reason, the active back-end, calls per back-end."""
    fallbacks = CounterMetricFamily("amanuensis_op_fallbacks", "op back-end fallbacks by reason",
                                    labels=["op", "reason"])
    info = GaugeMetricFamily("amanuensis_op_backend_info",
                             f"1 for each op's active back-end ({NO_BACKEND}: not called yet), "
                             f"0 for the others", labels=["op", "backend"])
    calls = CounterMetricFamily("amanuensis_op_calls", "op calls by the back-end that served them",
                                labels=["op", "backend"])
    for op in OPS:
        metrics = ops.get(op, {})
        for reason in FallbackReason:
            fallbacks.add_metric([op, reason.value],
                                 float(metrics.get("fallbacks", {}).get(reason.value, 0)))
        active = metrics.get("backend", NO_BACKEND)
        for backend in (*OP_BACKENDS, NO_BACKEND):
            info.add_metric([op, backend], 1.0 if backend == active else 0.0)
        for backend in OP_BACKENDS:
            served = metrics.get("backends", {}).get(backend, {})
            calls.add_metric([op, backend], float(served.get("calls", 0)))
    yield from (fallbacks, info, calls)
