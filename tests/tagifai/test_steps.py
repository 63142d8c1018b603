"""The steps both pipelines share: deploy's re-check and lock, and the plain decide branch."""

import threading
from dataclasses import replace

from tagifai import files, pipeline, registry, steps
from tagifai.evaluate import Decision, ImprovementRule
from tagifai.train import ModelParams

WEAK = ModelParams(char_weight=0.0, classifier="sgd", C=1e-4, class_weight=None, min_df=10)


def test_deploy_rechecks_when_production_moved(trained_stores, shipped_frame):
    production = registry.get_version(trained_stores).version
    weak = steps.train_model(trained_stores, shipped_frame, WEAK, {})
    evaluation = steps.evaluate_model(
        trained_stores, shipped_frame, weak.version, ImprovementRule()
    )
    # Pretend it was judged against an older production (e.g. none) that has since moved.
    stale = replace(
        evaluation,
        production_version=None,
        decision=Decision(True, "first model: no production model to beat"),
    )
    lock = steps.deploy_lock(trained_stores)
    outcome = steps.deploy_model(trained_stores, stale, shipped_frame, ImprovementRule(), lock)
    assert not outcome.deployed
    assert f"production moved to v{production}" in outcome.reason
    assert registry.get_version(trained_stores).version == production


def test_plain_deploy_waits_for_the_deploy_lock(tmp_path, shipped_frame):
    from tests.conftest import settings_for

    settings = settings_for(tmp_path)
    trained = steps.train_model(settings, shipped_frame, ModelParams(), {})
    evaluation = steps.evaluate_model(settings, shipped_frame, trained.version, ImprovementRule())
    assert evaluation.decision.improved  # the first model
    outcomes: list[bool] = []

    def decide() -> None:
        outcomes.append(pipeline.decide(settings, evaluation, shipped_frame, ImprovementRule())[0])

    with files.file_lock(settings.locks_dir / "deploy.lock"):  # another deploy is under way
        worker = threading.Thread(target=decide)
        worker.start()
        worker.join(timeout=5)
        assert worker.is_alive(), "deployed without taking the deploy lock"
        assert registry.get_version(settings) is None
    worker.join(timeout=60)
    assert outcomes == [True]
    assert registry.get_version(settings).version == trained.version


def test_plain_decide_files_the_report_when_not_deployed(trained_stores, shipped_frame):
    weak = steps.train_model(trained_stores, shipped_frame, WEAK, {})
    evaluation = steps.evaluate_model(
        trained_stores, shipped_frame, weak.version, ImprovementRule()
    )
    assert not evaluation.decision.improved
    deployed, reason = pipeline.decide(trained_stores, evaluation, shipped_frame, ImprovementRule())
    assert not deployed and reason == evaluation.decision.reason
    report = trained_stores.reports_dir / f"regression-v{weak.version}.md"
    assert f"not deployed: {reason}" in report.read_text()
