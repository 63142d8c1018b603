"""The prediction log: append-only Parquet partitions, one row per prediction.

Layout (Hive-style, readable by pyarrow, DuckDB, Spark)::

    <predictions dir>/date=YYYY-MM-DD/hour=HH/<uuid>.parquet

Columns: ``at`` (UTC, ms), ``model_version``, ``tag``, ``source`` (``service``, ``cli``), and
one float column per monitoring feature (:data:`tagifai.monitoring.FEATURES`). Files are
written to a hidden name and renamed, so readers never see half a file; nothing is ever
rewritten. A new feature is a new column: readers fill it with NaN in older files.

:class:`PredictionLog` buffers rows in memory and writes them from a background thread every
``flush_rows`` rows or ``flush_seconds`` seconds (and on :meth:`~PredictionLog.close`), so a
request never waits for the disk. :func:`read_log` yields the rows of a time window file by
file, so memory is bounded by the largest file, not by the log.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tagifai.monitoring import FEATURES

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

FEATURE_COLUMNS: tuple[str, ...] = tuple(spec.name for spec in FEATURES)
COLUMNS: tuple[str, ...] = ("at", "model_version", "tag", "source", *FEATURE_COLUMNS)
MAX_PENDING_FLUSHES = 100  # past this many flushes' worth of unwritten rows, the oldest go


@dataclass(frozen=True)
class PredictionBatch:
    """Predictions made together: one time, one model version, one source."""

    at: float  # unix seconds
    model_version: int
    tags: Sequence[str]
    features: dict[str, np.ndarray]  # every name of FEATURE_COLUMNS, one value per tag
    source: str = "service"

    def __len__(self) -> int:
        return len(self.tags)


def _schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("at", pa.timestamp("ms", tz="UTC")),
            ("model_version", pa.int32()),
            ("tag", pa.string()),
            ("source", pa.string()),
            *((name, pa.float32()) for name in FEATURE_COLUMNS),
        ]
    )


def _hour(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC).replace(minute=0, second=0, microsecond=0)


def partition_dir(directory: Path, hour: datetime) -> Path:
    """The folder of the hour that ``hour`` falls in."""
    hour = hour.astimezone(UTC)
    return directory / f"date={hour:%Y-%m-%d}" / f"hour={hour:%H}"


def _table(batches: Sequence[PredictionBatch]) -> pa.Table:
    import pyarrow as pa

    sizes = [len(batch) for batch in batches]
    at = np.repeat(np.array([int(b.at * 1000) for b in batches], dtype="int64"), sizes)
    columns = {
        "at": pa.array(at, type=pa.timestamp("ms", tz="UTC")),
        "model_version": np.repeat(
            np.array([b.model_version for b in batches], dtype="int32"), sizes
        ),
        "tag": pa.array([tag for batch in batches for tag in batch.tags], type=pa.string()),
        "source": pa.array(np.repeat(np.array([b.source for b in batches]), sizes)),
    }
    for name in FEATURE_COLUMNS:
        columns[name] = np.concatenate(
            [np.asarray(batch.features[name], dtype=np.float32) for batch in batches]
        )
    return pa.Table.from_pydict(columns, schema=_schema())


def write_batches(directory: Path, batches: Sequence[PredictionBatch]) -> list[Path]:
    """Write batches as one new file per hour they fall in; returns the files written."""
    import pyarrow.parquet as pq

    by_hour: dict[datetime, list[PredictionBatch]] = {}
    for batch in batches:
        if len(batch):
            by_hour.setdefault(_hour(batch.at), []).append(batch)
    written = []
    for hour, group in sorted(by_hour.items()):
        folder = partition_dir(directory, hour)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex}.parquet"
        tmp = folder / f".{name}.tmp"
        try:
            pq.write_table(_table(group), tmp, compression="zstd")
            tmp.replace(folder / name)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(folder / name)
    return written


@dataclass
class LogStats:
    written_rows: int = 0
    files: int = 0
    dropped_rows: int = 0
    failed_flushes: int = 0
    last_error: str | None = None


@dataclass
class PredictionLog:
    """A buffered writer of prediction batches (thread-safe).

    ``append`` only takes a lock and appends to a list; a background thread started by
    :meth:`start` writes the buffer every ``flush_seconds``, or as soon as ``flush_rows`` rows
    are waiting. A failed write keeps the rows for the next attempt (at most
    ``MAX_PENDING_FLUSHES`` flushes' worth, then the oldest are dropped and counted).
    """

    directory: Path
    flush_rows: int = 1000
    flush_seconds: float = 5.0
    stats: LogStats = field(default_factory=LogStats)

    def __post_init__(self) -> None:
        self._pending: list[PredictionBatch] = []
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def append(self, batch: PredictionBatch) -> None:
        with self._lock:
            self._pending.append(batch)
            self._pending_rows += len(batch)
            full = self._pending_rows >= self.flush_rows
        if full:
            self._wake.set()

    def flush(self) -> list[Path]:
        """Write what is buffered now; returns the files written (none if the write failed)."""
        with self._write_lock:
            with self._lock:
                batches, self._pending, self._pending_rows = self._pending, [], 0
            if not batches:
                return []
            try:
                written = write_batches(self.directory, batches)
            except Exception as error:  # a full or missing disk must not stop predictions
                self.stats.failed_flushes += 1
                self.stats.last_error = f"{type(error).__name__}: {error}"
                logger.error("prediction log: write failed, keeping rows: %s", error)
                self._requeue(batches)
                return []
            self.stats.written_rows += sum(len(batch) for batch in batches)
            self.stats.files += len(written)
            return written

    def _requeue(self, batches: list[PredictionBatch]) -> None:
        with self._lock:
            self._pending = batches + self._pending
            self._pending_rows += sum(len(batch) for batch in batches)
            limit = self.flush_rows * MAX_PENDING_FLUSHES
            while self._pending_rows > limit and self._pending:
                dropped = self._pending.pop(0)
                self._pending_rows -= len(dropped)
                self.stats.dropped_rows += len(dropped)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def start(self) -> PredictionLog:
        self._thread = threading.Thread(target=self._loop, name="prediction-log", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the background thread and write whatever is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()


# --- reading ---------------------------------------------------------------------------------


def log_files(directory: Path, since: datetime, until: datetime) -> Iterator[Path]:
    """Files of the hour partitions that overlap ``[since, until)``, oldest hour first."""
    hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    while hour < until:
        folder = partition_dir(directory, hour)
        if folder.is_dir():
            yield from sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))
        hour += timedelta(hours=1)


def read_log(
    directory: Path,
    since: datetime,
    until: datetime,
    model_version: int | None = None,
    columns: Sequence[str] = COLUMNS,
) -> Iterator[dict[str, np.ndarray]]:
    """The logged rows in ``[since, until)`` (of one model version if given), one file at a time,
    as numpy columns; a column a file lacks (written before a feature existed) is NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    low = pa.scalar(since.astimezone(UTC), type=pa.timestamp("ms", tz="UTC"))
    high = pa.scalar(until.astimezone(UTC), type=pa.timestamp("ms", tz="UTC"))
    for path in log_files(directory, since, until):
        try:
            present = set(pq.read_schema(path).names)
            table = pq.read_table(path, columns=[c for c in COLUMNS if c in present])
        except (OSError, pa.ArrowInvalid) as error:  # a file another writer is replacing
            logger.warning("prediction log: skipping unreadable %s: %s", path, error)
            continue
        mask = pc.and_(pc.greater_equal(table["at"], low), pc.less(table["at"], high))
        if model_version is not None:
            mask = pc.and_(mask, pc.equal(table["model_version"], model_version))
        table = table.filter(mask)
        if table.num_rows == 0:
            continue
        rows: dict[str, np.ndarray] = {}
        for name in columns:
            if name in table.column_names:
                rows[name] = table[name].to_numpy(zero_copy_only=False)
            else:
                rows[name] = np.full(table.num_rows, np.nan, dtype=np.float32)
        yield rows
