"""MLOps end to end on a real Prefect API and Dask runner."""

from __future__ import annotations

import json
import threading

import pytest

from tagifai import registry
from tests.http_receiver import Receiver, closed_port_url

pytestmark = pytest.mark.flows


def flow_run_artifacts(state) -> dict[str, object]:
    """Artifacts of a flow run and of its subflow runs (``decide``)."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])
            )
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[run_id, *(c.id for c in children)])
            )
        )
    return {a.key: a for a in artifacts if a.key}


@pytest.fixture(scope="module")
def first_and_regressed(prefect_api, dataops_done, tmp_path_factory):
    """A first run (deploys), then a deliberately weak one (regresses), on one store copy."""
    import shutil

    from flows.mlops import mlops
    from tests.conftest import settings_for
    from tests.flows.conftest import flow_environment

    source, _ = dataops_done
    stores = tmp_path_factory.mktemp("mlops") / "stores"
    shutil.copytree(source.stores_dir, stores)
    with Receiver() as receiver:
        urls = f"{closed_port_url()},{receiver.url}"
        with flow_environment(stores, TAGIFAI_NOTIFY_URLS=urls):
            first = mlops(n_trials=4, return_state=True)
            second = mlops(n_trials=3, search_space="weak", return_state=True)
    return settings_for(stores), first, second, receiver.messages


def test_first_run_deploys(first_and_regressed):
    settings, first, _, _ = first_and_regressed
    assert first.is_completed(), first.message
    result = first.result()
    assert result["decision"] == "improved" and result["deployed"] is True
    assert result["version"] == 1
    references = json.loads((settings.references_dir / "v1.json").read_text())
    assert set(references["label_distribution"]) == {
        "computer-vision",
        "mlops",
        "natural-language-processing",
        "other",
    }
    assert references["prediction_confidence"]["mean"] > 0.5
    assert references["text_length_words"]["quantiles"]["p50"] > 5


def test_first_run_logs_to_mlflow_with_lineage(first_and_regressed):
    settings, first, _, _ = first_and_regressed
    found = registry.get_version(settings, 1)
    assert found.snapshot_id == first.result()["snapshot"]
    assert found.tags["prefect_flow_run_id"] == str(first.state_details.flow_run_id)
    assert found.metrics["test_f1"] > 0.8 and "cv_f1_mean" in found.metrics


def test_first_run_artifacts_tell_the_story(first_and_regressed):
    _, first, _, _ = first_and_regressed
    artifacts = flow_run_artifacts(first)
    for key in ("optuna-best-trial", "evaluation-report", "confusion-matrix"):
        assert key in artifacts, sorted(artifacts)
    assert "| computer-vision |" in artifacts["evaluation-report"].data
    assert "Decision: improved" in artifacts["evaluation-report"].data


def test_weak_candidate_regresses_and_production_is_untouched(first_and_regressed):
    settings, _, second, _ = first_and_regressed
    assert second.is_completed(), second.message
    result = second.result()
    assert result["decision"] == "regressed" and result["deployed"] is False
    assert registry.get_version(settings).version == 1
    report = (settings.reports_dir / f"regression-v{result['version']}.md").read_text()
    assert "| class computer-vision |" in report
    assert "| slice short_text |" in report
    assert "regression-report" in flow_run_artifacts(second)
    last = json.loads((settings.reports_dir / "last_decision.json").read_text())
    assert last["improved"] is False and last["candidate_version"] == result["version"]


def test_notifications_reach_the_receiver_and_survive_a_dead_one(first_and_regressed):
    _, _, _, messages = first_and_regressed
    texts = [m["text"] for m in messages]
    assert any("v1 improved" in t for t in texts), texts
    assert any("regressed" in t for t in texts), texts


def test_decision_events_are_emitted(first_and_regressed):
    import time

    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    names: set[str] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and names != {
        "tagifai.model.improved",
        "tagifai.model.regressed",
    }:
        with get_client(sync_client=True) as client:
            response = client.request(
                "POST",
                "/events/filter",
                json={
                    "filter": EventFilter(
                        event=EventNameFilter(prefix=["tagifai.model."])
                    ).model_dump(mode="json"),
                    "limit": 50,
                },
            )
        # The session's other flows emit tagifai.model.rolled_back (tests/flows/test_monitor.py).
        names = {e["event"] for e in response.json()["events"]} - {"tagifai.model.rolled_back"}
        time.sleep(1)
    assert names == {"tagifai.model.improved", "tagifai.model.regressed"}


def test_two_runs_at_once_deploy_one_after_the_other(stores_copy):
    from prefect import get_client

    from flows.mlops import mlops

    states: list = []
    threads = [
        threading.Thread(
            target=lambda: states.append(mlops(n_trials=0, force=True, return_state=True))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(s.is_completed() for s in states), [s.message for s in states]
    versions = sorted(s.result()["version"] for s in states)
    assert versions == [1, 2]
    assert registry.get_version(stores_copy).version in versions
    with get_client(sync_client=True) as client:
        lock = client.read_global_concurrency_limit_by_name("tagifai-deploy")
    assert lock.limit == 1 and lock.active_slots == 0  # held by each deploy, then released


def test_a_trained_snapshot_is_not_trained_again_unless_forced(first_and_regressed):
    from flows.mlops import mlops
    from tests.flows.conftest import flow_environment

    settings, first, _, _ = first_and_regressed
    with flow_environment(settings.stores_dir):
        again = mlops(n_trials=4, return_state=True)
        assert again.is_completed(), again.message
        assert again.message.startswith(f"nothing to do: snapshot {first.result()['snapshot']}")
        assert again.result()["decision"] == "skipped" and again.result()["version"] == 1
        versions = registry.connect(settings).search_model_versions("name='tagifai'")
        latest = max(int(v.version) for v in versions)
        forced = mlops(n_trials=0, force=True, return_state=True).result()
    assert forced["version"] == latest + 1


def test_deploy_waits_for_the_global_deploy_lock(stores_copy):
    """While another deploy holds ``tagifai-deploy``, deploy_model waits: production stays."""
    from prefect import get_client
    from prefect.concurrency.sync import concurrency

    from flows.mlops import DEPLOY_LOCK, deploy_model
    from tagifai import steps
    from tagifai.evaluate import ImprovementRule
    from tagifai.train import ModelParams

    rule = ImprovementRule()
    data_path = steps.extract_features(stores_copy, None)
    trained = steps.train_model(stores_copy, data_path, ModelParams(), {})
    evaluation = steps.evaluate_model(stores_copy, data_path, trained.version, rule)
    references = steps.set_monitoring_references(stores_copy, trained.version, data_path)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(DEPLOY_LOCK, limit=1)
    outcomes: list = []
    worker = threading.Thread(
        target=lambda: outcomes.append(
            deploy_model(stores_copy, evaluation, data_path, rule, references)
        )
    )
    with concurrency(DEPLOY_LOCK, occupy=1, strict=True):  # another run is deploying
        worker.start()
        worker.join(timeout=8)
        assert worker.is_alive(), "deploy_model did not wait for the deploy lock"
        assert registry.get_version(stores_copy) is None
    worker.join(timeout=120)
    assert [o.deployed for o in outcomes] == [True]
    assert registry.get_version(stores_copy).version == trained.version


def test_auto_space_resolves_before_tuning(first_and_regressed):
    """The study is named after the resolved space and starts with the baseline trial."""
    from tagifai.train import ModelParams
    from tagifai.tune import load_study

    settings, first, _, _ = first_and_regressed
    study = load_study(settings, f"{first.result()['snapshot']}-default")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 4
    assert ModelParams() in [ModelParams.from_dict(t.user_attrs["params"]) for t in finished]
