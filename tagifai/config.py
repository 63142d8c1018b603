"""Paths and settings: one frozen object built at the edge from the environment.

Nothing here runs at import time; call :func:`get_settings` where a setting is needed.
Every piece of runtime state lives under one directory, ``stores/`` by default
(``TAGIFAI_STORES_DIR`` moves it).

Team mode is a property of that directory: ``python -m deployments.platform up --team``
writes ``stores/team/team.env``, and while that file exists every edge that builds settings
(a command, a flow run, a service) talks to the team's PostgreSQL (MLflow, Optuna) and Redis
(Feast's online store) instead of the embedded SQLite files. ``TAGIFAI_TEAM=0`` ignores it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

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
DEFAULT_LANDING_DIR = REPO_ROOT / "data" / "landing"


@dataclass(frozen=True)
class LandingDir:
    """A sensor source: a folder of batch folders (see :mod:`tagifai.sensor`)."""

    path: Path

    @property
    def label(self) -> str:
        return f"landing:{self.path}"


@dataclass(frozen=True)
class SqlTables:
    """A sensor source: a projects table and a tags table in one database (SQLAlchemy URL)."""

    url: str
    projects_table: str = "projects"
    tags_table: str = "tags"

    @property
    def projects_uri(self) -> str:
        return f"{self.url}#{self.projects_table}"

    @property
    def tags_uri(self) -> str:
        return f"{self.url}#{self.tags_table}"

    @property
    def label(self) -> str:
        return f"sql:{self.url}#{self.projects_table},{self.tags_table}"


SensorSource = LandingDir | SqlTables

# Under the stores dir: the team mode's settings file (KEY=VALUE lines, like the environment).
TEAM_ENV_FILE = Path("team") / "team.env"
FEAST_CONFIG = "feature_store.yaml"
FEAST_TEAM_CONFIG = "feature_store.redis.yaml"


@dataclass(frozen=True)
class TeamSettings:
    """The team stack of a stores dir: PostgreSQL and Redis on the loopback.

    Passwords live in files under ``secrets/`` (mode 0600), never in a URL: PostgreSQL clients
    read theirs from a libpq passfile named in the URL, Redis clients from its password file.
    """

    directory: Path  # stores/team
    postgres_port: int
    redis_port: int
    host: str = "127.0.0.1"

    @property
    def secrets_dir(self) -> Path:
        return self.directory / "secrets"

    @property
    def pgpass(self) -> Path:
        """The libpq password file: one line per database role."""
        return self.secrets_dir / "pgpass"

    @property
    def redis_password_file(self) -> Path:
        return self.secrets_dir / "redis-password"

    def database_url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        """SQLAlchemy URL of one of the team's databases, as its own role (same name)."""
        where = f"{self.host}:{self.postgres_port}/{database}"
        return f"{driver}://{database}@{where}?passfile={quote(str(self.pgpass))}"

    @property
    def redis_address(self) -> str:
        return f"{self.host}:{self.redis_port}"


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
    # Feast: which YAML of feature_repo/ configures the store, and the Redis its
    # ${TAGIFAI_REDIS_CONNECTION} placeholder points at (host:port, password in a file).
    feast_config: str = FEAST_CONFIG
    redis_address: str | None = None
    redis_password_file: Path | None = None
    team: TeamSettings | None = None  # None: embedded SQLite stores
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
    # Cross-validation (model selection and the reported CV) repeats 5-fold CV this often.
    cv_repeats: int = 3
    # What the data-arrival sensor watches (TAGIFAI_SENSOR_SOURCES).
    sensor_sources: tuple[SensorSource, ...] = (LandingDir(DEFAULT_LANDING_DIR),)
    # Seconds between two looks of the sensor (a batch without _SUCCESS needs two looks).
    sensor_interval_s: int = 5
    # A sentence-transformers ONNX export (model.onnx + tokenizer.json); None: the packaged one.
    embedding_model_dir: Path | None = None
    # Rows per partition of a snapshot (TAGIFAI_PARTITION_ROWS): every DataOps and MLOps step
    # works one partition at a time, so memory follows this, not the size of the data.
    partition_rows: int = 250_000
    # Writers the online store takes at once during materialisation (TAGIFAI_ONLINE_WRITERS);
    # None: what the configured store takes (SQLite: one).
    online_writers: int | None = None
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
    def mlflow_artifacts_dir(self) -> Path:
        """Artifact root of the experiment (and of the MLflow server) for this mode."""
        if self.team is not None:
            return self.team.directory / "mlflow-artifacts"
        return self.mlflow_dir / "artifacts"

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
    def sensor_dir(self) -> Path:
        return self.stores_dir / "sensor"

    @property
    def projects_csv(self) -> Path:
        return self.data_dir / "projects.csv"

    @property
    def tags_csv(self) -> Path:
        return self.data_dir / "tags.csv"


