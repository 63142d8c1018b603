"""Runs on new data only, end to end: the sensor, the webhook and the trigger chain.

One platform (server, worker, webhook receiver, sensor ticking every second) serves the
module, with the repo's prefect.yaml deployed. The sensor watches a landing directory and a
SQLite table pair inside the receiver's data root. The tests run in order and each counts
the runs the platform made since the one before: idle ticks start nothing; a batch being
written waits until it is complete, then starts exactly one dataops and one mlops run; the
same data again (by webhook) and a replayed notice start nothing; rows appended to the SQL
table start one run; a restarted sensor does not announce again.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time

import httpx
import pandas as pd
import pytest

from deployments.platform import status, up
from deployments.platform.records import read_record
from deployments.run import follow
from deployments.webhook import send_data_arrived, sign
from tagifai import registry
from tagifai.config import SHIPPED_DATA_DIR
from tagifai.extract import read_table
from tests.e2e.conftest import SENSOR_TICK_S
from tests.e2e.harness import SECRET, Deployed, api_client, dataops_runs, mlops_runs

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

RUN_TIMEOUT_S = 300.0
TICK_S = SENSOR_TICK_S


def shipped_less(rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shipped tables less their last ``rows`` labelled projects: data not seen before."""
    projects = read_table(str(SHIPPED_DATA_DIR / "projects.csv"), "projects")
    tags = read_table(str(SHIPPED_DATA_DIR / "tags.csv"), "tags")
    keep = set(tags["id"].iloc[: len(tags) - rows]) if rows else set(tags["id"])
    return projects[projects["id"].isin(keep)], tags[tags["id"].isin(keep)]


@pytest.fixture
def platform(deployed: Deployed) -> Deployed:
    return deployed


def runs(platform: Deployed) -> tuple[set, set]:
    return (
        {run.id for run in dataops_runs(platform.api_url)},
        {run.id for run in mlops_runs(platform.api_url)},
    )


