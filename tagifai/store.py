"""Feature store: the Feast repo in ``feature_repo/`` served from runtime state under ``stores/``.

``feature_repo/feature_store.yaml`` and ``feature_repo/definitions.py`` are the declarative
assets. Their paths are relative, and Feast resolves relative registry, online-store and
FileSource paths against the store's ``repo_path``; this module builds the store with
``repo_path = settings.stores_dir`` while reading the YAML from ``settings.feature_repo_dir``.
So the registry, the SQLite online store and the offline Parquet source all live under the
stores directory (moved by ``TAGIFAI_STORES_DIR``) and nothing is written into the repository.
Team mode reads ``feature_store.redis.yaml`` instead (``settings.feast_config``): the online
store is then the team's Redis, whose ``${TAGIFAI_REDIS_CONNECTION}`` this module fills from
the settings (the password from its file, never from the YAML or the environment).

Concurrency: the DataOps flow writes (apply, materialise) from a Dask worker process while the
MLOps flow reads from another process. Feast rewrites its file registry in place (truncate,
then write), so a reader can see a half-written registry. Every function here therefore holds
an advisory ``flock`` on ``<feast_dir>/tagifai.lock``, exclusive for writers and shared for
readers, plus a process-wide lock for threads of one process (calls do not nest). Feast's
own Dask work runs on the local threaded scheduler, even inside a distributed worker, so it
never submits tasks back to the cluster the calling task is running on.

Feast is imported inside functions: it takes seconds to import.
"""

from __future__ import annotations

import logging
import sqlite3
import string
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from itertools import pairwise
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pandas as pd

from tagifai.config import Settings
from tagifai.errors import FeatureStoreError
from tagifai.files import file_lock

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView, RepoConfig

logger = logging.getLogger(__name__)

FEATURE_STORE_YAML = "feature_store.yaml"  # the default; settings.feast_config picks the file
DEFINITIONS_FILE = "definitions.py"
FEATURE_VIEW_NAME = "project_features"
FEATURE_NAMES: tuple[str, ...] = ("text", "embedding", "tag")
JOIN_KEY = "id"
EVENT_TIMESTAMP = "event_timestamp"
LOCK_FILE = "tagifai.lock"
MISSING_IDS_SHOWN = 10
# Rows per Feast materialize() call when no window is given; 1M rows in one call took 3.8 GiB.
ROWS_PER_WINDOW = 100_000
# The one placeholder a feature_store*.yaml may use; filled from settings.redis_*.
REDIS_PLACEHOLDER = "TAGIFAI_REDIS_CONNECTION"
REDIS_SCAN_BATCH = 10_000

_process_lock = threading.Lock()


@dataclass(frozen=True)
class MaterializeReport:
    """What one materialisation wrote into the online store."""

    rows: int
    windows: int
    seconds: float
    rows_per_second: float


def apply_definitions(settings: Settings) -> None:
    """Register the entity, source and feature view and create the online table (idempotent)."""
    objects = _feast_objects(_load_definitions(settings.feature_repo_dir / DEFINITIONS_FILE))
    started = time.perf_counter()
    with _locked(settings, exclusive=True):
        store = _open_store(settings)
        store.apply(objects)
    logger.info(
        "Applied %d Feast objects to %s in %.2f s",
        len(objects),
        _registry_path(store),
        time.perf_counter() - started,
    )


