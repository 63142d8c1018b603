"""The Prefect process worker polling pool ``tagifai``: it runs the deployed flows."""

from __future__ import annotations

import hashlib
import os

import httpx

from deployments.platform.auth import prefect_auth_headers
from deployments.platform.records import read_record
from deployments.platform.services import dask_workers, mlflow, webhook
from deployments.platform.spec import (
    Launch,
    LaunchContext,
    ServiceSpec,
    prefect_client_env,
    python_command,
)
from tagifai.config import Settings

WORK_POOL = "tagifai"
# Prefect polls every 10 s by default; 2 s keeps webhook-to-running latency low for a local
# platform at the cost of one cheap SQLite query every 2 s.
DEFAULT_WORKER_QUERY_SECONDS = "2"
# Flow runs started by this worker send a heartbeat event this often (Prefect's minimum, 30 s);
# the zombie automation (deployments/automations.py) crashes a Running run that stops sending.
DEFAULT_HEARTBEAT_SECONDS = "30"
# Links in the flows' artifacts: the MLflow UI and the Data Docs the receiver serves; and the
# warm Dask cluster, where the flow runs submit their tasks (the workers' record holds the
# scheduler's address).
LINKS = (
    (mlflow.SPEC.name, "TAGIFAI_MLFLOW_UI_URL", ""),
    (webhook.SPEC.name, "TAGIFAI_DATA_DOCS_URL", "/data-docs"),
    (dask_workers.SPEC.name, "TAGIFAI_DASK_ADDRESS", ""),
)


def worker_name(settings: Settings) -> str:
    """One name per stores dir, so the health check knows which worker to look for."""
    digest = hashlib.sha256(str(settings.stores_dir).encode()).hexdigest()[:8]
    return f"tagifai-local-{digest}"


def _build(context: LaunchContext) -> Launch:
    settings = context.settings
    name = worker_name(settings)
    env = prefect_client_env(settings, context.prefect_api_url)
    env["PREFECT_WORKER_QUERY_SECONDS"] = (
        os.environ.get("PREFECT_WORKER_QUERY_SECONDS") or DEFAULT_WORKER_QUERY_SECONDS
    )
    env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = (
        os.environ.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY") or DEFAULT_HEARTBEAT_SECONDS
    )
    # The registry starts the worker after these services, so their records are written.
    for service, variable, suffix in LINKS:
        started = read_record(settings, service)
        if started is not None and variable not in os.environ:
            env[variable] = started.url.rstrip("/") + suffix
    # `--type process` makes the worker create the pool, with Prefect's default process job
    # template, when it is missing; health = the pool lists this worker as ONLINE.
    cmd = python_command(
        "prefect", "worker", "start",
        "--pool", WORK_POOL, "--type", "process", "--name", name,
    )  # fmt: skip
    return Launch(cmd, env, f"pool '{WORK_POOL}' (process), worker {name}")


def _healthy(settings: Settings, url: str, prefect_api_url: str | None) -> bool:
    if prefect_api_url is None:
        return False
    try:
        response = httpx.post(
            f"{prefect_api_url}/work_pools/{WORK_POOL}/workers/filter",
            json={"limit": 100},
            headers=prefect_auth_headers(),
            timeout=3.0,
            trust_env=False,
        )
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    return any(
        worker.get("name") == worker_name(settings) and worker.get("status") == "ONLINE"
        for worker in response.json()
    )


SPEC = ServiceSpec(
    name="worker",
    label="Worker",
    log_name="prefect-worker.log",
    build=_build,
    healthy=_healthy,
    needs_prefect_api=True,
    # Its flow runs keep their state there (they read team mode from the stores dir).
    team_requires=("postgres", "redis"),
)
