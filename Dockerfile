# Amanuensis service image: CPU inference with the bundled default model; the NPU variant
# (docker-compose.npu.yml) adds the host's XRT, the accelerator device and the built kernels at
# run time.
#
# BASE_IMAGE: any Debian-based image with Python 3.11 and its venv module (Debian 12's own
# python3 and python3-venv will do, which is how the tests build it without a registry).
# Optional build secret `ca_bundle`: a CA bundle for pip, for builds behind a TLS-intercepting
# proxy (`docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt .`).
ARG BASE_IMAGE=python:3.11-slim

# ---- requirements: the project's runtime requirements, as listed in pyproject.toml -----------
FROM ${BASE_IMAGE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt

# ---- the image: the pinned dependency set in /opt/venv, then the project itself -----------
# One stage: copying an 8 GB environment from a build stage would cost more than it saves.
FROM ${BASE_IMAGE}

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH

RUN python3 -m venv /opt/venv

WORKDIR /src
# The dependency layer: those requirements under constraints.txt, the set `make install`
# installs. It is rebuilt only when the requirements or the pins change (not on any other edit
# of pyproject.toml: the copied list is compared by content).
COPY constraints.txt ./
COPY --from=requirements /src/requirements.txt ./
RUN --mount=type=secret,id=ca_bundle --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && pip install -c constraints.txt -r requirements.txt

# make and g++: `amanuensis kernels verify` compiles the kernels' scalar paths for this CPU (into
# $XDG_CACHE_HOME/amanuensis/kernels: the package's own folder is read-only) to prove their
# arithmetic inside the image. After the dependency layer, so adding them does not rebuild it.
# Unpinned: BASE_IMAGE may be any Debian release, whose own g++ and make are the ones to take.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++ make \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric id, so USER below and volume ownership do not depend on name lookups.
RUN groupadd --system --gid 10001 amanuensis \
 && useradd --system --create-home --uid 10001 --gid 10001 amanuensis \
 && mkdir -p /cache /data \
 && chown 10001:10001 /cache /data

# The project itself, without dependencies (all installed above): a regular install, so the
# kernel header and sources come from the package data, as from any installed wheel.
COPY pyproject.toml README.md ./
COPY app ./app
COPY npu ./npu
COPY kernels ./kernels
RUN --mount=type=secret,id=ca_bundle \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi \
 && pip install --no-deps --no-cache-dir . \
 && pip check \
 && rm -rf /src/*

# /cache holds every model downloaded on use (a named AMANUENSIS_MODEL, alignment models), so a
# volume there survives restarts; the default model is inside the image.
ENV PYTHONUNBUFFERED=1 \
    XDG_CACHE_HOME=/cache \
    HF_HOME=/cache/huggingface \
    TORCH_HOME=/cache/torch

VOLUME ["/cache"]
WORKDIR /home/amanuensis
USER 10001:10001
EXPOSE 8000

# Liveness only: /health answers while the model is still loading (readiness is /ready).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('AMANUENSIS_PORT', '8000'), timeout=4)"]

CMD ["amanuensis", "serve"]
