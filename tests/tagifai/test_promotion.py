"""Promotion as a transaction (plain runner), the alias history, rollback and convergence."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tagifai import history, pipeline, promotion, registry, steps
from tagifai.config import Settings
from tagifai.monitoring import references_path
from tagifai.promotion import Promotion, PromotionError, Step
from tagifai.train import ModelParams
from tests.conftest import settings_for

WEAK = ModelParams(char_weight=0.0, classifier="sgd", C=1e-4, class_weight=None, min_df=10)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Settings:
    """v1 deployed by the plain pipeline; v2 registered (weak), references staged, undecided."""
    settings = settings_for(tmp_path_factory.mktemp("promotion") / "stores")
    data_path = steps.features_from_sources(
        settings, str(settings.projects_csv), str(settings.tags_csv)
    )
    assert pipeline.run_mlops(settings, data_path, tags={"source": "tests"}).deployed
    trained = steps.train_model(settings, data_path, WEAK, {"source": "tests"})
    assert trained.version == 2
    staged = steps.set_monitoring_references(settings, 2, data_path)
    shutil.copy(staged, settings.stores_dir / "v2-references.json")
    return settings


@pytest.fixture
def stores(base: Settings, tmp_path: Path) -> Settings:
    """A private copy of the base stores (MLflow's database included)."""
    shutil.copytree(base.stores_dir, tmp_path / "stores")
    return settings_for(tmp_path / "stores")


def staged_v2(settings: Settings) -> Path:
    target = settings.references_dir / ".staged" / "v2-test.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(settings.stores_dir / "v2-references.json", target)
    return target


def deploy_v2(settings: Settings, reason: str = "tests") -> Promotion:
    return Promotion("deploy", 2, 1, reason, "pytest", "run-42", staged_v2(settings))


def snapshot(settings: Settings) -> tuple:
    """Everything a promotion touches: the alias, v2's references, the history."""
    refs = references_path(settings, 2)
    return (
        registry.production_version(settings),
        refs.read_bytes() if refs.exists() else None,
        [(m.entry_id, m.state) for m in history.entries(settings)],
    )


def test_deploy_then_rollback_are_recorded_in_the_history(stores):
    move = promotion.promote(stores, deploy_v2(stores, "better on the test split"))
    assert registry.production_version(stores) == 2
    assert references_path(stores, 2).is_file()
    assert not (stores.references_dir / ".staged" / "v2-test.json").exists()
    entry, first = history.entries(stores)  # newest first: this move, then v1's own
    assert (first.from_version, first.to_version, first.action) == (None, 1, "deploy")
    assert (entry.action, entry.from_version, entry.to_version, entry.state) == (
        "deploy", 1, 2, "applied",
    )  # fmt: skip
    assert (entry.reason, entry.actor, entry.flow_run_id) == (
        "better on the test split", "pytest", "run-42",
    )  # fmt: skip
    assert entry.entry_id == move.entry_id

    back = steps.rollback_model(stores, "v2 is worse on new labels", steps.deploy_lock(stores))
    assert (back.from_version, back.to_version) == (2, 1)
    assert registry.production_version(stores) == 1
    latest = history.entries(stores)[0]
    assert (latest.action, latest.to_version, latest.reason) == (
        "rollback", 1, "v2 is worse on new labels",
    )  # fmt: skip
    # v1 replaced nothing: a second rollback has nowhere to go, and changes nothing.
    before = snapshot(stores)
    with pytest.raises(PromotionError, match="replaced no earlier version"):
        steps.rollback_model(stores, "again", steps.deploy_lock(stores))
    assert snapshot(stores) == before
    # Explicitly, to v2 again (it has references now).
    steps.rollback_model(stores, "v1 is worse after all", steps.deploy_lock(stores), to_version=2)
    assert registry.production_version(stores) == 2


@pytest.mark.parametrize("after", [step.name for step in promotion.STEPS])
def test_a_failure_after_any_step_leaves_everything_as_it_was(stores, monkeypatch, after):
    def boom(settings, move, done):
        raise RuntimeError(f"injected after {after}")

    position = [step.name for step in promotion.STEPS].index(after) + 1
    failing = Step("injected", boom, lambda settings, move, token: None)
    steps_with_fault = promotion.STEPS[:position] + (failing,) + promotion.STEPS[position:]
    monkeypatch.setattr(promotion, "STEPS", steps_with_fault)
    before = snapshot(stores)

    with pytest.raises(RuntimeError, match="injected"):
        promotion.promote(stores, deploy_v2(stores))

    assert snapshot(stores) == before  # alias, references and history: as they were
    assert before[0] == 1


@pytest.mark.parametrize(
    ("move", "message"),
    [
        (Promotion("rollback", 2, 1, "r", "pytest"), "v2 has no monitoring references"),
        (Promotion("deploy", 9, 1, "r", "pytest"), "no model version 9"),
        (Promotion("deploy", 1, 1, "r", "pytest"), "already in production"),
        (Promotion("deploy", 2, None, "r", "pytest", references=Path("/dev/null")), "moved"),
    ],
)
def test_a_refused_promotion_changes_nothing(stores, move, message):
    before = snapshot(stores)
    with pytest.raises(PromotionError, match=message):
        promotion.promote(stores, move)
    assert snapshot(stores) == before


def test_a_rollback_needs_a_reason_and_a_production_model(stores, tmp_path):
    with pytest.raises(PromotionError, match="needs a reason"):
        steps.rollback_model(stores, "  ", steps.deploy_lock(stores))
    empty = settings_for(tmp_path / "empty")
    with pytest.raises(PromotionError, match="no production model"):
        steps.rollback_model(empty, "why", steps.deploy_lock(empty))


def test_crash_leftovers_are_settled_by_reconcile(stores):
    # A run killed after recording the move but before moving the alias...
    never_moved = history.record(
        stores, action="deploy", from_version=1, to_version=2, reason="r", actor="killed"
    )
    assert history.entries(stores)[0].state == "pending"
    assert steps.settle_history(stores, steps.deploy_lock(stores)) == [2]
    assert history.entries(stores)[0].state == "abandoned"
    assert registry.production_version(stores) == 1
    # ...and one killed after moving the alias but before finishing the entry.
    moved = history.record(
        stores, action="deploy", from_version=1, to_version=2, reason="r", actor="killed"
    )
    registry.set_production(stores, 2)
    history.reconcile(stores)
    states = {m.entry_id: m.state for m in history.entries(stores)}
    assert (states[never_moved], states[moved]) == ("abandoned", "applied")
    assert history.reconcile(stores) == []  # settled once


def test_undecided_versions_of_dead_runs_are_abandoned(stores):
    assert "decision" not in registry.get_version(stores, 2).tags
    assert steps.abandon_undecided(stores, lambda version: False) == []
    assert steps.abandon_undecided(stores, lambda version: True) == [2]
    assert registry.get_version(stores, 2).tags["decision"] == "abandoned"
    assert registry.get_version(stores, 1).tags["decision"] == "deployed"
    assert steps.abandon_undecided(stores, lambda version: True) == []


def test_status_shows_the_history(stores):
    from tagifai.status import collect_status

    promotion.promote(stores, deploy_v2(stores, "status test"))
    state = collect_status(stores)
    assert state["production"]["version"] == 2
    row = state["production_history"][0]
    assert (row["from"], row["to"], row["by"], row["reason"]) == (
        "v1",
        "v2",
        "pytest",
        "status test",
    )
