"""Read the source tables from a URI and keep immutable, content-addressed snapshots.

A URI is a CSV or Parquet path (``file://`` allowed) or a SQLAlchemy URL with the table after
``#``: ``sqlite:///warehouse.db#projects``, ``postgresql+psycopg://host/db#projects``.

Sources are read in chunks of :data:`READ_CHUNK_ROWS` rows (:func:`iter_table`), so no step
holds a whole table. A snapshot is partitioned: ``snapshots/<id>/projects.parquet/`` and
``tags.parquet/`` each hold ``part-00000.parquet`` ... , one file per partition, with about
``settings.partition_rows`` projects each. Partitions are ranges of ``id``, the same ranges in
both tables (like Dask's ``set_index("id")`` divisions), so a project, its tag and every row
sharing its id sit in one partition and joins stay inside it. The range edges come from a
sample of the ids chosen by their hash (the ones with the smallest hashes), so they depend on
the content only, not on row order; rows whose id is not a number go to partition 0.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from tagifai import files
from tagifai.config import Settings
from tagifai.data import PROJECT_COLUMNS, TAG_COLUMNS
from tagifai.errors import DataSourceError, DataSourceUnavailable

STRING_COLUMNS = {
    "created_on": "string",
    "title": "string",
    "description": "string",
    "tag": "string",
}
TABLES: dict[str, tuple[str, ...]] = {"projects": PROJECT_COLUMNS, "tags": TAG_COLUMNS}
# Rows per chunk read from a source: bounds memory while reading, whatever the source's size.
READ_CHUNK_ROWS = 100_000
# Ids kept to place the partitions' edges (those with the smallest hashes: a sample that
# depends on the content only); quantiles of 65k ids are within ~0.4% of the rows.
SAMPLE_IDS = 65_536
PART_FILE = "part-{:05d}.parquet"


def _local_path(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri).expanduser()


def is_sql_uri(uri: str) -> bool:
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    return bool(scheme) and scheme != "file"


def read_table(uri: str, table: str) -> pd.DataFrame:
    """One source table as a DataFrame; every way it can be unreadable is a DataSourceError.

    Args:
        uri: path (CSV or Parquet) or ``<sqlalchemy-url>#<table>``.
        table: ``projects`` or ``tags``: which columns must be present.
    """
    frame = _read_sql(uri) if is_sql_uri(uri) else _read_file(_local_path(uri))
    frame = _normalise(frame, uri, table)
    if frame.empty:
        raise DataSourceError(f"{table} source {uri} has no rows")
    return frame


def iter_table(uri: str, table: str, chunk_rows: int = READ_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """One source table in chunks of at most ``chunk_rows`` rows, each typed as
    :func:`read_table` types a whole table; the same errors, raised while iterating.

    A SQL source is read through one streaming query (a server-side cursor where the driver
    has one), so the chunks are one consistent read.
    """
    if is_sql_uri(uri):
        chunks = _iter_sql(uri, chunk_rows)
    else:
        chunks = _iter_file(_local_path(uri), chunk_rows)
    rows = 0
    for chunk in chunks:
        chunk = _normalise(chunk, uri, table)
        rows += len(chunk)
        if len(chunk):
            yield chunk
    if rows == 0:
        raise DataSourceError(f"{table} source {uri} has no rows")


def _normalise(frame: pd.DataFrame, uri: str, table: str) -> pd.DataFrame:
    """Required columns present, ``created_on`` as text, text columns as pandas ``string``."""
    missing = [c for c in TABLES[table] if c not in frame.columns]
    if missing:
        raise DataSourceError(
            f"{table} source {uri} lacks column(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, frame.columns))})"
        )
    if "created_on" in frame and pd.api.types.is_datetime64_any_dtype(frame["created_on"]):
        frame["created_on"] = frame["created_on"].dt.strftime("%Y-%m-%d %H:%M:%S")
    return frame.astype({c: t for c, t in STRING_COLUMNS.items() if c in frame.columns})


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataSourceError(f"source not found: {path}")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise DataSourceError(f"source is not a readable file: {path}")
    if path.stat().st_size == 0:
        raise DataSourceError(f"source is empty: {path}")


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def _read_file(path: Path) -> pd.DataFrame:
    _check_file(path)
    try:
        if _is_parquet(path):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=STRING_COLUMNS, encoding="utf-8", encoding_errors="strict")
    except Exception as error:
        raise _file_error(path, error) from None


def _iter_file(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    _check_file(path)
    try:
        if _is_parquet(path):
            import pyarrow as pa
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            schema = parquet.schema_arrow
            yield schema.empty_table().to_pandas()  # the columns, even without rows
            for batch in parquet.iter_batches(batch_size=chunk_rows):
                yield pa.Table.from_batches([batch], schema=schema).to_pandas()
            return
        yield from pd.read_csv(
            path,
            dtype=STRING_COLUMNS,
            encoding="utf-8",
            encoding_errors="strict",
            chunksize=chunk_rows,
        )
    except DataSourceError:
        raise
    except Exception as error:
        raise _file_error(path, error) from None


def _file_error(path: Path, error: Exception) -> Exception:
    """The one readable line for a file that pandas or pyarrow could not read."""
    if isinstance(error, UnicodeDecodeError):
        return DataSourceError(f"{path} is not valid UTF-8 (byte {error.start})")
    if isinstance(error, pd.errors.EmptyDataError):
        return DataSourceError(f"source is empty: {path}")
    if isinstance(error, pd.errors.ParserError | ValueError | OSError):
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return DataSourceError(f"cannot read {path}: {first}")
    return error


def _read_sql(uri: str) -> pd.DataFrame:
    import sqlalchemy as sa

    url, _, table = uri.partition("#")
    if not table:
        raise DataSourceError(f"SQL source {url} needs a table: <url>#<table>")
    with _sql_errors(url, table):
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            return pd.read_sql_table(table, connection)


def _iter_sql(uri: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import sqlalchemy as sa

    url, _, table = uri.partition("#")
    if not table:
        raise DataSourceError(f"SQL source {url} needs a table: <url>#<table>")
    with _sql_errors(url, table):
        engine = sa.create_engine(url)
        with engine.connect().execution_options(stream_results=True) as connection:
            yield from pd.read_sql_table(table, connection, chunksize=chunk_rows)


@contextmanager
def _sql_errors(url: str, table: str) -> Iterator[None]:
    """SQLAlchemy's errors as one-line source errors: unavailable (retry) or broken."""
    import sqlalchemy as sa

    try:
        yield
    except (ImportError, sa.exc.NoSuchModuleError) as error:
        raise DataSourceError(f"no database driver for {url}: {error}") from None
    except sa.exc.OperationalError as error:  # refused, timed out, locked: retry later
        first = str(error.orig or error).splitlines()[0]
        raise DataSourceUnavailable(f"cannot reach {url} now: {first}") from None
    except (sa.exc.SQLAlchemyError, ValueError) as error:
        first = str(error).splitlines()[0]
        raise DataSourceError(f"cannot read table {table!r} from {url}: {first}") from None


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A staged or snapshot table, with the same dtypes :func:`read_table` produced."""
    return pd.read_parquet(path, columns=columns)


class ContentDigest:
    """An order-independent hash of tables fed in chunks, in bounded memory.

    Each row hashes to 64 bits (``pandas.util.hash_pandas_object``: all its values); a table
    is its column names, its row count and two sums of its row hashes modulo 2**64 (of the
    hashes and of their squares). The same rows in any order and in any chunking give the
    same digest; a changed, added or removed row changes it.
    """

    def __init__(self) -> None:
        self._tables: dict[str, list[object]] = {}

    def update(self, table: str, frame: pd.DataFrame) -> None:
        entry = self._tables.setdefault(table, [[str(c) for c in frame.columns], 0, 0, 0])
        hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
        entry[1] += len(frame)  # type: ignore[operator]
        entry[2] = (entry[2] + int(hashes.sum(dtype=np.uint64))) % 2**64  # type: ignore[operator]
        squares = int((hashes * hashes).sum(dtype=np.uint64))
        entry[3] = (entry[3] + squares) % 2**64  # type: ignore[operator]

    def hexdigest(self) -> str:
        """16 hex characters over the tables in the order they were first fed."""
        text = json.dumps(list(self._tables.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def content_id(projects: pd.DataFrame, tags: pd.DataFrame) -> str:
    """A short, order-independent hash of both tables' columns and values: the snapshot id.

    The same value whether the tables are hashed whole or chunk by chunk as they stream in
    (:func:`source_content_id`, the extract step, the sensor and the webhook).
    """
    digest = ContentDigest()
    digest.update("projects", projects)
    digest.update("tags", tags)
    return digest.hexdigest()


def source_content_id(projects_uri: str, tags_uri: str) -> str:
    """:func:`content_id` of two sources as :func:`read_table` reads them, streamed in chunks."""
    digest = ContentDigest()
    for table, uri in (("projects", projects_uri), ("tags", tags_uri)):
        for chunk in iter_table(uri, table):
            digest.update(table, chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Snapshot:
    """An immutable copy of both tables, named by its content, in ``partitions`` id ranges."""

    id: str
    path: Path
    projects_rows: int
    tags_rows: int
    partitions: int = 1

    @property
    def projects_path(self) -> Path:
        """The projects table: a folder of partition files (one file before partitioning)."""
        return self.path / "projects.parquet"

    @property
    def tags_path(self) -> Path:
        return self.path / "tags.parquet"

    def part(self, table: str, index: int) -> Path:
        """The Parquet file of partition ``index`` of ``table`` (projects or tags)."""
        if not 0 <= index < self.partitions:
            raise IndexError(f"snapshot {self.id} has {self.partitions} partitions, not {index}")
        table_path = self.path / f"{table}.parquet"
        return table_path / PART_FILE.format(index) if table_path.is_dir() else table_path


def read_partition(snapshot: Snapshot, table: str, index: int) -> pd.DataFrame:
    """Partition ``index`` of a staged or published table."""
    return pd.read_parquet(snapshot.part(table, index))


def stage_sources(settings: Settings, projects_uri: str, tags_uri: str) -> Snapshot:
    """Stream both sources into a partitioned staged snapshot named by their content; or,
    when that content was published before, return the published snapshot (nothing kept).

    Memory stays at a few chunks whatever the sources' size: each chunk is hashed and
    spooled to Parquet as it is read, then the spool is split into the id-range partitions.
    """
    chunks = {
        "projects": lambda: iter_table(projects_uri, "projects"),
        "tags": lambda: iter_table(tags_uri, "tags"),
    }
    return _stage(settings, chunks)


def stage_tables(
    settings: Settings, projects: pd.DataFrame, tags: pd.DataFrame, snapshot_id: str | None = None
) -> Snapshot:
    """Stage two in-memory tables as :func:`stage_sources` stages two sources."""
    staged = _stage(settings, {"projects": lambda: iter([projects]), "tags": lambda: iter([tags])})
    if snapshot_id is not None and staged.id != snapshot_id:
        discard_staged(staged)
        raise ValueError(f"tables hash to {staged.id}, not {snapshot_id}")
    return staged


def _stage(settings: Settings, chunks: dict[str, Callable[[], Iterable[pd.DataFrame]]]) -> Snapshot:
    staging_root = settings.stores_dir / "staging"
    scratch = staging_root / f".incoming-{uuid.uuid4().hex[:12]}"
    scratch.mkdir(parents=True)
    try:
        digest, sample = ContentDigest(), _IdSample(SAMPLE_IDS)
        spools = {
            table: _spool(table, read(), scratch / "spool" / table, digest, sample)
            for table, read in chunks.items()
        }
        snapshot_id = digest.hexdigest()
        if is_published(settings, snapshot_id):
            return load_snapshot(settings, snapshot_id)
        projects_rows = spools["projects"].rows
        partitions = max(1, math.ceil(projects_rows / settings.partition_rows))
        edges = sample.edges(partitions)
        rows = {
            table: _partition(spool, scratch / f"{table}.parquet", edges)
            for table, spool in spools.items()
        }
        shutil.rmtree(scratch / "spool")
        (scratch / "partitioning.json").write_text(
            json.dumps({"partitions": len(edges) + 1, "id_edges": edges.tolist()})
        )
        target = staging_root / snapshot_id
        shutil.rmtree(target, ignore_errors=True)  # a leftover of an interrupted run
        scratch.rename(target)
        return Snapshot(snapshot_id, target, rows["projects"], rows["tags"], len(edges) + 1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass(frozen=True)
class _Spool:
    """A table as read, one Parquet file per chunk, and its columns' common dtypes."""

    files: tuple[Path, ...]
    dtypes: dict[str, object]
    rows: int


