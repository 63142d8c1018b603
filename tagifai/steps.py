"""Every pipeline step, once: a function over settings, ids and paths.

The Prefect tasks in ``flows/`` are thin wrappers over these, and :mod:`tagifai.pipeline`
runs the same functions in one plain process (``tagifai train``, ``benchmarks/plain.py``),
so "the same work without Prefect" holds by construction. Steps pass paths and ids, never
frames or live clients, so any worker can run any step.

DataOps:  extract_data >> [validate_projects, validate_tags] (per partition) >> validate_dataset
          >> publish_snapshot >> compute_features (per partition) >> [embed_texts]
          >> publish_features >> plan_materialization >> materialize_window (per partition)
          >> finish_materialization
MLOps:    extract_partition_features (per partition) >> tune_batch (xN) >> summarize_study
          >> train_model >> evaluate_model
          >> improved: [set_monitoring_references, deploy_model, notify_teams]
             regressed: [notify_teams, file_report]
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tagifai import extract, features, files, frames, registry
from tagifai.config import Settings
from tagifai.data import Split, join_labelled, sample_rows, split_data, tags_with_projects
from tagifai.evaluate import Decision, EvaluationReport, ImprovementRule, is_improved
from tagifai.extract import Snapshot
from tagifai.features import FeaturePart, FeatureSet
from tagifai.train import CVResult, ModelParams, cross_validate, fit_model, inputs_of

if TYPE_CHECKING:  # imported where used: GX, Feast and Optuna take seconds to import
    from tagifai.notify import Delivery
    from tagifai.store import MaterializeReport, MaterializeWindow
    from tagifai.tune import BatchResult, SearchSpace, TuneSummary
    from tagifai.validation import PartitionResult, ValidationReport

logger = logging.getLogger(__name__)

TRAINING_COLUMNS: tuple[str, ...] = ("id", "event_timestamp", "text", "embedding", "tag")

# --- DataOps ---------------------------------------------------------------------------------


def extract_data(settings: Settings, projects_uri: str, tags_uri: str) -> Snapshot:
    """Stream both source tables into a staged snapshot, partitioned by id range and named by
    its content; or, when that content was published before, return the published snapshot
    (nothing is kept)."""
    return extract.stage_sources(settings, projects_uri, tags_uri)


def validate_projects(
    settings: Settings, staged: Snapshot, partition: int
) -> list[PartitionResult]:
    """The ``projects`` suite's row-level expectations on one partition."""
    from tagifai import validation

    projects = extract.read_partition(staged, "projects", partition)
    keys = extract.scratch_dir(staged) / "keys"
    return [validation.validate_partition(projects, "projects", settings, partition, keys)]


def validate_tags(settings: Settings, staged: Snapshot, partition: int) -> list[PartitionResult]:
    """The ``tags`` suite, then ``labelled`` (every tag's project exists) on the partition's
    join: a tag and its project share a partition."""
    from tagifai import validation

    labelled = _labelled_partition(staged, partition)
    tags = extract.read_partition(staged, "tags", partition)
    keys = extract.scratch_dir(staged) / "keys"
    return [
        validation.validate_partition(tags, "tags", settings, partition, keys),
        validation.validate_partition(labelled, "labelled", settings, partition, keys),
    ]


def validate_dataset(
    settings: Settings, staged: Snapshot, partials: Sequence[PartitionResult]
) -> list[ValidationReport]:
    """One report per suite for the whole snapshot: the partitions' row-level results and
    the table-level expectations (row counts, unique ids, unique title + description)."""
    from tagifai import validation

    def read_partition(suite: str, partition: int) -> pd.DataFrame:
        if suite == "labelled":
            return _labelled_partition(staged, partition)
        return extract.read_partition(staged, suite, partition)

    return validation.validate_dataset(settings, partials, read_partition)


def _labelled_partition(staged: Snapshot, partition: int) -> pd.DataFrame:
    """A partition's tags left-joined to its projects (what the ``labelled`` suite checks);
    ids typed differently (a missing id makes a column float, a text id makes it text) are
    joined as numbers or as text, for the suites to report what is wrong."""
    projects = extract.read_partition(staged, "projects", partition)
    tags = extract.read_partition(staged, "tags", partition)
    if projects["id"].dtype != tags["id"].dtype:
        numeric = all(pd.api.types.is_numeric_dtype(t["id"]) for t in (projects, tags))
        common = "float64" if numeric else "string"
        projects, tags = projects.astype({"id": common}), tags.astype({"id": common})
    return tags_with_projects(projects, tags)


