"""The deploy re-check that keeps two concurrent runs from deploying a worse model."""

from dataclasses import replace

from tagifai import registry
from tagifai.data import split_data
from tagifai.evaluate import Decision
from tagifai.train import ModelParams
from tagifai.workflow import deploy_if_still_better, evaluate_candidate, train_candidate


def test_deploy_rechecks_when_production_moved(trained_stores, shipped_features):
    split = split_data(shipped_features)
    production = registry.get_version(trained_stores).version
    weak = train_candidate(
        trained_stores,
        split,
        ModelParams(char_weight=0.0, classifier="sgd", C=1e-4, class_weight=None, min_df=10),
        {},
    )
    evaluation = evaluate_candidate(trained_stores, weak.version, split)
    # Pretend it was judged against an older production (e.g. none) that has since moved.
    stale = replace(
        evaluation,
        production_version=None,
        decision=Decision(True, "first model: no production model to beat"),
    )
    outcome = deploy_if_still_better(trained_stores, stale, split)
    assert not outcome.deployed
    assert f"production moved to v{production}" in outcome.reason
    assert registry.get_version(trained_stores).version == production
