"""The data-arrival sensor on real files and real SQLite databases: each new complete batch is
emitted once, under the snapshot id the DataOps flow will compute."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tagifai.config import LandingDir, Settings, SqlTables, get_settings, parse_sensor_sources
from tagifai.errors import ConfigError
from tagifai.extract import content_id, read_table
from tagifai.sensor import (
    BatchNotice,
    Cursor,
    Look,
    claim_batch,
    decide,
    find_batch,
    read_cursor,
    release_batch,
    tick,
)
from tests.conftest import REPO, settings_for

# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path / "stores")


@pytest.fixture
def landing(tmp_path: Path) -> LandingDir:
    path = tmp_path / "landing"
    path.mkdir()
    return LandingDir(path)


def tables(shipped, start: int, stop: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    projects, tags = shipped
    return projects.iloc[start:stop], tags.iloc[start:stop]


def write_batch(
    folder: Path, projects: pd.DataFrame, tags: pd.DataFrame, fmt: str = "csv", marker=False
) -> Path:
    folder.mkdir(parents=True)
    for name, frame in (("projects", projects), ("tags", tags)):
        if fmt == "csv":
            frame.to_csv(folder / f"{name}.csv", index=False)
        else:
            frame.to_parquet(folder / f"{name}.parquet", index=False)
    if marker:
        (folder / "_SUCCESS").touch()
    return folder


def expected_id(projects_uri: str, tags_uri: str) -> str:
    return content_id(read_table(projects_uri, "projects"), read_table(tags_uri, "tags"))


class Recorder:
    """The emit callback: keeps what it was given; fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.notices: list[BatchNotice] = []
        self.failures = failures

    def __call__(self, notice: BatchNotice) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("Prefect API unreachable")
        self.notices.append(notice)


def statuses(results) -> list[tuple[str, str]]:
    return [(r.location, r.status) for r in results]


def make_db(path: Path, projects: pd.DataFrame, tags: pd.DataFrame) -> SqlTables:
    with sqlite3.connect(path) as connection:
        projects.to_sql("projects", connection, index=False, if_exists="append")
        tags.to_sql("tags", connection, index=False, if_exists="append")
    connection.close()
    return SqlTables(f"sqlite:///{path}")


# --- the decision ----------------------------------------------------------------------------

SIG, OTHER = "projects.csv:10:1|tags.csv:5:1", "projects.csv:20:2|tags.csv:5:1"
COMPLETE = Look(SIG, projects_uri="p", tags_uri="t")


@pytest.mark.parametrize(
    ("previous", "look", "action", "reason"),
    [
        (None, Look("", missing=("tags file",)), "wait", "no tags file yet"),
        (None, Look("", missing=("projects file",), marker=False), "wait", "incomplete"),
        (None, COMPLETE, "wait", "first look"),
        (Cursor(seen=OTHER), COMPLETE, "wait", "still changing"),
        (Cursor(seen=SIG), COMPLETE, "emit", "unchanged since the previous look"),
        (None, Look(SIG, marker=True), "emit", "_SUCCESS marker"),
        (Cursor(seen=OTHER), Look(SIG, marker=True), "emit", "_SUCCESS marker"),
        (Cursor(seen=SIG, done=SIG, batch_id="abc"), COMPLETE, "unchanged", "batch abc"),
        (Cursor(seen=SIG, done=SIG, batch_id="abc"), Look(SIG, marker=True), "unchanged", "abc"),
        # New data after an emitted batch waits again until it settles.
        (Cursor(seen=SIG, done=SIG, batch_id="abc"), Look(OTHER), "wait", "still changing"),
        (Cursor(seen=OTHER, done=SIG, batch_id="abc"), Look(OTHER), "emit", "unchanged since"),
        # A table that vanished after an emit is incomplete, not "unchanged".
        (Cursor(seen=SIG, done=SIG, batch_id="abc"), Look("", ("tags file",)), "wait", "no tags"),
    ],
)
def test_decide(previous, look, action, reason):
    decision = decide(previous, look)
    assert decision.action == action
    assert reason in decision.reason


# --- landing directory -----------------------------------------------------------------------


