"""The DataOps and MLOps pipelines in one plain process: the steps of :mod:`tagifai.steps`
in the order the flows run them, without Prefect (``tagifai train``, ``benchmarks/plain.py``).

Where the flows run steps side by side on Dask, this runs them one after the other; where
the flow's deploy holds a Prefect global concurrency limit, this holds a file lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tagifai import extract, steps
from tagifai.config import Settings
from tagifai.evaluate import ImprovementRule
from tagifai.train import ModelParams

OnStep = Callable[[str], None]


def _nothing(step: str) -> None:
    return None


@dataclass(frozen=True)
class DataOpsResult:
    snapshot_id: str
    rows_extracted: int
    features_written: int
    rows_materialized: int


def run_dataops(
    settings: Settings, projects_uri: str, tags_uri: str, on_step: OnStep = _nothing
) -> DataOpsResult:
    """Extract, validate, publish, compute features, fill the feature store: partition
    after partition, in this process.

    Raises:
        DataValidationError: the data broke a suite; nothing was published.
    """
    from tagifai import validation

    staged = steps.extract_data(settings, projects_uri, tags_uri)
    on_step("extract")
    try:
        reports = steps.validate_snapshot(settings, staged)
        validation.raise_for_failures(reports)
        on_step("validate")
        source = {"projects": projects_uri, "tags": tags_uri}
        snapshot = steps.publish_snapshot(settings, staged, source)
        parts = [steps.compute_features(settings, snapshot, i) for i in range(snapshot.partitions)]
        vectors = [steps.embed_texts(settings, todo, None) for part in parts for todo in part.todo]
        feature_set = steps.publish_features(settings, parts, vectors)
        on_step("features")
    finally:
        extract.discard_staged(staged)
    materialized = steps.cache_to_feature_store(settings, feature_set)
    on_step("feature_store")
    return DataOpsResult(
        snapshot.id, staged.projects_rows + staged.tags_rows, feature_set.rows, materialized.rows
    )


@dataclass(frozen=True)
class MLOpsResult:
    trained: steps.TrainedModel
    evaluation: steps.Evaluation
    deployed: bool
    reason: str
    params: ModelParams
    space: str


def run_mlops(
    settings: Settings,
    data_path: Path,
    *,
    n_trials: int = 0,
    search_space: str = "auto",
    rule: ImprovementRule = ImprovementRule(),
    tags: dict[str, str] | None = None,
    study_name: str | None = None,
    on_step: OnStep = _nothing,
) -> MLOpsResult:
    """Tune, train, evaluate and decide on a training frame (from Feast or from sources)."""
    from tagifai import tune

    space = tune.resolve_space(search_space, steps.training_rows(data_path), settings)
    params = tune.default_params(space)
    if n_trials > 0:
        name = f"{study_name or data_path.stem}-{space}"
        steps.tune_batch(settings, name, data_path, n_trials, space)
        params = steps.summarize_study(settings, name).best_params
    on_step("tune")
    trained = steps.train_model(settings, data_path, params, tags or {})
    on_step("train")
    evaluation = steps.evaluate_model(settings, data_path, trained.version, rule)
    snapshot = (tags or {}).get("snapshot_id", data_path.stem)  # or the sources' content id
    steps.write_model_card(settings, trained, evaluation, snapshot)
    on_step("evaluate")
    deployed, reason = decide(settings, evaluation, data_path, rule)
    on_step("decide")
    return MLOpsResult(trained, evaluation, deployed, reason, params, space)


def decide(
    settings: Settings, evaluation: steps.Evaluation, data_path: Path, rule: ImprovementRule
) -> tuple[bool, str]:
    """Run exactly one branch: improved (references, then a promotion that installs them,
    records the move and moves the alias, all or nothing; notify) or regressed (notify,
    report); record the decision. Returns whether the candidate was deployed, and why."""
    version = evaluation.candidate_version
    if evaluation.decision.improved:
        references = steps.set_monitoring_references(settings, version, data_path)
        lock = steps.deploy_lock(settings)
        deployment = steps.deploy_model(settings, evaluation, data_path, rule, lock, references)
        deployed, reason = deployment.deployed, deployment.reason
    else:
        deployed, reason = False, evaluation.decision.reason
    steps.notify_teams(settings, "improved" if deployed else "regressed", version, reason)
    if not deployed:
        steps.file_report(settings, evaluation, reason)
    steps.record_decision(settings, evaluation, deployed)
    return deployed, reason
