# syntax=docker/dockerfile:1
# CPU image of the dynaqa service with the shipped checkpoint baked in (package data of models/).

FROM python:3.11-slim-bookworm AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/dynaqa
ENV PATH=/opt/dynaqa/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY service ./service
COPY deploy/docker/install.sh /tmp/install.sh
RUN TORCH_INDEX_URL="$TORCH_INDEX_URL" sh /tmp/install.sh /src

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="dynaqa" \
      org.opencontainers.image.description="Extractive QA from one dynamic BERT within each request's latency budget"
# A C++ compiler (and ninja, which torch's extension builder drives): TorchInductor compiles the model's layer step at start-up (with
# DYNAQA_COMPILE=true), and the fused kernels (models/infer/native.py) are built below; without one
# the service still runs, eagerly and slower.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ ninja-build \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 dynaqa \
 && useradd --system --uid 10001 --gid dynaqa --no-create-home --home-dir /nonexistent dynaqa
COPY --from=build /opt/dynaqa /opt/dynaqa
ENV PATH=/opt/dynaqa/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    DYNAQA_HOST=0.0.0.0 \
    DYNAQA_PORT=8000 \
    DYNAQA_CACHE_DIR=/tmp/dynaqa \
    TORCHINDUCTOR_CACHE_DIR=/tmp/dynaqa/inductor \
    TORCH_EXTENSIONS_DIR=/opt/dynaqa/torch-extensions
# Build the fused INT8 scaling now, not in the first start-up's budget (about 30 s); a finished
# build is only read, so the read-only root file system of the deployment is fine.
RUN python -c "from models.infer import native; assert native.kernels() is not None"
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/v2/health/live', timeout=2).status != 200)"]
ENTRYPOINT ["dynaqa", "serve"]
