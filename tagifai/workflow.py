"""The MLOps steps as plain functions over ids and frames: the CLI calls them in one
process, and the Prefect flows wrap each one in a task."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tagifai import registry
from tagifai.config import Settings
from tagifai.data import Split, join_labelled, sample_rows, split_data
from tagifai.evaluate import (
    Decision,
    EvaluationReport,
    ImprovementRule,
    evaluate_model,
    is_improved,
)
from tagifai.extract import read_table
from tagifai.features import compute_features
from tagifai.monitoring import compute_references, save_references
from tagifai.train import CVResult, ModelParams, cross_validate, fit_model
from tagifai.tune import (
    SearchSpace,
    TuneData,
    default_params,
    resolve_space,
    run_trials,
    summarize_study,
)

logger = logging.getLogger(__name__)


def features_from_sources(projects_uri: str, tags_uri: str) -> pd.DataFrame:
    """Read both tables and compute the features (the CLI's path without Feast)."""
    labelled = join_labelled(read_table(projects_uri, "projects"), read_table(tags_uri, "tags"))
    return compute_features(labelled)


def build_training_frame(settings: Settings, snapshot_id: str | None = None) -> Path:
    """Point-in-time features from Feast for every labelled project of a snapshot.

    The entity frame is the snapshot's ids at their ``created_on``; the count must match
    the snapshot exactly (the file offline store can drop rows silently). Written to
    ``stores/training/<snapshot>.parquet`` so tasks on any worker pass a path, not a frame.
    """
    from tagifai import store
    from tagifai.errors import FeatureStoreError
    from tagifai.extract import load_snapshot, read_parquet
    from tagifai.features import to_utc

    snapshot = load_snapshot(settings, snapshot_id)
    labelled = join_labelled(
        read_parquet(snapshot.projects_path, ["id", "created_on"]), read_parquet(snapshot.tags_path)
    )
    entity_df = pd.DataFrame(
        {"id": labelled["id"].astype("int64"), "event_timestamp": to_utc(labelled["created_on"])}
    )
    historical = store.get_historical_features(settings, entity_df)
    if len(historical) != len(labelled) or historical["text"].isna().any():
        raise FeatureStoreError(
            f"Feast returned {len(historical)} rows ({int(historical['text'].isna().sum())} "
            f"without features) for {len(labelled)} labelled projects of snapshot {snapshot.id}"
        )
    path = settings.stores_dir / "training" / f"{snapshot.id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    historical[["id", "event_timestamp", "text", "tag"]].to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def load_split(path: Path, seed: int) -> Split:
    """The fixed split of a training frame (the same on every worker)."""
    return split_data(pd.read_parquet(path), seed=seed)


def tune(
    settings: Settings,
    study_name: str,
    split: Split,
    n_trials: int,
    space: SearchSpace = "default",
) -> ModelParams:
    """Run the study in this process and return its best parameters."""
    if n_trials <= 0:
        return default_params(space)
    data = TuneData.from_frames(split.train, split.val, settings.max_tune_rows)
    run_trials(settings, study_name, data, n_trials, space)
    summary = summarize_study(settings, study_name)
    logger.info("best validation F1 %.4f after %d trials", summary.best_value, summary.n_trials)
    return summary.best_params


@dataclass(frozen=True)
class TrainedModel:
    version: int
    run_id: str
    run_url: str | None
    cv: CVResult
    fit_seconds: float


def train_candidate(
    settings: Settings, split: Split, params: ModelParams, tags: dict[str, str]
) -> TrainedModel:
    """Cross-validate on train+val (a stratified sample past ``max_cv_rows``), fit the final
    model on all of train+val, log and register it."""
    train_val = split.train_val
    cv_rows = sample_rows(train_val, settings.max_cv_rows, settings.seed)
    cv = cross_validate(cv_rows["text"], cv_rows["tag"], params, seed=settings.seed)
    started = time.perf_counter()
    model = fit_model(train_val["text"], train_val["tag"], params, seed=settings.seed)
    fit_seconds = time.perf_counter() - started
    metrics = {
        "cv_f1_mean": cv.mean,
        "cv_f1_std": cv.std,
        "fit_seconds": fit_seconds,
        "train_rows": float(len(train_val)),
    }
    logged = registry.log_training(settings, model, params.to_dict(), metrics, tags)
    return TrainedModel(logged.version, logged.run_id, logged.run_url, cv, fit_seconds)


@dataclass(frozen=True)
class Evaluation:
    candidate_version: int
    candidate: EvaluationReport
    production_version: int | None
    production: EvaluationReport | None
    decision: Decision


def evaluate_candidate(
    settings: Settings, version: int, split: Split, rule: ImprovementRule = ImprovementRule()
) -> Evaluation:
    """Score the candidate and the current production model on the same test split."""
    model, found = registry.load_model(settings, version)
    candidate = evaluate_model(model, split.test["text"], split.test["tag"])
    registry.log_evaluation(settings, found.run_id, candidate)
    production = registry.get_version(settings)
    production_report = None
    if production is not None and production.version != version:
        production_model, _ = registry.load_model(settings, production.version)
        production_report = evaluate_model(production_model, split.test["text"], split.test["tag"])
    decision = is_improved(candidate, production_report, rule)
    return Evaluation(
        version, candidate, production.version if production else None, production_report, decision
    )


def set_monitoring_references(settings: Settings, version: int, features: pd.DataFrame) -> Path:
    """Store the reference distributions for ``version`` (and attach them to its MLflow run)."""
    model, found = registry.load_model(settings, version)
    sample = sample_rows(features, settings.max_cv_rows, settings.seed)
    path = save_references(settings, version, compute_references(model, sample))
    registry.connect(settings).log_artifact(found.run_id, str(path), artifact_path="monitoring")
    return path


def deploy_model(settings: Settings, version: int) -> int | None:
    """Point ``production`` at ``version`` (one atomic alias update); returns the previous one."""
    return registry.set_production(settings, version)


@dataclass(frozen=True)
class Deployment:
    deployed: bool
    previous_version: int | None
    reason: str


def deploy_if_still_better(
    settings: Settings,
    evaluation: Evaluation,
    split: Split,
    rule: ImprovementRule = ImprovementRule(),
) -> Deployment:
    """Deploy, unless production moved since the evaluation and the candidate no longer wins.

    Call it while holding the deploy lock: two runs that evaluated against the same
    production model then deploy one after the other, and the second one re-checks.
    """
    current = registry.get_version(settings)
    current_version = current.version if current else None
    if current_version not in (evaluation.production_version, evaluation.candidate_version):
        assert current is not None
        model, _ = registry.load_model(settings, current.version)
        current_report = evaluate_model(model, split.test["text"], split.test["tag"])
        decision = is_improved(evaluation.candidate, current_report, rule)
        if not decision.improved:
            return Deployment(
                False,
                current_version,
                f"production moved to v{current_version} meanwhile: {decision.reason}",
            )
    previous = deploy_model(settings, evaluation.candidate_version)
    return Deployment(True, previous, evaluation.decision.reason)


def record_decision(settings: Settings, evaluation: Evaluation, deployed: bool) -> Path:
    """Keep the last decision (for ``tagifai status``) under ``stores/reports``."""
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.reports_dir / "last_decision.json"
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "candidate_version": evaluation.candidate_version,
        "production_version_before": evaluation.production_version,
        "improved": evaluation.decision.improved,
        "deployed": deployed,
        "reason": evaluation.decision.reason,
        "candidate_f1": round(evaluation.candidate.f1, 4),
        "production_f1": round(evaluation.production.f1, 4) if evaluation.production else None,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(path)
    return path


@dataclass(frozen=True)
class TrainingOutcome:
    trained: TrainedModel
    evaluation: Evaluation
    deployed: bool
    params: ModelParams


def train_and_deploy(
    settings: Settings,
    features: pd.DataFrame,
    *,
    n_trials: int = 0,
    space: str = "auto",
    rule: ImprovementRule = ImprovementRule(),
    tags: dict[str, Any] | None = None,
    study_name: str = "tagifai-cli",
) -> TrainingOutcome:
    """The whole MLOps path in one process: split, tune, train, evaluate, deploy if improved."""
    split = split_data(features, seed=settings.seed)
    resolved = resolve_space(space, len(features), settings)
    params = tune(settings, f"{study_name}-{resolved}", split, n_trials, resolved)
    trained = train_candidate(settings, split, params, {k: str(v) for k, v in (tags or {}).items()})
    evaluation = evaluate_candidate(settings, trained.version, split, rule)
    if evaluation.decision.improved:
        set_monitoring_references(settings, trained.version, split.train_val)
        deploy_model(settings, trained.version)
    record_decision(settings, evaluation, evaluation.decision.improved)
    return TrainingOutcome(trained, evaluation, evaluation.decision.improved, params)
