"""prefect.yaml on the real platform: deploy, the dataops -> mlops trigger chain, the webhook.

One platform (server, process worker, webhook receiver) on free ports and a temporary stores
dir serves the whole module; the deployments come from the repo's own prefect.yaml through
``prefect --no-prompt deploy --all``. Only mlops' ``n_trials`` is lowered, through the API, to
keep the runs short.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from deployments.run import (
    DATAOPS,
    MLOPS,
    SNAPSHOT_LABEL,
    ChainError,
    find_triggered_run,
    follow,
)
from deployments.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, send_data_arrived, sign
from tagifai.config import REPO_ROOT
from tests.e2e.harness import (
    N_TRIALS,
    SECRET,
    Deployed,
    api_client,
    dataops_runs,
)
from tests.flows.test_dask_cluster import task_placements

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

RUN_TIMEOUT_S = 300.0


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
    # Both runs submitted their tasks to the platform's warm Dask cluster (TAGIFAI_DASK_ADDRESS
    # from the worker), whose two preloaded processes took them.
    placements = task_placements(deployed.dask_address)
    ran = {task for task, _ in placements}
    assert {"extract_data", "validate_projects", "materialize_window"} <= ran, placements
    assert {"extract_features", "tune_batch", "train_model", "evaluate_model"} <= ran, placements
    assert {worker for _, worker in placements} == {"tagifai-0", "tagifai-1"}, placements
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
