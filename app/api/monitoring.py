"""Monitoring routes: health, readiness, status and Prometheus metrics. They never wait for an
admission slot; the app factory decides whether they need the API key."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.dependencies import State
from app.errors import documented_errors

router = APIRouter()


@router.get("/health", summary="Liveness: the process answers",
                responses=documented_errors(401))
def health() -> dict:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: 200 once the model and runtime are loaded",
                responses=documented_errors(401, 503))
def ready(state: State) -> dict:
    state.ready_engine()
    return {"status": "ready", "model": state.model_id,
            "mel_backend": state.runtime.mel_backend_name}


@router.get("/status", summary="Model, mel back-end, encoder and its ops' back-ends and why, "
                                "fallback counts, uptime",
                responses=documented_errors(401))
def status(state: State) -> dict:
    runtime = state.runtime_metrics() or {}
    return {
        "model": state.model_id,
        "model_source": state.settings.model_choice.source,
        "english_only": state.engine.english_only if state.engine is not None else None,
        "ready": state.engine is not None,
        "problem": state.problem,
        "compute_type": state.settings.compute_type,
        "batch_size": state.settings.batch_size,
        "cpu_threads": state.settings.cpu_threads,
        "concurrency": {
            "max_concurrent": state.settings.max_concurrent,
            "max_queue": state.settings.max_queue,
            "running": state.admission.running,
            "waiting": state.admission.waiting,
            "model_workers": state.engine.concurrency if state.engine is not None else None,
        },
        "vad_method": state.settings.vad_method,
        "language": state.settings.language,
        "mel_backend": runtime.get("mel_backend"),
        "mel_backend_reason": runtime.get("mel_backend_reason"),
        "mel_fallbacks": runtime.get("fallbacks", {}),
        "mel_backends": runtime.get("backends", {}),
        "encoder_backend": state.settings.encoder_backend,
        "ops": runtime.get("ops", {}),
        "uptime_seconds": time.time() - state.started_at,
        "start_up": {name: {"start_seconds": begin, "end_seconds": end}
                     for name, (begin, end) in state.start_up.items()},
    }


@router.get("/metrics", summary="Prometheus metrics", responses={
    200: {"description": "Prometheus text exposition", "content": {CONTENT_TYPE_LATEST: {}}},
    **documented_errors(401)})
def metrics(state: State) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
