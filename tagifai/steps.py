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
Monitor:  [check_traffic, check_new_labels] >> decide_monitor_action >> file_monitor_report
          >> continue | inspect (notify) | retrain (event) | rollback (rollback_model)
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from tagifai import extract, features, files, frames, history, promotion, registry
from tagifai.config import Settings
from tagifai.data import Split, join_labelled, sample_rows, split_data, tags_with_projects
from tagifai.evaluate import Decision, EvaluationReport, ImprovementRule, is_improved
from tagifai.extract import Snapshot
from tagifai.features import FeaturePart, FeatureSet
from tagifai.train import CVResult, ModelParams, cross_validate, fit_model, inputs_of

if TYPE_CHECKING:  # imported where used: GX, Feast and Optuna take seconds to import
    from tagifai.drift import TrafficDrift
    from tagifai.notify import Delivery
    from tagifai.policy import DriftPolicy, LabelledCheck, MonitorDecision
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


def fits_incrementally(settings: Settings, data_path: Path, params: ModelParams) -> bool:
    """Whether :func:`train_model` learns from the frame partition by partition: past
    ``scale_rows``, with an incremental model (hashing + SGD)."""
    from tagifai.train import is_incremental

    return is_incremental(params) and is_large(settings, data_path)


def hash_partition(
    settings: Settings, data_path: Path, params: ModelParams, partition: int, key: str
) -> Path:
    """One partition's train+val rows hashed by the final model's word block (stateless, so
    every worker hashes a partition of its own), for :func:`train_model`'s incremental fit:
    ``<frame>.hashed-<key>/part-NNNNN.npz`` (the sparse counts and the tags)."""
    import numpy as np

    from tagifai.train import hash_texts, texts_of

    part = frames.frame_parts(data_path)[partition]
    rows = frames.read_split(part, frames.TRAIN_VAL, settings.seed, ["id", "text", "tag"])
    counts = hash_texts(params, texts_of(rows))
    path = hashed_dir(data_path, key) / extract.PART_FILE.format(partition)
    path = path.with_suffix(".npz")
    with files.replacing(path) as tmp, tmp.open("wb") as out:
        np.savez(
            out,
            data=counts.data,
            indices=counts.indices,
            indptr=counts.indptr,
            shape=np.array(counts.shape),
            tags=rows["tag"].to_numpy(dtype=str),
        )
    return path


def hashed_dir(data_path: Path, key: str) -> Path:
    """Where a run's hashed partitions of a training frame go (``key``: the run's)."""
    return data_path.with_name(f"{data_path.stem}.hashed-{key}")


def _read_hashed(path: Path) -> tuple[object, object]:
    import numpy as np
    import scipy.sparse as sp

    with np.load(path) as saved:
        shape = tuple(int(n) for n in saved["shape"])
        counts = sp.csr_matrix((saved["data"], saved["indices"], saved["indptr"]), shape=shape)
        return counts, saved["tags"]


