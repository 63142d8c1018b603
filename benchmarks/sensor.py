"""The data-arrival sensor's cost: CPU per tick when nothing is new, and the price of a new batch.

The scene: a landing directory with 10 batches already emitted and a SQLite table pair of
100k synthetic rows (``tagifai synth``), also emitted. The worker (``python -m
benchmarks.sensor --worker``) ticks until every source is ``unchanged``, then times 1,000
ticks (process CPU time and wall time); then it fingerprints one new batch of the same size
from CSV, Parquet and SQLite (what a tick pays once per new batch). Target: a tick that finds
nothing new costs <= 100 ms of CPU, a tenth of the issue's "well under a second" (polling
every 5 s, under 2 % of a core). Without indexes the SQLite aggregates are scans, which are
most of that; with indexes on id and created_on the same tick is a few milliseconds.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

NAME = "sensor"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--sensor-ticks", type=int, default=1000)
    group.add_argument("--sensor-rows", type=int, default=100_000)
    group.add_argument("--sensor-batches", type=int, default=10)


def run(args: argparse.Namespace) -> Any:
    from benchmarks.common import (
        MIB,
        Result,
        Target,
        fresh_dir,
        isolated_env,
        other_load,
        print_table,
        python,
        run_measured,
    )

    result = Result(NAME, "data-arrival sensor: CPU of a no-change tick, cost of a new batch")
    base = fresh_dir(NAME)
    env = isolated_env(base / "stores")
    result.figures["load_before"] = other_load()
    measured = run_measured(
        python(
            "-m",
            "benchmarks.sensor",
            "--worker",
            str(base),
            "--ticks",
            str(args.sensor_ticks),
            "--rows",
            str(args.sensor_rows),
            "--batches",
            str(args.sensor_batches),
        ),
        env,
        log=base / "worker.log",
        timeout=3600,
    ).check()
    result.add_command(measured)
    report = measured.last_json()
    result.figures.update(report)
    result.figures["worker_peak_rss_mib"] = round(measured.peak_rss / MIB)
    result.figures["load_after"] = other_load()
    result.targets.append(
        Target("CPU per no-change tick", report["tick_cpu_ms"], 100.0, "ms", note=_note(report))
    )
    result.notes.append(
        "A no-change tick stats each batch folder's files and runs one statement of five "
        "one-aggregate subqueries (count, max id, max created_on of projects; count, max id "
        "of tags); it reads no "
        "table into Python and imports no pandas. Without indexes SQLite answers them by "
        "scanning the tables, which is most of the tick; with indexes on id and created_on "
        "they are index lookups (sql_indexed_tick_cpu_ms)."
    )
    print_table(
        result,
        [
            ("scene", f"{args.sensor_batches} emitted batches + SQLite {args.sensor_rows} rows"),
            (
                "no-change tick",
                f"{report['tick_cpu_ms']:.2f} ms CPU, {report['tick_wall_ms']:.2f} ms wall "
                f"(mean of {report['ticks']})",
            ),
            ("  landing dir alone", f"{report['landing_tick_cpu_ms']:.3f} ms CPU"),
            ("  SQLite tables alone", f"{report['sql_tick_cpu_ms']:.2f} ms CPU"),
            (
                "  SQLite tables, indexed",
                f"{report['sql_indexed_tick_cpu_ms']:.3f} ms CPU (id, created_on)",
            ),
            *[
                (f"fingerprint new batch ({kind})", f"{seconds:.2f} s")
                for kind, seconds in report["fingerprint_seconds"].items()
            ],
        ],
    )
    return result


def _note(report: dict[str, Any]) -> str:
    return (
        f"landing dir {report['landing_tick_cpu_ms']:.3f} ms, SQLite without indexes "
        f"{report['sql_tick_cpu_ms']:.2f} ms, with indexes "
        f"{report['sql_indexed_tick_cpu_ms']:.3f} ms per tick"
    )


def _time_ticks(settings: Any, sources: list[Any], ticks: int) -> tuple[float, float]:
    from tagifai.sensor import tick

    def refuse(notice: Any) -> None:
        raise AssertionError(f"nothing is new, yet the sensor emitted {notice}")

    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(ticks):
        results = tick(settings, sources, refuse)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert {r.status for r in results} == {"unchanged"}, results
    return cpu / ticks * 1000, wall / ticks * 1000


def worker(base: Path, ticks: int, rows: int, batches: int) -> dict[str, Any]:
    """Build the scene under ``base``, settle it, then measure."""
    from tagifai.config import LandingDir, SqlTables, get_settings
    from tagifai.extract import read_table
    from tagifai.sensor import fingerprint_batch, tick
    from tagifai.synth import synthesize, write_synthetic

    settings = get_settings()
    landing = LandingDir(base / "landing")
    projects, tags = synthesize(rows + 1_000 * batches, seed=7)
    for i in range(batches):  # small, distinct batches (each 1,000 rows)
        folder = landing.path / f"batch-{i:02d}"
        folder.mkdir(parents=True)
        part = slice(rows + 1_000 * i, rows + 1_000 * (i + 1))
        projects.iloc[part].to_csv(folder / "projects.csv", index=False)
        tags.iloc[part].to_csv(folder / "tags.csv", index=False)
        (folder / "_SUCCESS").touch()
    database = base / "warehouse.db"
    with sqlite3.connect(database) as connection:
        projects.iloc[:rows].to_sql("projects", connection, index=False)
        tags.iloc[:rows].to_sql("tags", connection, index=False)
    connection.close()
    sql = SqlTables(f"sqlite:///{database}")
    sources = [landing, sql]
    emitted: list[Any] = []
    for _ in range(3):  # the markers emit on the first tick, the tables on the second
        tick(settings, sources, emitted.append)
    assert len(emitted) == batches + 1, emitted

    cpu_ms, wall_ms = _time_ticks(settings, sources, ticks)
    landing_cpu_ms, _ = _time_ticks(settings, [landing], ticks)
    sql_cpu_ms, _ = _time_ticks(settings, [sql], max(ticks // 4, 1))
    with sqlite3.connect(database) as connection:  # what a warehouse usually has
        connection.execute("CREATE INDEX projects_id ON projects (id)")
        connection.execute("CREATE INDEX projects_created_on ON projects (created_on)")
        connection.execute("CREATE INDEX tags_id ON tags (id)")
    connection.close()
    tick(settings, [sql], emitted.append)  # indexes change no signature: nothing to emit
    assert len(emitted) == batches + 1, emitted
    indexed_cpu_ms, _ = _time_ticks(settings, [sql], ticks)

    fingerprints: dict[str, float] = {}
    new = base / "new"
    csv = write_synthetic(rows, new / "csv", seed=11, fmt="csv")
    parquet = write_synthetic(rows, new / "parquet", seed=11, fmt="parquet")
    read_table(str(csv.tags_path), "tags")  # pandas and pyarrow imported before timing
    read_table(str(parquet.tags_path), "tags")
    for kind, uris in (
        ("csv", (str(csv.projects_path), str(csv.tags_path))),
        ("parquet", (str(parquet.projects_path), str(parquet.tags_path))),
        ("sqlite", (sql.projects_uri, sql.tags_uri)),
    ):
        started = time.perf_counter()
        fingerprint_batch(*uris)
        fingerprints[f"{kind} {rows} rows"] = round(time.perf_counter() - started, 3)
    return {
        "ticks": ticks,
        "rows": rows,
        "batches": batches,
        "tick_cpu_ms": round(cpu_ms, 3),
        "tick_wall_ms": round(wall_ms, 3),
        "landing_tick_cpu_ms": round(landing_cpu_ms, 4),
        "sql_tick_cpu_ms": round(sql_cpu_ms, 3),
        "sql_indexed_tick_cpu_ms": round(indexed_cpu_ms, 3),
        "fingerprint_seconds": fingerprints,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sensor")
    parser.add_argument("--worker", type=Path, required=True, metavar="DIR")
    parser.add_argument("--ticks", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args(argv)
    report = worker(args.worker, args.ticks, args.rows, args.batches)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