def validate_snapshot(settings: Settings, staged: Snapshot) -> list[ValidationReport]:
    """Every suite on every partition, one partition after another (the flow spreads them)."""
    partials = [
        result
        for partition in range(staged.partitions)
        for result in (
            *validate_projects(settings, staged, partition),
            *validate_tags(settings, staged, partition),
        )
    ]
    return validate_dataset(settings, staged, partials)


def publish_snapshot(settings: Settings, staged: Snapshot, source: dict[str, str]) -> Snapshot:
    """Make the validated staged tables the immutable snapshot ``<id>`` and mark it latest."""
    return extract.publish_snapshot(settings, staged, source)


def compute_features(settings: Settings, snapshot: Snapshot, partition: int) -> FeaturePart:
    """Stage one partition's features; vectors of texts embedded before are reused, and the
    texts still to embed are cut into pieces (``part.todo``)."""
    return features.stage_partition(settings, snapshot, partition)


def embed_texts(settings: Settings, todo: Path, threads: int | None = 1) -> Path:
    """Sentence vectors of one piece of texts (onnxruntime releases the GIL: pieces run side
    by side on the workers' threads or processes)."""
    return features.embed_todo(settings, todo, threads)


def publish_features(
    settings: Settings, parts: Sequence[FeaturePart], vectors: Sequence[Path]
) -> FeatureSet:
    """Fill in the new vectors and make the partitions the feature store's offline source."""
    return features.publish_features(settings, parts, vectors)


def plan_materialization(settings: Settings, feature_set: FeatureSet) -> list[MaterializeWindow]:
    """Apply the Feast definitions, empty the online table, one window per partition."""
    from tagifai import store

    parts = [feature_set.part(index) for index in range(feature_set.partitions)]
    return store.plan_materialization(settings, parts)


def materialize_window(settings: Settings, window: MaterializeWindow) -> MaterializeReport:
    """One window (a features partition) into the online store."""
    from tagifai import store

    return store.materialize_window(settings, window)


def finish_materialization(
    settings: Settings,
    feature_set: FeatureSet,
    windows: Sequence[MaterializeWindow],
    reports: Sequence[MaterializeReport],
    seconds: float,
) -> MaterializeReport:
    """Check that the online store holds every feature row; the run's throughput."""
    from tagifai import store

    return store.finish_materialization(settings, windows, reports, feature_set.rows, seconds)


def cache_to_feature_store(settings: Settings, feature_set: FeatureSet) -> MaterializeReport:
    """Fill the online store from the features, window after window (the flow runs the
    windows as parallel tasks under the online store's writer limit)."""
    started = time.perf_counter()
    windows = plan_materialization(settings, feature_set)
    reports = [materialize_window(settings, window) for window in windows]
    seconds = time.perf_counter() - started
    return finish_materialization(settings, feature_set, windows, reports, seconds)


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
    """The snapshot's training frame from Feast, one partition after another (the flow
    spreads :func:`extract_partition_features` over the workers)."""
    snapshot = extract.load_snapshot(settings, snapshot_id)
    for partition in range(snapshot.partitions):
        extract_partition_features(settings, snapshot.id, partition)
    return training_frame_path(settings, snapshot.id)


def training_frame_path(settings: Settings, snapshot_id: str) -> Path:
    """``stores/training/<snapshot>.parquet``: one file per snapshot partition."""
    return settings.training_dir / f"{snapshot_id}.parquet"