def test_a_complete_pair_is_emitted_once_under_the_snapshot_id(settings, landing, shipped):
    folder = write_batch(landing.path / "2024-06-01", *tables(shipped, 0, 60))
    emit = Recorder()
    assert statuses(tick(settings, [landing], emit)) == [("2024-06-01", "waiting")]
    results = tick(settings, [landing], emit)
    assert statuses(results) == [("2024-06-01", "emitted")]
    (notice,) = emit.notices
    assert notice.projects_uri == str(folder / "projects.csv")
    assert notice.tags_uri == str(folder / "tags.csv")
    assert notice.batch_id == expected_id(notice.projects_uri, notice.tags_uri)
    assert notice.batch_id == results[0].batch_id
    assert notice.payload() == {
        "projects_uri": notice.projects_uri,
        "tags_uri": notice.tags_uri,
        "batch_id": notice.batch_id,
        "source": "sensor:landing",
    }
    assert find_batch(settings, notice.batch_id).projects_uri == notice.projects_uri


def test_ticks_with_nothing_new_emit_nothing_and_write_nothing(settings, landing, shipped):
    for day in range(3):
        write_batch(landing.path / f"day-{day}", *tables(shipped, 50 * day, 50 * day + 50))
    emit = Recorder()
    tick(settings, [landing], emit)
    tick(settings, [landing], emit)
    assert len(emit.notices) == 3
    cursors = settings.sensor_dir / "cursors"
    before = {p: p.stat().st_mtime_ns for p in cursors.iterdir()}
    for _ in range(20):
        results = tick(settings, [landing], emit)
        assert {r.status for r in results} == {"unchanged"}
    assert len(emit.notices) == 3
    assert {p: p.stat().st_mtime_ns for p in cursors.iterdir()} == before