def materialize_features(
    settings: Settings, expected_rows: int, window: timedelta | None = None
) -> MaterializeReport:
    """Rebuild the online store from the offline source, one time window at a time.

    The online table is emptied first and then refilled over the source's whole
    ``created_on`` range with ``materialize(start, end)`` per window, so the online store
    mirrors the current source (rows dropped from the source disappear) and re-running on
    unchanged data leaves the same rows. Windows bound memory: Feast turns every row of a
    window into protobufs at once. Explicit windows also avoid ``materialize_incremental``,
    whose first run starts at now - TTL and silently writes nothing for older data.

    Args:
        settings: Where the stores live.
        expected_rows: Distinct project ids the source holds; the online count must match.
        window: Span of ``created_on`` per Feast call. ``None`` cuts the source into windows
            of about ``ROWS_PER_WINDOW`` rows each instead (one window for small sources).

    Returns:
        Rows in the online store, windows run, wall time and throughput.

    Raises:
        FeatureStoreError: The source is missing or empty, or the online store holds a
            different number of rows than ``expected_rows`` afterwards.
    """
    if window is not None and window <= timedelta(0):
        raise ValueError(f"window must be positive, got {window}")
    started = time.perf_counter()
    with _locked(settings, exclusive=True):
        store = _open_store(settings, require_registry=True)
        feature_view = store.get_feature_view(FEATURE_VIEW_NAME)
        windows = _materialize_windows(_source_timestamps(store, feature_view), window)
        start, end = windows[0][0], windows[-1][1]
        _clear_online_table(store, feature_view)
        for index, (window_start, window_end) in enumerate(windows, start=1):
            logger.info(
                "Materialising %s window %d/%d: %s .. %s",
                FEATURE_VIEW_NAME,
                index,
                len(windows),
                window_start.isoformat(),
                window_end.isoformat(),
            )
            with _local_dask():
                store.materialize(window_start, window_end, feature_views=[FEATURE_VIEW_NAME])
        rows = _count_online_rows(store, feature_view)
    seconds = time.perf_counter() - started
    if rows != expected_rows:
        raise FeatureStoreError(
            f"Online store holds {rows} {FEATURE_VIEW_NAME} rows after materialising "
            f"{start.isoformat()} .. {end.isoformat()} in {len(windows)} window(s); "
            f"expected {expected_rows}"
        )
    report = MaterializeReport(
        rows=rows,
        windows=len(windows),
        seconds=seconds,
        rows_per_second=rows / seconds if seconds > 0 else 0.0,
    )
    logger.info(
        "Materialised %d rows in %d window(s) in %.2f s (%.0f rows/s)",
        report.rows,
        report.windows,
        report.seconds,
        report.rows_per_second,
    )
    return report


# --- materialisation in parallel windows, one per features partition ------------------------

# Writers each online store takes at once; SQLite serialises writers on one file lock.
ONLINE_STORE_WRITERS: dict[str, int] = {"sqlite": 1}
# Rows Feast turns into protobufs and writes per batch inside a window: bounds its memory.
WRITE_BATCH_ROWS = 20_000
# SQLite page cache of the connection Feast writes a window with (SQLite's default is 2 MiB).
# Feast keys rows by the serialised entity key, whose int64 is little-endian, so consecutive ids
# land all over the primary-key B-tree: with the default cache every batch re-reads and spills
# pages. With 256 MiB six 250k-row windows took 0.77x the default's time, measured under load
# (`python -m benchmarks.run online_store`); it costs at most that much memory in the writer.
SQLITE_WRITE_CACHE_MIB = 256


@dataclass(frozen=True)
class MaterializeWindow:
    """One unit of a materialisation: a features partition and its ``created_on`` span."""

    index: int
    source: Path
    start: datetime
    end: datetime
    rows: int


def online_writers(settings: Settings) -> int:
    """How many windows may write to the online store at once: ``settings.online_writers``
    if set, else what the configured store takes (SQLite: one; others: one per worker)."""
    if settings.online_writers:
        return settings.online_writers
    import yaml

    config = yaml.safe_load((settings.feature_repo_dir / settings.feast_config).read_text())
    kind = str((config.get("online_store") or {}).get("type", "sqlite"))
    return ONLINE_STORE_WRITERS.get(kind, settings.dask_workers)


def plan_materialization(settings: Settings, parts: Sequence[Path]) -> list[MaterializeWindow]:
    """Apply the definitions, empty the online table (the store will mirror the source) and
    cut the work into windows, one per features partition: its rows and ``created_on`` span."""
    import pyarrow.parquet as pq

    apply_definitions(settings)
    with _locked(settings, exclusive=True):
        store = _open_store(settings, require_registry=True)
        feature_view = store.get_feature_view(FEATURE_VIEW_NAME)
        timestamp_field = feature_view.batch_source.timestamp_field
        _clear_online_table(store, feature_view)
    windows = []
    for index, part in enumerate(parts):
        table = pq.read_table(part, columns=[timestamp_field])
        if table.num_rows == 0:
            continue
        timestamps = _to_utc_ns(table.column(timestamp_field).to_pandas())
        start, end = timestamps.min().floor("us"), timestamps.max().ceil("us")
        windows.append(
            MaterializeWindow(
                index, part, start.to_pydatetime(), end.to_pydatetime(), table.num_rows
            )
        )
    return windows


