"""Carry an embedded install's state into team mode, so that nobody loses the production model.

MLflow has no copy between tracking stores, so the registry is copied with an ``MlflowClient``
on each side: every registered version of ``tagifai``, in version order, becomes a new run in
the target (params, full metric histories, tags, every artifact) and a version registered from
that run with the same tags; then the aliases (``production``) point at the copies. Into an
empty registry the version numbers stay the same. Optuna's studies move from the journal file
with ``optuna.copy_study``; Feast's online store is not copied but re-materialised from the
offline source that both modes share. Prefect's run history stays on the old server.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagifai import registry
from tagifai.config import MODEL_NAME, Settings
from tagifai.errors import TagifaiError

logger = logging.getLogger(__name__)

MIGRATED_FROM_TAG = "tagifai.migrated_from_run"
METRICS_PER_BATCH = 1000  # MLflow's log_batch limit


class MigrationError(TagifaiError):
    """The migration cannot run or would overwrite something; the message says which."""


@dataclass(frozen=True)
class MigrationReport:
    """What moved: version map (source -> target), aliases, studies, online rows."""

    versions: dict[int, int]
    aliases: dict[str, int]
    studies: tuple[str, ...]
    online_rows: int | None


def migrate(source: Settings, target: Settings) -> MigrationReport:
    """Registry, then studies, then the online store (each step is idempotent but the first,
    which refuses a target that already has versions).

    Raises:
        MigrationError: source and target are the same store, or the target registry already
            holds versions of the model.
    """
    if source.mlflow_tracking_uri == target.mlflow_tracking_uri:
        raise MigrationError(
            "source and target are the same MLflow store: is team mode on? (make up TEAM=1)"
        )
    versions, aliases = copy_registry(source, target)
    studies = copy_studies(source, target)
    online_rows = rematerialize(target)
    return MigrationReport(versions, aliases, studies, online_rows)


def copy_registry(source: Settings, target: Settings) -> tuple[dict[int, int], dict[str, int]]:
    """Copy every version of the model and its run; point the aliases at the copies.

    Returns:
        Source version -> target version, and alias -> target version.
    """
    from mlflow.exceptions import MlflowException

    src, dst = registry.connect(source), registry.connect(target)
    existing = dst.search_model_versions(f"name='{MODEL_NAME}'")
    if existing:
        numbers = sorted(int(v.version) for v in existing)
        raise MigrationError(
            f"the target registry already holds {MODEL_NAME} v{numbers[0]}..v{numbers[-1]}: "
            "migrate into an empty one (a fresh stores/team)"
        )
    found = sorted(src.search_model_versions(f"name='{MODEL_NAME}'"), key=lambda v: int(v.version))
    if not found:
        return {}, {}
    model = src.get_registered_model(MODEL_NAME)
    with contextlib.suppress(MlflowException):  # registered already, without versions
        dst.create_registered_model(MODEL_NAME, tags=model.tags, description=model.description)
    experiment_id = registry.ensure_experiment(target)
    versions: dict[int, int] = {}
    for version in found:
        run_id = _copy_run(src, dst, version.run_id, experiment_id)
        suffix = version.source.removeprefix(f"runs:/{version.run_id}/")
        copied = dst.create_model_version(
            MODEL_NAME,
            f"runs:/{run_id}/{suffix}",
            run_id=run_id,
            tags=version.tags,
            description=version.description,
        )
        versions[int(version.version)] = int(copied.version)
        logger.info("copied %s v%s as v%s", MODEL_NAME, version.version, copied.version)
    aliases = {alias: versions[int(number)] for alias, number in model.aliases.items()}
    for alias, number in aliases.items():
        dst.set_registered_model_alias(MODEL_NAME, alias, str(number))
    return versions, aliases


def _copy_run(src: Any, dst: Any, run_id: str, experiment_id: str) -> str:
    """A new run in ``dst`` with the run's tags, params, metric histories and artifacts."""
    from mlflow.entities import Metric, Param

    run = src.get_run(run_id)
    tags = {**run.data.tags, MIGRATED_FROM_TAG: run_id}
    copy = dst.create_run(
        experiment_id, start_time=run.info.start_time, tags=tags, run_name=run.info.run_name
    )
    new_id = copy.info.run_id
    history = [
        Metric(m.key, m.value, m.timestamp, m.step)
        for key in run.data.metrics
        for m in src.get_metric_history(run_id, key)
    ]
    for start in range(0, len(history), METRICS_PER_BATCH):
        dst.log_batch(new_id, metrics=history[start : start + METRICS_PER_BATCH])
    dst.log_batch(new_id, params=[Param(k, v) for k, v in run.data.params.items()])
    with tempfile.TemporaryDirectory() as tmp:
        if src.list_artifacts(run_id):
            dst.log_artifacts(new_id, src.download_artifacts(run_id, "", tmp))
    dst.set_terminated(new_id, status=run.info.status, end_time=run.info.end_time)
    return new_id


def copy_studies(source: Settings, target: Settings) -> tuple[str, ...]:
    """Every Optuna study of the source storage that the target lacks, with its trials."""
    import optuna

    from tagifai.tune import get_storage

    if not source.optuna_storage and not source.optuna_journal.exists():
        return ()
    if source.optuna_storage == target.optuna_storage:
        return ()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from_storage, to_storage = get_storage(source), get_storage(target)
    present = set(optuna.get_all_study_names(to_storage))
    copied = []
    for name in optuna.get_all_study_names(from_storage):
        if name not in present:
            optuna.copy_study(
                from_study_name=name, from_storage=from_storage, to_storage=to_storage
            )
            copied.append(name)
    return tuple(copied)


def rematerialize(target: Settings) -> int | None:
    """Fill the target's online store from the shared offline source (None: no features yet)."""
    from tagifai import steps
    from tagifai.features import current_feature_set

    feature_set = current_feature_set(target)
    if feature_set is None or not Path(feature_set.path).exists():
        return None
    return steps.cache_to_feature_store(target, feature_set).rows
