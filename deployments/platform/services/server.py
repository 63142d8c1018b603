"""The Prefect server on SQLite under ``stores/prefect``: the API every other process uses.

Without ``PREFECT_API_URL`` every Prefect process would start its own ephemeral server (15-20 s
each) that process-based Dask clusters cannot reach; with it set, that server stands in for
this one and nothing is started. In team mode its database is the team's PostgreSQL
(``postgresql+asyncpg``, password from the pgpass file), which it migrates when it starts.
"""

from __future__ import annotations

from deployments.platform.auth import prefect_auth_headers
from deployments.platform.ports import HOST, http_ok
from deployments.platform.spec import (
    Launch,
    LaunchContext,
    ServiceSpec,
    banner_line,
    child_env,
    python_command,
)
from tagifai.config import Settings


def _build(context: LaunchContext) -> Launch:
    settings, port = context.settings, context.port
    api_url = f"http://{HOST}:{port}/api"
    settings.prefect_dir.mkdir(parents=True, exist_ok=True)
    if settings.team is not None:
        db_url = settings.team.database_url("prefect", driver="postgresql+asyncpg")
    else:
        db_url = f"sqlite+aiosqlite:///{settings.prefect_dir / 'prefect.db'}"
    env = child_env(settings)
    env.pop("PREFECT_API_URL", None)
    env.update(
        PREFECT_SERVER_DATABASE_CONNECTION_URL=db_url,
        PREFECT_API_DATABASE_CONNECTION_URL=db_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # The UI calls this URL from the browser; it defaults to port 4200.
        PREFECT_UI_API_URL=api_url,
    )
    cmd = python_command("prefect", "server", "start", "--host", HOST, "--port", str(port))
    return Launch(cmd, env, api_url)


def _healthy(settings: Settings, api_url: str, prefect_api_url: str | None) -> bool:
    return http_ok(f"{api_url}/health", prefect_auth_headers())


def _describe(settings: Settings, api_url: str) -> list[str]:
    return [
        banner_line("Prefect UI", api_url.removesuffix("/api")),
        banner_line("Prefect API", f"{api_url}    (export PREFECT_API_URL={api_url})"),
    ]


SPEC = ServiceSpec(
    name="server",
    label="Prefect API",
    log_name="prefect-server.log",
    build=_build,
    healthy=_healthy,
    port_env="TAGIFAI_PREFECT_PORT",
    default_port=4200,
    external_env="PREFECT_API_URL",
    team_requires=("postgres",),
    describe=_describe,
)