def _spool(
    table: str,
    chunks: Iterable[pd.DataFrame],
    folder: Path,
    digest: ContentDigest,
    sample: _IdSample,
) -> _Spool:
    folder.mkdir(parents=True)
    files: list[Path] = []
    dtypes: dict[str, list[object]] = {}
    rows = 0
    for chunk in chunks:
        digest.update(table, chunk)
        if table == "projects":
            sample.add(chunk["id"])
        chunk = _storable(chunk)
        for column, dtype in chunk.dtypes.items():
            dtypes.setdefault(str(column), []).append(dtype)
        path = folder / PART_FILE.format(len(files))
        chunk.to_parquet(path, index=False)
        files.append(path)
        rows += len(chunk)
    common = {column: _common_dtype(found) for column, found in dtypes.items()}
    return _Spool(tuple(files), common, rows)


def _storable(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns (mixed Python types, e.g. a SQL column of numbers and text) as text."""
    mixed = [c for c in frame.columns if frame[c].dtype == object]
    return frame.astype(dict.fromkeys(mixed, "string")) if mixed else frame


def _common_dtype(dtypes: list[object]) -> object:
    """What one column of chunks typed differently becomes: the wider number, else text."""
    unique = list(dict.fromkeys(dtypes))
    if len(unique) == 1:
        return unique[0]
    if all(isinstance(d, np.dtype) and d.kind in "biuf" for d in unique):
        return np.result_type(*unique)  # type: ignore[arg-type]
    return pd.StringDtype()


class _IdSample:
    """The ids with the ``size`` smallest hashes: a sample of the rows that depends on the
    content only (not on row order or chunking), from which the partitions' edges come."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hashes = np.empty(0, dtype=np.uint64)
        self.values = np.empty(0, dtype=np.float64)

    def add(self, ids: pd.Series) -> None:
        values = _numeric_ids(ids)
        values = values[~np.isnan(values)]
        self.hashes = np.concatenate([self.hashes, pd.util.hash_array(values)])
        self.values = np.concatenate([self.values, values])
        if len(self.hashes) > 2 * self.size:
            self._prune()

    def _prune(self) -> None:
        if len(self.hashes) > self.size:
            keep = np.argpartition(self.hashes, self.size)[: self.size]
            self.hashes, self.values = self.hashes[keep], self.values[keep]

    def edges(self, partitions: int) -> np.ndarray:
        """At most ``partitions - 1`` increasing id edges splitting the sample evenly."""
        self._prune()
        if partitions <= 1 or len(self.values) == 0:
            return np.empty(0, dtype=np.float64)
        quantiles = np.arange(1, partitions) / partitions
        return np.unique(np.quantile(np.sort(self.values), quantiles, method="lower"))


def _numeric_ids(ids: pd.Series) -> np.ndarray:
    """Ids as float64, NaN where an id is missing or not a number."""
    return pd.to_numeric(ids, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def partition_of(ids: pd.Series, edges: np.ndarray) -> np.ndarray:
    """The partition of each id: its range among ``edges``; ids that are not numbers: 0."""
    values = _numeric_ids(ids)
    parts = np.searchsorted(edges, values, side="right")
    parts[np.isnan(values)] = 0
    return parts


def _partition(spool: _Spool, folder: Path, edges: np.ndarray) -> int:
    """Split a spooled table into one Parquet file per id range; returns its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in spool.dtypes.items()})  # type: ignore[call-overload]
    schema = pa.Schema.from_pandas(empty, preserve_index=False)
    writers: dict[int, pq.ParquetWriter] = {}
    rows = 0
    try:
        for path in spool.files:
            chunk = pd.read_parquet(path).astype(spool.dtypes)  # type: ignore[arg-type]
            parts = partition_of(chunk["id"], edges)
            for index in np.unique(parts):
                piece = chunk[parts == index]
                if int(index) not in writers:
                    writers[int(index)] = pq.ParquetWriter(folder / PART_FILE.format(index), schema)
                writers[int(index)].write_table(
                    pa.Table.from_pandas(piece, schema=schema, preserve_index=False)
                )
            rows += len(chunk)
    finally:
        for writer in writers.values():
            writer.close()
    for index in range(len(edges) + 1):  # an id range without rows in this table
        if index not in writers:
            pq.write_table(schema.empty_table(), folder / PART_FILE.format(index))
    return rows


def publish_snapshot(settings: Settings, staged: Snapshot, source: dict[str, str]) -> Snapshot:
    """Move validated staged tables to ``snapshots/<id>`` (no-op if it exists); mark it latest."""
    target = settings.snapshots_dir / staged.id
    if not target.exists():
        settings.snapshots_dir.mkdir(parents=True, exist_ok=True)
        manifest = {
            "id": staged.id,
            "created_at": datetime.now(UTC).isoformat(),
            "projects_rows": staged.projects_rows,
            "tags_rows": staged.tags_rows,
            "partitions": staged.partitions,
            "source": source,
        }
        (staged.path / "manifest.json").write_text(json.dumps(manifest, indent=2))
        try:
            staged.path.rename(target)  # atomic on one filesystem
        except OSError:
            if not target.exists():
                raise
    discard_staged(staged)
    files.write_text(settings.snapshots_dir / "LATEST", staged.id)
    return load_snapshot(settings, staged.id)


def scratch_dir(snapshot: Snapshot) -> Path:
    """Where a run keeps working files about a snapshot (validation keys), outside it: a
    published snapshot is never written to. :func:`discard_staged` removes it."""
    return snapshot.path.parent.parent / "staging" / f".work-{snapshot.id}"


def discard_staged(staged: Snapshot) -> None:
    """Remove a staged snapshot (a published one stays) and the run's working files."""
    if staged.path.parent.name == "staging":
        shutil.rmtree(staged.path, ignore_errors=True)
    shutil.rmtree(scratch_dir(staged), ignore_errors=True)


def is_published(settings: Settings, snapshot_id: str) -> bool:
    """Whether snapshot ``snapshot_id`` exists (its manifest is written before it appears)."""
    return (settings.snapshots_dir / snapshot_id / "manifest.json").is_file()


def announcement_path(settings: Settings, snapshot_id: str) -> Path:
    """Where the record of the ``tagifai.snapshot.published`` event for a snapshot lives."""
    return settings.stores_dir / "events" / "snapshot-published" / f"{snapshot_id}.json"


def is_announced(settings: Settings, snapshot_id: str) -> bool:
    """Whether a run already announced this snapshot: the same data is announced once."""
    return announcement_path(settings, snapshot_id).is_file()


def mark_announced(settings: Settings, snapshot_id: str, event: dict[str, object]) -> Path:
    """Record that the snapshot was announced, and with which event."""
    return files.write_json(announcement_path(settings, snapshot_id), event)


def latest_snapshot_id(settings: Settings) -> str | None:
    pointer = settings.snapshots_dir / "LATEST"
    return pointer.read_text().strip() if pointer.exists() else None


def load_snapshot(settings: Settings, snapshot_id: str | None = None) -> Snapshot:
    """A published snapshot by id (default: the latest)."""
    snapshot_id = snapshot_id or latest_snapshot_id(settings)
    if snapshot_id is None:
        raise DataSourceError("no data snapshot yet: run `tagifai dataops` first")
    path = settings.snapshots_dir / snapshot_id
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise DataSourceError(f"unknown snapshot {snapshot_id!r} under {settings.snapshots_dir}")
    manifest = json.loads(manifest_path.read_text())
    return Snapshot(
        snapshot_id,
        path,
        manifest["projects_rows"],
        manifest["tags_rows"],
        manifest.get("partitions", 1),  # snapshots published before partitioning: one file
    )
