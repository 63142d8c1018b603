"""A Dask scheduler on loopback: the warm cluster that deployed flow runs submit tasks to.

The shape a team's cluster has (``dask scheduler`` plus ``dask worker`` processes; see
``dask_workers``), on this machine. It writes a scheduler file under ``stores/platform`` with
its address and HTTP port; the workers find it there and the health checks ask its HTTP API.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from deployments.platform.ports import HOST, http_ok
from deployments.platform.records import platform_dir
from deployments.platform.spec import Launch, LaunchContext, ServiceSpec, child_env, python_command
from tagifai.config import Settings


def scheduler_file(settings: Settings) -> Path:
    """What the scheduler writes about itself (beside, not among, the platform's records)."""
    return platform_dir(settings) / "dask" / "scheduler.json"


def scheduler_info(settings: Settings, address: str) -> dict[str, Any] | None:
    """The scheduler file, if it describes the scheduler at ``address``."""
    try:
        info = json.loads(scheduler_file(settings).read_text())
    except (OSError, ValueError):
        return None
    return info if info.get("address") == address else None


def http_url(settings: Settings, address: str) -> str | None:
    """The scheduler's HTTP API (health, JSON counts), from its file."""
    info = scheduler_info(settings, address)
    port = (info or {}).get("services", {}).get("dashboard")
    return f"http://{HOST}:{port}" if port else None


def _build(context: LaunchContext) -> Launch:
    settings, port = context.settings, context.port
    scheduler_file(settings).unlink(missing_ok=True)  # health must not read an old one
    scheduler_file(settings).parent.mkdir(parents=True, exist_ok=True)
    cmd = python_command(
        "dask", "scheduler",
        "--host", HOST, "--port", str(port),
        "--dashboard-address", f"{HOST}:0",  # the HTTP API only (no bokeh here); any port
        "--scheduler-file", str(scheduler_file(settings)),
        "--no-show",
    )  # fmt: skip
    return Launch(cmd, child_env(settings), f"tcp://{HOST}:{port}")


def _healthy(settings: Settings, address: str, prefect_api_url: str | None) -> bool:
    url = http_url(settings, address)
    return url is not None and http_ok(f"{url}/health")


SPEC = ServiceSpec(
    name="dask-scheduler",
    label="Dask",
    log_name="dask-scheduler.log",
    build=_build,
    healthy=_healthy,
    startup_timeout_s=60.0,
    port_env="TAGIFAI_DASK_PORT",
    default_port=8786,
)