def materialize_window(settings: Settings, window: MaterializeWindow) -> MaterializeReport:
    """Materialise one window into the online store: Feast reads only that partition's file
    (the feature view's source, swapped for it) over the window's span, in batches of
    :data:`WRITE_BATCH_ROWS` rows. Idempotent, so a failed window is retried alone.

    Holds the shared store lock (the registry is only read); how many windows write at once
    is the caller's concurrency limit (:func:`online_writers`).
    """
    started = time.perf_counter()
    with _locked(settings, exclusive=False):
        store = _open_store(settings, require_registry=True)
        feature_view = _view_over(store.get_feature_view(FEATURE_VIEW_NAME), window.source)
        config = store.config
        config.materialization_config = config.materialization_config.model_copy(
            update={"online_write_batch_size": WRITE_BATCH_ROWS}
        )
        if config.online_store.type == "sqlite":
            # Feast's own connection (cached on its online store, used for every batch).
            connection = store._get_provider().online_store._get_conn(config)
            connection.execute(f"PRAGMA cache_size = -{SQLITE_WRITE_CACHE_MIB * 1024}")
        with _local_dask():
            store._get_provider().materialize_single_feature_view(
                config=config,
                feature_view=feature_view,
                start_date=window.start,
                end_date=window.end,
                registry=store.registry,
                project=store.project,
                tqdm_builder=_no_progress,
            )
    seconds = time.perf_counter() - started
    logger.info(
        "Materialised window %d (%d rows, %s .. %s) in %.2f s",
        window.index,
        window.rows,
        window.start.isoformat(),
        window.end.isoformat(),
        seconds,
    )
    return MaterializeReport(window.rows, 1, seconds, window.rows / seconds if seconds else 0.0)


def finish_materialization(
    settings: Settings,
    windows: Sequence[MaterializeWindow],
    reports: Sequence[MaterializeReport],
    expected_rows: int,
    seconds: float,
) -> MaterializeReport:
    """Record the materialised span in the registry and check the online row count.

    Raises:
        FeatureStoreError: the online store holds a different number of rows than
            ``expected_rows``.
    """
    with _locked(settings, exclusive=True):
        store = _open_store(settings, require_registry=True)
        feature_view = store.get_feature_view(FEATURE_VIEW_NAME)
        if windows:
            start = min(w.start for w in windows)
            end = max(w.end for w in windows)
            store.registry.apply_materialization(feature_view, store.project, start, end)
        rows = _count_online_rows(store, feature_view)
    if rows != expected_rows:
        raise FeatureStoreError(
            f"Online store holds {rows} {FEATURE_VIEW_NAME} rows after materialising "
            f"{len(windows)} window(s) of {sum(w.rows for w in windows)} rows; "
            f"expected {expected_rows}"
        )
    report = MaterializeReport(rows, len(windows), seconds, rows / seconds if seconds else 0.0)
    logger.info(
        "Materialised %d rows in %d window(s): %.2f s of windows, %.0f rows/s",
        rows,
        len(reports),
        seconds,
        report.rows_per_second,
    )
    return report


def _view_over(feature_view: FeatureView, source: Path) -> FeatureView:
    """A copy of ``feature_view`` whose offline source is one partition file."""
    import copy

    view = copy.deepcopy(feature_view)
    view.batch_source.file_options.uri = str(source)
    return view


def _no_progress(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, disable=True)


