"""Data-arrival sensor: notice each new, complete batch of ``projects`` + ``tags`` exactly once.

One :func:`tick` looks at every configured source (``Settings.sensor_sources``, from
``TAGIFAI_SENSOR_SOURCES``) and hands each new complete batch to a callback, which turns it
into the Prefect event ``tagifai.data.arrived``. A long-running process calls it in a loop.

Sources:

* **Landing directory** (default ``data/landing/``, git-ignored). Each batch is a folder of it
  holding ``projects.csv`` or ``projects.parquet`` and ``tags.csv`` or ``tags.parquet``
  (``data/landing/2024-06-01/projects.csv``). Loose files, folders starting with ``.`` or
  ``_`` (staging, e.g. Spark's ``_temporary``) and deeper folders are ignored. A batch is
  **complete** when either

  - it holds a ``_SUCCESS`` marker (the Hadoop/Spark convention) at least as new as both data
    files: written last, it says the writer is done, so the batch goes out on the first look;
  - or, without one, the names, sizes and mtimes of both files are the same on two
    consecutive looks: a file still being written grows between looks, so it waits.

  The second rule cannot tell a writer that pauses for longer than the sensor's interval from
  one that finished: such writers must write the marker, or write elsewhere and rename the
  finished folder into the landing directory (a rename is atomic).
* **SQL table pair** (``sqlite:///w.db``, ``postgresql+psycopg://host/db``). Each look runs
  cheap aggregates: row count and ``max(id)`` of both tables, ``max(created_on)`` of projects
  (index lookups where the warehouse has the usual indexes, a scan inside the database where
  it has none). A changed signature is read (once) only when it is the same on two
  consecutive looks, so a loader that commits projects and tags separately, or in chunks, is
  seen when it is done. In-place updates that keep counts and maxima are not noticed; a team
  that needs them adds an ``updated_at`` column or a database-specific checksum here.
* **S3 prefixes** are the next source: the same batch-folder layout and ``_SUCCESS`` marker
  under ``s3://bucket/prefix/``, with ETags and sizes from ``ListObjectsV2`` as the cheap
  signature. Not implemented yet (``TAGIFAI_SENSOR_SOURCES`` refuses ``s3://``).

The **batch id** is :func:`tagifai.extract.content_id` of the tables as ``read_table`` returns
them, streamed chunk by chunk (:func:`tagifai.extract.source_content_id`): the snapshot id the
DataOps flow will compute. The same content arriving twice (another
folder, another format, the SQL source; the webhook too, once it claims under this id) is
therefore one batch. The tables are read only when a cheap signature says a complete batch is
new, and the signature is taken again after the read, so a batch that changed while being
read waits for the next tick. (A SQL source is read again by the flow: rows added in between
give that run a newer snapshot, and the sensor a new batch on a later tick.)

State, under ``Settings.sensor_dir`` (``stores/sensor/``):

* ``cursors/<kind>-<hash of the source>.json``, one per source, written atomically and only
  when it changes: per batch location (folder name, or ``tables``) the signature seen at the
  last look (``seen``), the signature already emitted (``done``) and its ``batch_id``; plus
  the source's ``last_emitted`` batch.
* ``ledger.db``, SQLite: one row per emitted batch id (``UNIQUE``). :func:`claim_batch` is the
  one way to emit, for this sensor and for the webhook receiver alike: whoever inserts the row
  emits; everyone else sees a duplicate. A failed emit releases its claim, and its cursor
  keeps ``done`` unchanged, so the next tick tries again. A process killed between its claim
  and the end of its emit leaves the claim behind (at most once, never twice): that batch is
  re-sent by hand (``release_batch``, then the webhook). SQLite's locks hold across the
  processes of one machine, not over a network file system; a sensor spread over machines
  needs the ledger in PostgreSQL.

A no-change tick stats files and runs the cheap queries: it imports neither pandas nor any
heavy library (reading a batch imports pandas; nothing here imports Prefect).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from tagifai.claims import Claims
from tagifai.config import LandingDir, SensorSource, Settings, SqlTables
from tagifai.errors import DataSourceError, TagifaiError

logger = logging.getLogger(__name__)

MARKER = "_SUCCESS"
TABLES: tuple[str, ...] = ("projects", "tags")
SUFFIXES: tuple[str, ...] = (".csv", ".parquet")
TABLES_LOCATION = "tables"

Action = Literal["emit", "wait", "unchanged"]
Status = Literal["emitted", "duplicate", "waiting", "unchanged", "error"]


# --- the decision ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Look:
    """What one cheap look at a batch location saw; no table was read."""

    signature: str  # names, sizes and mtimes of the files, or counts and maxima of the tables
    missing: tuple[str, ...] = ()  # tables without a file (or rows) yet
    marker: bool = False  # a _SUCCESS marker at least as new as every data file
    projects_uri: str = ""
    tags_uri: str = ""


@dataclass(frozen=True)
class Cursor:
    """What the sensor remembers about one batch location between looks."""

    seen: str = ""  # the signature at the previous look
    done: str = ""  # the signature whose content was emitted (by this sensor or anyone)
    batch_id: str = ""  # that content's fingerprint


@dataclass(frozen=True)
class Decision:
    """``emit`` means: complete and not yet emitted, so fingerprint it and claim it."""

    action: Action
    reason: str


def decide(previous: Cursor | None, look: Look) -> Decision:
    """Is there a new, complete batch at this location? (The ledger then rules out repeats.)"""
    if look.missing:
        return Decision("wait", f"incomplete: no {' or '.join(look.missing)} yet")
    previous = previous or Cursor()
    if previous.done and look.signature == previous.done:
        return Decision("unchanged", f"already emitted as batch {previous.batch_id}")
    if look.marker:
        return Decision("emit", f"complete: {MARKER} marker written after the data")
    if not previous.seen:
        return Decision("wait", "first look: waiting for a second one to see it stable")
    if look.signature != previous.seen:
        return Decision("wait", "still changing since the previous look")
    return Decision("emit", "complete: unchanged since the previous look")


# --- what a tick returns and emits -----------------------------------------------------------


@dataclass(frozen=True)
class BatchNotice:
    """A new batch: the payload of the Prefect event ``tagifai.data.arrived``."""

    projects_uri: str
    tags_uri: str
    batch_id: str
    source: str

    def payload(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class TickResult:
    """What one tick saw at one batch location of one source."""

    source: str  # the source's label, e.g. landing:/abs/data/landing
    location: str  # the batch folder, "tables" for a SQL source, "" for the whole source
    status: Status
    reason: str
    batch_id: str | None = None


def tick(
    settings: Settings,
    sources: Iterable[SensorSource],
    emit: Callable[[BatchNotice], None],
) -> list[TickResult]:
    """Look at every source once; claim and ``emit`` each new complete batch.

    A source or batch that cannot be read gives an ``error`` result and the others carry on.
    If ``emit`` raises, the claim is released and the batch is tried again on the next tick.
    """
    results: list[TickResult] = []
    for source in sources:
        try:
            results += _tick_source(settings, source, emit)
        except Exception as error:  # one broken source must not stop the others
            results.append(TickResult(source.label, "", "error", _describe(error, source)))
    for result in results:
        if result.status in ("emitted", "error"):
            log = logger.info if result.status == "emitted" else logger.warning
            log("sensor: %s %s: %s", result.source, result.location, result.reason)
    return results


def _tick_source(
    settings: Settings, source: SensorSource, emit: Callable[[BatchNotice], None]
) -> list[TickResult]:
    path = _cursor_path(settings, source)
    stored = _read_cursor(path, source)
    if isinstance(source, LandingDir):
        if not source.path.exists():
            return [TickResult(source.label, "", "waiting", "no landing directory yet")]
        locations = _batch_folders(source.path)
        if not locations:
            return [TickResult(source.label, "", "unchanged", "no batch folders")]
    else:
        locations = [TABLES_LOCATION]
    cursors = {name: stored.locations[name] for name in locations if name in stored.locations}
    last_emitted = stored.last_emitted
    results: list[TickResult] = []
    for location in locations:
        result, cursors[location] = _visit(settings, source, location, cursors.get(location), emit)
        results.append(result)
        if result.status == "emitted":
            last_emitted = {"batch_id": result.batch_id or "", "at": _now()}
    updated = SourceState(source.label, last_emitted, cursors)
    if updated != stored:
        _write_cursor(path, updated)
    return results


def _visit(
    settings: Settings,
    source: SensorSource,
    location: str,
    previous: Cursor | None,
    emit: Callable[[BatchNotice], None],
) -> tuple[TickResult, Cursor]:
    """Look and decide; for a new complete batch fingerprint, claim and emit it."""
    label = source.label
    previous = previous or Cursor()
    try:
        look = _look(source, location)
    except Exception as error:
        return TickResult(label, location, "error", _describe(error, source)), previous
    decision = decide(previous, look)
    cursor = replace(previous, seen=look.signature)
    if decision.action == "unchanged":
        return TickResult(label, location, "unchanged", decision.reason, cursor.batch_id), cursor
    if decision.action == "wait":
        return TickResult(label, location, "waiting", decision.reason), cursor
    try:
        batch_id = fingerprint_batch(look.projects_uri, look.tags_uri)
        after = _look(source, location)
    except Exception as error:
        return TickResult(label, location, "error", _describe(error, source)), cursor
    if after.signature != look.signature:
        reason = "changed while being read: waiting for it to settle"
        return TickResult(label, location, "waiting", reason), replace(cursor, seen=after.signature)
    done = replace(cursor, done=look.signature, batch_id=batch_id)
    origin = "sensor:landing" if isinstance(source, LandingDir) else "sensor:sql"
    if not claim_batch(settings, batch_id, origin, (look.projects_uri, look.tags_uri)):
        first = find_batch(settings, batch_id)
        seen_as = f" from {first.source} at {first.claimed_at}" if first else ""
        reason = f"same content as batch {batch_id}, already emitted{seen_as}"
        return TickResult(label, location, "duplicate", reason, batch_id), done
    try:
        emit(BatchNotice(look.projects_uri, look.tags_uri, batch_id, origin))
    except Exception as error:  # the caller's delivery failed: retry on the next tick
        release_batch(settings, batch_id)
        reason = f"emit failed, will retry: {_describe(error, source)}"
        return TickResult(label, location, "error", reason, batch_id), cursor
    return TickResult(label, location, "emitted", decision.reason, batch_id), done


# --- looking at sources ----------------------------------------------------------------------


def _batch_folders(landing: Path) -> list[str]:
    with os.scandir(landing) as entries:
        names = [
            entry.name
            for entry in entries
            if entry.is_dir() and not entry.name.startswith((".", "_"))
        ]
    return sorted(names)


def _look(source: SensorSource, location: str) -> Look:
    if isinstance(source, LandingDir):
        return look_batch_folder(source.path / location)
    return look_tables(source)


def look_batch_folder(folder: Path) -> Look:
    """Stat one batch folder (no file is read).

    Raises:
        DataSourceError: the folder holds a table twice (``projects.csv`` and ``.parquet``).
    """
    with os.scandir(folder) as entries:
        stats = {entry.name: entry.stat() for entry in entries if entry.is_file()}
    parts: list[str] = []
    uris: dict[str, str] = {}
    missing: list[str] = []
    for table in TABLES:
        found = [table + suffix for suffix in SUFFIXES if table + suffix in stats]
        if len(found) > 1:
            raise DataSourceError(f"{folder} holds both {' and '.join(found)}: keep one")
        if not found:
            missing.append(f"{table} file")
            continue
        stat = stats[found[0]]
        parts.append(f"{found[0]}:{stat.st_size}:{stat.st_mtime_ns}")
        uris[table] = str(folder / found[0])
    marker = stats.get(MARKER)
    fresh_marker = (
        marker is not None
        and not missing
        and all(marker.st_mtime_ns >= stats[Path(uri).name].st_mtime_ns for uri in uris.values())
    )
    return Look(
        signature="|".join(parts),
        missing=tuple(missing),
        marker=fresh_marker,
        projects_uri=uris.get("projects", ""),
        tags_uri=uris.get("tags", ""),
    )


def look_tables(source: SqlTables) -> Look:
    """Row counts and maxima of both tables (no table is read into Python).

    One statement (one round trip) of five scalar subqueries, one aggregate each: a database
    answers ``count(*)`` from its smallest index and a lone ``max(col)`` from an index on
    ``col`` in a few page reads; without indexes each is a scan inside the database
    (``benchmarks/sensor.py`` measures both).

    Raises:
        DataSourceError: the database or a table cannot be queried.
    """
    import sqlalchemy as sa

    url = sa.engine.make_url(source.url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        # Connecting would create an empty database file: a typo must not leave one behind.
        raise DataSourceError(f"no database file {url.database}")
    projects = sa.table(source.projects_table, sa.column("id"), sa.column("created_on"))
    tags = sa.table(source.tags_table, sa.column("id"))
    aggregates = sa.select(
        *(
            query.scalar_subquery()
            for query in (
                sa.select(sa.func.count()).select_from(projects),
                sa.select(sa.func.max(projects.c.id)),
                sa.select(sa.func.max(projects.c.created_on)),
                sa.select(sa.func.count()).select_from(tags),
                sa.select(sa.func.max(tags.c.id)),
            )
        )
    )
    try:
        with _engine(source.url).connect() as connection:
            p_rows, p_id, p_created, t_rows, t_id = connection.execute(aggregates).one()
    except sa.exc.SQLAlchemyError as error:
        first = str(error).splitlines()[0]
        raise DataSourceError(f"cannot query the tables: {first}") from None
    missing = tuple(
        f"rows in {name}" for name, rows in (("projects", p_rows), ("tags", t_rows)) if not rows
    )
    signature = f"projects:{p_rows}:{p_id}:{p_created}|tags:{t_rows}:{t_id}"
    return Look(signature, missing, False, source.projects_uri, source.tags_uri)


@functools.cache
def _engine(url: str) -> Any:
    # One engine (and its connection pool) per database for the life of the process.
    import sqlalchemy as sa

    return sa.create_engine(url)


def fingerprint_batch(projects_uri: str, tags_uri: str) -> str:
    """The batch id: the snapshot id the DataOps flow will compute from these tables (read
    in chunks, as the extract step reads them: memory does not grow with the batch)."""
    from tagifai.extract import source_content_id

    return source_content_id(projects_uri, tags_uri)


# --- the cursor ------------------------------------------------------------------------------


def _cursor_path(settings: Settings, source: SensorSource) -> Path:
    kind = "landing" if isinstance(source, LandingDir) else "sql"
    digest = hashlib.sha256(source.label.encode()).hexdigest()[:16]
    return settings.sensor_dir / "cursors" / f"{kind}-{digest}.json"


@dataclass(frozen=True)
class SourceState:
    """One source's cursor file."""

    source: str
    last_emitted: dict[str, str] | None  # {"batch_id", "at"}
    locations: dict[str, Cursor]


