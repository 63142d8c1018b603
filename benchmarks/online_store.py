"""Feast materialisation into the SQLite online store: seconds per window as the table grows.

The scene: ``--online-windows`` features partitions of ``--online-window-rows`` synthetic
projects each (``tagifai.synth``, the shipped data's vocabulary; ids 1..N, so every window is an
id range, as DataOps' partitions are), materialised one window after another with the real
``tagifai.store.plan_materialization`` / ``materialize_window`` into a fresh SQLite online
store: once with SQLite's default page cache (2 MiB) on Feast's writing connection, once with
``tagifai.store.SQLITE_WRITE_CACHE_MIB``. Each pass runs in a process of its own.

Why the cache matters: Feast keys the online table by the serialised entity key, whose int64 is
little-endian, so consecutive ids are scattered over the primary-key B-tree and every batch
touches pages all over it. Target: the tuned cache takes at most 60 % of the default's time
over the same windows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

NAME = "online_store"
DEFAULT_CACHE_MIB = 2  # SQLite's own default (cache_size = -2000 KiB)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--online-windows", type=int, default=6)
    group.add_argument("--online-window-rows", type=int, default=250_000)


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
    from tagifai.store import SQLITE_WRITE_CACHE_MIB

    result = Result(NAME, "Feast materialisation into SQLite: seconds per window, by page cache")
    result.figures["load_before"] = other_load()
    passes: dict[int, dict[str, Any]] = {}
    for cache_mib in (DEFAULT_CACHE_MIB, SQLITE_WRITE_CACHE_MIB):
        base = fresh_dir(NAME, f"cache-{cache_mib}")
        measured = run_measured(
            python(
                "-m",
                "benchmarks.online_store",
                "--worker",
                str(base),
                str(cache_mib),
                str(args.online_windows),
                str(args.online_window_rows),
            ),
            isolated_env(base / "stores"),
            log=base / "worker.log",
            timeout=4 * 3600,
        ).check()
        result.add_command(measured)
        report = measured.last_json()
        report["worker_peak_rss_mib"] = round(measured.peak_rss / MIB)
        passes[cache_mib] = report
        result.figures[f"cache_{cache_mib}_mib"] = report
    result.figures["load_after"] = other_load()
    default, tuned = passes[DEFAULT_CACHE_MIB], passes[SQLITE_WRITE_CACHE_MIB]
    ratio = sum(tuned["window_seconds"]) / sum(default["window_seconds"])
    result.figures["tuned_over_default"] = round(ratio, 3)
    result.targets.append(
        Target(
            f"{SQLITE_WRITE_CACHE_MIB} MiB cache over SQLite's default, total window time",
            ratio,
            0.6,
            "x",
            note=f"{args.online_windows} windows of {args.online_window_rows:,} rows",
        )
    )
    result.notes.append(
        "Seconds per window include Feast reading the partition file and building protobufs "
        "(the same in both passes); only the writing connection's page cache differs."
    )
    print_table(
        result,
        [
            (f"{mib} MiB: s per window", ", ".join(f"{s:.1f}" for s in p["window_seconds"]))
            for mib, p in passes.items()
        ]
        + [("tuned / default", f"{ratio:.2f}")],
    )
    return result


def worker(base: Path, cache_mib: int, windows: int, window_rows: int) -> dict[str, Any]:
    """Write the partitions, then materialise them window by window (prints one JSON line)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tagifai import features, store, synth
    from tagifai.config import get_settings

    settings = get_settings()
    parts_dir = base / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    projects, tags = synth.synthesize(windows * window_rows)
    labelled = projects.merge(tags, on="id")
    parts = []
    for index in range(windows):
        chunk = labelled.iloc[index * window_rows : (index + 1) * window_rows]
        frame = features.compute_features(chunk)
        frame[features.EMBEDDING] = None
        table = pa.Table.from_pandas(frame, schema=features.feature_schema(), preserve_index=False)
        part = parts_dir / features.PART_FILE.format(index)
        pq.write_table(table, part)
        parts.append(part)
    del projects, tags, labelled
    # The feature view's source must exist: point it at the first partition.
    source = features.features_path(settings)
    source.parent.mkdir(parents=True, exist_ok=True)
    source.symlink_to(parts[0])
    store.SQLITE_WRITE_CACHE_MIB = cache_mib
    planned = store.plan_materialization(settings, parts)
    seconds = []
    for window in planned:
        started = time.perf_counter()
        store.materialize_window(settings, window)
        seconds.append(round(time.perf_counter() - started, 2))
        print(f"window {window.index}: {seconds[-1]} s", file=sys.stderr, flush=True)
    rows = store.count_online_rows(settings)
    if rows != windows * window_rows:
        raise RuntimeError(f"online store holds {rows} rows, expected {windows * window_rows}")
    return {"cache_mib": cache_mib, "rows": rows, "window_seconds": seconds}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        base, cache_mib, windows, window_rows = sys.argv[2:6]
        print(json.dumps(worker(Path(base), int(cache_mib), int(windows), int(window_rows))))
    else:
        sys.exit("run it through `python -m benchmarks.run online_store`")
