"""Service settings, read from ``AMANUENSIS_*`` environment variables.

Every field is documented in ``config/amanuensis.env.example``; a test keeps the two in step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.transcription.models import BUNDLED_MODEL_ID, ModelChoice, resolve_model
from npu.config import (
    DEFAULT_DEVICE_DIR,
    DEFAULT_NPU_RETRY_SECONDS,
    DEFAULT_PROBE_EVERY_CALLS,
    DEFAULT_PROBE_INTERVAL_SECONDS,
    FrontEndConfig,
    MelMode,
)
from npu.kernel_files import DEFAULT_KERNEL_DIR

VadMethod = Literal["silero_onnx", "pyannote", "silero"]
"""The voice-activity detectors the engine can cut audio with (see :attr:`Settings.vad_method`)."""
EncoderBackend = Literal["ctranslate2", "runtime"]
"""The Whisper encoders the engine can run (see :attr:`Settings.encoder_backend`)."""


class Settings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="AMANUENSIS_",
        env_nested_delimiter="__",
        use_attribute_docstrings=True,
        extra="ignore",
    )

    model: str = BUNDLED_MODEL_ID
    """Whisper model: ``tiny.en`` (the default) is bundled with the service, English only, no
    download; another faster-whisper name (``base``, ``small``, ``large-v3-turbo``, ...) is
    downloaded on first use; or a local CTranslate2 model directory."""

    model_cache_dir: Path | None = None
    """Where named models are downloaded and looked up; the Hugging Face cache when unset."""

    compute_type: Literal["int8", "int8_float32", "int16", "float32", "default"] = "int8"
    """CTranslate2 compute type for the Whisper model (CPU)."""

    batch_size: int = Field(default=8, ge=1, le=64)
    """How many 30 s chunks the model decodes at once; a request may ask for fewer."""

    cpu_threads: int | None = Field(default=None, ge=1)
    """CPU threads CTranslate2 uses for each running transcription (intra-op threads per model
    worker; ``max_concurrent`` workers run at once). Unset: the machine's cores, so one
    transcription alone keeps every core busy (on 2 cores, 60 s of speech took 15.5 s with 2
    threads against 27.7 s with 1); transcriptions running at once share the cores."""

    language: str | None = None
    """Default spoken language (ISO 639-1, e.g. ``en``); detected per request when unset
    (English-only models such as ``tiny.en`` never detect: English)."""

    vad_method: VadMethod = "silero_onnx"
    """Voice-activity detector that cuts the audio into chunks: ``silero_onnx`` (Silero VAD as
    the ONNX file inside faster-whisper's package; the fastest, no download), ``pyannote``
    (ships with WhisperX; a torch model, seconds per minute of audio) or ``silero`` (WhisperX's
    torch-hub Silero: downloads on first use)."""

    mel_backend: MelMode = MelMode.AUTO
    """Log-mel front-end: ``auto`` tries the NPU and falls back to the CPU, ``npu`` refuses to
    start without it, ``cpu`` never touches the NPU."""

    encoder_backend: EncoderBackend = "ctranslate2"
    """Whisper encoder: ``ctranslate2`` (its own, the fastest on a CPU) or ``runtime`` (NumPy with
    the model's weights, GELU and attention through the runtime - on the NPU when it has the
    kernels; matrix products stay on the CPU). CTranslate2 decodes either way."""

    kernel_dir: Path = DEFAULT_KERNEL_DIR
    """Directory holding the built NPU kernel artifacts (xclbin + instruction files); default
    ``kernels/build`` beside the kernel sources, in a checkout or an installed package
    (npu/kernel_files.py). Artifacts are never packaged: an installed service names them here."""

    npu_device_id: int = Field(default=0, ge=0)
    """Which ``<npu_device_dir>/accel<N>`` to use."""

    npu_device_dir: Path = DEFAULT_DEVICE_DIR
    """Where the NPU driver's device nodes are (``/dev/accel``; a test points it at a fake)."""

    align_model: str | None = None
    """wav2vec2 alignment model for word timestamps, run by WhisperX's aligner: a torchaudio
    pipeline name (``WAV2VEC2_ASR_BASE_960H``), a Hugging Face name or a local directory. Unset:
    the Whisper model's own cross-attention alignment, which needs no other model."""

    max_upload_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    """Largest request body accepted, in bytes; larger uploads get 413 before being read."""

    max_audio_seconds: float = Field(default=3 * 3600.0, gt=0)
    """Longest audio accepted, in seconds of decoded sound. Decoding stops at this length and the
    request gets 413 (``audio_too_long``): compressed size says little (hours of silent FLAC fit
    in kilobytes), and decoded audio takes 64 KB per second (3 h: about 0.7 GB)."""

    warmup: bool = True
    """Run one short transcription at start-up so the first request does not pay for it."""

    max_concurrent: int = Field(default=2, ge=1)
    """Transcriptions that run at once, really in parallel: each on its own slot thread with its
    own CTranslate2 worker (the model is loaded with that many inter-op workers, sharing its
    weights)."""

    max_queue: int = Field(default=16, ge=0)
    """Transcriptions that may wait for a free slot; beyond that, 429 with ``Retry-After``."""

    request_timeout_base_seconds: float = Field(default=120.0, gt=0)
    """Deadline of every transcription request (queueing included) before the audio allowance;
    past its deadline a request gets 504."""

    request_timeout_per_audio_second: float = Field(default=1.0, ge=0)
    """Seconds added to the deadline for each second of audio in the upload."""

    realtime_max_sessions: int = Field(default=8, ge=0)
    """Realtime WebSocket sessions open at once; one more is told so in an ``error`` event and
    closed (code 1013, try again later). Their turns share the ``max_concurrent`` model slots
    and the queue with HTTP requests."""

    realtime_idle_timeout_seconds: float = Field(default=60.0, gt=0)
    """A realtime session that sends nothing for this long is closed (code 1000)."""

    realtime_max_turn_seconds: float = Field(default=30.0, ge=1, le=300)
    """Longest turn of a realtime session: speech that goes on for this long is committed and
    transcribed as a turn of its own, and the speech after it starts the next turn."""

    npu_retry_seconds: float | None = Field(default=DEFAULT_NPU_RETRY_SECONDS, ge=0)
    """After an NPU run fails, how long the CPU serves before the NPU is tried again; empty
    means never."""

    npu_probe_every_calls: int | None = Field(default=DEFAULT_PROBE_EVERY_CALLS, ge=1)
    """While serving from the NPU, repeat its known-answer probe after this many mel calls (one
    call is one 30 s chunk); a wrong answer counts ``bad_output`` and the CPU takes over. Empty
    means never."""

    npu_probe_interval_seconds: float | None = Field(default=DEFAULT_PROBE_INTERVAL_SECONDS, ge=0)
    """...or before the first call once this many seconds have passed since the last probe.
    Empty means never."""

    api_key: SecretStr | None = None
    """When set, transcription and model routes require ``Authorization: Bearer <key>``."""

    api_key_protects_monitoring: bool = False
    """Also require the API key on ``/health``, ``/ready``, ``/status`` and ``/metrics``."""

    cors_origins: list[str] = []
    """Browser origins allowed to call the API (JSON list, e.g. ``["https://app.example"]``);
    none by default."""

    host: str = "0.0.0.0"
    """Address ``amanuensis serve`` listens on."""

    port: int = Field(default=8000, ge=1, le=65535)
    """Port ``amanuensis serve`` listens on."""

    data_dir: Path = Path("data")
    """Where the embedded job deployment keeps everything: the job records (``jobs.sqlite3``)
    and the job audio and results (``files/``), unless the two settings below point elsewhere."""

    database_url: str | None = None
    """SQLAlchemy URL of the job records (e.g. ``postgresql+psycopg://user:pw@host/db`` for
    several machines); a SQLite file under ``data_dir`` when unset."""

    storage_url: str | None = None
    """Where job audio and results go: ``s3://bucket/prefix`` for an S3-compatible store (with
    ``storage_endpoint_url`` and the usual ``AWS_*`` credentials), a directory under ``data_dir`` when
    unset."""

    storage_endpoint_url: str | None = None
    """Endpoint of the S3-compatible store (MinIO, Ceph, moto...); AWS's when unset."""

    broker_url: str | None = None
    """Celery broker (``redis://host:6379/0``): jobs run on ``amanuensis worker`` processes on
    any machine. Unset: the service runs jobs itself, one at a time per ``job_workers``."""

    job_workers: int = Field(default=1, ge=1)
    """Jobs the service runs at once when it executes them itself (no broker)."""

    job_max_queued: int = Field(default=1000, ge=1)
    """Jobs that may wait at once; a submission beyond that gets 429."""

    job_max_audio_seconds: float = Field(default=6 * 3600, gt=0)
    """Longest audio a job accepts, in seconds; longer uploads get 413."""

    job_retention_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    """Finished jobs (records, audio, results) are deleted this long after they end."""

    job_visibility_timeout_seconds: float = Field(default=3600, gt=0)
    """A running job whose worker has not reported for this long is presumed dead and runs
    again (the broker re-delivers its unacknowledged task after the same time)."""

    job_redispatch_seconds: float = Field(default=600, gt=0)
    """With a broker: a job still waiting to run (queued, or running on a worker presumed dead)
    this long after it was last sent to the broker is sent again, in case its message was lost
    (a broker that dropped it, a service stopped between recording and sending). The wait
    before each later resend is at least the job's age at the previous one, so a job that is
    merely waiting in a long queue gains few duplicates; a duplicate never runs a job twice."""

    worker_max_jobs: int = Field(default=50, ge=1)
    """``amanuensis worker`` replaces its child process after this many jobs, bounding memory."""

    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Port on which ``amanuensis worker`` serves its job metrics (``/metrics``); none when
    unset."""

    webhook_secret: SecretStr | None = None
    """When set, webhook bodies are signed: ``X-Amanuensis-Signature: sha256=<hex HMAC-SHA256 of
    the body>``."""

    webhook_allowed_hosts: list[str] = []
    """Host names or addresses a job's ``callback_url`` may point at (JSON list, e.g.
    ``["hooks.example.com"]``); callbacks are refused when empty."""

    webhook_max_attempts: int = Field(default=5, ge=1)
    """Deliveries tried per webhook before it is recorded as failed."""

    webhook_backoff_seconds: float = Field(default=2.0, ge=0)
    """Wait before the second delivery attempt, doubled before each later one."""

    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    """How long one webhook delivery may take before it counts as failed."""
    @property
    def model_choice(self) -> ModelChoice:
        """The configured model's id and where it loads from."""
        return resolve_model(self.model)

    def front_end_config(self, n_mels: int = 80) -> FrontEndConfig:
        """These settings' answer to which mel back-ends, where, and what happens on failure,
        for a model with ``n_mels`` bands."""
        return FrontEndConfig(
            mode=self.mel_backend,
            n_mels=n_mels,
            kernel_dir=self.kernel_dir,
            device_dir=self.npu_device_dir,
            device_id=self.npu_device_id,
            npu_retry_seconds=self.npu_retry_seconds,
            probe_every_calls=self.npu_probe_every_calls,
            probe_interval_seconds=self.npu_probe_interval_seconds,
        )

    @model_validator(mode="after")
    def _use_every_core(self) -> Settings:
        if self.cpu_threads is None:
            self.cpu_threads = len(os.sched_getaffinity(0))
        return self
