"""The prediction log: hour partitions, append-only files, buffered writes, windowed reads."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tagifai.predlog import (
    COLUMNS,
    PredictionBatch,
    PredictionLog,
    partition_dir,
    read_log,
    write_batches,
)

NOON = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def batch(at: datetime, n: int = 3, version: int = 1, confidence: float = 0.9) -> PredictionBatch:
    return PredictionBatch(
        at=at.timestamp(),
        model_version=version,
        tags=["mlops"] * n,
        features={
            "text_length": np.full(n, 12, dtype=np.float32),
            "unseen_share": np.full(n, 0.1, dtype=np.float32),
            "confidence": np.full(n, confidence, dtype=np.float32),
            "embedding_distance": np.full(n, 0.4, dtype=np.float32),
        },
        source="test",
    )


def read_all(directory, since=NOON - timedelta(days=1), until=NOON + timedelta(days=1), **kw):
    pieces = list(read_log(directory, since, until, **kw))
    return {name: np.concatenate([p[name] for p in pieces]) for name in COLUMNS} if pieces else {}


def test_batches_land_in_their_hour_partitions_and_read_back(tmp_path):
    later = NOON + timedelta(hours=1)
    written = write_batches(tmp_path, [batch(NOON), batch(later, 2), batch(NOON, 1)])
    assert [p.parent for p in written] == [
        partition_dir(tmp_path, NOON),
        partition_dir(tmp_path, later),
    ]
    assert written[0].parent.relative_to(tmp_path).as_posix() == "date=2026-03-01/hour=12"
    table = pq.read_table(written[0])
    assert table.num_rows == 4 and table.column_names == list(COLUMNS)
    assert table.schema.field("at").type == pa.timestamp("ms", tz="UTC")
    rows = read_all(tmp_path)
    assert len(rows["tag"]) == 6 and set(rows["source"]) == {"test"}


def test_reads_keep_to_the_window_and_the_version(tmp_path):
    write_batches(tmp_path, [batch(NOON, 5, version=1), batch(NOON, 4, version=2)])
    write_batches(tmp_path, [batch(NOON - timedelta(hours=5), 7, version=2)])
    assert len(read_all(tmp_path, NOON - timedelta(hours=1))["tag"]) == 9
    assert len(read_all(tmp_path, model_version=2)["tag"]) == 11
    window = read_all(tmp_path, NOON - timedelta(minutes=10), NOON + timedelta(minutes=1))
    assert len(window["tag"]) == 9
    assert read_all(tmp_path, NOON + timedelta(minutes=1), NOON + timedelta(hours=2)) == {}


def test_files_are_never_rewritten_and_half_written_ones_are_not_read(tmp_path):
    first = write_batches(tmp_path, [batch(NOON)])[0]
    before = first.read_bytes()
    second = write_batches(tmp_path, [batch(NOON, 2)])[0]
    assert first != second and first.read_bytes() == before
    (first.parent / ".in-progress.parquet.tmp").write_bytes(b"PAR1 half a file")
    (first.parent / ".another.parquet").write_bytes(b"not yet renamed")
    assert len(read_all(tmp_path)["tag"]) == 5


def test_a_column_added_later_reads_as_missing_in_older_files(tmp_path):
    old = tmp_path / "date=2026-03-01" / "hour=12"
    old.mkdir(parents=True)
    table = pa.table(
        {
            "at": pa.array([NOON], type=pa.timestamp("ms", tz="UTC")),
            "model_version": pa.array([1], type=pa.int32()),
            "tag": ["mlops"],
            "source": ["service"],
            "text_length": pa.array([3.0], type=pa.float32()),
            "confidence": pa.array([0.5], type=pa.float32()),
        }
    )
    pq.write_table(table, old / "old.parquet")
    rows = read_all(tmp_path)
    assert np.isnan(rows["unseen_share"]).all() and rows["confidence"][0] == 0.5


def test_buffered_log_writes_by_rows_by_time_and_on_close(tmp_path):
    log = PredictionLog(tmp_path, flush_rows=10, flush_seconds=0.2).start()
    log.append(batch(datetime.now(UTC), 4))
    assert log.pending_rows == 4 and not list(tmp_path.rglob("*.parquet"))  # nothing on disk yet
    log.append(batch(datetime.now(UTC), 7))  # past flush_rows: written at once
    deadline = time.monotonic() + 5
    while log.stats.written_rows < 11 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log.stats.written_rows == 11
    log.append(batch(datetime.now(UTC), 2))  # under flush_rows: written after flush_seconds
    deadline = time.monotonic() + 5
    while log.stats.written_rows < 13 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert log.stats.written_rows == 13
    log.append(batch(datetime.now(UTC), 1))
    log.close()
    assert log.stats.written_rows == 14 and log.pending_rows == 0
    assert sum(pq.read_metadata(p).num_rows for p in tmp_path.rglob("*.parquet")) == 14


def test_a_failed_write_keeps_the_rows_for_the_next_flush(tmp_path):
    blocked = tmp_path / "log"
    blocked.write_text("a file where the directory should be")
    log = PredictionLog(blocked, flush_rows=100)
    log.append(batch(NOON, 5))
    assert log.flush() == []
    assert log.stats.failed_flushes == 1 and log.pending_rows == 5
    blocked.unlink()
    assert len(log.flush()) == 1 and log.stats.written_rows == 5


def test_unwritable_rows_are_bounded(tmp_path, monkeypatch):
    from tagifai import predlog

    monkeypatch.setattr(predlog, "MAX_PENDING_FLUSHES", 2)
    blocked = tmp_path / "log"
    blocked.write_text("not a directory")
    log = PredictionLog(blocked, flush_rows=5)
    for _ in range(6):
        log.append(batch(NOON, 3))
        log.flush()
    assert log.pending_rows <= 10 and log.stats.dropped_rows == 18 - log.pending_rows
