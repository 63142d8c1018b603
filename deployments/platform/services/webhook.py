"""The signed-webhook receiver (``deployments.webhook``) under uvicorn; it serves the Data Docs."""

from __future__ import annotations

import os

from deployments.platform.auth import WEBHOOK_SECRET_ENV, webhook_secret, webhook_secret_path
from deployments.platform.ports import HOST
from deployments.platform.spec import (
    Launch,
    LaunchContext,
    ServiceSpec,
    banner_line,
    prefect_client_env,
    python_command,
)
from tagifai.config import Settings

# deployments.webhook.HOOK_PATH, not imported: that would put starlette on the CLI's start-up.
HOOK_PATH = "/hooks/data-arrived"


def _build(context: LaunchContext) -> Launch:
    settings, port = context.settings, context.port
    env = prefect_client_env(settings, context.prefect_api_url)
    env[WEBHOOK_SECRET_ENV] = webhook_secret(settings)  # env, never argv (ps shows argv)
    cmd = python_command(
        "uvicorn", "deployments.webhook:app",
        "--host", HOST, "--port", str(port), "--lifespan", "on", "--no-server-header",
    )  # fmt: skip
    return Launch(cmd, env, f"http://{HOST}:{port}")


def _describe(settings: Settings, hook_url: str) -> list[str]:
    secret_from = (
        f"${WEBHOOK_SECRET_ENV}"
        if os.environ.get(WEBHOOK_SECRET_ENV)
        else str(webhook_secret_path(settings))
    )
    return [banner_line("Webhook", f"{hook_url}    (secret: {secret_from})")]


SPEC = ServiceSpec(
    name="webhook",
    label="Webhook",
    log_name="webhook.log",
    build=_build,
    startup_timeout_s=30.0,
    port_env="TAGIFAI_WEBHOOK_PORT",
    default_port=8787,
    needs_prefect_api=True,
    public_url=lambda url: url + HOOK_PATH,
    describe=_describe,
)