def get_settings(env: dict[str, str] | None = None) -> Settings:
    """Build settings from the environment (``TAGIFAI_*``, ``MLFLOW_TRACKING_URI``).

    Called once at each edge (a command, a flow run, a service's start-up); everything below
    takes the resulting object. In team mode (``stores/team/team.env`` exists and
    ``TAGIFAI_TEAM`` is not false) that file's values and the team's URLs come first, and the
    environment still overrides any of them.
    """
    env = dict(os.environ) if env is None else env
    stores_dir = Path(env.get("TAGIFAI_STORES_DIR") or REPO_ROOT / "stores").resolve()
    team = None
    wanted = (env.get("TAGIFAI_TEAM") or "").strip()
    if not wanted or _bool(env, "TAGIFAI_TEAM", True):
        team_file = read_env_file(stores_dir / TEAM_ENV_FILE)
        if team_file is None and wanted:
            raise ConfigError(
                f"TAGIFAI_TEAM={wanted} but {stores_dir / TEAM_ENV_FILE} does not exist: "
                "start team mode with `make up TEAM=1`"
            )
        if team_file is not None:
            given = {name: value for name, value in env.items() if value}  # empty = unset
            team = _team_settings({**team_file, **given}, stores_dir)
            env = {**_team_defaults(team), **team_file, **given}
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
        feast_config=env.get("TAGIFAI_FEAST_CONFIG") or FEAST_CONFIG,
        redis_address=env.get("TAGIFAI_REDIS_ADDRESS") or None,
        redis_password_file=_path(env, "TAGIFAI_REDIS_PASSWORD_FILE"),
        team=team,
        dask_address=env.get("TAGIFAI_DASK_ADDRESS") or None,
        dask_workers=_int(env, "TAGIFAI_DASK_WORKERS", 2),
        dask_processes=_bool(env, "TAGIFAI_DASK_PROCESSES", False),
        notify_urls=urls,
        mlflow_ui_url=env.get("TAGIFAI_MLFLOW_UI_URL") or None,
        data_docs_url=env.get("TAGIFAI_DATA_DOCS_URL") or None,
        max_tune_rows=_int(env, "TAGIFAI_MAX_TUNE_ROWS", 50_000),
        max_cv_rows=_int(env, "TAGIFAI_MAX_CV_ROWS", 100_000),
        scale_rows=_int(env, "TAGIFAI_SCALE_ROWS", 200_000),
        cv_repeats=_int(env, "TAGIFAI_CV_REPEATS", 3),
        sensor_sources=parse_sensor_sources(env.get("TAGIFAI_SENSOR_SOURCES") or ""),
        sensor_interval_s=_int(env, "TAGIFAI_SENSOR_INTERVAL", 5),
        embedding_model_dir=_path(env, "TAGIFAI_EMBEDDING_MODEL_DIR"),
        partition_rows=_int(env, "TAGIFAI_PARTITION_ROWS", 250_000),
        online_writers=_int(env, "TAGIFAI_ONLINE_WRITERS", 0) or None,
        max_reference_rows=_int(env, "TAGIFAI_MAX_REFERENCE_ROWS", 20_000),
        prediction_log_dir=_path(env, "TAGIFAI_PREDICTIONS_DIR"),
        prediction_log=_bool(env, "TAGIFAI_PREDICTION_LOG", True),
        prediction_log_flush_rows=_int(env, "TAGIFAI_PREDICTION_LOG_FLUSH_ROWS", 1000),
        prediction_log_flush_seconds=_float(env, "TAGIFAI_PREDICTION_LOG_FLUSH_SECONDS", 5.0),
        predict_max_batch=_int(env, "TAGIFAI_PREDICT_MAX_BATCH", 256),
        predict_reload_seconds=_float(env, "TAGIFAI_PREDICT_RELOAD_SECONDS", 5.0),
        actor=(env.get("TAGIFAI_ACTOR") or env.get("USER") or env.get("LOGNAME") or "unknown"),
    )


def _path(env: dict[str, str], name: str) -> Path | None:
    raw = (env.get(name) or "").strip()
    return Path(raw).expanduser().resolve() if raw else None


