"""DataOps end to end on a real Prefect API and Dask runner."""

from __future__ import annotations

import pandas as pd
import pytest

from tagifai import store
from tagifai.extract import latest_snapshot_id, load_snapshot
from tagifai.features import current_feature_set
from tests.conftest import REPO
from tests.flows.conftest import tree_digest

pytestmark = pytest.mark.flows


def test_good_run_materialises_every_project(dataops_done):
    settings, state = dataops_done
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["features_written"] == 764
    assert summary["rows_materialized"] == 764
    snapshot = load_snapshot(settings)
    assert snapshot.id == summary["snapshot"] == latest_snapshot_id(settings)
    assert current_feature_set(settings).rows == 764
    assert store.count_online_rows(settings) == 764
    online = store.get_online_features(settings, [6])[0]
    assert online["tag"] == "computer-vision"
    assert online["text"].startswith("comparison between yolo and rcnn")


def test_run_is_labelled_with_its_snapshot(dataops_done):
    from prefect import get_client

    _, state = dataops_done
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.labels["tagifai.snapshot"] == state.result()["snapshot"]


def test_features_are_readable_historically(dataops_done):
    from tagifai.steps import extract_features

    settings, _ = dataops_done
    frame = pd.read_parquet(extract_features(settings, None))
    assert len(frame) == 764 and frame["id"].is_unique
    assert frame["tag"].value_counts()["mlops"] == 63


def flow_run_artifacts(state) -> dict:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )
    return {a.key: a for a in artifacts if a.key}


def test_artifacts_tell_the_story(dataops_done):
    _, state = dataops_done
    by_key = flow_run_artifacts(state)
    assert "dataops-summary" in by_key and "data-docs" in by_key
    assert "| features written | 764 |" in by_key["dataops-summary"].data
    assert "failed-expectations" not in by_key


def test_rerun_on_unchanged_data_is_a_no_op(stores_copy, dataops_done):
    from flows.dataops import dataops

    before = tree_digest(stores_copy.stores_dir)
    state = dataops(return_state=True)
    assert state.is_completed(), state.message
    snapshot = dataops_done[1].result()["snapshot"]
    assert state.message == f"no new data: snapshot {snapshot} already published"
    assert state.result()["new_data"] is False
    after = tree_digest(stores_copy.stores_dir)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not {k for k in changed if not k.startswith("prefect/")}, changed
    assert "no new data" in flow_run_artifacts(state)["dataops-summary"].data
    assert published_events(state.state_details.flow_run_id) == []


def published_events(flow_run_id) -> list:
    """The ``tagifai.snapshot.published`` events a flow run emitted."""
    import time

    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    time.sleep(2)  # events reach the API shortly after they are emitted
    event_filter = EventFilter(
        event=EventNameFilter(name=["tagifai.snapshot.published"]),
        related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
    )
    with get_client(sync_client=True) as client:
        return list(client.read_events(event_filter, limit=50).events)


def announced_event_id(settings, snapshot_id: str):
    import json
    import uuid

    from tagifai.extract import announcement_path

    return uuid.UUID(json.loads(announcement_path(settings, snapshot_id).read_text())["id"])


def test_a_new_snapshot_is_announced_once(dataops_done):
    settings, state = dataops_done
    summary = state.result()
    assert summary["new_data"] is True
    (event,) = published_events(state.state_details.flow_run_id)
    assert event.id == announced_event_id(settings, summary["snapshot"])
    assert event.payload["snapshot_id"] == summary["snapshot"]
    assert event.payload["labelled_rows"] == 764
    assert event.payload["source"]["projects"].endswith("data/raw/projects.csv")
    assert event.related[0]["prefect.resource.id"].startswith("prefect.flow-run.")


def _write_projects(tmp_path, mutate):
    frame = pd.read_csv(REPO / "data/raw/projects.csv", dtype=str)
    frame = mutate(frame)
    path = tmp_path / "projects.csv"
    frame.to_csv(path, index=False)
    return str(path)