def test_a_file_still_being_written_waits_until_it_is_complete(settings, landing, shipped):
    projects, tags = tables(shipped, 0, 200)
    folder = landing.path / "growing"
    folder.mkdir()
    tags.to_csv(folder / "tags.csv", index=False)
    data = projects.to_csv(index=False).encode()
    emit = Recorder()
    seen = []
    with (folder / "projects.csv").open("wb") as file:
        for chunk in range(4):  # a writer appending a quarter of the file between looks
            file.write(data[chunk * len(data) // 4 : (chunk + 1) * len(data) // 4])
            file.flush()
            seen += statuses(tick(settings, [landing], emit))
    assert seen == [("growing", "waiting")] * 4 and emit.notices == []
    assert statuses(tick(settings, [landing], emit)) == [("growing", "emitted")]
    (notice,) = emit.notices
    assert notice.batch_id == content_id(projects, tags)  # the whole file, not a prefix of it


def test_a_success_marker_makes_a_batch_complete_on_the_first_look(settings, landing, shipped):
    write_batch(landing.path / "spark-job", *tables(shipped, 0, 40), fmt="parquet", marker=True)
    emit = Recorder()
    assert statuses(tick(settings, [landing], emit)) == [("spark-job", "emitted")]
    assert emit.notices[0].projects_uri.endswith("spark-job/projects.parquet")


def test_a_marker_older_than_the_data_does_not_count(settings, landing, shipped):
    folder = write_batch(landing.path / "rewritten", *tables(shipped, 0, 40), marker=True)
    old = time.time() - 60
    os.utime(folder / "_SUCCESS", (old, old))  # the data was rewritten after the marker
    emit = Recorder()
    assert statuses(tick(settings, [landing], emit)) == [("rewritten", "waiting")]
    assert statuses(tick(settings, [landing], emit)) == [("rewritten", "emitted")]


def test_only_batch_folders_count(settings, landing, shipped):
    projects, tags = tables(shipped, 0, 30)
    write_batch(landing.path / "_temporary", projects, tags, marker=True)  # still staging
    write_batch(landing.path / ".partial", projects, tags, marker=True)
    projects.to_csv(landing.path / "projects.csv", index=False)  # loose files: not a batch
    tags.to_csv(landing.path / "tags.csv", index=False)
    (landing.path / "only-projects").mkdir()
    projects.to_csv(landing.path / "only-projects" / "projects.csv", index=False)
    emit = Recorder()
    for _ in range(3):
        results = tick(settings, [landing], emit)
    assert statuses(results) == [("only-projects", "waiting")]
    assert "no tags file" in results[0].reason
    assert emit.notices == []


def test_the_same_data_again_is_not_emitted_twice(settings, landing, shipped):
    projects, tags = tables(shipped, 0, 80)
    first = write_batch(landing.path / "a", projects, tags, marker=True)
    emit = Recorder()
    tick(settings, [landing], emit)
    shutil.copytree(first, landing.path / "b")  # the same files again, new mtimes
    write_batch(landing.path / "c", projects, tags, fmt="parquet", marker=True)  # as Parquet
    results = tick(settings, [landing], emit)
    assert statuses(results) == [("a", "unchanged"), ("b", "duplicate"), ("c", "duplicate")]
    assert "already emitted from sensor:landing" in results[1].reason
    assert [n.projects_uri for n in emit.notices] == [str(first / "projects.csv")]
    assert {r.status for r in tick(settings, [landing], emit)} == {"unchanged"}


def test_a_lost_cursor_does_not_emit_again(settings, landing, shipped):
    write_batch(landing.path / "a", *tables(shipped, 0, 30), marker=True)
    emit = Recorder()
    tick(settings, [landing], emit)
    shutil.rmtree(settings.sensor_dir / "cursors")
    assert statuses(tick(settings, [landing], emit)) == [("a", "duplicate")]
    assert len(emit.notices) == 1


def test_the_cursor_survives_a_restart(settings, landing, shipped):
    write_batch(landing.path / "a", *tables(shipped, 0, 30))
    tick(settings, [landing], Recorder())  # the first look, then the process stops
    assert read_cursor(settings, landing).locations["a"].seen
    emit = Recorder()  # a new process: only the files under stores/sensor carry over
    assert statuses(tick(settings, [landing], emit)) == [("a", "emitted")]
    state = read_cursor(settings, landing)
    assert state.last_emitted["batch_id"] == emit.notices[0].batch_id
    assert state.locations["a"].done == state.locations["a"].seen


# --- SQL tables ------------------------------------------------------------------------------


def test_rows_appended_to_the_tables_are_emitted_once(settings, tmp_path, shipped):
    source = make_db(tmp_path / "warehouse.db", *tables(shipped, 0, 100))
    emit = Recorder()
    assert statuses(tick(settings, [source], emit)) == [("tables", "waiting")]
    assert statuses(tick(settings, [source], emit)) == [("tables", "emitted")]
    first = emit.notices[0]
    assert first.projects_uri == f"{source.url}#projects" and first.source == "sensor:sql"
    assert first.batch_id == content_id(*tables(shipped, 0, 100))
    assert statuses(tick(settings, [source], emit)) == [("tables", "unchanged")]

    make_db(tmp_path / "warehouse.db", *tables(shipped, 100, 130))  # a loader appends rows
    assert statuses(tick(settings, [source], emit)) == [("tables", "waiting")]
    assert statuses(tick(settings, [source], emit)) == [("tables", "emitted")]
    assert statuses(tick(settings, [source], emit)) == [("tables", "unchanged")]
    assert [n.batch_id for n in emit.notices] == [
        first.batch_id,
        expected_id(source.projects_uri, source.tags_uri),
    ]
    assert emit.notices[1].batch_id == content_id(*tables(shipped, 0, 130))


def test_tables_and_files_with_the_same_content_are_one_batch(settings, tmp_path, landing, shipped):
    projects, tags = tables(shipped, 0, 50)
    source = make_db(tmp_path / "warehouse.db", projects, tags)
    write_batch(landing.path / "export", projects, tags, marker=True)
    emit = Recorder()
    tick(settings, [landing, source], emit)
    results = tick(settings, [landing, source], emit)
    assert statuses(results) == [("export", "unchanged"), ("tables", "duplicate")]
    assert len(emit.notices) == 1


def test_empty_tables_wait(settings, tmp_path, shipped):
    projects, tags = tables(shipped, 0, 10)
    source = make_db(tmp_path / "w.db", projects, tags.iloc[:0])
    emit = Recorder()
    for _ in range(2):
        (result,) = tick(settings, [source], emit)
    assert result.status == "waiting" and "no rows in tags" in result.reason
    assert emit.notices == []


# --- emitting and the ledger -----------------------------------------------------------------


def test_a_failed_emit_is_retried_on_the_next_tick(settings, landing, shipped):
    write_batch(landing.path / "a", *tables(shipped, 0, 30), marker=True)
    emit = Recorder(failures=1)
    (failed,) = tick(settings, [landing], emit)
    assert failed.status == "error" and "emit failed, will retry" in failed.reason
    assert "Prefect API unreachable" in failed.reason
    assert find_batch(settings, failed.batch_id) is None  # the claim was released
    assert statuses(tick(settings, [landing], emit)) == [("a", "emitted")]
    assert [n.batch_id for n in emit.notices] == [failed.batch_id]
    assert statuses(tick(settings, [landing], emit)) == [("a", "unchanged")]


def test_claims_are_exclusive_and_releasable(settings):
    uris = ("/d/p.csv", "/d/t.csv")
    assert find_batch(settings, "abc") is None
    assert claim_batch(settings, "abc", "webhook", uris)
    assert not claim_batch(settings, "abc", "sensor:landing", uris)
    assert find_batch(settings, "abc").source == "webhook"
    release_batch(settings, "abc")
    assert claim_batch(settings, "abc", "sensor:landing", uris)


CLAIMER = """
import sys, threading, time
from tagifai.config import get_settings
from tagifai.sensor import claim_batch

settings = get_settings({"TAGIFAI_STORES_DIR": sys.argv[1]})
ids, start = sys.argv[3].split(","), float(sys.argv[2])
won, barrier = [], threading.Barrier(4)

def claim():
    barrier.wait()
    for batch_id in ids:
        if claim_batch(settings, batch_id, "racer", ("p", "t")):
            won.append(batch_id)

threads = [threading.Thread(target=claim) for _ in range(4)]
time.sleep(max(0.0, start - time.time()))
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(",".join(won))
"""


def test_two_processes_of_four_threads_claim_each_batch_exactly_once(settings):
    ids = [f"batch{i:03d}" for i in range(40)]
    start = str(time.time() + 2.0)  # both processes start claiming at the same moment
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(settings.stores_dir), start, ",".join(ids)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    won = []
    for racer in racers:
        out, _ = racer.communicate(timeout=120)
        assert racer.returncode == 0
        won += [batch_id for batch_id in out.strip().split(",") if batch_id]
    assert sorted(won) == ids  # every id won once, by exactly one thread of one process


# --- robustness ------------------------------------------------------------------------------


def test_an_unreadable_source_is_reported_and_the_others_carry_on(
    settings, tmp_path, landing, shipped
):
    projects, tags = tables(shipped, 0, 30)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    no_tags = make_db(tmp_path / "no-tags.db", projects, tags)
    with sqlite3.connect(tmp_path / "no-tags.db") as connection:
        connection.execute("DROP TABLE tags")
    connection.close()
    write_batch(landing.path / "good", projects, tags, marker=True)
    broken = write_batch(landing.path / "broken", *tables(shipped, 30, 60), marker=True)
    (broken / "projects.csv").write_text("id,title\n1,x\n")
    (broken / "_SUCCESS").touch()
    twice = write_batch(landing.path / "twice", *tables(shipped, 60, 90), marker=True)
    shutil.copy(twice / "tags.csv", twice / "tags.parquet")
    sources = [
        LandingDir(not_a_dir),
        no_tags,
        SqlTables(f"sqlite:///{tmp_path / 'missing.db'}"),
        landing,
    ]
    emit = Recorder()
    for _ in range(2):  # the errors stay, and are not mistaken for "nothing new"
        results = {(r.source, r.location): r for r in tick(settings, sources, emit)}
        assert [n.projects_uri for n in emit.notices] == [
            str(landing.path / "good" / "projects.csv")
        ]
        reasons = {key: r.reason for key, r in results.items() if r.status == "error"}
        assert set(reasons) == {
            (f"landing:{not_a_dir}", ""),
            (no_tags.label, "tables"),
            (f"sql:sqlite:///{tmp_path / 'missing.db'}#projects,tags", "tables"),
            (landing.label, "broken"),
            (landing.label, "twice"),
        }
        assert "Not a directory" in reasons[(f"landing:{not_a_dir}", "")]
        assert "no such table: tags" in reasons[(no_tags.label, "tables")]
        assert "no database file" in reasons[(sources[2].label, "tables")]
        assert "lacks column(s) created_on, description" in reasons[(landing.label, "broken")]
        assert "holds both tags.csv and tags.parquet" in reasons[(landing.label, "twice")]
    assert not (tmp_path / "missing.db").exists()  # looking did not create a database


def test_a_missing_landing_directory_waits_and_is_not_created(settings, tmp_path):
    source = LandingDir(tmp_path / "not-yet")
    (result,) = tick(settings, [source], Recorder())
    assert result.status == "waiting" and "no landing directory" in result.reason
    assert not source.path.exists()


# --- settings --------------------------------------------------------------------------------


def test_sensor_sources_default_to_the_landing_directory(tmp_path):
    assert get_settings({}).sensor_sources == (LandingDir(REPO / "data" / "landing"),)
    assert "data/landing/" in (REPO / ".gitignore").read_text().splitlines()


def test_sensor_sources_are_parsed_into_typed_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = (
        " drops ; file:///srv/landing;sqlite:///w.db;"
        "postgresql+psycopg://warehouse.internal/db#new_projects,new_tags;"
    )
    assert parse_sensor_sources(raw) == (
        LandingDir(tmp_path / "drops"),
        LandingDir(Path("/srv/landing")),
        SqlTables(f"sqlite:///{tmp_path / 'w.db'}"),  # absolute: flow runs work elsewhere
        SqlTables("postgresql+psycopg://warehouse.internal/db", "new_projects", "new_tags"),
    )
    settings = get_settings({"TAGIFAI_SENSOR_SOURCES": "sqlite:////abs/w.db#p,t"})
    assert settings.sensor_sources[0].projects_uri == "sqlite:////abs/w.db#p"
    assert settings.sensor_sources[0].tags_uri == "sqlite:////abs/w.db#t"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("s3://bucket/landing/", "S3 prefixes are not supported yet"),
        ("https://example.com/data", "neither a directory nor a sqlite:// or postgresql://"),
        ("mysql://h/db", "neither a directory nor"),
        ("sqlite:///w.db#projects", r"must end in #<projects_table>,<tags_table>"),
        ("sqlite:///w.db#projects,tags,more", r"must end in #<projects_table>"),
        ("sqlite:///w.db#projects,ta gs", r"must end in #<projects_table>"),
        ("postgresql://me:secret@h/db", "carries a password; use PGPASSFILE"),
        ("postgresql://me:secret@h/db#bad-table", r"'postgresql://me:\*\*\*@h/db#bad-table'"),
        ("mysql://me:secret@h/db", "'mysql://me:[*]{3}@h/db' is neither"),
        ("sqlite://", "SQLite sources must be sqlite:///path/to/file.db"),
        ("sqlite:///:memory:", "SQLite sources must be"),
        (" ; ;", "lists no source"),
        ("/srv/a;/srv/a", "lists landing:/srv/a more than once"),
    ],
)
def test_bad_sensor_sources_are_refused_in_one_line(raw, message):
    with pytest.raises(ConfigError, match=message) as raised:
        get_settings({"TAGIFAI_SENSOR_SOURCES": raw})
    assert "TAGIFAI_SENSOR_SOURCES" in str(raised.value)
    assert "\n" not in str(raised.value)
    assert "secret" not in str(raised.value)