def _read_cursor(path: Path, source: SensorSource) -> SourceState:
    try:
        data = json.loads(path.read_text())
        locations = {name: Cursor(**fields) for name, fields in data["locations"].items()}
        return SourceState(data["source"], data["last_emitted"], locations)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        # Losing the cursor costs one read per batch; the ledger still rules out repeats.
        logger.warning("sensor: ignoring unreadable cursor %s (%s)", path, error)
    return SourceState(source.label, None, {})


def _write_cursor(path: Path, state: SourceState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(asdict(state), file, indent=1, sort_keys=True)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_cursor(settings: Settings, source: SensorSource) -> SourceState:
    """The stored cursor of one source (empty if it has none yet)."""
    return _read_cursor(_cursor_path(settings, source), source)


# --- the ledger of emitted batches -----------------------------------------------------------


@dataclass(frozen=True)
class ClaimedBatch:
    batch_id: str
    source: str
    projects_uri: str
    tags_uri: str
    claimed_at: str


def batch_claims(settings: Settings) -> Claims:
    """The ledger of emitted batches, shared with the webhook receiver."""
    return Claims(
        settings.sensor_dir / "ledger.db",
        "batches",
        ("source", "projects_uri", "tags_uri", "claimed_at"),
    )


def claim_batch(settings: Settings, batch_id: str, source: str, uris: tuple[str, str]) -> bool:
    """Record ``batch_id`` as emitted; True only for the one caller that recorded it first.

    Safe across threads and processes sharing the stores dir (one SQLite file; not across
    machines on a network file system). Call :func:`release_batch` if the emit then fails.
    """
    return batch_claims(settings).claim(
        batch_id, source=source, projects_uri=uris[0], tags_uri=uris[1], claimed_at=_now()
    )


def release_batch(settings: Settings, batch_id: str) -> None:
    """Forget a claim whose emit failed, so the batch can be claimed again."""
    batch_claims(settings).release(batch_id)


def find_batch(settings: Settings, batch_id: str) -> ClaimedBatch | None:
    """Who claimed ``batch_id``, when, and with which URIs (None if nobody has)."""
    found = batch_claims(settings).find(batch_id)
    return ClaimedBatch(batch_id=batch_id, **found) if found else None


# --- helpers ---------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _describe(error: Exception, source: SensorSource) -> str:
    """One line for a tick result; unexpected errors also go to the log with their traceback."""
    if not isinstance(error, TagifaiError | OSError):
        logger.error("sensor: unexpected error on %s", source.label, exc_info=error)
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