BAD_PROJECTS = {
    "duplicate id": (lambda f: pd.concat([f, f.head(1)]), "expect_column_values_to_be_unique"),
    "bad created_on": (
        lambda f: f.assign(created_on=f["created_on"].where(f.index != 3, "20/02/2020")),
        "strftime",
    ),
    "empty title": (lambda f: f.assign(title=f["title"].where(f.index != 5, "")), "title"),
    "orphan tag": (lambda f: f.iloc[1:], "labelled"),
}


@pytest.mark.parametrize("case", list(BAD_PROJECTS))
def test_invalid_data_fails_and_changes_nothing(stores_copy, tmp_path, case):
    from flows.dataops import dataops

    mutate, fragment = BAD_PROJECTS[case]
    before = tree_digest(stores_copy.stores_dir)
    state = dataops(projects_uri=_write_projects(tmp_path, mutate), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=fragment) as error:
        state.result()
    assert "unexpected" in str(error.value)
    artifacts = flow_run_artifacts(state)
    assert "rejected, nothing published" in artifacts["dataops-summary"].data
    assert "failed-expectations" in artifacts and "data-docs" in artifacts
    after = tree_digest(stores_copy.stores_dir)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not {k for k in changed if not k.startswith(("gx/", "prefect/"))}, changed


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "source not found"),
        (b"", "source is empty"),
        (b"id,created_on,title,description\n", "has no rows"),
        (b"id,created_on,title,description\n1,2020-01-01 00:00:00,caf\xe9,x\n", "not valid UTF-8"),
    ],
)
def test_unreadable_sources_fail_clearly(stores_copy, tmp_path, content, fragment):
    from flows.dataops import dataops

    path = tmp_path / "projects.csv"
    if content is not None:
        path.write_bytes(content)
    before = tree_digest(stores_copy.stores_dir)
    state = dataops(projects_uri=str(path), return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match=fragment):
        state.result()
    after = tree_digest(stores_copy.stores_dir)
    assert {k: v for k, v in after.items() if not k.startswith("prefect/")} == {
        k: v for k, v in before.items() if not k.startswith("prefect/")
    }


def test_validations_ran_in_parallel_on_dask(dataops_done):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    _, state = dataops_done
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    spans = {run.name.rsplit("-", 1)[0]: (run.start_time, run.end_time) for run in runs}
    (p_start, p_end), (t_start, t_end) = spans["validate_projects"], spans["validate_tags"]
    assert p_start < t_end and t_start < p_end  # the two validations overlapped in time


@pytest.mark.parametrize(("problem", "attempts"), [("bad input", 1), ("database locked", 3)])
def test_extract_retries_io_hiccups_but_not_bad_input(prefect_api, tmp_path, problem, attempts):
    """A missing source fails at once; a locked database is an I/O hiccup, retried."""
    import contextlib
    import sqlite3

    from flows.dataops import extract_data
    from tests.conftest import settings_for

    database = tmp_path / "warehouse.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE projects (id INTEGER)")
    if problem == "bad input":
        uri, holder = str(tmp_path / "missing.csv"), contextlib.nullcontext()
    else:
        uri = f"sqlite:///{database}?timeout=0.1#projects"
        holder = contextlib.closing(sqlite3.connect(database, isolation_level=None))
    with holder as connection:
        if connection is not None:
            connection.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        state = extract_data.with_options(retry_delay_seconds=0)(
            settings_for(tmp_path / "stores"), uri, uri, return_state=True
        )
    assert state.is_failed()
    assert recorded_task_run(state.state_details.task_run_id).run_count == attempts


def recorded_task_run(task_run_id, timeout_s: float = 30.0):
    """The task run as the API recorded it: task runs reach the API as events, so a moment
    after they end; wait until the API holds its final state."""
    import time

    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            try:
                run = client.read_task_run(task_run_id)
                if run.state is not None and run.state.is_final():
                    return run
            except ObjectNotFound:
                pass
            assert time.monotonic() < deadline, f"task run {task_run_id} not recorded"
            time.sleep(0.5)
