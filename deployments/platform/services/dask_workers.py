"""Dask worker processes of the platform's scheduler, with the project's libraries imported.

``TAGIFAI_DASK_WORKERS`` (2) processes of one thread each: CPU-bound tasks (GX, Feast,
scikit-learn, Optuna) run side by side. Each imports the flows and every library their tasks
use once, when it starts (``deployments.platform.dask_preload``), and keeps them between flow
runs, so a deployed flow-run process only orchestrates: it imports Prefect and the thin flow
modules, and submits every task here (the process worker's ``TAGIFAI_DASK_ADDRESS``). The
workers share the stores directory and the Prefect API with the flow runs.

Code changes reach the workers when they restart (``make down && make up``).
"""

from __future__ import annotations

import httpx

from deployments.platform.ports import HOST
from deployments.platform.records import read_record
from deployments.platform.services import dask_scheduler
from deployments.platform.spec import (
    Launch,
    LaunchContext,
    ServiceSpec,
    banner_line,
    prefect_client_env,
    python_command,
)
from tagifai.config import Settings

PRELOAD = "deployments.platform.dask_preload"


def _build(context: LaunchContext) -> Launch:
    settings = context.settings
    scheduler = read_record(settings, dask_scheduler.SPEC.name)
    address = scheduler.url if scheduler else f"tcp://{HOST}:8786"
    env = prefect_client_env(settings, context.prefect_api_url)
    env.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(settings.prefect_dir / "storage"))
    cmd = python_command(
        "dask", "worker", address,
        "--nworkers", str(settings.dask_workers), "--nthreads", "1",
        "--name", "tagifai", "--no-dashboard",
        "--preload", PRELOAD,
    )  # fmt: skip
    # Recorded as the scheduler's address: what the process worker hands its flow runs.
    return Launch(cmd, env, address)


def _healthy(settings: Settings, address: str, prefect_api_url: str | None) -> bool:
    """Healthy when the scheduler counts every worker (each registers once preloaded)."""
    url = dask_scheduler.http_url(settings, address)
    if url is None:
        return False
    try:
        response = httpx.get(f"{url}/json/counts.json", timeout=3.0, trust_env=False)
        return response.status_code == 200 and response.json()["workers"] >= settings.dask_workers
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def _describe(settings: Settings, address: str) -> list[str]:
    return [banner_line("Dask workers", f"{settings.dask_workers} processes on {address}")]


SPEC = ServiceSpec(
    name="dask-workers",
    label="Dask workers",
    log_name="dask-workers.log",
    build=_build,
    healthy=_healthy,
    startup_timeout_s=180.0,  # each process imports GX, Feast, scikit-learn, MLflow first
    needs_prefect_api=True,
    requires=("dask-scheduler",),
    describe=_describe,
)
