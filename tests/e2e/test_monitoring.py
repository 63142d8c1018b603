"""Closing the loop on the real platform: the prediction service under uvicorn, the monitor
deployment deciding ``retrain`` and the one mlops run it starts, ``tagifai rollback`` and the
service following it, and a run whose worker and process are killed being crashed by the
zombie automation, then converging when re-run.

One platform (server, process worker, prediction service) on free ports and a temporary stores
dir serves the module; the chain ``make run`` starts (dataops -> mlops) puts v1 in production
first. The tests run in file order and build on each other (v1, then v2 by the retrain, then
the rollback to v1, then the crash).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pandas as pd
import psutil
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.automations import ZOMBIE_AUTOMATION, ensure_automations
from deployments.platform import free_ports, read_record, up
from deployments.run import MLOPS, follow, run_chain
from tagifai import history, registry
from tagifai.config import REPO_ROOT, Settings
from tests.e2e.harness import Deployed, api_client, applied, deployed_platform
from tests.http_receiver import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

MONITOR = "monitor/monitor"
RUN_TIMEOUT_S = 300.0
ZOMBIE_AFTER_S = 45
OTHER_DOMAIN = (
    "Slow cooked beef stew with carrots, potatoes and fresh thyme for winter evenings",
    "How to knit a wool scarf with a simple garter stitch pattern for beginners",
    "The history of the Roman empire from Augustus to the fall of Constantinople",
    "Best hiking trails in the Alps with mountain huts and lake views in summer",
    "Baking sourdough bread at home with a starter, flour, water and salt",
    "Learn to play guitar chords and strumming patterns for folk songs",
)


@dataclass(frozen=True)
class Loop:
    platform: Deployed
    predict_url: str
    receiver: Receiver

    @property
    def settings(self) -> Settings:
        return self.platform.settings


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    with Receiver() as receiver:
        env = {
            "TAGIFAI_PREDICT_PORT": str(free_ports()[0]),
            "TAGIFAI_PREDICT_RELOAD_SECONDS": "1",
            "TAGIFAI_PREDICTION_LOG_FLUSH_SECONDS": "1",
            "TAGIFAI_ZOMBIE_AFTER_SECONDS": str(ZOMBIE_AFTER_S),
            "TAGIFAI_NOTIFY_URLS": receiver.url,
        }
        tmp = tmp_path_factory.mktemp("monitoring")
        services = ("server", "worker", "predict")
        with (
            deployed_platform(tmp, services, n_trials=0, extra_env=env) as platform,
            applied(platform.env),
            # This process's own Prefect clients (ensure_automations, flows run in-process).
            temporary_settings(updates={PREFECT_API_URL: platform.api_url}),
        ):
            ensure_automations(platform.settings)
            dataops, mlops = run_chain(platform.api_url, timeout_s=RUN_TIMEOUT_S)  # make run
            assert mlops is not None and mlops.run.state_name == "Completed"
            url = read_record(platform.settings, "predict").url
            yield Loop(platform, url, receiver)


def health(loop: Loop) -> dict:
    return httpx.get(f"{loop.predict_url}/health", timeout=10, trust_env=False).json()


def wait_for_served(loop: Loop, version: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while health(loop)["model_version"] != version:
        assert time.monotonic() < deadline, f"the service still serves {health(loop)}"
        time.sleep(0.5)


def post(loop: Loop, body: object) -> httpx.Response:
    return httpx.post(f"{loop.predict_url}/predict", json=body, timeout=60, trust_env=False)


def projects_of(texts: list[tuple[str, str]]) -> list[dict]:
    return [{"id": i, "title": t, "description": d} for i, (t, d) in enumerate(texts)]


def send(loop: Loop, projects: list[dict], batch: int = 200) -> int:
    for start in range(0, len(projects), batch):
        response = post(loop, {"projects": projects[start : start + batch]})
        assert response.status_code == 200, response.text
    return len(projects)


def logged(loop: Loop) -> int:
    import pyarrow.parquet as pq

    folder = loop.settings.predictions_dir
    return sum(pq.read_metadata(p).num_rows for p in folder.rglob("*.parquet"))


def wait_for_logged(loop: Loop, rows: int) -> None:
    deadline = time.monotonic() + 20
    while logged(loop) < rows:
        assert time.monotonic() < deadline, f"{logged(loop)} of {rows} predictions logged"
        time.sleep(0.5)


def mlops_runs(api_url: str) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId

    with api_client(api_url) as client:
        deployment = client.read_deployment_by_name(MLOPS)
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])
            )
        )
    return [run for run in runs if not run.auto_scheduled]


def run_deployment(api_url: str, name: str, parameters: dict | None = None):
    with api_client(api_url) as client:
        deployment = client.read_deployment_by_name(name)
        created = client.create_flow_run_from_deployment(deployment.id, parameters=parameters or {})
        return follow(client, created.id, RUN_TIMEOUT_S, label=name).run


def test_deployments_and_the_zombie_automation_exist(loop: Loop) -> None:
    with api_client(loop.platform.api_url) as client:
        monitor = client.read_deployment_by_name(MONITOR)
        client.read_deployment_by_name("rollback/rollback")
        automations = {a.name: a for a in client.read_automations()}
    assert [(s.schedule.cron, s.schedule.timezone) for s in monitor.schedules] == [
        ("0 * * * *", "UTC")
    ]
    assert monitor.parameters["retrain_psi"] == 0.25
    drift = automations["mlops on tagifai.drift.detected"]
    assert drift.trigger.expect == {"tagifai.drift.detected"}
    assert automations["monitor on tagifai.snapshot.published"].trigger.expect == {
        "tagifai.snapshot.published"
    }
    zombie = automations[ZOMBIE_AUTOMATION]
    assert zombie.trigger.posture == "Proactive"
    assert zombie.trigger.within.total_seconds() == ZOMBIE_AFTER_S
    assert [a.type for a in zombie.actions] == ["change-flow-run-state", "call-webhook"]
    ensure_automations(loop.settings)  # idempotent: still one of it
    with api_client(loop.platform.api_url) as client:
        assert len(client.read_automations_by_name(ZOMBIE_AUTOMATION)) == 1


def test_the_service_serves_production_logs_and_refuses_bad_requests(loop: Loop) -> None:
    wait_for_served(loop, 1)
    one = post(loop, {"title": "YOLO object detection", "description": "boxes in images"})
    assert one.status_code == 200 and one.json()["model_version"] == 1
    assert one.json()["tag"] == "computer-vision"
    for bad, status in (({"title": ""}, 422), ({"projects": [{}] * 300}, 422), ([1], 400)):
        response = post(loop, bad)
        assert response.status_code == status and "error" in response.json(), response.text
    garbled = httpx.post(
        f"{loop.predict_url}/predict", content=b"{not json", timeout=10, trust_env=False
    )
    assert garbled.status_code == 400

    projects = pd.read_csv(loop.settings.projects_csv).head(300).fillna("")
    pairs = list(zip(projects["title"], projects["description"], strict=True))
    sent = 1 + send(loop, projects_of(pairs))
    wait_for_logged(loop, sent)
    time.sleep(1.5)
    assert logged(loop) == sent  # every prediction once, and none of the refused requests


def test_a_drifted_batch_makes_the_monitor_retrain_and_one_mlops_run_follows(loop) -> None:
    rng = np.random.default_rng(5)
    drifted = [(rng.choice(OTHER_DOMAIN), rng.choice(OTHER_DOMAIN)) for _ in range(400)]
    before = logged(loop)
    send(loop, projects_of(drifted))
    wait_for_logged(loop, before + len(drifted))
    runs_before = {run.id for run in mlops_runs(loop.platform.api_url)}

    monitored = run_deployment(loop.platform.api_url, MONITOR)
    assert monitored.state_name == "Completed", monitored.state
    decision = json.loads((loop.settings.monitoring_dir / "last_monitor.json").read_text())
    assert decision["action"] == "retrain", decision
    assert decision["model_version"] == 1

    deadline = time.monotonic() + 60
    while not (new := [r for r in mlops_runs(loop.platform.api_url) if r.id not in runs_before]):
        assert time.monotonic() < deadline, "the retrain decision started no mlops run"
        time.sleep(1)
    [triggered] = new
    assert triggered.created_by.display_value == "mlops on tagifai.drift.detected"
    assert triggered.parameters["force"] is True
    with api_client(loop.platform.api_url) as client:
        done = follow(client, triggered.id, RUN_TIMEOUT_S, label="mlops")
    assert done.run.state_name == "Completed", done.run.state
    time.sleep(5)
    assert [r.id for r in mlops_runs(loop.platform.api_url) if r.id not in runs_before] == [
        triggered.id
    ]  # exactly one
    assert registry.production_version(loop.settings) == 2
    wait_for_served(loop, 2)


def test_tagifai_rollback_returns_production_and_the_service_serves_it(loop: Loop) -> None:
    env = {**os.environ, "PREFECT_API_URL": loop.platform.api_url}
    result = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "rollback", "--reason", "e2e: v2 misbehaves"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    move = json.loads(result.stdout.strip().splitlines()[-1])
    assert (move["from_version"], move["to_version"]) == (2, 1)
    assert registry.production_version(loop.settings) == 1
    latest = history.entries(loop.settings)[0]
    assert (latest.action, latest.reason) == ("rollback", "e2e: v2 misbehaves")
    assert latest.actor.endswith("(tagifai rollback)") and latest.flow_run_id
    wait_for_served(loop, 1)
    response = post(loop, {"title": "BERT for text classification"})
    assert response.json()["model_version"] == 1

    status = subprocess.run(
        [sys.executable, "-m", "deployments.cli", "status", "--json"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rows = json.loads(status.stdout)["production_history"]
    assert [(r["action"], r["from"], r["to"]) for r in rows[:3]] == [
        ("rollback", "v2", "v1"), ("deploy", "v1", "v2"), ("deploy", "-", "v1"),
    ]  # fmt: skip


def _kill_worker_and_its_runs(loop: Loop) -> list[int]:
    worker = psutil.Process(read_record(loop.settings, "worker").pid)
    victims = [*worker.children(recursive=True), worker]
    for process in victims:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(signal.SIGKILL)
    psutil.wait_procs(victims, timeout=10)
    return [p.pid for p in victims]


def test_a_run_whose_worker_dies_is_crashed_and_a_rerun_converges(loop: Loop) -> None:
    api_url = loop.platform.api_url
    with api_client(api_url) as client:
        deployment = client.read_deployment_by_name(MLOPS)
        run = client.create_flow_run_from_deployment(deployment.id, parameters={"force": True})
    # Kill when the run has registered its version but not decided yet: mid-mlops.
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (
        orphan := [
            v
            for v in registry.list_versions(loop.settings)
            if v.tags.get("prefect_flow_run_id") == str(run.id)
        ]
    ):
        assert time.monotonic() < deadline, "the run registered no version"
        time.sleep(0.2)
    killed = _kill_worker_and_its_runs(loop)
    [version] = orphan
    assert "decision" not in registry.get_version(loop.settings, version.version).tags
    assert len(killed) >= 2  # the worker and the flow-run process

    crashed_at = time.monotonic()
    with api_client(api_url) as client:
        deadline = time.monotonic() + ZOMBIE_AFTER_S + 120
        while (state := client.read_flow_run(run.id).state_name) != "Crashed":
            assert state == "Running", state  # nothing else touches it meanwhile
            assert time.monotonic() < deadline, "the zombie run was never marked Crashed"
            time.sleep(2)
    print(f"\nkilled -> Crashed in {time.monotonic() - crashed_at:.0f} s")
    deadline = time.monotonic() + 30
    while not any("marked Crashed" in m.get("text", "") for m in loop.receiver.messages):
        assert time.monotonic() < deadline, loop.receiver.messages
        time.sleep(1)

    up(loop.settings, ("worker",))  # a new worker, as `make up` starts one
    rerun = run_deployment(api_url, MLOPS, {"force": True})
    assert rerun.state_name == "Completed", rerun.state
    tags = registry.get_version(loop.settings, version.version).tags
    assert tags["decision"] == "abandoned"
    assert all(move.state != "pending" for move in history.entries(loop.settings))
    production = registry.get_version(loop.settings)
    assert production.tags["decision"] == "deployed"
