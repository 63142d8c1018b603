"""Paths and settings: one frozen object built at the edge from the environment.

Nothing here runs at import time; call :func:`get_settings` where a setting is needed.
Every piece of runtime state lives under one directory, ``stores/`` by default
(``TAGIFAI_STORES_DIR`` moves it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from tagifai.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_DATA_DIR = REPO_ROOT / "data" / "raw"

LABELS: tuple[str, ...] = ("computer-vision", "mlops", "natural-language-processing", "other")
OTHER_LABEL = "other"
MODEL_NAME = "tagifai"
PRODUCTION_ALIAS = "production"
SEED = 42
# The dataops run labels itself with the snapshot it published; the mlops trigger reads it.
SNAPSHOT_LABEL = "tagifai.snapshot"
# Optuna search spaces by name ("auto" resolves to one of the others by data size).
SEARCH_SPACES: tuple[str, ...] = ("auto", "default", "weak", "scale")
# MLflow experiment whose runs are the alias history: one run per move of ``production``.
ALIAS_HISTORY_EXPERIMENT = "tagifai-production-history"


@dataclass(frozen=True)
class Settings:
    """Where state lives and which engines to talk to."""

    stores_dir: Path
    data_dir: Path = SHIPPED_DATA_DIR
    gx_dir: Path = REPO_ROOT / "great_expectations"
    feature_repo_dir: Path = REPO_ROOT / "feature_repo"
    mlflow_tracking_uri: str = ""
    optuna_storage: str = ""  # an RDB URL; empty means a journal file under stores/optuna
    dask_address: str | None = None
    dask_workers: int = 2
    # The local cluster's workers: threads in the flow-run process (default: nothing to start
    # or import again, right for small data) or separate processes (CPU-bound work at scale).
    dask_processes: bool = False
    notify_urls: tuple[str, ...] = field(default_factory=tuple)
    # Where people open what the runs link to: the MLflow UI and the served Data Docs site
    # (None: links to a tracking server's own UI, and file:// links to the Data Docs).
    mlflow_ui_url: str | None = None
    data_docs_url: str | None = None
    seed: int = SEED
    # Past these sizes tuning, cross-validation and references work on stratified samples,
    # and the "auto" search space switches to hashing + SGD (the final fit uses every row).
    max_tune_rows: int = 50_000
    max_cv_rows: int = 100_000
    scale_rows: int = 200_000
    # Monitoring references are computed out of fold on at most this many training rows.
    max_reference_rows: int = 20_000
    # The prediction log: a directory a team can point at shared storage (None: under stores).
    prediction_log_dir: Path | None = None
    prediction_log: bool = True  # False: predictions are not logged (benchmarks, debugging)
    prediction_log_flush_rows: int = 1000
    prediction_log_flush_seconds: float = 5.0
    # The prediction service: largest batch per request, and how often it checks the alias.
    predict_max_batch: int = 256
    predict_reload_seconds: float = 5.0
    # Who moves ``production`` from a terminal (the alias history records it).
    actor: str = "unknown"

    @property
    def tune_batches(self) -> int:
        """Parallel Optuna batches: one per Dask worker process; one on a local cluster of
        threads, where trials (mostly Python under the GIL) run no faster side by side."""
        if self.dask_address or self.dask_processes:
            return self.dask_workers
        return 1

    @property
    def snapshots_dir(self) -> Path:
        return self.stores_dir / "snapshots"

    @property
    def features_dir(self) -> Path:
        return self.stores_dir / "features"

    @property
    def feast_dir(self) -> Path:
        return self.stores_dir / "feast"

    @property
    def gx_state_dir(self) -> Path:
        return self.stores_dir / "gx"

    @property
    def mlflow_dir(self) -> Path:
        return self.stores_dir / "mlflow"

    @property
    def optuna_journal(self) -> Path:
        return self.stores_dir / "optuna" / "journal.log"

    @property
    def reports_dir(self) -> Path:
        return self.stores_dir / "reports"

    @property
    def references_dir(self) -> Path:
        return self.stores_dir / "references"

    @property
    def predictions_dir(self) -> Path:
        return self.prediction_log_dir or self.stores_dir / "predictions"

    @property
    def monitoring_dir(self) -> Path:
        return self.stores_dir / "monitoring"

    @property
    def training_dir(self) -> Path:
        return self.stores_dir / "training"

    @property
    def locks_dir(self) -> Path:
        return self.stores_dir / "locks"

    @property
    def prefect_dir(self) -> Path:
        return self.stores_dir / "prefect"

    @property
    def projects_csv(self) -> Path:
        return self.data_dir / "projects.csv"

    @property
    def tags_csv(self) -> Path:
        return self.data_dir / "tags.csv"


def get_settings(env: dict[str, str] | None = None) -> Settings:
    """Build settings from the environment (``TAGIFAI_*``, ``MLFLOW_TRACKING_URI``).

    Called once at each edge (a command, a flow run, a service's start-up); everything below
    takes the resulting object.
    """
    env = dict(os.environ) if env is None else env
    stores_dir = Path(env.get("TAGIFAI_STORES_DIR") or REPO_ROOT / "stores").resolve()
    mlflow_uri = (
        env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{stores_dir / 'mlflow' / 'mlflow.db'}"
    )
    optuna_storage = env.get("TAGIFAI_OPTUNA_STORAGE") or ""
    urls = tuple(u.strip() for u in env.get("TAGIFAI_NOTIFY_URLS", "").split(",") if u.strip())
    return Settings(
        stores_dir=stores_dir,
        data_dir=Path(env.get("TAGIFAI_DATA_DIR") or SHIPPED_DATA_DIR).resolve(),
        mlflow_tracking_uri=mlflow_uri,
        optuna_storage=optuna_storage,
        dask_address=env.get("TAGIFAI_DASK_ADDRESS") or None,
        dask_workers=_int(env, "TAGIFAI_DASK_WORKERS", 2),
        dask_processes=_bool(env, "TAGIFAI_DASK_PROCESSES", False),
        notify_urls=urls,
        mlflow_ui_url=env.get("TAGIFAI_MLFLOW_UI_URL") or None,
        data_docs_url=env.get("TAGIFAI_DATA_DOCS_URL") or None,
        max_tune_rows=_int(env, "TAGIFAI_MAX_TUNE_ROWS", 50_000),
        max_cv_rows=_int(env, "TAGIFAI_MAX_CV_ROWS", 100_000),
        scale_rows=_int(env, "TAGIFAI_SCALE_ROWS", 200_000),
        max_reference_rows=_int(env, "TAGIFAI_MAX_REFERENCE_ROWS", 20_000),
        prediction_log_dir=_path(env, "TAGIFAI_PREDICTIONS_DIR"),
        prediction_log=_bool(env, "TAGIFAI_PREDICTION_LOG", True),
        prediction_log_flush_rows=_int(env, "TAGIFAI_PREDICTION_LOG_FLUSH_ROWS", 1000),
        prediction_log_flush_seconds=_float(env, "TAGIFAI_PREDICTION_LOG_FLUSH_SECONDS", 5.0),
        predict_max_batch=_int(env, "TAGIFAI_PREDICT_MAX_BATCH", 256),
        predict_reload_seconds=_float(env, "TAGIFAI_PREDICT_RELOAD_SECONDS", 5.0),
        actor=(env.get("TAGIFAI_ACTOR") or env.get("USER") or env.get("LOGNAME") or "unknown"),
    )


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, not {raw!r}")
    return value


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, not {raw!r}")
    return value


def _path(env: dict[str, str], name: str) -> Path | None:
    raw = (env.get(name) or "").strip()
    return Path(raw).expanduser().resolve() if raw else None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in _TRUE | _FALSE:
        raise ConfigError(f"{name} must be one of true/false/1/0/yes/no, not {raw!r}")
    return raw in _TRUE
