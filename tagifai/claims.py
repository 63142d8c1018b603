"""Keys claimed at most once: a durable SQLite table shared by threads and processes.

What makes "exactly once" hold across the sensor, the webhook receiver and restarts of
either: whoever inserts a key first owns it (``INSERT ... ON CONFLICT DO NOTHING``, then the
row count), everyone else sees it taken. SQLite's file lock serialises writers across the
processes of one machine (not over a network file system: a team spreading these processes
over machines keeps the table in PostgreSQL).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Claims:
    """A table of claimed keys, each with a few text or number columns."""

    path: Path
    table: str
    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in (self.table, *self.columns):
            if not _NAME.match(name):
                raise ValueError(f"not a plain SQL name: {name!r}")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: every statement is its own transaction; the timeout waits out a writer.
        connection = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            columns = "".join(f", {name}" for name in self.columns)
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY NOT NULL{columns})"
            )
            yield connection
        finally:
            connection.close()

    def claim(self, key: str, **values: Any) -> bool:
        """Record ``key``; True only for the one caller that recorded it first."""
        names = ", ".join(("key", *self.columns))
        marks = ", ".join("?" * (len(self.columns) + 1))
        row = (key, *(values[name] for name in self.columns))
        with self._connect() as connection:
            cursor = connection.execute(
                f"INSERT INTO {self.table} ({names}) VALUES ({marks}) ON CONFLICT (key) DO NOTHING",
                row,
            )
            return cursor.rowcount == 1

    def release(self, key: str) -> None:
        """Forget a claim (its owner failed to act on it), so it can be claimed again."""
        with self._connect() as connection:
            connection.execute(f"DELETE FROM {self.table} WHERE key = ?", (key,))

    def find(self, key: str) -> dict[str, Any] | None:
        """The claim's columns, or None if nobody claimed ``key``."""
        if not self.path.exists():
            return None
        with self._connect() as connection:
            row = connection.execute(
                f"SELECT {', '.join(self.columns)} FROM {self.table} WHERE key = ?", (key,)
            ).fetchone()
        return dict(zip(self.columns, row, strict=True)) if row else None

    def prune(self, column: str, below: float | str) -> int:
        """Forget every claim whose ``column`` is below ``below``; returns how many."""
        if column not in self.columns:
            raise ValueError(f"no column {column!r} in {self.table}")
        with self._connect() as connection:
            return connection.execute(
                f"DELETE FROM {self.table} WHERE {column} < ?", (below,)
            ).rowcount