def extract_partition_features(settings: Settings, snapshot_id: str, partition: int) -> Path:
    """Point-in-time features from Feast for the labelled projects of one partition.

    The entity frame is the partition's ids at their ``created_on``; Feast reads only that
    partition's features when the live features are this snapshot's. The count must match
    exactly (the file offline store can drop rows silently). Written to
    ``stores/training/<snapshot>.parquet/part-NNNNN.parquet``: tasks pass paths, not frames.
    """
    from tagifai import store
    from tagifai.errors import FeatureStoreError

    snapshot = extract.load_snapshot(settings, snapshot_id)
    labelled = join_labelled(
        extract.read_partition(snapshot, "projects", partition)[["id", "created_on"]],
        extract.read_partition(snapshot, "tags", partition),
    )
    entity_df = pd.DataFrame(
        {
            "id": labelled["id"].astype("int64"),
            "event_timestamp": features.to_utc(labelled["created_on"]),
        }
    )
    live = features.current_feature_set(settings)
    same = live is not None and live.snapshot_id == snapshot.id
    source = live.part(partition) if same and live is not None else None
    historical = store.get_historical_features(settings, entity_df, source=source)
    if len(historical) != len(labelled) or historical["text"].isna().any():
        raise FeatureStoreError(
            f"Feast returned {len(historical)} rows ({int(historical['text'].isna().sum())} "
            f"without features) for {len(labelled)} labelled projects of partition "
            f"{partition} of snapshot {snapshot.id}"
        )
    folder = training_frame_path(settings, snapshot.id)
    if folder.is_file():  # a frame written whole before partitioning
        folder.unlink()
    path = folder / extract.PART_FILE.format(partition)
    with files.replacing(path) as tmp:
        historical[list(TRAINING_COLUMNS)].to_parquet(tmp, index=False)
    return path


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
    """Rows of a training frame (a file or a folder of partitions), from Parquet footers."""
    return frames.frame_rows(data_path)


def load_split(data_path: Path, seed: int) -> Split:
    """The fixed train/val/test split of a training frame (the same on every worker), for
    frames up to ``scale_rows`` rows; larger ones are read in partitions (:mod:`frames`)."""
    return split_data(pd.read_parquet(data_path), seed=seed)


def is_large(settings: Settings, data_path: Path) -> bool:
    """Whether a training frame is past ``scale_rows``: never loaded whole, split by hash."""
    return training_rows(data_path) > settings.scale_rows


def train_val_rows(settings: Settings, data_path: Path, max_rows: int) -> pd.DataFrame:
    """Train+val rows: a stratified sample past ``max_rows``."""
    if is_large(settings, data_path):
        return frames.sample_split(data_path, frames.TRAIN_VAL, max_rows, settings.seed)
    return sample_rows(load_split(data_path, settings.seed).train_val, max_rows, settings.seed)


def test_rows(settings: Settings, data_path: Path) -> pd.DataFrame:
    """The fixed test split; past ``scale_rows``, a stratified sample of ``max_cv_rows`` of
    it (the same rows for every model scored on this frame)."""
    if is_large(settings, data_path):
        return frames.sample_split(data_path, frames.TEST, settings.max_cv_rows, settings.seed)
    return load_split(data_path, settings.seed).test


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

    train_val = train_val_rows(settings, data_path, settings.max_tune_rows)
    data = tune.TuneData.from_frame(train_val, repeats=settings.cv_repeats, seed=settings.seed)
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
    a new version.

    Past ``scale_rows`` the frame is never loaded: an incremental model (hashing + SGD)
    learns from every train+val row partition by partition; any other is fitted on a
    stratified sample of ``scale_rows`` rows.
    """
    cv_rows = train_val_rows(settings, data_path, settings.max_cv_rows)
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
    model, train_rows = _fit_final(settings, data_path, params)
    fit_seconds = time.perf_counter() - started
    metrics = {
        "cv_f1_mean": cv.mean,
        "cv_f1_std": cv.std,
        "cv_fits": float(len(cv.scores)),
        "fit_seconds": fit_seconds,
        "cv_seconds": cv_seconds,
        "train_rows": float(train_rows),
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
        train_rows,
        embedding,
        cv_seconds,
    )


def _fit_final(settings: Settings, data_path: Path, params: ModelParams) -> tuple[object, int]:
    """The final model on train+val, and how many rows it learnt from."""
    from tagifai.train import fit_incremental, is_incremental

    if is_large(settings, data_path) and is_incremental(params):

        def batches() -> Iterator[pd.DataFrame]:
            return frames.iter_split(
                data_path, frames.TRAIN_VAL, settings.seed, ["id", "text", "tag"]
            )

        return fit_incremental(batches, params, seed=settings.seed)
    train_val = train_val_rows(settings, data_path, settings.scale_rows)
    model = fit_model(
        inputs_of(train_val),
        train_val["tag"],
        params,
        seed=settings.seed,
        embedding_model_dir=settings.embedding_model_dir,
    )
    return model, len(train_val)


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

    test = test_rows(settings, data_path)
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

    sample = train_val_rows(settings, data_path, settings.max_cv_rows)
    model, found = registry.load_model(settings, version)
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

            test = test_rows(settings, data_path)
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
