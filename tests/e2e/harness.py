"""One deployed platform for an e2e module: server, worker (and more) on free ports, a
temporary stores dir, the repo's own prefect.yaml deployed; always torn down."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from deployments.platform import down, free_ports, up
from deployments.run import DATAOPS, MLOPS, deploy
from tagifai.config import REPO_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

SECRET = "deployments-test-secret-0123456789"
N_TRIALS = 2
CLIENT_ENV = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING")


@dataclass(frozen=True)
class Deployed:
    """A running platform with prefect.yaml deployed."""

    settings: Settings
    api_url: str
    hook_url: str
    data_root: Path
    deploy_seconds: float
    env: dict[str, str | None]
    dask_address: str = ""  # the platform's warm Dask cluster, when it runs one


@contextlib.contextmanager
def api_client(api_url: str) -> Iterator[SyncPrefectClient]:
    """A sync Prefect client on ``api_url`` whatever API this test session was set up with."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def lower_mlops_trials(api_url: str, n_trials: int) -> None:
    """What a person does in the UI's "Edit" form: new default parameters for mlops."""
    from prefect.client.schemas.actions import DeploymentUpdate

    with api_client(api_url) as client:
        mlops = client.read_deployment_by_name(MLOPS)
        parameters = {**mlops.parameters, "n_trials": n_trials}
        client.update_deployment(mlops.id, DeploymentUpdate(parameters=parameters))


@contextlib.contextmanager
def applied(environment: dict[str, str | None]) -> Iterator[None]:
    """The environment a platform's clients need (None: unset), restored afterwards."""
    with pytest.MonkeyPatch.context() as env:
        for name, value in environment.items():
            if value is None:
                env.delenv(name, raising=False)
            else:
                env.setenv(name, value)
        yield


@contextlib.contextmanager
def deployed_platform(
    tmp: Path,
    services: tuple[str, ...],
    n_trials: int = N_TRIALS,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Deployed]:
    """Platform up on free ports under ``tmp``, prefect.yaml deployed; always torn down.

    The data root (``TAGIFAI_DATA_DIR``, also the receiver's allowed root) holds copies of the
    shipped CSVs, so dataops' defaults and webhook payloads both point inside it. The
    environment the platform was started with is set only while it starts and stops: tests
    that run clients (CLI subprocesses) apply ``Deployed.env`` themselves (:func:`applied`),
    so a platform that outlives a module leaks nothing into the next one.
    """
    data_root = (tmp / "data").resolve()
    data_root.mkdir(parents=True)
    for name in ("projects.csv", "tags.csv"):
        shutil.copy(REPO_ROOT / "data" / "raw" / name, data_root / name)
    ports = free_ports(4)
    environment: dict[str, str | None] = {
        **dict.fromkeys((*CLIENT_ENV, "MLFLOW_TRACKING_URI", "TAGIFAI_WEBHOOK_DATA_ROOT")),
        "TAGIFAI_STORES_DIR": str(tmp / "stores"),
        "TAGIFAI_DATA_DIR": str(data_root),
        "TAGIFAI_WEBHOOK_SECRET": SECRET,
        "TAGIFAI_PLATFORM_TIMEOUT_SCALE": "2",
        **(extra_env or {}),
        **{
            name: str(port)
            for name, port in zip(
                (
                    "TAGIFAI_PREFECT_PORT",
                    "TAGIFAI_WEBHOOK_PORT",
                    "TAGIFAI_MLFLOW_PORT",
                    "TAGIFAI_DASK_PORT",
                ),
                ports,
                strict=True,
            )
        },
    }
    with applied(environment):
        settings = get_settings()
    try:
        with applied(environment):
            urls = up(settings, services)
            api_url = urls["server"]
            environment["PREFECT_API_URL"] = api_url  # for the CLI calls of the tests
            seconds = deploy(api_url)
            lower_mlops_trials(api_url, n_trials)
            dask_address = urls.get("dask-scheduler", "")
            if dask_address:  # record which worker runs each task (see task_placements)
                from distributed import Client

                with Client(dask_address, timeout=30) as client:
                    client.get_task_stream()
        yield Deployed(
            settings=settings,
            api_url=api_url,
            hook_url=urls.get("webhook", ""),
            data_root=data_root,
            deploy_seconds=seconds,
            env=environment,
            dask_address=dask_address,
        )
    finally:
        with applied(environment):
            down(settings)


def dataops_runs(api_url: str) -> list:
    """dataops runs, except the future ones the server's scheduler adds at any time."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with api_client(api_url) as client:
        deployment = client.read_deployment_by_name(DATAOPS)
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])
            )
        )
    return [run for run in runs if not run.auto_scheduled]


def mlops_runs(api_url: str) -> list:
    """mlops runs, except the future ones the server's scheduler adds at any time."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with api_client(api_url) as client:
        deployment = client.read_deployment_by_name(MLOPS)
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])
            )
        )
    return [run for run in runs if not run.auto_scheduled]
