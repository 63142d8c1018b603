"""The MLflow UI and tracking server over the project's MLflow store.

Embedded, that store is SQLite under ``stores/mlflow``; in team mode it is the team's
PostgreSQL database ``mlflow``, with the artifact root under ``stores/team/mlflow-artifacts``.
Flows and the CLI write to the same store directly (``settings.mlflow_tracking_uri``), so
runs do not depend on this server being up.
"""

from __future__ import annotations

from pathlib import Path

from deployments.platform.ports import HOST
from deployments.platform.spec import Launch, LaunchContext, ServiceSpec, child_env, python_command
from tagifai.config import Settings


def _backend_uri(settings: Settings) -> str:
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):  # a tracking *server*: serve the local store
        uri = f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


def _build(context: LaunchContext) -> Launch:
    settings, port = context.settings, context.port
    artifacts = settings.mlflow_artifacts_dir
    artifacts.mkdir(parents=True, exist_ok=True)
    env = child_env(settings)
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        # Job execution (GenAI evaluation jobs) adds a huey consumer process; not needed here.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    # A local-path artifact root (not mlflow-artifacts:/) so that runs logged straight to the
    # SQLite store by flows and runs logged through this server share one artifact layout.
    cmd = python_command(
        "mlflow", "server",
        "--backend-store-uri", _backend_uri(settings),
        "--default-artifact-root", artifacts.as_uri(),
        "--artifacts-destination", artifacts.as_uri(),
        "--host", HOST, "--port", str(port), "--workers", "1",
    )  # fmt: skip
    return Launch(cmd, env, f"http://{HOST}:{port}")


SPEC = ServiceSpec(
    name="mlflow",
    label="MLflow",
    log_name="mlflow.log",
    build=_build,
    startup_timeout_s=120.0,  # MLflow's CLI alone imports for ~10 s on this machine
    port_env="TAGIFAI_MLFLOW_PORT",
    default_port=5000,
    team_requires=("postgres",),
)