def get_historical_features(
    settings: Settings, entity_df: pd.DataFrame, source: Path | None = None
) -> pd.DataFrame:
    """Point-in-time features for each (id, event_timestamp) row, in ``entity_df``'s order.

    A row gets the project's features when ``created_on <= event_timestamp`` and the gap is
    within the feature view's TTL. Feast's file store drops rows that match no feature row,
    returns unknown ids with nulls, collapses duplicate entity rows and reorders the rest;
    the result is joined back onto ``entity_df`` on (id, event_timestamp).

    Args:
        settings: Where the stores live.
        entity_df: Columns ``id`` and ``event_timestamp`` (UTC; naive values are taken as
            UTC), plus any others, which are kept.
        source: One partition file of the offline source holding every row these entities
            need (Feast then reads only it); None: the whole source.

    Returns:
        ``entity_df`` (same index and order) with ``text`` and ``tag`` added.

    Raises:
        FeatureStoreError: ``entity_df`` lacks a column, or any row got no features
            (the message names how many and which ids).
    """
    missing_columns = {JOIN_KEY, EVENT_TIMESTAMP} - set(entity_df.columns)
    if missing_columns:
        raise FeatureStoreError(f"entity_df lacks columns {sorted(missing_columns)}")
    entities = entity_df.copy()
    entities[JOIN_KEY] = entities[JOIN_KEY].astype("int64")
    entities[EVENT_TIMESTAMP] = _to_utc_ns(entities[EVENT_TIMESTAMP])
    keys = entities[[JOIN_KEY, EVENT_TIMESTAMP]].drop_duplicates(ignore_index=True)
    refs = [f"{FEATURE_VIEW_NAME}:{name}" for name in FEATURE_NAMES]

    started = time.perf_counter()
    with _locked(settings, exclusive=False):
        store = _open_store(settings, require_registry=True)
        feature_view = store.get_feature_view(FEATURE_VIEW_NAME)
        _require_source(store, feature_view)
        with _local_dask():
            if source is None:
                retrieved = store.get_historical_features(entity_df=keys, features=refs).to_df()
            else:
                job = store._get_provider().get_historical_features(
                    store.config,
                    [_view_over(feature_view, source)],
                    refs,
                    keys,
                    store.registry,
                    store.project,
                    False,
                )
                retrieved = job.to_df()

    retrieved[EVENT_TIMESTAMP] = _to_utc_ns(retrieved[EVENT_TIMESTAMP])
    retrieved = retrieved[[JOIN_KEY, EVENT_TIMESTAMP, *FEATURE_NAMES]].drop_duplicates(
        subset=[JOIN_KEY, EVENT_TIMESTAMP]
    )
    overlapping = [name for name in FEATURE_NAMES if name in entities.columns]
    joined = entities.drop(columns=overlapping).merge(
        retrieved, on=[JOIN_KEY, EVENT_TIMESTAMP], how="left", validate="many_to_one"
    )
    joined.index = entity_df.index

    missing = joined[list(FEATURE_NAMES)].isna().all(axis=1)
    if missing.any():
        missing_ids = joined.loc[missing, JOIN_KEY].drop_duplicates().tolist()
        shown = ", ".join(str(i) for i in missing_ids[:MISSING_IDS_SHOWN])
        more = "" if len(missing_ids) <= MISSING_IDS_SHOWN else ", ..."
        raise FeatureStoreError(
            f"{int(missing.sum())} of {len(joined)} entity rows ({len(missing_ids)} ids: "
            f"{shown}{more}) got no {FEATURE_VIEW_NAME} row: unknown id, event_timestamp "
            f"before the project's created_on, or more than the feature view's TTL after it"
        )
    logger.info(
        "Retrieved historical features for %d entity rows in %.2f s",
        len(joined),
        time.perf_counter() - started,
    )
    return joined


def get_online_features(settings: Settings, ids: Sequence[int]) -> list[dict[str, Any]]:
    """Latest online features per id, in order: ``{"id", "text", "tag"}`` (None when absent)."""
    if not ids:
        return []
    entity_rows = [{JOIN_KEY: int(i)} for i in ids]
    refs = [f"{FEATURE_VIEW_NAME}:{name}" for name in FEATURE_NAMES]
    with _locked(settings, exclusive=False):
        store = _open_store(settings, require_registry=True)
        _require_servable(store.get_feature_view(FEATURE_VIEW_NAME))
        response = store.get_online_features(features=refs, entity_rows=entity_rows).to_dict()
    return [
        {JOIN_KEY: row[JOIN_KEY], **{name: response[name][position] for name in FEATURE_NAMES}}
        for position, row in enumerate(entity_rows)
    ]


def count_online_rows(settings: Settings) -> int:
    """Distinct project ids in the online store (0 before anything was materialised)."""
    with _locked(settings, exclusive=False):
        store = _open_store(settings, require_registry=True)
        return _count_online_rows(store, store.get_feature_view(FEATURE_VIEW_NAME))


