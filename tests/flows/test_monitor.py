"""The monitor, rollback and promotion flows on a real Prefect API.

The base stores hold the shipped snapshot (from ``dataops_done``) and a production v1 trained
by the plain pipeline on its first 600 projects, so 164 labelled projects of the snapshot are
new to it. Each test works on a private copy.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tagifai import extract, history, pipeline, promotion, registry, steps
from tagifai.config import Settings
from tagifai.data import clean_text
from tagifai.features import build_text
from tagifai.predict import load_served, predict_batch
from tagifai.predlog import write_batches
from tagifai.train import ModelParams
from tests.conftest import settings_for
from tests.flows.conftest import flow_environment
from tests.flows.test_mlops import flow_run_artifacts

pytestmark = pytest.mark.flows

TRAINED_ON = 600
WEAK = ModelParams(char_weight=0.0, classifier="sgd", C=1e-4, class_weight=None, min_df=10)
OTHER_DOMAIN = (
    "slow cooked beef stew with carrots potatoes and fresh thyme for winter evenings",
    "how to knit a wool scarf with a simple garter stitch pattern for beginners",
    "the history of the roman empire from augustus to the fall of constantinople",
    "best hiking trails in the alps with mountain huts and lake views in summer",
    "baking sourdough bread at home with a starter flour water and salt",
    "learn to play guitar chords and strumming patterns for folk songs",
)


@pytest.fixture(scope="module")
def monitored(dataops_done, tmp_path_factory) -> Settings:
    source, _ = dataops_done
    root = tmp_path_factory.mktemp("monitored")
    shutil.copytree(source.stores_dir, root / "stores")
    settings = settings_for(root / "stores")
    projects = pd.read_csv(settings.projects_csv).sort_values("id").head(TRAINED_ON)
    tags = pd.read_csv(settings.tags_csv)
    projects.to_csv(root / "projects.csv", index=False)
    tags[tags["id"].isin(projects["id"])].to_csv(root / "tags.csv", index=False)
    data_path = steps.features_from_sources(
        settings, str(root / "projects.csv"), str(root / "tags.csv")
    )
    tags_ = {"source": "tests", "features_id": data_path.stem}
    assert pipeline.run_mlops(settings, data_path, tags=tags_).deployed
    return settings


@pytest.fixture
def stores(monitored: Settings, tmp_path: Path) -> Settings:
    shutil.copytree(monitored.stores_dir, tmp_path / "stores")
    return settings_for(tmp_path / "stores")


def log_predictions(settings: Settings, texts: list[str]) -> None:
    """What the service does for these texts: predict with production and log."""
    served = load_served(settings)
    batches = [
        predict_batch(served, texts[i : i + 100]).log_batch("service")
        for i in range(0, len(texts), 100)
    ]
    write_batches(settings.predictions_dir, batches)


def shipped_texts(settings: Settings) -> list[str]:
    projects = pd.read_csv(settings.projects_csv)
    return build_text(projects["title"], projects["description"]).tolist()


def other_domain(n: int = 300) -> list[str]:
    rng = np.random.default_rng(3)
    return [clean_text(f"{rng.choice(OTHER_DOMAIN)} {rng.choice(OTHER_DOMAIN)}") for _ in range(n)]


def run_monitor(settings: Settings, **parameters):
    from flows.monitor import monitor

    with flow_environment(settings.stores_dir):
        return monitor(return_state=True, **parameters)


def events(name: str, since: datetime) -> list[dict]:
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    with get_client(sync_client=True) as client:
        response = client.request(
            "POST",
            "/events/filter",
            json={
                "filter": EventFilter(
                    occurred=EventOccurredFilter(since=since),
                    event=EventNameFilter(name=[name]),
                ).model_dump(mode="json"),
                "limit": 50,
            },
        )
    return response.json()["events"]


def wait_for_events(name: str, since: datetime, count: int, seconds: float = 60) -> list[dict]:
    deadline = time.monotonic() + seconds
    while len(found := events(name, since)) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def test_stable_traffic_continues_and_the_run_shows_table_plot_and_report(stores):
    since = datetime.now(UTC)
    log_predictions(stores, shipped_texts(stores))
    state = run_monitor(stores)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["action"] == "continue", result
    assert result["predictions"] == 764 and result["new_labels"] == 764 - TRAINED_ON
    artifacts = flow_run_artifacts(state)
    assert {"drift-table", "drift-plot", "monitor-report"} <= set(artifacts)
    table = json.loads(artifacts["drift-table"].data)
    features = ["tag", "text_length", "unseen_share", "confidence", "embedding_distance"]
    assert [row["feature"] for row in table] == features
    assert all(row["psi"] < 0.1 or not row["harmful_direction"] for row in table)
    assert artifacts["drift-plot"].data.startswith("data:image/png;base64,")
    assert base64.b64decode(artifacts["drift-plot"].data.split(",", 1)[1])[:4] == b"\x89PNG"
    assert "Decision: continue" in artifacts["monitor-report"].data
    assert "new labels" in artifacts["monitor-report"].data
    from tagifai.status import collect_status

    assert collect_status(stores)["last_monitor"]["action"] == "continue"
    assert registry.production_version(stores) == 1
    time.sleep(2)
    assert events("tagifai.drift.detected", since) == []


def test_drift_requests_one_retrain_then_inspects_the_same_drift(stores):
    since = datetime.now(UTC)
    log_predictions(stores, other_domain())
    first = run_monitor(stores).result()
    assert first["action"] == "retrain" and first["reason"].startswith("unseen_share PSI")
    [event] = wait_for_events("tagifai.drift.detected", since, 1)
    assert event["resource"]["prefect.resource.id"] == "tagifai.model.v1"
    assert event["payload"]["snapshot_id"] == extract.latest_snapshot_id(stores)
    assert event["id"] == first["event_id"]

    second = run_monitor(stores).result()
    assert second["action"] == "inspect" and "already requested" in second["reason"]
    # Events reach the API asynchronously: wait for the inspect event, then count again.
    assert len(wait_for_events("tagifai.drift.inspect", since, 1, seconds=60)) == 1
    assert len(events("tagifai.drift.detected", since)) == 1  # one retrain per drift


def relabel_new_projects(settings: Settings) -> None:
    """Publish a snapshot in which every project v1 was not trained on has a wrong tag."""
    snapshot = extract.load_snapshot(settings)
    projects = extract.read_parquet(snapshot.projects_path)
    tags = extract.read_parquet(snapshot.tags_path)
    new = ~tags["id"].isin(projects.sort_values("id")["id"].head(TRAINED_ON))
    wrong = {"computer-vision": "mlops", "natural-language-processing": "computer-vision"}
    tags.loc[new, "tag"] = tags.loc[new, "tag"].map(lambda tag: wrong.get(tag, "computer-vision"))
    staged = extract.stage_tables(settings, projects, tags)
    extract.publish_snapshot(settings, staged, {"projects": "tests", "tags": "tests"})


def test_new_labels_production_gets_wrong_retrain(stores):
    relabel_new_projects(stores)
    result = run_monitor(stores).result()
    assert result["action"] == "retrain", result
    assert "new labels" in result["reason"] and result["new_labels"] == 764 - TRAINED_ON


def promote_weak_v2(settings: Settings) -> int:
    """Deploy a deliberately weak model over v1 (as a bad deploy would)."""
    frame = next(settings.training_dir.glob("sources-*.parquet"))
    weak = steps.train_model(settings, frame, WEAK, {"features_id": frame.stem})
    references = steps.set_monitoring_references(settings, weak.version, frame)
    move = promotion.Promotion("deploy", weak.version, 1, "tests", "pytest", None, references)
    promotion.promote(settings, move)
    return weak.version


def test_the_previous_version_doing_better_on_new_labels_rolls_back(stores):
    since = datetime.now(UTC)
    weak = promote_weak_v2(stores)
    state = run_monitor(stores)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["action"] == "rollback" and result["rolled_back_to"] == 1, result
    assert registry.production_version(stores) == 1
    move = history.entries(stores)[0]
    assert (move.action, move.from_version, move.to_version) == ("rollback", weak, 1)
    assert move.actor.startswith("monitor flow run") and move.reason.startswith("monitor: ")
    assert move.flow_run_id == str(state.state_details.flow_run_id)
    [event] = wait_for_events("tagifai.model.rolled_back", since, 1)
    assert event["payload"]["from_version"] == weak and event["payload"]["to_version"] == 1


def task_states(flow_run_id) -> dict[str, str]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {run.name.rsplit("-", 1)[0]: run.state_name for run in runs}


@pytest.mark.parametrize("after", ["record_alias_move", "finish_alias_move"])
def test_a_failure_inside_the_rollback_transaction_leaves_production_as_it_was(
    stores, monkeypatch, after
):
    """Prefect's transaction runs each finished step's rollback hook: even the alias move."""
    from flows.rollback import rollback

    weak = promote_weak_v2(stores)
    before = (registry.production_version(stores), [m.entry_id for m in history.entries(stores)])

    def boom(settings, move, done):
        raise RuntimeError("injected failure")

    position = [s.name for s in promotion.STEPS].index(after) + 1
    failing = promotion.Step("injected", boom, lambda settings, move, token: None)
    monkeypatch.setattr(
        promotion, "STEPS", promotion.STEPS[:position] + (failing,) + promotion.STEPS[position:]
    )
    with flow_environment(stores.stores_dir):
        state = rollback(reason="injected", return_state=True)

    assert state.is_failed()
    assert before == (weak, [m.entry_id for m in history.entries(stores)])
    after_state = (
        registry.production_version(stores),
        [m.entry_id for m in history.entries(stores)],
    )
    assert after_state == before
    states = task_states(state.state_details.flow_run_id)
    done = [s.name for s in promotion.STEPS[:position]]
    assert all(states[name] == "RolledBack" for name in done), states
    assert states["injected"] == "Failed"


def test_a_failure_inside_the_mlops_promotion_leaves_production_as_it_was(stores, monkeypatch):
    from flows.mlops import mlops

    references_before = (stores.references_dir / "v1.json").read_bytes()

    def boom(settings, move, done):
        raise RuntimeError("injected failure after the alias moved")

    failing = promotion.Step("injected", boom, lambda settings, move, token: None)
    monkeypatch.setattr(promotion, "STEPS", promotion.STEPS + (failing,))
    with flow_environment(stores.stores_dir):
        # f1_margin 1.0: the candidate counts as improved, so the promotion runs.
        state = mlops(n_trials=0, f1_margin=1.0, class_tolerance=1.0, return_state=True)

    assert state.is_failed()
    assert "injected failure" in str(state.message) or state.is_failed()
    assert registry.production_version(stores) == 1
    assert (stores.references_dir / "v1.json").read_bytes() == references_before
    assert not (stores.references_dir / "v2.json").exists()
    assert [m.to_version for m in history.entries(stores)] == [1]
    # The candidate has no decision; the next run abandons it, then deploys its own.
    assert "decision" not in registry.get_version(stores, 2).tags
    monkeypatch.undo()
    with flow_environment(stores.stores_dir):
        again = mlops(n_trials=0, f1_margin=1.0, class_tolerance=1.0, force=True)
    assert registry.get_version(stores, 2).tags["decision"] == "abandoned"
    assert again["deployed"] is True and registry.production_version(stores) == again["version"]
