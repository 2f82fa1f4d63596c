"""Composition: settings -> runtime + engine + app; the app factory
(``uvicorn --factory app.service:create_app``) and its lifespan.

Start-up creates the one :class:`~npu.runtime.UnifiedNPURuntime` and loads the WhisperX model
once (then warms it up) on a background thread, so ``/health`` answers at once and ``/ready``
says 503 until the model is in. A model that cannot load leaves the process up: ``/ready``
keeps answering 503 with the reason and how to fix it, and the log says so once. Shutdown
closes the runtime.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI

from app.api import jobs, monitoring, realtime, transcriptions
from app.api.jobs import JOB_PATH_PREFIX
from app.api.limits import UploadLimit
from app.api.page import install_page
from app.api.request_metrics import RequestMetrics
from app.api.security import ApiKeyGate, api_key_scheme, install_cors
from app.errors import install_error_handlers
from app.jobs.service import JobService
from app.runtime import create_runtime
from app.settings import Settings
from app.state import ServiceState
from app.transcription.result import model_n_mels
from npu.runtime import UnifiedNPURuntime

if TYPE_CHECKING:  # WhisperX takes seconds to import: the engine module loads with the model
    from app.transcription.engine import Engine

logger = logging.getLogger("amanuensis")


def load(state: ServiceState) -> None:
    """Create the runtime, load and warm up the model; record why when it fails."""
    settings = state.settings
    started = time.perf_counter()
    try:
        n_mels = model_n_mels(settings)
    except Exception as error:  # noqa: BLE001 - reported through /ready and the log
        _fail_model(state, error)
        return
    if state.runtime is None:
        try:
            state.runtime = create_runtime(settings, n_mels)
        except Exception as error:  # noqa: BLE001 - reported through /ready and the log
            _fail(state, "runtime_unavailable",
                  f"the compute runtime could not start with AMANUENSIS_MEL_BACKEND="
                  f"{settings.mel_backend}: {error}. Fix: set AMANUENSIS_MEL_BACKEND=auto (falls "
                  f"back to the CPU) or cpu, or install the NPU driver and kernels.")
            return
        state.owned.append(state.runtime)
    from app.transcription.engine import Engine

    try:
        engine = Engine(settings, state.runtime)
    except Exception as error:  # noqa: BLE001 - reported through /ready and the log
        _fail_model(state, error)
        return
    state.owned.append(engine)
    try:
        if settings.warmup:
            engine.warm_up()
    except Exception as error:  # noqa: BLE001 - reported through /ready and the log
        _fail(state, "model_unavailable",
              f"the model {settings.model_choice.id!r} loaded but failed its warm-up pass: "
              f"{type(error).__name__}: {error}. Fix: check that AMANUENSIS_MODEL is a Whisper "
              f"model and AMANUENSIS_COMPUTE_TYPE suits this CPU.")
        return
    state.metrics.model_load_seconds.set(time.perf_counter() - started)
    state.engine = engine
    state.problem = None
    logger.info("model %s ready in %.1f s (mel back-end %s: %s)", settings.model_choice.id,
                time.perf_counter() - started, state.runtime.mel_backend_name,
                state.runtime.mel_backend_reason)


def _fail_model(state: ServiceState, error: Exception) -> None:
    _fail(state, "model_unavailable",
          f"the model {state.settings.model_choice.id!r} could not be loaded: {type(error).__name__}: "
          f"{error}. Fix: set AMANUENSIS_MODEL to a local CTranslate2 model directory "
          f"(`amanuensis tiny-model DIR` writes a random-weights test model), or allow this host "
          f"to download it from huggingface.co.")


def _fail(state: ServiceState, code: str, message: str) -> None:
    state.problem, state.problem_code = message, code
    logger.error("not ready: %s", message)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load in the background unless the engine was handed in; at shutdown wait for running
    work, then close what the service built (engine before runtime)."""
    state: ServiceState = app.state.service
    loader = None
    if state.engine is None:
        loader = threading.Thread(target=load, args=(state,), name="amanuensis-model-load",
                                  daemon=True)
        loader.start()
    state.jobs = JobService(state.settings, lambda: state.engine, state.metrics.registry,
                            slots=state.admission.thread_slots())
    state.jobs.start()
    try:
        yield
    finally:
        state.jobs.close()
        if loader is not None:
            loader.join()
        state.admission.close()
        for component in reversed(state.owned):
            component.close()


def create_app(settings: Settings | None = None, *, runtime: UnifiedNPURuntime | None = None,
               engine: Engine | None = None) -> FastAPI:
    """The service. With ``runtime`` and/or ``engine`` the app uses them instead of building
    its own from ``settings`` (a caller's objects stay the caller's to close): the one seam
    through which tests and embedding programs hand in their own."""
    if engine is not None and runtime is None:
        raise ValueError("an engine needs the runtime it computes its features on")
    settings = settings or Settings()
    app = FastAPI(
        title="Amanuensis",
        summary="Speech to text on WhisperX, OpenAI-compatible",
        lifespan=lifespan,
    )
    app.state.service = ServiceState(settings, runtime=runtime, engine=engine)
    if engine is not None:
        app.state.service.problem = None
    app.state.endpoints = frozenset(
        route.path for routes in (transcriptions.router, jobs.router, monitoring.router)
        for route in routes.routes
    )
    install_error_handlers(app)
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    if api_key:
        protected = [route.path for route in [*transcriptions.router.routes, *jobs.router.routes]]
        if settings.api_key_protects_monitoring:
            protected += [route.path for route in monitoring.router.routes]
        app.add_middleware(ApiKeyGate, api_key=api_key, protected=protected,
                           protected_prefixes=[JOB_PATH_PREFIX])
    install_cors(app, settings.cors_origins)
    declare_key = [Depends(api_key_scheme(api_key))]
    app.include_router(transcriptions.router, dependencies=declare_key)
    app.include_router(realtime.router)  # checks the key itself: browsers cannot send headers
    install_page(app)
    app.include_router(jobs.router, dependencies=declare_key)
    app.include_router(monitoring.router,
                       dependencies=declare_key if settings.api_key_protects_monitoring else [])
    app.add_middleware(UploadLimit, max_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestMetrics)
    return app
