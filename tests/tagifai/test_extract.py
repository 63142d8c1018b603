import sqlite3

import pandas as pd
import pytest

from tagifai.errors import DataSourceError
from tagifai.extract import (
    content_id,
    latest_snapshot_id,
    load_snapshot,
    publish_snapshot,
    read_table,
    stage_tables,
)
from tests.conftest import REPO, settings_for


def test_read_csv_parquet_and_sqlite_agree(tmp_path, shipped):
    projects, tags = shipped
    parquet = tmp_path / "projects.parquet"
    projects.to_parquet(parquet, index=False)
    db = tmp_path / "warehouse.db"
    with sqlite3.connect(db) as connection:
        projects.to_sql("projects", connection, index=False)
    from_parquet = read_table(str(parquet), "projects")
    from_sql = read_table(f"sqlite:///{db}#projects", "projects")
    from_file_uri = read_table((REPO / "data/raw/projects.csv").as_uri(), "projects")
    for frame in (from_parquet, from_sql, from_file_uri):
        assert content_id(frame, tags) == content_id(projects, tags)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b""), "empty"),
        (
            lambda p: p.write_bytes(b"id,created_on,title\n1,x,y\n"),
            r"lacks column\(s\) description",
        ),
        (lambda p: p.write_bytes(b"id,created_on,title,description\n"), "has no rows"),
        (
            lambda p: p.write_bytes(b"id,created_on,title,description\n1,x,\xff\xfe,d\n"),
            "not valid UTF-8",
        ),
        (lambda p: p.mkdir(), "not a readable file"),
    ],
)
def test_read_table_bad_sources(tmp_path, setup, message):
    path = tmp_path / "projects.csv"
    setup(path)
    with pytest.raises(DataSourceError, match=message):
        read_table(str(path), "projects")


def test_sql_source_errors(tmp_path):
    with pytest.raises(DataSourceError, match="needs a table"):
        read_table(f"sqlite:///{tmp_path}/w.db", "projects")
    with pytest.raises(DataSourceError, match="cannot read table"):
        read_table(f"sqlite:///{tmp_path}/w.db#nope", "projects")


def test_content_id_ignores_row_order_but_not_values(shipped):
    projects, tags = shipped
    shuffled = projects.sample(frac=1, random_state=0)
    assert content_id(shuffled, tags) == content_id(projects, tags)
    changed = projects.copy()
    changed.loc[0, "title"] = "something else"
    assert content_id(changed, tags) != content_id(projects, tags)


def test_snapshots_are_content_addressed_and_immutable(tmp_path, shipped):
    settings = settings_for(tmp_path)
    assert latest_snapshot_id(settings) is None
    with pytest.raises(DataSourceError, match="no data snapshot"):
        load_snapshot(settings)
    first = publish_snapshot(settings, stage_tables(settings, *shipped), {"projects": "x"})
    mtime = first.projects_path.stat().st_mtime_ns
    again = publish_snapshot(settings, stage_tables(settings, *shipped), {"projects": "x"})
    assert again.id == first.id
    assert first.projects_path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in settings.snapshots_dir.iterdir()) == sorted(["LATEST", first.id])
    assert not (settings.stores_dir / "staging" / first.id).exists()
    loaded = load_snapshot(settings)
    assert loaded.id == first.id and loaded.projects_rows == 764
    assert pd.read_parquet(loaded.projects_path).equals(shipped[0])
