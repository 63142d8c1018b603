"""Paths and settings: one frozen object built at the edge from the environment.

Nothing here runs at import time; call :func:`get_settings` where a setting is needed.
Every piece of runtime state lives under one directory, ``stores/`` by default
(``TAGIFAI_STORES_DIR`` moves it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from tagifai.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]

LABELS: tuple[str, ...] = ("computer-vision", "mlops", "natural-language-processing", "other")
OTHER_LABEL = "other"
MODEL_NAME = "tagifai"
PRODUCTION_ALIAS = "production"
SEED = 42
# Optuna search spaces by name ("auto" resolves to one of the others by data size).
SEARCH_SPACES: tuple[str, ...] = ("auto", "default", "weak", "scale")


@dataclass(frozen=True)
class Settings:
    """Where state lives and which engines to talk to."""

    stores_dir: Path
    data_dir: Path = REPO_ROOT / "data" / "raw"
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
    seed: int = SEED
    # Past these sizes tuning, cross-validation and references work on stratified samples,
    # and the "auto" search space switches to hashing + SGD (the final fit uses every row).
    max_tune_rows: int = 50_000
    max_cv_rows: int = 100_000
    scale_rows: int = 200_000
    # A sentence-transformers ONNX export (model.onnx + tokenizer.json); None: the packaged one.
    embedding_model_dir: Path | None = None

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
    def prefect_dir(self) -> Path:
        return self.stores_dir / "prefect"

    @property
    def projects_csv(self) -> Path:
        return self.data_dir / "projects.csv"

    @property
    def tags_csv(self) -> Path:
        return self.data_dir / "tags.csv"

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def get_settings(env: dict[str, str] | None = None) -> Settings:
    """Build settings from the environment (``TAGIFAI_*``, ``MLFLOW_TRACKING_URI``)."""
    env = dict(os.environ) if env is None else env
    stores_dir = Path(env.get("TAGIFAI_STORES_DIR") or REPO_ROOT / "stores").resolve()
    mlflow_uri = (
        env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{stores_dir / 'mlflow' / 'mlflow.db'}"
    )
    optuna_storage = env.get("TAGIFAI_OPTUNA_STORAGE") or ""
    urls = tuple(u.strip() for u in env.get("TAGIFAI_NOTIFY_URLS", "").split(",") if u.strip())
    return Settings(
        stores_dir=stores_dir,
        data_dir=Path(env.get("TAGIFAI_DATA_DIR") or REPO_ROOT / "data" / "raw").resolve(),
        mlflow_tracking_uri=mlflow_uri,
        optuna_storage=optuna_storage,
        dask_address=env.get("TAGIFAI_DASK_ADDRESS") or None,
        dask_workers=_int(env, "TAGIFAI_DASK_WORKERS", 2),
        dask_processes=_bool(env, "TAGIFAI_DASK_PROCESSES", False),
        notify_urls=urls,
        max_tune_rows=_int(env, "TAGIFAI_MAX_TUNE_ROWS", 50_000),
        max_cv_rows=_int(env, "TAGIFAI_MAX_CV_ROWS", 100_000),
        scale_rows=_int(env, "TAGIFAI_SCALE_ROWS", 200_000),
        embedding_model_dir=_path(env, "TAGIFAI_EMBEDDING_MODEL_DIR"),
    )


def _path(env: dict[str, str], name: str) -> Path | None:
    raw = (env.get(name) or "").strip()
    return Path(raw).expanduser().resolve() if raw else None


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


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in _TRUE | _FALSE:
        raise ConfigError(f"{name} must be one of true/false/1/0/yes/no, not {raw!r}")
    return raw in _TRUE
