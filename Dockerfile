# Flow-run image for a Docker or Kubernetes work pool: the repo at /opt/tagifai, its locked
# environment in /opt/tagifai/.venv (on PATH, so the worker's `prefect flow-run execute` finds it).
#
#   docker build -t registry.example.com/tagifai:$(git rev-parse --short HEAD) .
#
# Then set `job_variables.image` in prefect.yaml (see docs/deployments.md). Not built on the dev
# machine: it has no Docker engine.
FROM python:3.11-slim

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_NO_CACHE=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/tagifai/.venv/bin:$PATH \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GX_ANALYTICS_ENABLED=false \
    MLFLOW_LOGGING_LEVEL=ERROR \
    PREFECT_LOGGING_EXTRA_LOGGERS=tagifai

RUN useradd --create-home --uid 1000 tagifai
WORKDIR /opt/tagifai

# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project

COPY . .
RUN uv sync --frozen --no-dev \
    && mkdir -p stores \
    && chown -R tagifai:tagifai /opt/tagifai/stores /opt/tagifai/great_expectations

# Runtime state goes to TAGIFAI_STORES_DIR (a mounted volume in a team setup).
USER tagifai