def open_store(settings: Settings) -> FeatureStore:
    """An open Feast store for a process that serves many online reads (a benchmark, a
    server): opened under the shared lock, then read without it (the registry is cached)."""
    with _locked(settings, exclusive=False):
        return _open_store(settings, require_registry=True)


def registry_file(settings: Settings) -> Path:
    """Where the configured YAML keeps Feast's file registry (read without importing Feast)."""
    import yaml

    path = settings.feature_repo_dir / settings.feast_config
    if not path.is_file():
        raise FeatureStoreError(f"No Feast configuration at {path}")
    registry = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("registry")
    location = Path(registry["path"] if isinstance(registry, dict) else str(registry))
    return location if location.is_absolute() else settings.stores_dir / location


# --- internals: callers hold the lock -------------------------------------------------------


@contextmanager
def _locked(settings: Settings, *, exclusive: bool) -> Iterator[None]:
    """Serialise access: an advisory file lock across processes, a mutex within one."""
    with _process_lock, file_lock(settings.feast_dir / LOCK_FILE, exclusive=exclusive):
        yield


@contextmanager
def _local_dask() -> Iterator[None]:
    """Run Feast's Dask graphs on the local threaded scheduler, not on an ambient cluster.

    Inside a distributed worker Dask would otherwise pick the worker's client and submit
    Feast's read of the source file from within a running task, to whichever worker (maybe
    on a host without that path). Callers hold ``_process_lock``, so this global config
    change does not interleave with another call of this module.
    """
    import dask

    with dask.config.set(scheduler="threads"):
        yield


def _open_store(settings: Settings, *, require_registry: bool = False) -> FeatureStore:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(settings.stores_dir), config=_repo_config(settings))
    registry_path = _registry_path(store)
    runtime_paths = [registry_path]
    if store.config.online_store.type == "sqlite":
        runtime_paths.append(_online_path(store))
    for path in runtime_paths:
        if path.is_relative_to(settings.feature_repo_dir.resolve()):
            raise FeatureStoreError(
                f"Feast runtime path {path} lies inside the feature repo "
                f"{settings.feature_repo_dir}; set TAGIFAI_STORES_DIR elsewhere"
            )
        # Feast creates only the last directory level itself.
        path.parent.mkdir(parents=True, exist_ok=True)
    if require_registry and not registry_path.is_file():
        raise FeatureStoreError(
            f"No Feast registry at {registry_path}: apply the definitions first"
        )
    if store.config.online_store.type == "redis":
        _require_redis(store, settings)
    # A fresh store reads the registry here; refreshing makes that explicit and also clears
    # Feast's feature-service caches.
    store.refresh_registry()
    return store


def _repo_config(settings: Settings) -> RepoConfig:
    """The YAML ``settings.feast_config`` names, as Feast's config, with its placeholder filled
    from settings (``feast.repo_config.load_repo_config`` fills them from os.environ).

    The YAML is parsed before the password goes in, and errors list fields and reasons but no
    values, so no message can show the password.
    """
    import yaml
    from feast.repo_config import RepoConfig
    from pydantic import ValidationError

    path = settings.feature_repo_dir / settings.feast_config
    if not path.is_file():
        raise FeatureStoreError(f"No Feast configuration at {path}")
    raw = _fill_placeholders(yaml.safe_load(path.read_text(encoding="utf-8")), settings, path)
    try:
        config = RepoConfig(**raw)
    except ValidationError as error:
        reasons = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors(include_url=False, include_input=False)
        )
        raise FeatureStoreError(f"Invalid Feast configuration {path}: {reasons}") from None
    config.repo_path = settings.stores_dir
    return config


def _fill_placeholders(node: Any, settings: Settings, path: Path) -> Any:
    """``${TAGIFAI_REDIS_CONNECTION}`` in any string value; any other ``$`` is refused."""
    if isinstance(node, dict):
        return {key: _fill_placeholders(value, settings, path) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill_placeholders(value, settings, path) for value in node]
    if not isinstance(node, str) or "$" not in node:
        return node
    template = string.Template(node)
    names = set(template.get_identifiers())
    if names - {REDIS_PLACEHOLDER} or not template.is_valid():
        raise FeatureStoreError(f"{path} may use only ${{{REDIS_PLACEHOLDER}}}, not {node!r}")
    return template.substitute({REDIS_PLACEHOLDER: _redis_connection(settings, path)})