def wait_for_new_runs(platform: Deployed, before: tuple[set, set], dataops: int) -> list:
    """Wait until ``dataops`` new dataops runs exist and are final, then until each has
    triggered its mlops run (one per new snapshot) and those are final; return the new mlops
    runs. A quiet spell after them catches a second, unwanted mlops run."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while len(new := runs(platform)[0] - before[0]) < dataops:
        assert time.monotonic() < deadline, "no dataops run was started"
        time.sleep(0.5)
    with api_client(platform.api_url) as client:
        for run_id in new:
            done = follow(client, run_id, RUN_TIMEOUT_S, label="dataops")
            assert done.run.state_name == "Completed", done.run.state
        # The trigger reacts to the snapshot event within seconds; more under load.
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while len(runs(platform)[1] - before[1]) < dataops:
            assert time.monotonic() < deadline, "no mlops run was triggered"
            time.sleep(0.5)
        time.sleep(5)  # a duplicate trigger would start its run meanwhile
        triggered = runs(platform)[1] - before[1]
        for run_id in triggered:
            done = follow(client, run_id, RUN_TIMEOUT_S, label="mlops")
            assert done.run.state_name == "Completed", done.run.state
    return sorted(triggered)


def test_idle_ticks_start_nothing(platform: Deployed) -> None:
    before = runs(platform)
    beat = platform.settings.sensor_dir / "heartbeat.json"
    first = json.loads(beat.read_text())["at"]
    time.sleep(5 * TICK_S)
    assert json.loads(beat.read_text())["at"] > first  # it ticked meanwhile
    assert runs(platform) == before


def test_a_batch_being_written_waits_then_runs_dataops_and_mlops_once(
    platform: Deployed,
) -> None:
    before = runs(platform)
    projects, tags = shipped_less(1)
    batch = platform.data_root / "landing" / "2026-11-30"
    batch.mkdir()
    projects.to_csv(batch / "projects.csv", index=False)
    text = tags.to_csv(index=False)
    step = len(text) // 40 + 1

    def write_slowly() -> None:  # a slow writer: 40 appends over 4 s, no marker
        with (batch / "tags.csv").open("w") as handle:
            for start in range(0, len(text), step):
                handle.write(text[start : start + step])
                handle.flush()
                time.sleep(0.1)

    writer = threading.Thread(target=write_slowly)
    writer.start()
    while writer.is_alive():
        assert runs(platform) == before, "picked up a half-written file"
        time.sleep(0.2)
    [mlops] = wait_for_new_runs(platform, before, dataops=1)
    assert len(runs(platform)[0] - before[0]) == 1
    production = registry.get_version(platform.settings)
    assert production is not None and production.tags["prefect_flow_run_id"] == str(mlops)


def test_the_same_data_by_webhook_and_a_replayed_notice_start_nothing(
    platform: Deployed,
) -> None:
    before = runs(platform)
    batch = platform.data_root / "landing" / "2026-11-30"
    body = json.dumps(
        {"projects_uri": str(batch / "projects.csv"), "tags_uri": str(batch / "tags.csv")}
    ).encode()
    headers = {"Content-Type": "application/json", **sign(SECRET, body)}
    first = httpx.post(platform.hook_url, content=body, headers=headers, trust_env=False)
    replay = httpx.post(platform.hook_url, content=body, headers=headers, trust_env=False)
    assert first.status_code == 200 and first.json()["duplicate"] is True, first.text
    assert "from sensor:landing" in first.json()["reason"]
    assert replay.status_code == 409
    time.sleep(5)
    assert runs(platform) == before


def test_rows_appended_to_the_sql_table_start_one_run(platform: Deployed) -> None:
    before = runs(platform)
    versions = len(registry.connect(platform.settings).search_model_versions("name='tagifai'"))
    # The warehouse first holds what the landing batch held: a duplicate, no run.
    projects, tags = shipped_less(1)
    with sqlite3.connect(platform.data_root / "warehouse.db") as connection:
        projects.to_sql("projects", connection, index=False)
        tags.to_sql("tags", connection, index=False)
    time.sleep(5 * TICK_S)
    assert runs(platform) == before
    # Then the loader appends a project annotated since, and its tag: new data, one chain.
    new_id = int(projects["id"].max()) + 1
    project = pd.DataFrame(
        {
            "id": [new_id],
            "created_on": ["2026-11-30 00:00:00"],
            "title": ["Drift monitoring for sentence embeddings in production"],
            "description": ["Deploy, monitor and roll back models with feature stores."],
        }
    )
    with sqlite3.connect(platform.data_root / "warehouse.db") as connection:
        project.to_sql("projects", connection, index=False, if_exists="append")
        pd.DataFrame({"id": [new_id], "tag": ["mlops"]}).to_sql(
            "tags", connection, index=False, if_exists="append"
        )
    wait_for_new_runs(platform, before, dataops=1)
    after = runs(platform)
    assert (len(after[0] - before[0]), len(after[1] - before[1])) == (1, 1)
    new_versions = registry.connect(platform.settings).search_model_versions("name='tagifai'")
    assert len(new_versions) == versions + 1  # one model for the one new snapshot


def test_a_restarted_sensor_announces_nothing_again(platform: Deployed) -> None:
    import os
    import signal

    before = runs(platform)
    record = read_record(platform.settings, "sensor")
    assert record is not None
    os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while status(platform.settings)["sensor"].state == "running":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    up(platform.settings, ("sensor",))
    time.sleep(5 * TICK_S)
    assert status(platform.settings)["sensor"].state == "running"
    assert runs(platform) == before


def test_a_new_batch_by_webhook_runs_once(platform: Deployed) -> None:
    before = runs(platform)
    projects, tags = shipped_less(5)
    batch = platform.data_root / "incoming" / "new-batch"
    batch.mkdir(parents=True)
    projects.to_csv(batch / "projects.csv", index=False)
    tags.to_csv(batch / "tags.csv", index=False)
    response = send_data_arrived(
        platform.hook_url, SECRET, str(batch / "projects.csv"), str(batch / "tags.csv")
    )
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while not (new := runs(platform)[0] - before[0]):
        assert time.monotonic() < deadline, "the webhook's event started no dataops run"
        time.sleep(0.5)
    # The same tables dropped in the landing directory later: the sensor sees a duplicate.
    shutil.copytree(batch, platform.data_root / "landing" / "late-copy")
    time.sleep(5 * TICK_S)
    assert runs(platform)[0] - before[0] == new
