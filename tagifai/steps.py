"""Every pipeline step, once: a function over settings, ids and paths.

The Prefect tasks in ``flows/`` are thin wrappers over these, and :mod:`tagifai.pipeline`
runs the same functions in one plain process (``tagifai train``, ``benchmarks/plain.py``),
so "the same work without Prefect" holds by construction. Steps pass paths and ids, never
frames or live clients, so any worker can run any step.

DataOps:  extract_data >> [validate_projects, validate_tags] >> publish_snapshot
          >> compute_features >> cache_to_feature_store
MLOps:    extract_features >> tune_batch (xN) >> summarize_study >> train_model
          >> evaluate_model >> improved: [set_monitoring_references, deploy_model, notify_teams]
                               regressed: [notify_teams, file_report]
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tagifai import extract, features, files, registry
from tagifai.config import Settings
from tagifai.data import Split, join_labelled, sample_rows, split_data
from tagifai.evaluate import Decision, EvaluationReport, ImprovementRule, is_improved
from tagifai.extract import Snapshot
from tagifai.features import FeatureSet, StagedFeatures
from tagifai.train import CVResult, ModelParams, cross_validate, fit_model, inputs_of

if TYPE_CHECKING:  # imported where used: GX, Feast and Optuna take seconds to import
    from tagifai.notify import Delivery
    from tagifai.store import MaterializeReport
    from tagifai.tune import BatchResult, SearchSpace, TuneSummary
    from tagifai.validation import ValidationReport

logger = logging.getLogger(__name__)

TRAINING_COLUMNS: tuple[str, ...] = ("id", "event_timestamp", "text", "embedding", "tag")

# --- DataOps ---------------------------------------------------------------------------------


def extract_data(settings: Settings, projects_uri: str, tags_uri: str) -> Snapshot:
    """Read both source tables; stage them under their content id, or, when that content
    was published before, return the published snapshot (nothing is written)."""
    projects = extract.read_table(projects_uri, "projects")
    tags = extract.read_table(tags_uri, "tags")
    snapshot_id = extract.content_id(projects, tags)
    if extract.is_published(settings, snapshot_id):
        return extract.load_snapshot(settings, snapshot_id)
    return extract.stage_tables(settings, projects, tags, snapshot_id)


def validate_projects(settings: Settings, staged: Snapshot) -> ValidationReport:
    """The ``projects`` suite on the staged table."""
    from tagifai import validation

    projects = extract.read_parquet(staged.projects_path)
    return validation.validate_table(projects, "projects", settings)


def validate_tags(settings: Settings, staged: Snapshot) -> list[ValidationReport]:
    """The ``tags`` suite, then ``labelled`` (every tag's project exists) on their join."""
    from tagifai import validation

    return validation.validate_tags_and_join(staged.tags_path, staged.projects_path, settings)


def publish_snapshot(settings: Settings, staged: Snapshot, source: dict[str, str]) -> Snapshot:
    """Make the validated staged tables the immutable snapshot ``<id>`` and mark it latest."""
    return extract.publish_snapshot(settings, staged, source)


def compute_features(settings: Settings, snapshot: Snapshot) -> StagedFeatures:
    """Stage the snapshot's features; vectors of texts embedded before are reused, and the
    texts still to embed are cut into partitions (``staged.todo``)."""
    return features.stage_features(settings, snapshot)


def embed_texts(settings: Settings, todo: Path, threads: int | None = 1) -> Path:
    """Sentence vectors of one partition of texts (onnxruntime releases the GIL: partitions
    run side by side on the workers' threads or processes)."""
    return features.embed_todo(settings, todo, threads)


def publish_features(settings: Settings, staged: StagedFeatures, vectors: list[Path]) -> FeatureSet:
    """Fill in the new vectors and make the features the feature store's offline source."""
    return features.publish_features(settings, staged, vectors)


def cache_to_feature_store(settings: Settings, feature_set: FeatureSet) -> MaterializeReport:
    """Apply the Feast definitions and materialise the features into the online store."""
    from tagifai import store

    store.apply_definitions(settings)
    return store.materialize_features(settings, expected_rows=feature_set.rows)


def announcement(snapshot: Snapshot, source: dict[str, str], features_rows: int) -> dict:
    """The ``tagifai.snapshot.published`` event for a newly published snapshot."""
    return {
        "event": "tagifai.snapshot.published",
        "resource": {
            "prefect.resource.id": f"tagifai.snapshot.{snapshot.id}",
            "prefect.resource.name": f"snapshot {snapshot.id}",
        },
        "payload": {
            "snapshot_id": snapshot.id,
            "projects_rows": snapshot.projects_rows,
            "tags_rows": snapshot.tags_rows,
            "labelled_rows": features_rows,
            "source": source,
        },
    }


# --- MLOps: data and tuning ------------------------------------------------------------------


def extract_features(settings: Settings, snapshot_id: str | None) -> Path:
    """Point-in-time features from Feast for every labelled project of a snapshot.

    The entity frame is the snapshot's ids at their ``created_on``; the count must match
    the snapshot exactly (the file offline store can drop rows silently). Written to
    ``stores/training/<snapshot>.parquet``: tasks on any worker pass the path, not a frame.
    """
    from tagifai import store
    from tagifai.errors import FeatureStoreError

    snapshot = extract.load_snapshot(settings, snapshot_id)
    labelled = join_labelled(
        extract.read_parquet(snapshot.projects_path, ["id", "created_on"]),
        extract.read_parquet(snapshot.tags_path),
    )
    entity_df = pd.DataFrame(
        {
            "id": labelled["id"].astype("int64"),
            "event_timestamp": features.to_utc(labelled["created_on"]),
        }
    )
    historical = store.get_historical_features(settings, entity_df)
    if len(historical) != len(labelled) or historical["text"].isna().any():
        raise FeatureStoreError(
            f"Feast returned {len(historical)} rows ({int(historical['text'].isna().sum())} "
            f"without features) for {len(labelled)} labelled projects of snapshot {snapshot.id}"
        )
    return _write_training_frame(settings, snapshot.id, historical)


def features_from_sources(settings: Settings, projects_uri: str, tags_uri: str) -> Path:
    """The training frame straight from the source tables (no Feast), named by content:
    the same features, embedded with the same encoder, in this process."""
    from tagifai.embeddings import get_encoder

    labelled = join_labelled(
        extract.read_table(projects_uri, "projects"), extract.read_table(tags_uri, "tags")
    )
    frame = features.compute_features(labelled)
    frame = frame.rename(columns={"created_on": "event_timestamp"})
    data_id = extract.content_id(frame[["id", "text"]], frame[["id", "tag"]])
    path = settings.training_dir / f"sources-{data_id}.parquet"
    if path.exists():  # the same tables were read and embedded before
        return path
    frame[features.EMBEDDING] = None
    if features.embeds_at(settings, len(frame)):
        encoder = get_encoder(settings.embedding_model_dir)
        frame[features.EMBEDDING] = list(encoder.embed(frame["text"].tolist()))
    return _write_training_frame(settings, path.stem, frame)


def _write_training_frame(settings: Settings, name: str, frame: pd.DataFrame) -> Path:
    path = settings.training_dir / f"{name}.parquet"
    with files.replacing(path) as tmp:
        frame[list(TRAINING_COLUMNS)].to_parquet(tmp, index=False)
    return path


def training_rows(data_path: Path) -> int:
    """Rows of a training frame, from its Parquet footer."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(data_path).metadata.num_rows


def load_split(data_path: Path, seed: int) -> Split:
    """The fixed train/val/test split of a training frame (the same on every worker)."""
    return split_data(pd.read_parquet(data_path), seed=seed)


def tune_batch(
    settings: Settings,
    study_name: str,
    data_path: Path,
    n_trials: int,
    space: SearchSpace,
    batch: int = 0,
    run_id: str | None = None,
    on_trial: Callable[[int, float | None], None] | None = None,
    prune: bool = True,
) -> BatchResult:
    """One worker's trials against the shared study, on (a sample of) train and val.

    With ``run_id`` every batch of the run takes trials from one pool of ``n_trials``.
    """
    from tagifai import tune

    split = load_split(data_path, settings.seed)
    data = tune.TuneData.from_frame(
        split.train_val, settings.max_tune_rows, repeats=settings.cv_repeats, seed=settings.seed
    )
    return tune.run_trials(
        settings,
        study_name,
        data,
        n_trials,
        space,
        # One sampler seed per batch: with the same seed, parallel batches propose identical
        # parameters until the shared study has enough trials to steer them apart.
        seed=settings.seed + batch,
        on_trial=on_trial,
        run_id=run_id,
        prune=prune,
    )


def summarize_study(settings: Settings, study_name: str) -> TuneSummary:
    """The study's best trial and parameter importances."""
    from tagifai import tune

    return tune.summarize_study(settings, study_name)


# --- MLOps: train, evaluate, decide ----------------------------------------------------------


@dataclass(frozen=True)
class TrainedModel:
    version: int
    run_id: str
    run_url: str | None
    cv: CVResult
    fit_seconds: float
    params: ModelParams
    train_rows: int
    embedding_model: str | None  # the sentence-embedding model it uses, with checksums
    cv_seconds: float


def train_model(
    settings: Settings, data_path: Path, params: ModelParams, tags: dict[str, str]
) -> TrainedModel:
    """Cross-validate on train+val (repeated stratified 5-fold; a stratified sample past
    ``max_cv_rows``), fit the final model on all of train+val, log it to MLflow and register
    a new version."""
    train_val = load_split(data_path, settings.seed).train_val
    cv_rows = sample_rows(train_val, settings.max_cv_rows, settings.seed)
    started = time.perf_counter()
    cv = cross_validate(
        inputs_of(cv_rows),
        cv_rows["tag"],
        params,
        seed=settings.seed,
        embedding_model_dir=settings.embedding_model_dir,
        repeats=settings.cv_repeats,
    )
    cv_seconds = time.perf_counter() - started
    started = time.perf_counter()
    model = fit_model(
        inputs_of(train_val),
        train_val["tag"],
        params,
        seed=settings.seed,
        embedding_model_dir=settings.embedding_model_dir,
    )
    fit_seconds = time.perf_counter() - started
    metrics = {
        "cv_f1_mean": cv.mean,
        "cv_f1_std": cv.std,
        "cv_fits": float(len(cv.scores)),
        "fit_seconds": fit_seconds,
        "cv_seconds": cv_seconds,
        "train_rows": float(len(train_val)),
    }
    embedding = embedding_model_of(settings, params)
    if embedding is not None:
        tags = tags | {"embedding_model": embedding}
    logged = registry.log_training(settings, model, params.to_dict(), metrics, tags)
    return TrainedModel(
        logged.version,
        logged.run_id,
        logged.run_url,
        cv,
        fit_seconds,
        params,
        len(train_val),
        embedding,
        cv_seconds,
    )


def embedding_model_of(settings: Settings, params: ModelParams) -> str | None:
    """The sentence-embedding model (id and file checksums) a model with ``params`` uses."""
    if params.embedding_weight <= 0:
        return None
    from tagifai.embeddings import get_encoder

    return get_encoder(settings.embedding_model_dir).info.describe()


@dataclass(frozen=True)
class Evaluation:
    candidate_version: int
    candidate: EvaluationReport
    production_version: int | None
    production: EvaluationReport | None
    decision: Decision
    confusion_png: Path


def evaluate_model(
    settings: Settings, data_path: Path, version: int, rule: ImprovementRule
) -> Evaluation:
    """Score the candidate and the current production model on the same test split, decide
    with ``rule`` whether the candidate improved, and draw its confusion matrix."""
    from tagifai.evaluate import evaluate_model as score
    from tagifai.reporting import plot_confusion

    test = load_split(data_path, settings.seed).test
    model, found = registry.load_model(settings, version)
    candidate = score(model, inputs_of(test), test["tag"])
    registry.log_evaluation(settings, found.run_id, candidate)
    production = registry.get_version(settings)
    production_report = None
    if production is not None and production.version != version:
        production_model, _ = registry.load_model(settings, production.version)
        production_report = score(production_model, inputs_of(test), test["tag"])
    decision = is_improved(candidate, production_report, rule)
    png = plot_confusion(candidate, settings.reports_dir / f"confusion-v{version}.png")
    production_version = production.version if production else None
    return Evaluation(version, candidate, production_version, production_report, decision, png)


def write_model_card(
    settings: Settings, trained: TrainedModel, evaluation: Evaluation, snapshot_id: str
) -> Path:
    """The model card of a version: data, embedding model, CV, test, per class, checks,
    training time; under ``stores/reports`` and with the version's MLflow run."""
    from tagifai.reporting import model_card_markdown

    markdown = model_card_markdown(trained, evaluation, snapshot_id, code_fingerprint())
    path = files.write_text(settings.reports_dir / f"model-card-v{trained.version}.md", markdown)
    registry.connect(settings).log_artifact(trained.run_id, str(path), artifact_path="card")
    return path


def set_monitoring_references(settings: Settings, version: int, data_path: Path) -> Path:
    """Store the reference distributions of ``version`` on its training rows (a sample past
    ``max_cv_rows``) and attach them to its MLflow run."""
    from tagifai.monitoring import compute_references, save_references

    train_val = load_split(data_path, settings.seed).train_val
    model, found = registry.load_model(settings, version)
    sample = sample_rows(train_val, settings.max_cv_rows, settings.seed)
    path = save_references(settings, version, compute_references(model, sample))
    registry.connect(settings).log_artifact(found.run_id, str(path), artifact_path="monitoring")
    return path


@dataclass(frozen=True)
class Deployment:
    deployed: bool
    previous_version: int | None
    reason: str


def deploy_model(
    settings: Settings,
    evaluation: Evaluation,
    data_path: Path,
    rule: ImprovementRule,
    lock: AbstractContextManager[object],
) -> Deployment:
    """Move ``production`` to the candidate while holding ``lock``, unless production moved
    since the evaluation and the candidate no longer beats the new one.

    Two runs that evaluated against the same production model thus deploy one after the
    other, and the second re-checks. The flow passes a Prefect global concurrency limit, the
    plain pipeline a file lock (:func:`deploy_lock`).
    """
    with lock:
        current = registry.get_version(settings)
        current_version = current.version if current else None
        if current_version not in (evaluation.production_version, evaluation.candidate_version):
            from tagifai.evaluate import evaluate_model as score

            test = load_split(data_path, settings.seed).test
            model, _ = registry.load_model(settings, current_version)
            decision = is_improved(
                evaluation.candidate, score(model, inputs_of(test), test["tag"]), rule
            )
            if not decision.improved:
                reason = f"production moved to v{current_version} meanwhile: {decision.reason}"
                return Deployment(False, current_version, reason)
        previous = registry.set_production(settings, evaluation.candidate_version)
    return Deployment(True, previous, evaluation.decision.reason)


def deploy_lock(settings: Settings) -> AbstractContextManager[None]:
    """The deploy lock of the plain pipeline: a file lock under ``stores/locks``."""
    return files.file_lock(settings.locks_dir / "deploy.lock")


def notify_teams(settings: Settings, outcome: str, version: int, message: str) -> list[Delivery]:
    """Post ``tagifai v<N> <outcome>: <message>`` to every notification URL; never raises."""
    from tagifai import notify

    return notify.post_message(settings.notify_urls, f"tagifai v{version} {outcome}: {message}")


def file_report(settings: Settings, evaluation: Evaluation, reason: str) -> Path:
    """Write why the candidate was not deployed to ``stores/reports/regression-v<N>.md``."""
    from tagifai.reporting import regression_markdown

    markdown = regression_markdown(
        evaluation.candidate,
        evaluation.production,
        Decision(False, reason),
        evaluation.candidate_version,
        evaluation.production_version,
    )
    return files.write_text(
        settings.reports_dir / f"regression-v{evaluation.candidate_version}.md", markdown
    )


def training_key(snapshot_id: str, parameters: dict[str, object]) -> str:
    """What makes two trainings the same: the snapshot, the run's parameters and the code of
    the library (a change to any of them is worth a new model)."""
    import hashlib
    import json

    identity = {"snapshot": snapshot_id, "parameters": parameters, "code": code_fingerprint()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


@functools.cache
def code_fingerprint() -> str:
    """A hash of the library's source files."""
    import hashlib

    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def already_trained(settings: Settings, key: str) -> registry.ModelVersion | None:
    """The version a finished run with this training key registered, if any."""
    return registry.find_version(settings, "training_key", key)


def record_decision(
    settings: Settings, evaluation: Evaluation, deployed: bool, key: str | None = None
) -> Path:
    """Keep the last decision (for ``tagifai status``) under ``stores/reports``, and tag the
    candidate with it (and with its training key: the run is done, a re-run may skip)."""
    tags = {"decision": "deployed" if deployed else "not deployed"}
    registry.tag_version(
        settings, evaluation.candidate_version, tags | ({"training_key": key} if key else {})
    )
    production_f1 = evaluation.production.f1 if evaluation.production else None
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "candidate_version": evaluation.candidate_version,
        "production_version_before": evaluation.production_version,
        "improved": evaluation.decision.improved,
        "deployed": deployed,
        "reason": evaluation.decision.reason,
        "candidate_f1": round(evaluation.candidate.f1, 4),
        "production_f1": round(production_f1, 4) if production_f1 is not None else None,
    }
    return files.write_json(settings.reports_dir / "last_decision.json", record)
