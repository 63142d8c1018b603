"""The prediction service (``deployments.serve``) under uvicorn: production over HTTP, logged."""

from __future__ import annotations

from deployments.platform.ports import HOST
from deployments.platform.spec import Launch, LaunchContext, ServiceSpec, child_env, python_command


def _build(context: LaunchContext) -> Launch:
    port = str(context.port)
    env = child_env(context.settings)
    env.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    cmd = python_command(
        "uvicorn", "deployments.serve:app",
        "--host", HOST, "--port", port, "--lifespan", "on", "--no-server-header",
        "--no-access-log",
    )  # fmt: skip
    return Launch(cmd, env, f"http://{HOST}:{port}")


SPEC = ServiceSpec(
    name="predict",
    label="Predictions",
    log_name="predict.log",
    build=_build,
    port_env="TAGIFAI_PREDICT_PORT",  # a taken port is replaced by a free one
    default_port=8000,
    startup_timeout_s=60.0,
    public_url=lambda url: url + "/predict",
)