# --- a new process: no repeats, nothing heavy ------------------------------------------------

TICKER = """
import json, sys
from tagifai.config import get_settings
from tagifai.sensor import tick

settings = get_settings()
emitted = []
for _ in range(int(sys.argv[1])):
    results = tick(settings, settings.sensor_sources, emitted.append)
print(json.dumps({
    "emitted": [n.batch_id for n in emitted],
    "statuses": sorted(r.status for r in results),
    "modules": sorted({name.split(".")[0] for name in sys.modules}),
}))
"""
HEAVY = {"great_expectations", "feast", "sklearn", "prefect", "mlflow", "optuna", "dask"}


def run_ticks(env: dict[str, str], ticks: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", TICKER, str(ticks)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return json.loads(out)


def test_a_new_process_repeats_nothing_and_a_quiet_tick_imports_nothing_heavy(
    tmp_path, landing, shipped
):
    write_batch(landing.path / "a", *tables(shipped, 0, 30), marker=True)
    source = make_db(tmp_path / "w.db", *tables(shipped, 30, 60))
    env = {
        "TAGIFAI_STORES_DIR": str(tmp_path / "stores"),
        "TAGIFAI_SENSOR_SOURCES": f"{landing.path};{source.url}",
    }
    first = run_ticks(env, ticks=2)
    assert len(first["emitted"]) == 2
    assert not HEAVY & set(first["modules"])  # even reading a batch needs only pandas
    again = run_ticks(env, ticks=1)
    assert again["emitted"] == []
    assert again["statuses"] == ["unchanged", "unchanged"]
    # A tick that finds nothing new reads no table: pandas is never even imported.
    assert not (HEAVY | {"pandas", "pyarrow"}) & set(again["modules"])