def _redis_connection(settings: Settings, path: Path) -> str:
    """Feast's Redis connection string: ``host:port,password=...`` (password from its file)."""
    if settings.redis_address is None:
        raise FeatureStoreError(
            f"{path.name} needs a Redis: start team mode (`make up TEAM=1`) or set "
            "TAGIFAI_REDIS_ADDRESS (and TAGIFAI_REDIS_PASSWORD_FILE)"
        )
    if settings.redis_password_file is None:
        return settings.redis_address
    try:
        password = settings.redis_password_file.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise FeatureStoreError(
            f"Cannot read the Redis password file {settings.redis_password_file}: {error.strerror}"
        ) from None
    return f"{settings.redis_address},password={password}"


def _require_redis(store: FeatureStore, settings: Settings) -> None:
    """One round trip first, so that a Redis that is down or refuses the password is one
    readable error instead of a traceback from inside Feast."""
    import redis

    client = store.provider.online_store._get_client(store.config.online_store)
    try:
        client.ping()
    except redis.RedisError as error:
        raise FeatureStoreError(
            f"Feast's online store, Redis at {settings.redis_address}, does not answer "
            f"({type(error).__name__}: {error}); start team mode with `make up TEAM=1`"
        ) from None


def _require_servable(feature_view: FeatureView) -> None:
    """Feast 0.67 refuses online reads while a view is MATERIALIZING; under our lock no
    materialisation runs, so that state means one was killed before it finished."""
    state = getattr(feature_view, "state", None)
    if state is not None and state.name == "MATERIALIZING":
        raise FeatureStoreError(
            f"Feature view {feature_view.name} is still marked MATERIALIZING by an interrupted "
            "materialisation; run materialize_features again"
        )


def _registry_path(store: FeatureStore) -> Path:
    return _resolve(store, store.config.registry.path)


def _online_path(store: FeatureStore) -> Path:
    return _resolve(store, store.config.online_store.path)


def _resolve(store: FeatureStore, path: str) -> Path:
    """Resolve a path from feature_store.yaml the way Feast does: against repo_path."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else Path(store.repo_path) / candidate


@cache
def _load_definitions(path: Path) -> ModuleType:
    """Execute ``feature_repo/definitions.py`` as a module (feature_repo/ is not a package).

    Compiled from source rather than imported so that no ``__pycache__`` is written into
    the feature repo.
    """
    if not path.is_file():
        raise FeatureStoreError(f"No Feast definitions at {path}")
    module = ModuleType("tagifai_feature_repo_definitions")
    module.__file__ = str(path)
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)
    return module


def _feast_objects(module: ModuleType) -> list[Any]:
    """Every data source, entity, feature view and feature service the module defines."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    kinds = (DataSource, Entity, FeatureView, FeatureService)
    objects = [value for value in vars(module).values() if isinstance(value, kinds)]
    if not any(isinstance(value, FeatureView) for value in objects):
        raise FeatureStoreError(f"{module.__file__} defines no FeatureView")
    return objects


def _require_source(store: FeatureStore, feature_view: FeatureView) -> Path:
    """The offline Parquet source of ``feature_view``, resolved like Feast does."""
    source = _resolve(store, feature_view.batch_source.path)
    if not source.exists():
        raise FeatureStoreError(
            f"Offline source of {feature_view.name} not found at {source}: compute features first"
        )
    return source


def _source_timestamps(store: FeatureStore, feature_view: FeatureView) -> pd.Series:
    """Every event timestamp in the offline source, UTC and sorted."""
    import pyarrow.parquet as pq

    source = _require_source(store, feature_view)
    timestamp_field = feature_view.batch_source.timestamp_field
    table = pq.read_table(source, columns=[timestamp_field])
    if table.num_rows == 0:
        raise FeatureStoreError(f"Offline source {source} has no rows")
    timestamps = _to_utc_ns(table.column(timestamp_field).to_pandas())
    return timestamps.sort_values(ignore_index=True)


