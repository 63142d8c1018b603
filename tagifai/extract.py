"""Read the source tables from a URI and keep immutable, content-addressed snapshots.

A URI is a CSV or Parquet path (``file://`` allowed) or a SQLAlchemy URL with the table after
``#``: ``sqlite:///warehouse.db#projects``, ``postgresql+psycopg://host/db#projects``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

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
    expected = TABLES[table]
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise DataSourceError(
            f"{table} source {uri} lacks column(s) {', '.join(missing)} "
            f"(has {', '.join(map(str, frame.columns))})"
        )
    if frame.empty:
        raise DataSourceError(f"{table} source {uri} has no rows")
    if "created_on" in frame and pd.api.types.is_datetime64_any_dtype(frame["created_on"]):
        frame["created_on"] = frame["created_on"].dt.strftime("%Y-%m-%d %H:%M:%S")
    return frame.astype({c: t for c, t in STRING_COLUMNS.items() if c in frame.columns})


def _read_file(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataSourceError(f"source not found: {path}")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise DataSourceError(f"source is not a readable file: {path}")
    if path.stat().st_size == 0:
        raise DataSourceError(f"source is empty: {path}")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=STRING_COLUMNS, encoding="utf-8", encoding_errors="strict")
    except UnicodeDecodeError as error:
        raise DataSourceError(f"{path} is not valid UTF-8 (byte {error.start})") from None
    except pd.errors.EmptyDataError:
        raise DataSourceError(f"source is empty: {path}") from None
    except (pd.errors.ParserError, ValueError, OSError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataSourceError(f"cannot read {path}: {first}") from None


def _read_sql(uri: str) -> pd.DataFrame:
    import sqlalchemy as sa

    url, _, table = uri.partition("#")
    if not table:
        raise DataSourceError(f"SQL source {url} needs a table: <url>#<table>")
    try:
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            return pd.read_sql_table(table, connection)
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


def content_id(projects: pd.DataFrame, tags: pd.DataFrame) -> str:
    """A short, order-independent hash of both tables' columns and values."""
    digest = hashlib.sha256()
    for frame in (projects, tags):
        ordered = frame.sort_values("id", kind="stable").reset_index(drop=True)
        digest.update(json.dumps([str(c) for c in ordered.columns]).encode())
        digest.update(pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Snapshot:
    """An immutable copy of both tables, named by its content."""

    id: str
    path: Path
    projects_rows: int
    tags_rows: int

    @property
    def projects_path(self) -> Path:
        return self.path / "projects.parquet"

    @property
    def tags_path(self) -> Path:
        return self.path / "tags.parquet"


def stage_tables(
    settings: Settings, projects: pd.DataFrame, tags: pd.DataFrame, snapshot_id: str | None = None
) -> Snapshot:
    """Write both tables to a scratch folder named by their content (not yet a snapshot)."""
    snapshot_id = snapshot_id or content_id(projects, tags)
    staging = settings.stores_dir / "staging" / snapshot_id
    staging.mkdir(parents=True, exist_ok=True)
    projects.to_parquet(staging / "projects.parquet", index=False)
    tags.to_parquet(staging / "tags.parquet", index=False)
    return Snapshot(snapshot_id, staging, len(projects), len(tags))


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
    return Snapshot(staged.id, target, staged.projects_rows, staged.tags_rows)


def discard_staged(staged: Snapshot) -> None:
    if staged.path.parent.name == "staging":
        shutil.rmtree(staged.path, ignore_errors=True)


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
    return Snapshot(snapshot_id, path, manifest["projects_rows"], manifest["tags_rows"])
