"""Composition: settings -> runtime + engine + app; the app factory
(``uvicorn --factory app.service:create_app``) and its lifespan.

Start-up creates the one :class:`~npu.runtime.UnifiedNPURuntime` and loads the WhisperX model
once (then warms it up) on background threads (:func:`load`), so ``/health`` answers at once and
``/ready`` says 503 until the model is in. A model that cannot load leaves the process up:
``/ready`` keeps answering 503 with the reason and how to fix it, and the log says so once.
Shutdown closes the runtime.
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

import numpy as np
from fastapi import Depends, FastAPI

from app import gc_pause
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
from npu.audio_spec import N_SAMPLES, SAMPLE_RATE
from npu.runtime import UnifiedNPURuntime

if TYPE_CHECKING:  # WhisperX takes seconds to import: the engine module loads with the model
    from app.transcription.engine import Engine

logger = logging.getLogger("amanuensis")


def load(state: ServiceState) -> None:
    """Create the runtime, load and warm up the model; record why when it fails.

    Importing the engine module (WhisperX, transformers, pyannote, torch: most of the start-up,
    single-threaded) starts first, on its own thread; the runtime is created and its mel path
    warmed meanwhile (numba loads its compiled functions), so the model's own warm-up does not
    wait for that. Python's cyclic garbage collector is off until the model is warm
    (:mod:`app.gc_pause`), and its one full pass runs beside the warm-up. Each phase's start and
    end go to ``state.start_up`` and the log."""
    started = time.perf_counter()
    engine_import = _EngineImport(state.start_up, started)
    gc_pause.pause()
    try:
        engine_import.start()
        try:
            engine = _build(state, engine_import, started)
        finally:
            engine_import.join()
    finally:
        gc_pause.resume()
    if engine is None:
        return
    state.metrics.model_load_seconds.set(time.perf_counter() - started)
    state.engine = engine
    state.problem = None
    logger.info("model %s ready in %.1f s (mel back-end %s: %s; phases, seconds from the start "
                "of loading: %s)", state.settings.model_choice.id, time.perf_counter() - started,
                state.runtime.mel_backend_name, state.runtime.mel_backend_reason,
                ", ".join(f"{name} {begin:.1f}-{end:.1f}"
                          for name, (begin, end) in state.start_up.items()))


def _warm_up_and_collect(engine: Engine, warm_up: bool, phases: dict[str, tuple[float, float]],
                         origin: float) -> None:
    """The model's warm-up pass (CTranslate2 decoding, which releases the GIL) on a thread of its
    own while this one makes the full collection (Python, ~0.4 s): it frees the import's cyclic
    garbage and moves the survivors to the oldest generation, so no pass over all of them falls
    on a request. Raises the warm-up's error."""
    with ThreadPoolExecutor(1, thread_name_prefix="amanuensis-model-load-warm-up") as pool:
        warming = pool.submit(_timed, engine.warm_up, phases, "warm_up", origin) if warm_up \
            else None
        with _phase(phases, "collect", origin):
            gc.collect()
        if warming is not None:
            warming.result()


def _timed(call: Callable[[], None], phases: dict[str, tuple[float, float]], name: str,
           origin: float) -> None:
    with _phase(phases, name, origin):
        call()


def _build(state: ServiceState, engine_import: _EngineImport, started: float) -> Engine | None:
    """The warm engine, or ``None`` once ``state`` says why there is none."""
    settings = state.settings
    try:
        n_mels = model_n_mels(settings)
    except Exception as error:  # noqa: BLE001 - reported through /ready and the log
        _fail_model(state, error)
        return None
    if state.runtime is None:
        try:
            with _phase(state.start_up, "runtime", started):
                state.runtime = create_runtime(settings, n_mels)
                if settings.warmup:
                    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
                    state.runtime.log_mel(silence, padding=N_SAMPLES - silence.size)
        except Exception as error:  # noqa: BLE001 - reported through /ready and the log
            _fail(state, "runtime_unavailable",
                  f"the compute runtime could not start with AMANUENSIS_MEL_BACKEND="
                  f"{settings.mel_backend}: {error}. Fix: set AMANUENSIS_MEL_BACKEND=auto (falls "
                  f"back to the CPU) or cpu, or install the NPU driver and kernels.")
            return None
        state.owned.append(state.runtime)
    engine_class = engine_import.engine_class()
    try:
        with _phase(state.start_up, "model", started):
            engine = engine_class(settings, state.runtime)
    except Exception as error:  # noqa: BLE001 - reported through /ready and the log
        _fail_model(state, error)
        return None
    state.owned.append(engine)
    try:
        _warm_up_and_collect(engine, settings.warmup, state.start_up, started)
    except Exception as error:  # noqa: BLE001 - reported through /ready and the log
        _fail(state, "model_unavailable",
              f"the model {settings.model_choice.id!r} loaded but failed its warm-up pass: "
              f"{type(error).__name__}: {error}. Fix: check that AMANUENSIS_MODEL is a Whisper "
              f"model and AMANUENSIS_COMPUTE_TYPE suits this CPU.")
        return None
    return engine


@contextmanager
def _phase(phases: dict[str, tuple[float, float]], name: str, origin: float) -> Iterator[None]:
    begin = time.perf_counter() - origin
    yield
    phases[name] = (begin, time.perf_counter() - origin)


class _EngineImport(threading.Thread):
    """Imports :mod:`app.transcription.engine` (seconds of work) beside the runtime's creation."""

    def __init__(self, phases: dict[str, tuple[float, float]], origin: float) -> None:
        super().__init__(name="amanuensis-model-load-import", daemon=True)
        self._phases, self._origin = phases, origin
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            with _phase(self._phases, "engine_import", self._origin):
                importlib.import_module("app.transcription.engine")
        except BaseException as error:  # noqa: BLE001 - raised again by engine_class()
            self._error = error

    def engine_class(self) -> type[Engine]:
        """The :class:`Engine` class once the import is done; its error if it failed."""
        self.join()
        if self._error is not None:
            raise self._error
        from app.transcription.engine import Engine

        return Engine


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