def _materialize_windows(
    timestamps: pd.Series, window: timedelta | None
) -> list[tuple[datetime, datetime]]:
    """Consecutive ``[lower, upper]`` windows covering every timestamp (Feast includes both
    ends, so a row on an edge is written twice, harmlessly). Edges are microsecond-aligned
    because Feast takes ``datetime`` values."""
    first = timestamps.iloc[0].floor("us")
    last = timestamps.iloc[-1].ceil("us")
    if window is None:
        inner = [ts.floor("us") for ts in timestamps.iloc[ROWS_PER_WINDOW::ROWS_PER_WINDOW]]
    else:
        inner = list(pd.date_range(first, last, freq=window, inclusive="neither"))
    edges = [first, *(edge for edge in inner if first < edge < last), last]
    edges = list(dict.fromkeys(edges))  # drop repeated edges (many rows on one timestamp)
    if len(edges) == 1:
        return [(first.to_pydatetime(), last.to_pydatetime())]
    return [(lower.to_pydatetime(), upper.to_pydatetime()) for lower, upper in pairwise(edges)]


def _online_table(store: FeatureStore, feature_view: FeatureView) -> tuple[Path, str]:
    """SQLite file and table of ``feature_view`` in the online store."""
    from feast.infra.online_stores.helpers import compute_table_id

    config = store.config
    if config.online_store.type != "sqlite":
        raise FeatureStoreError(
            f"tagifai reads the online store with SQLite; configured {config.online_store.type!r}"
        )
    table = compute_table_id(
        config.project, feature_view, config.registry.enable_online_feature_view_versioning
    )
    return _online_path(store), table


def _clear_online_table(store: FeatureStore, feature_view: FeatureView) -> None:
    """Empty the online table so that the next materialisation mirrors the source."""
    if store.config.online_store.type == "redis":
        # Feast's own: deletes this view's fields from every entity hash of the project.
        store.provider.online_store.delete_table(store.config, feature_view)
        return
    path, table = _online_table(store, feature_view)
    if not path.exists():
        return
    with closing(sqlite3.connect(path)) as connection, connection:
        if _has_table(connection, table):
            connection.execute(f'DELETE FROM "{table}"')


def _count_online_rows(store: FeatureStore, feature_view: FeatureView) -> int:
    if store.config.online_store.type == "redis":
        return _count_redis_rows(store, feature_view)
    path, table = _online_table(store, feature_view)
    if not path.exists():
        return 0
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as connection:
        if not _has_table(connection, table):
            return 0
        # One SQLite row per (entity, feature): count entities.
        (rows,) = connection.execute(f'SELECT COUNT(DISTINCT entity_key) FROM "{table}"').fetchone()
    return int(rows)


# Counts the keys of one SCAN page that hold a field, in Redis: one round trip per page.
_COUNT_WITH_FIELD = """
local found = 0
for _, key in ipairs(KEYS) do found = found + redis.call('HEXISTS', key, ARGV[1]) end
return found
"""


def _count_redis_rows(store: FeatureStore, feature_view: FeatureView) -> int:
    """Entities with a row of ``feature_view`` in Redis.

    Feast's Redis layout: one hash per entity key (the serialised key, then the project name),
    holding a field per feature and ``_ts:<view>``; the keys of one entity type share a prefix
    (what Feast's own ``delete_table`` scans for).
    """
    from feast.infra.online_stores.helpers import _redis_key_prefix, compute_versioned_name

    config = store.config
    client = store.provider.online_store._get_client(config.online_store)  # Feast's connection
    view = compute_versioned_name(
        feature_view, config.registry.enable_online_feature_view_versioning
    )
    count_with_field = client.register_script(_COUNT_WITH_FIELD)
    pattern = _redis_key_prefix(feature_view.join_keys) + b"*" + config.project.encode()
    rows, cursor = 0, 0
    while True:
        cursor, keys = client.scan(cursor, match=pattern, count=REDIS_SCAN_BATCH)
        if keys:
            rows += int(count_with_field(keys=keys, args=[f"_ts:{view}"]))
        if cursor == 0:
            return rows


def _has_table(connection: sqlite3.Connection, table: str) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return connection.execute(query, (table,)).fetchone() is not None


def _to_utc_ns(values: pd.Series) -> pd.Series:
    """UTC, nanosecond timestamps (Feast's output dtype); naive values are taken as UTC."""
    timestamps = pd.to_datetime(values)
    if timestamps.dt.tz is None:
        timestamps = timestamps.dt.tz_localize("UTC")
    return timestamps.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
