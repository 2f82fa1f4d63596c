# Amanuensis service image: CPU inference by default; the NPU variant (docker-compose.npu.yml)
# adds the host's XRT, the accelerator device and the built kernels at run time.

# ---- build: a virtual environment in /opt/venv, the project in /opt/amanuensis ---------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

# WhisperX 3.8.6 pins torch~=2.8.0, torchaudio~=2.8.0, torchvision~=0.23.0. Installing the CPU
# builds of exactly those first satisfies the pins, so the project install below keeps them
# instead of pulling the CUDA builds (several GB the image does not need).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --index-url "$TORCH_INDEX_URL" \
        torch==2.8.0 torchaudio==2.8.0 torchvision==0.23.0

# The project is installed editable from /opt/amanuensis, kept at the same path in the runtime
# stage: the NPU host code reads the kernel's size header (kernels/mel/) relative to npu/.
WORKDIR /opt/amanuensis
COPY pyproject.toml README.md ./
COPY app ./app
COPY npu ./npu
COPY kernels ./kernels
RUN pip install -e . \
 && python -c "import torch; assert not torch.version.cuda, torch.__version__"

# ---- runtime: both of those, run by a non-root user --------------------------------------------
FROM python:3.11-slim AS runtime

# A fixed numeric id, so USER below and volume ownership do not depend on name lookups.
RUN groupadd --system --gid 10001 amanuensis \
 && useradd --system --create-home --uid 10001 --gid 10001 amanuensis \
 && mkdir -p /cache /data \
 && chown 10001:10001 /cache /data

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/amanuensis /opt/amanuensis

# /cache holds every downloaded model (faster-whisper and alignment models through the Hugging
# Face hub, torchaudio pipelines through torch.hub), so a volume there survives restarts.
# The working directory is the repository layout, so the default kernel directory
# (kernels/build) is /opt/amanuensis/kernels/build: the NPU variant mounts the kernels there.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    TORCH_HOME=/cache/torch

VOLUME ["/cache"]
WORKDIR /opt/amanuensis
USER 10001:10001
EXPOSE 8000

# Liveness only: /health answers while the model is still loading (readiness is /ready).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["uvicorn", "--factory", "app.service:create_app", "--host", "0.0.0.0", "--port", "8000"]