def train_model(
    settings: Settings,
    data_path: Path,
    params: ModelParams,
    tags: dict[str, str],
    hashed: Sequence[Path] = (),
) -> TrainedModel:
    """Cross-validate on train+val (repeated stratified 5-fold; a stratified sample past
    ``max_cv_rows``), fit the final model on all of train+val, log it to MLflow and register
    a new version.

    Past ``scale_rows`` the frame is never loaded: an incremental model (hashing + SGD)
    learns from every train+val row partition by partition (from ``hashed``, the partitions
    :func:`hash_partition` hashed, when given; they are removed once fitted); any other is
    fitted on a stratified sample of ``scale_rows`` rows.
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
    model, train_rows = _fit_final(settings, data_path, params, hashed)
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


def _fit_final(
    settings: Settings, data_path: Path, params: ModelParams, hashed: Sequence[Path] = ()
) -> tuple[object, int]:
    """The final model on train+val, and how many rows it learnt from."""
    from tagifai.train import fit_hashed, fit_incremental

    if hashed:
        parts = sorted(hashed)
        fitted = fit_hashed(lambda: map(_read_hashed, parts), params, seed=settings.seed)
        for folder in {path.parent for path in parts}:
            shutil.rmtree(folder, ignore_errors=True)
        return fitted
    if fits_incrementally(settings, data_path, params):

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
    """Compute the reference distributions of ``version`` out of fold on its training rows (a
    sample past ``max_reference_rows``) and stage them: deploying the version installs them."""
    from tagifai.monitoring import compute_references, stage_references

    sample = train_val_rows(settings, data_path, settings.max_reference_rows)
    model, _ = registry.load_model(settings, version)
    return stage_references(
        settings, version, compute_references(model, sample, seed=settings.seed)
    )


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
    references: Path | None = None,
    runner: promotion.StepRunner | None = None,
    actor: str | None = None,
    flow_run_id: str | None = None,
) -> Deployment:
    """Promote the candidate while holding ``lock``, unless production moved since the
    evaluation and the candidate no longer beats the new one.

    Two runs that evaluated against the same production model thus deploy one after the
    other, and the second re-checks. The flow passes a Prefect global concurrency limit, the
    plain pipeline a file lock (:func:`deploy_lock`). The promotion installs ``references``
    (staged by :func:`set_monitoring_references`), records the move in the alias history and
    moves the alias, all or nothing (:func:`tagifai.promotion.promote`; ``runner`` makes its
    steps Prefect tasks in a transaction).
    """
    with lock:
        history.reconcile(settings)  # moves a crash left half-recorded, settled first
        current_version = registry.production_version(settings)
        if current_version == evaluation.candidate_version:
            return Deployment(True, None, "already in production")
        if current_version != evaluation.production_version:
            from tagifai.evaluate import evaluate_model as score

            test = test_rows(settings, data_path)
            model, _ = registry.load_model(settings, current_version)
            decision = is_improved(
                evaluation.candidate, score(model, inputs_of(test), test["tag"]), rule
            )
            if not decision.improved:
                reason = f"production moved to v{current_version} meanwhile: {decision.reason}"
                if references is not None:
                    references.unlink(missing_ok=True)  # staged for a deploy that is off
                return Deployment(False, current_version, reason)
        move = promotion.Promotion(
            action="deploy",
            to_version=evaluation.candidate_version,
            from_version=current_version,
            reason=evaluation.decision.reason,
            actor=actor or settings.actor,
            flow_run_id=flow_run_id,
            references=references,
        )
        promotion.promote(settings, move, runner)
    return Deployment(True, current_version, evaluation.decision.reason)


def rollback_model(
    settings: Settings,
    reason: str,
    lock: AbstractContextManager[object],
    to_version: int | None = None,
    expected_version: int | None = None,
    runner: promotion.StepRunner | None = None,
    actor: str | None = None,
    flow_run_id: str | None = None,
) -> history.AliasMove:
    """Move ``production`` back, by default to the version it replaced, while holding ``lock``.

    Args:
        to_version: the version to serve again (it must have references: it was production).
        expected_version: refuse if production is no longer this version (the monitor judged
            it; another run may have moved it since).

    Raises:
        PromotionError: no reason, no production model, nothing to go back to, production
            moved meanwhile, or the target has no references; nothing changed.
    """
    if not reason.strip():
        raise promotion.PromotionError("a rollback needs a reason (--reason)")
    with lock:
        history.reconcile(settings)
        current = registry.production_version(settings)
        if current is None:
            raise promotion.PromotionError("no production model to roll back")
        if expected_version is not None and current != expected_version:
            raise promotion.PromotionError(
                f"production moved to v{current} meanwhile (expected v{expected_version})"
            )
        target = to_version or history.previous_production(settings, current)
        if target is None:
            raise promotion.PromotionError(
                f"v{current} replaced no earlier version: name one with --to N"
            )
        move = promotion.Promotion(
            action="rollback",
            to_version=target,
            from_version=current,
            reason=reason.strip(),
            actor=actor or settings.actor,
            flow_run_id=flow_run_id,
        )
        return promotion.promote(settings, move, runner)


def settle_history(settings: Settings, lock: AbstractContextManager[object]) -> list[int]:
    """Settle alias moves a crash left pending (see :func:`tagifai.history.reconcile`);
    returns the target versions of the entries settled."""
    with lock:
        return [move.to_version for move in history.reconcile(settings)]


def abandon_undecided(
    settings: Settings, is_over: Callable[[registry.ModelVersion], bool]
) -> list[int]:
    """Tag ``decision=abandoned`` on registered versions that have no decision and whose run
    is over (``is_over``: it crashed or failed between registering and deciding)."""
    abandoned = []
    for version in registry.list_versions(settings):
        if "decision" in version.tags or not is_over(version):
            continue
        registry.tag_version(
            settings,
            version.version,
            {"decision": "abandoned", "decision_reason": "its run ended before deciding"},
        )
        abandoned.append(version.version)
    return abandoned


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


# --- Monitoring ------------------------------------------------------------------------------


def check_traffic(
    settings: Settings, version: int, since: datetime, until: datetime
) -> TrafficDrift | None:
    """Drift of ``version``'s logged predictions in ``[since, until)`` against its references,
    read one log file at a time (None: the version has no references to compare with)."""
    from tagifai import predlog
    from tagifai.drift import DriftAccumulator
    from tagifai.monitoring import load_references

    references = load_references(settings, version)
    if references is None:
        return None
    accumulator = DriftAccumulator(references, version, settings.seed)
    for rows in predlog.read_log(settings.predictions_dir, since, until, version):
        accumulator.update(rows)
    return accumulator.result()


def _seen_ids(settings: Settings, version: registry.ModelVersion) -> set[int] | None:
    """Ids of the projects a version was trained (and tested) on, if they can be found."""
    for name in (version.snapshot_id, version.tags.get("features_id")):
        frame = settings.training_dir / f"{name}.parquet" if name else None
        if frame is not None and frame.is_file():
            return set(pd.read_parquet(frame, columns=["id"])["id"].astype("int64"))
    if version.snapshot_id and extract.is_published(settings, version.snapshot_id):
        snapshot = extract.load_snapshot(settings, version.snapshot_id)
        return set(extract.read_parquet(snapshot.tags_path, ["id"])["id"].astype("int64"))
    return None


def check_new_labels(settings: Settings, version: int) -> LabelledCheck | None:
    """Production, and the version it replaced, on projects of the latest snapshot that neither
    was trained on (None: no snapshot, unknown training data, or nothing new)."""
    from tagifai.evaluate import compute_metrics
    from tagifai.policy import LabelledCheck

    snapshot_id = extract.latest_snapshot_id(settings)
    production = registry.get_version(settings, version)
    if snapshot_id is None or production is None:
        return None
    seen = _seen_ids(settings, production)
    if seen is None:
        logger.info("v%d: its training rows are unknown, so no labels count as new", version)
        return None
    previous_version = history.previous_production(settings, version)
    previous = registry.get_version(settings, previous_version) if previous_version else None
    if previous is not None:
        seen |= _seen_ids(settings, previous) or set()
    snapshot = extract.load_snapshot(settings, snapshot_id)
    labelled = join_labelled(
        extract.read_parquet(snapshot.projects_path), extract.read_parquet(snapshot.tags_path)
    )
    unseen = labelled[~labelled["id"].astype("int64").isin(seen)]
    if unseen.empty:
        return None
    new = features.compute_features(unseen)
    new = sample_rows(new, settings.max_cv_rows, settings.seed)
    texts, y_true = new["text"].tolist(), new["tag"].tolist()
    model, _ = registry.load_model(settings, version)
    y_pred = list(model.predict(texts))
    overall, _ = compute_metrics(y_true, y_pred)
    accuracy = sum(a == b for a, b in zip(y_true, y_pred, strict=True)) / len(y_true)
    previous_f1 = None
    if previous is not None:
        previous_model, _ = registry.load_model(settings, previous.version)
        previous_f1 = compute_metrics(y_true, list(previous_model.predict(texts)))[0].f1
    return LabelledCheck(
        rows=len(new),
        production_version=version,
        production_f1=overall.f1,
        production_accuracy=accuracy,
        reference_f1=production.metrics.get("test_f1"),
        previous_version=previous.version if previous else None,
        previous_f1=previous_f1,
    )


def retrain_request_path(settings: Settings, version: int, snapshot_id: str) -> Path:
    return settings.monitoring_dir / "retrain-requests" / f"v{version}-{snapshot_id}.json"


def decide_monitor_action(
    settings: Settings,
    version: int,
    traffic: TrafficDrift | None,
    labelled: LabelledCheck | None,
    policy: DriftPolicy,
) -> MonitorDecision:
    """The policy's action (:func:`tagifai.policy.decide_action`), knowing whether a retrain of
    this version on the latest snapshot was already requested."""
    from tagifai.policy import decide_action

    snapshot_id = extract.latest_snapshot_id(settings)
    requested = snapshot_id is not None and (
        retrain_request_path(settings, version, snapshot_id).is_file()
    )
    decision = decide_action(traffic, labelled, policy, retrain_requested=requested)
    if decision.action == "retrain" and snapshot_id is None:
        from tagifai.policy import MonitorDecision

        reason = f"no data snapshot to retrain on (run dataops first); {decision.reason}"
        return MonitorDecision("inspect", reason, decision.reasons)
    return decision


def retrain_request(settings: Settings, version: int, decision: MonitorDecision) -> dict:
    """The ``tagifai.drift.detected`` event: retrain on the latest snapshot (mlops' trigger)."""
    snapshot_id = extract.latest_snapshot_id(settings)
    return {
        "event": "tagifai.drift.detected",
        "resource": {
            "prefect.resource.id": f"tagifai.model.v{version}",
            "prefect.resource.name": f"tagifai v{version}",
        },
        "payload": {
            "model_version": version,
            "snapshot_id": snapshot_id,
            "reason": decision.reason,
            "reasons": list(decision.reasons),
        },
    }


def record_retrain_request(settings: Settings, event: dict, event_id: str | None) -> Path:
    """Remember that a retrain of this version on this snapshot was requested: later runs on
    the same drift inspect instead of retraining the same data again."""
    payload = event["payload"]
    path = retrain_request_path(settings, payload["model_version"], payload["snapshot_id"])
    at = datetime.now(UTC).isoformat(timespec="seconds")
    return files.write_json(path, {**event, "id": event_id, "at": at})


@dataclass(frozen=True)
class MonitorReport:
    markdown: Path
    plot: Path | None
    data: Path


def file_monitor_report(
    settings: Settings,
    version: int,
    traffic: TrafficDrift | None,
    labelled: LabelledCheck | None,
    decision: MonitorDecision,
    window: tuple[datetime, datetime],
) -> MonitorReport:
    """The drift table, the plot and the decision under ``stores/monitoring/reports``; the
    latest also as ``stores/monitoring/last_monitor.json`` (for ``tagifai status``)."""
    from dataclasses import asdict

    from tagifai.reporting import monitor_markdown, plot_drift

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = settings.monitoring_dir / "reports" / f"{stamp}-v{version}"
    markdown = files.write_text(
        folder / "report.md", monitor_markdown(version, traffic, labelled, decision, window)
    )
    plot = plot_drift(traffic, folder / "drift.png") if traffic and traffic.predictions else None
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_version": version,
        "window": [window[0].isoformat(), window[1].isoformat()],
        "action": decision.action,
        "reason": decision.reason,
        "reasons": list(decision.reasons),
        "predictions": traffic.predictions if traffic else 0,
        "drift": traffic.rows() if traffic else [],
        "labelled": asdict(labelled) if labelled else None,
        "report": str(markdown),
    }
    data = files.write_json(folder / "monitor.json", record)
    files.write_json(settings.monitoring_dir / "last_monitor.json", record)
    return MonitorReport(markdown, plot, data)
