"""prefect.yaml on the real platform: deploy, the dataops -> mlops trigger chain, the webhook.

One platform (server, process worker, webhook receiver) on free ports and a temporary stores
dir serves the whole module; the deployments come from the repo's own prefect.yaml through
``prefect --no-prompt deploy --all``. Only mlops' ``n_trials`` is lowered, through the API, to
keep the runs short.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

import httpx
import pytest

from deployments.platform import down, free_ports, up
from deployments.run import (
    DATAOPS,
    MLOPS,
    SNAPSHOT_LABEL,
    ChainError,
    deploy,
    find_triggered_run,
    follow,
)
from deployments.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, send_data_arrived, sign
from tagifai.config import REPO_ROOT, Settings, get_settings

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SECRET = "deployments-test-secret-0123456789"
N_TRIALS = 2
RUN_TIMEOUT_S = 300.0
CLIENT_ENV = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING")


@dataclass(frozen=True)
class Deployed:
    """A running platform with prefect.yaml deployed."""

    settings: Settings
    api_url: str
    hook_url: str
    data_root: Path
    deploy_seconds: float


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
def deployed_platform(
    tmp: Path, services: tuple[str, ...], n_trials: int = N_TRIALS
) -> Iterator[Deployed]:
    """Platform up on free ports under ``tmp``, prefect.yaml deployed; always torn down.

    The data root (``TAGIFAI_DATA_DIR``, also the receiver's allowed root) holds copies of the
    shipped CSVs, so dataops' defaults and webhook payloads both point inside it.
    """
    data_root = (tmp / "data").resolve()
    data_root.mkdir(parents=True)
    for name in ("projects.csv", "tags.csv"):
        shutil.copy(REPO_ROOT / "data" / "raw" / name, data_root / name)
    with pytest.MonkeyPatch.context() as env:
        for name in (*CLIENT_ENV, "MLFLOW_TRACKING_URI", "TAGIFAI_WEBHOOK_DATA_ROOT"):
            env.delenv(name, raising=False)
        env.setenv("TAGIFAI_STORES_DIR", str(tmp / "stores"))
        env.setenv("TAGIFAI_DATA_DIR", str(data_root))
        env.setenv("TAGIFAI_WEBHOOK_SECRET", SECRET)
        env.setenv("TAGIFAI_PLATFORM_TIMEOUT_SCALE", "2")
        ports = free_ports(3)
        for name, port in zip(
            ("TAGIFAI_PREFECT_PORT", "TAGIFAI_WEBHOOK_PORT", "TAGIFAI_MLFLOW_PORT"),
            ports,
            strict=True,
        ):
            env.setenv(name, str(port))
        settings = get_settings()
        try:
            urls = up(settings, services)
            api_url = urls["server"]
            env.setenv("PREFECT_API_URL", api_url)  # for the CLI calls below
            seconds = deploy(api_url)
            lower_mlops_trials(api_url, n_trials)
            yield Deployed(
                settings=settings,
                api_url=api_url,
                hook_url=urls.get("webhook", ""),
                data_root=data_root,
                deploy_seconds=seconds,
            )
        finally:
            down(settings)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    with deployed_platform(
        tmp_path_factory.mktemp("deployments"), ("server", "worker", "webhook")
    ) as platform:
        print(f"\nprefect deploy --all: {platform.deploy_seconds:.1f} s")
        yield platform


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


def test_prefect_yaml_deploys_schedules_triggers_and_limits(deployed: Deployed) -> None:
    with api_client(deployed.api_url) as client:
        dataops = client.read_deployment_by_name(DATAOPS)
        mlops = client.read_deployment_by_name(MLOPS)
        automations = {a.name: a for a in client.read_automations()}

    for deployment in (dataops, mlops):
        assert deployment.work_pool_name == "tagifai"
        assert deployment.global_concurrency_limit is not None
        assert deployment.global_concurrency_limit.limit == 1
        # The pull step points at this checkout, recorded at deploy time.
        assert deployment.pull_steps == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
        ]
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in dataops.schedules] == [
        ("0 3 * * *", "UTC", True)
    ]
    assert [(s.schedule.cron, s.schedule.timezone) for s in mlops.schedules] == [
        ("0 5 * * 1", "UTC")
    ]

    data_arrived = automations["dataops on tagifai.data.arrived"]
    assert data_arrived.trigger.expect == {"tagifai.data.arrived"}
    assert data_arrived.actions[0].deployment_id == dataops.id
    published = automations["mlops on tagifai.snapshot.published"]
    assert published.trigger.expect == {"tagifai.snapshot.published"}
    assert published.trigger.match.model_dump() == {"prefect.resource.id": "tagifai.snapshot.*"}
    assert published.actions[0].deployment_id == mlops.id
    assert published.actions[0].parameters == {"snapshot": "{{ event.payload.snapshot_id }}"}


def test_cli_run_of_dataops_triggers_mlops_on_its_snapshot(deployed: Deployed) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tagifai.extract import latest_snapshot_id

    command = [sys.executable, "-m", "prefect", "deployment", "run", DATAOPS]
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"UUID: ([0-9a-f-]{36})", result.stdout)
    assert match, result.stdout
    started = time.monotonic()

    with api_client(deployed.api_url) as client:
        dataops = follow(client, UUID(match.group(1)), RUN_TIMEOUT_S, label="dataops")
        assert dataops.run.state_name == "Completed", dataops.run.state
        mlops_deployment = client.read_deployment_by_name(MLOPS)
        triggered = find_triggered_run(client, mlops_deployment.id, dataops.run)
        mlops = follow(client, triggered.id, RUN_TIMEOUT_S, label="mlops")
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[mlops.run.id]))
        )
    assert mlops.run.state_name == "Completed", mlops.run.state

    # The automation of prefect.yaml started it, on the snapshot this dataops run published,
    # with the deployment's (lowered) defaults for everything else.
    assert triggered.created_by is not None
    assert triggered.created_by.type == "AUTOMATION"
    assert triggered.created_by.display_value == "mlops on tagifai.snapshot.published"
    snapshot = latest_snapshot_id(deployed.settings)
    assert dataops.run.labels.get(SNAPSHOT_LABEL) == snapshot
    assert triggered.parameters == {
        "snapshot": snapshot,
        "n_trials": N_TRIALS,
        "search_space": "auto",
    }
    assert {"optuna-best-trial", "evaluation-report"} <= {a.key for a in artifacts}
    decision = json.loads((deployed.settings.reports_dir / "last_decision.json").read_text())
    assert datetime.fromisoformat(decision["at"]) >= mlops.run.start_time.replace(microsecond=0)

    assert dataops.run.end_time is not None and mlops.run.end_time is not None
    trigger_s = (triggered.created - dataops.run.end_time).total_seconds()
    chain_s = (mlops.run.end_time - dataops.run.end_time).total_seconds()
    print(
        f"\ndataops {dataops.seconds:.1f} s from the CLI; Completed -> mlops created "
        f"{trigger_s:.1f} s; Completed -> mlops Completed {chain_s:.1f} s; "
        f"whole chain {time.monotonic() - started:.1f} s"
    )
    assert trigger_s < 30


def test_failed_dataops_ends_the_run_with_one_line_and_triggers_nothing(
    deployed: Deployed,
) -> None:
    missing = deployed.data_root / "missing"
    command = [
        sys.executable, "-m", "deployments.run", "--no-deploy", "--timeout", "300",
        "--projects", str(missing / "projects.csv"), "--tags", str(missing / "tags.csv"),
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )

    assert result.returncode == 1, result.stdout + result.stderr
    [error] = result.stderr.strip().splitlines()
    assert re.fullmatch(r"error: dataops run '\S+' ended Failed: .+ \(http://\S+\)", error), error
    assert "projects" in error  # the flow's own reason: which source could not be read
    run_id = re.search(r"/runs/flow-run/([0-9a-f-]{36})", result.stdout)
    assert run_id, result.stdout
    with api_client(deployed.api_url) as client:
        failed = client.read_flow_run(UUID(run_id.group(1)))
        mlops_deployment = client.read_deployment_by_name(MLOPS)
        with pytest.raises(ChainError, match="no run of mlops/mlops was triggered"):
            find_triggered_run(client, mlops_deployment.id, failed, timeout_s=5)


def test_signed_webhook_runs_dataops_on_the_payload_uris(deployed: Deployed) -> None:
    batch = deployed.data_root / "incoming" / "batch-7"
    batch.mkdir(parents=True)
    for name in ("projects.csv", "tags.csv"):
        shutil.copy(deployed.data_root / name, batch / name)
    projects, tags = str(batch / "projects.csv"), str(batch / "tags.csv")

    response = send_data_arrived(
        deployed.hook_url, SECRET, projects, tags, source="pytest", batch_id="batch-7"
    )
    assert response.status_code == 202, response.text

    deadline = time.monotonic() + 60
    while not (
        runs := [
            r
            for r in dataops_runs(deployed.api_url)
            if r.parameters == {"projects_uri": projects, "tags_uri": tags}
        ]
    ):
        assert time.monotonic() < deadline, "the webhook's event triggered no dataops run"
        time.sleep(1)
    [run] = runs
    assert run.created_by is not None
    assert run.created_by.display_value == "dataops on tagifai.data.arrived"
    with api_client(deployed.api_url) as client:
        done = follow(client, run.id, RUN_TIMEOUT_S, label="dataops")
    assert done.run.state_name == "Completed", done.run.state
    print(f"\nwebhook -> dataops Completed in {done.seconds:.1f} s")


def _bad_requests(data_root: Path) -> dict[str, tuple[bytes, dict[str, str], int]]:
    """Name -> (body, headers, expected status) of requests the receiver must refuse."""
    good = {
        "projects_uri": str(data_root / "projects.csv"),
        "tags_uri": str(data_root / "tags.csv"),
    }
    body = json.dumps(good).encode()
    outside = json.dumps(
        {**good, "projects_uri": str(REPO_ROOT / "data" / "raw" / "projects.csv")}
    ).encode()
    climbing = json.dumps({**good, "tags_uri": f"{data_root}/../../etc/passwd"}).encode()
    oversized = json.dumps({**good, "source": "x" * 70_000}).encode()
    malformed = b'{"projects_uri": "' + str(data_root).encode() + b'/projects.csv",'
    return {
        "no signature": (body, {}, 401),
        "signature without timestamp": (
            body,
            {SIGNATURE_HEADER: sign(SECRET, body)[SIGNATURE_HEADER]},
            401,
        ),
        "wrong signature": (body, sign("not-the-secret-0123456789", body), 401),
        "stale timestamp": (body, sign(SECRET, body, int(time.time()) - 3600), 401),
        "timestamp swapped after signing": (
            body,
            {**sign(SECRET, body), TIMESTAMP_HEADER: str(int(time.time()) + 1)},
            401,
        ),
        "oversized body": (oversized, sign(SECRET, oversized), 413),
        "malformed JSON": (malformed, sign(SECRET, malformed), 400),
        "path outside the data root": (outside, sign(SECRET, outside), 422),
        "path climbing out of the data root": (climbing, sign(SECRET, climbing), 422),
    }


def test_bad_webhooks_are_refused_and_start_nothing(deployed: Deployed) -> None:
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    since = datetime.now(UTC)
    runs_before = {r.id for r in dataops_runs(deployed.api_url)}
    statuses = {}
    for name, (body, headers, _) in _bad_requests(deployed.data_root).items():
        response = httpx.post(
            deployed.hook_url,
            content=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=30,
            trust_env=False,
        )
        statuses[name] = response.status_code
        assert "error" in response.json(), name
    expected = {name: status for name, (_, _, status) in _bad_requests(deployed.data_root).items()}
    assert statuses == expected

    time.sleep(5)  # the trigger reacts within a second or two to an event
    with api_client(deployed.api_url) as client:
        events = client.read_events(
            EventFilter(
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(name=["tagifai.data.arrived"]),
            ),
            limit=50,  # the server's maximum; the client's default (100) is refused
        ).events
    assert events == []
    assert {r.id for r in dataops_runs(deployed.api_url)} == runs_before