def read_env_file(path: Path) -> dict[str, str] | None:
    """``KEY=VALUE`` lines of an env file (``#`` comments, blank lines); None if it is absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    values = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, equals, value = line.partition("=")
        if not equals or not name.strip().isidentifier():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, not {line[:40]!r}")
        values[name.strip()] = value.strip()
    return values


def _team_settings(env: dict[str, str], stores_dir: Path) -> TeamSettings:
    names = ("TAGIFAI_TEAM_POSTGRES_PORT", "TAGIFAI_TEAM_REDIS_PORT")
    missing = [name for name in names if not env.get(name)]
    if missing:
        raise ConfigError(
            f"{stores_dir / TEAM_ENV_FILE} lacks {', '.join(missing)}: run "
            "`python -m deployments.platform up --team` again"
        )
    return TeamSettings(
        directory=stores_dir / TEAM_ENV_FILE.parent,
        postgres_port=_int(env, names[0], 0),
        redis_port=_int(env, names[1], 0),
    )


def _team_defaults(team: TeamSettings) -> dict[str, str]:
    """The settings team mode changes: MLflow and Optuna on PostgreSQL, Feast online on Redis."""
    return {
        "MLFLOW_TRACKING_URI": team.database_url("mlflow"),
        "TAGIFAI_OPTUNA_STORAGE": team.database_url("optuna"),
        "TAGIFAI_FEAST_CONFIG": FEAST_TEAM_CONFIG,
        "TAGIFAI_REDIS_ADDRESS": team.redis_address,
        "TAGIFAI_REDIS_PASSWORD_FILE": str(team.redis_password_file),
    }


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


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in _TRUE | _FALSE:
        raise ConfigError(f"{name} must be one of true/false/1/0/yes/no, not {raw!r}")
    return raw in _TRUE


_SQL_DIALECTS = {"sqlite", "postgresql"}
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def parse_sensor_sources(
    raw: str, name: str = "TAGIFAI_SENSOR_SOURCES"
) -> tuple[SensorSource, ...]:
    """Parse ``;``-separated sensor sources; empty means the default landing directory.

    Each entry is a landing directory (a path or ``file://`` URI; relative to the working
    directory) or a SQLAlchemy URL of a database holding both tables, ``sqlite:///w.db`` or
    ``postgresql+psycopg://host/db``, optionally naming them: ``<url>#<projects>,<tags>``
    (default ``#projects,tags``). Entries are split on ``;`` because PostgreSQL URLs may
    hold commas (several hosts). Passwords are refused: the URIs travel in Prefect events
    and flow-run parameters, so credentials come from the environment (``PGPASSFILE``).

    Raises:
        ConfigError: an unknown scheme (S3 is not supported yet), a URL with a password,
            bad table names, an in-memory SQLite database, or an entry listed twice.
    """
    entries = [entry.strip() for entry in raw.split(";") if entry.strip()]
    if not raw.strip():
        return (LandingDir(DEFAULT_LANDING_DIR),)
    if not entries:
        raise ConfigError(f"{name} lists no source: {raw!r}")
    sources = tuple(_sensor_source(entry, name) for entry in entries)
    repeated = sorted({s.label for s in sources if sources.count(s) > 1})
    if repeated:
        raise ConfigError(f"{name} lists {repeated[0]} more than once")
    return sources


def _sensor_source(entry: str, name: str) -> SensorSource:
    scheme = entry.split("://", 1)[0].lower() if "://" in entry else ""
    if not scheme:
        return LandingDir(Path(entry).expanduser().resolve())
    if scheme == "file":
        return LandingDir(Path(unquote(urlsplit(entry).path)).resolve())
    shown = _without_password(entry)  # messages never echo a password
    if scheme == "s3":
        raise ConfigError(f"{name}: S3 prefixes are not supported yet ({shown!r})")
    if scheme.split("+", 1)[0] not in _SQL_DIALECTS:
        raise ConfigError(
            f"{name}: {shown!r} is neither a directory nor a sqlite:// or postgresql:// URL"
        )
    url, _, fragment = entry.partition("#")
    if shown != entry:
        raise ConfigError(f"{name}: {shown!r} carries a password; use PGPASSFILE instead")
    tables = fragment.split(",") if fragment else ["projects", "tags"]
    if len(tables) != 2 or not all(_TABLE_NAME.match(t.strip()) for t in tables):
        raise ConfigError(f"{name}: {entry!r} must end in #<projects_table>,<tags_table>")
    if scheme.startswith("sqlite"):
        url = _absolute_sqlite_url(url, scheme, name)
    return SqlTables(url, tables[0].strip(), tables[1].strip())


def _without_password(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def _absolute_sqlite_url(url: str, scheme: str, name: str) -> str:
    # The flow run reads the same URI from another working directory: make the path absolute.
    prefix = url[: len(scheme)] + ":///"
    database = url[len(prefix) :] if url.startswith(prefix) else ""
    if not database or database == ":memory:" or "?" in database:
        raise ConfigError(f"{name}: SQLite sources must be {scheme}:///path/to/file.db")
    return f"{prefix}{Path(database).expanduser().resolve()}"
