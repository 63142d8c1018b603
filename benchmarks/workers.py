"""DataOps at 1M synthetic rows (``--workers-rows``) on a local cluster of 1 and of 2 worker
processes (``TAGIFAI_DASK_WORKERS``; ``TAGIFAI_DASK_PROCESSES=true``): the speed-up a second
worker gives, task by task. Each run starts from empty stores on one private platform; with
``--workers-online redis`` Feast's online store is the team's Redis, which takes one writer
per worker (SQLite takes one writer whatever the workers).

Target: 2 workers at least 1.5x faster than 1 (2 cores here).
"""

from __future__ import annotations

import argparse
from typing import Any

NAME = "workers"
WORKERS = (1, 2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--workers-rows", type=int, default=1_000_000)
    group.add_argument("--workers-online", choices=("sqlite", "redis"), default="redis")


def run(args: argparse.Namespace) -> Any:
    from benchmarks import prefect_api
    from benchmarks.common import (
        MIB,
        PrivatePlatform,
        Result,
        Target,
        cli,
        fresh_dir,
        isolated_env,
        other_load,
        print_table,
        run_measured,
    )
    from benchmarks.scaling import empty_redis, redis_env
    from benchmarks.team import platform_for

    rows, online = args.workers_rows, args.workers_online
    result = Result(NAME, f"dataops on {rows:,} rows, 1 vs 2 worker processes ({online})")
    base = fresh_dir(NAME)
    result.figures["load_before"] = other_load()
    data = base / "data"
    runs: dict[int, dict[str, Any]] = {}
    if online == "redis":
        platform = platform_for("team", base / "platform", ("server", "redis"))
    else:
        platform = PrivatePlatform(base / "platform")
    with platform:
        extra = redis_env(platform) if online == "redis" else {}
        synth = run_measured(
            cli("synth", "--rows", str(rows), "--out", str(data), "--format", "parquet"),
            isolated_env(base / "synth-stores"),
            quiet=False,
        ).check()
        result.add_command(synth)
        for workers in WORKERS:
            env = isolated_env(
                base / f"stores-{workers}",
                platform.api_url,
                TAGIFAI_DASK_PROCESSES="true",
                TAGIFAI_DASK_WORKERS=str(workers),
                TAGIFAI_SCALE_ROWS="5000",  # the scale path (no embeddings), as in scaling
                **extra,
            )
            if online == "redis":
                empty_redis(platform)  # each run from an empty online store
            before = {r["id"] for r in prefect_api.flow_runs(platform.api_url, "dataops")}
            measured = run_measured(
                cli(
                    "dataops",
                    "--projects",
                    str(data / "projects.parquet"),
                    "--tags",
                    str(data / "tags.parquet"),
                ),
                env,
                log=base / f"dataops-{workers}.log",
                timeout=3 * 3600,
            ).check()
            result.add_command(measured)
            [run_id] = [
                r["id"]
                for r in prefect_api.flow_runs(platform.api_url, "dataops")
                if r["id"] not in before
            ]
            runs[workers] = {
                "seconds": round(measured.seconds, 1),
                "cpu_seconds": round(measured.cpu_seconds, 1),
                "peak_rss_mib": round(measured.peak_rss / MIB),
                "tasks": prefect_api.task_breakdown(platform.api_url, run_id),
                "summary": measured.last_json(),
            }
    result.figures.update({"rows": rows, "online_store": online, "runs": runs})
    result.figures["load_after"] = other_load()
    speedup = runs[1]["seconds"] / runs[2]["seconds"]
    result.targets.append(
        Target(
            f"dataops speed-up, 2 vs 1 worker processes at {rows:,} rows",
            speedup,
            1.5,
            "x",
            comparison=">=",
            note=f"{runs[1]['seconds']:.0f} s -> {runs[2]['seconds']:.0f} s; "
            + "; ".join(f"{w} workers: {_by_step(runs[w]['tasks'])}" for w in WORKERS),
        )
    )
    result.notes += [
        "Synthetic Parquet from tagifai.synth (seed 42); synth time not counted.",
        "Steps: the sum of their task runs' seconds (parallel tasks overlap).",
    ]
    print_table(
        result,
        [
            (
                f"{w} worker(s)",
                f"{runs[w]['seconds']:7.1f} s  {runs[w]['cpu_seconds']:7.1f} s CPU  "
                f"peak {runs[w]['peak_rss_mib']} MiB",
            )
            for w in WORKERS
        ],
    )
    return result


def _by_step(tasks: list[dict[str, Any]]) -> str:
    totals: dict[str, float] = {}
    for task in tasks:
        step = task["task"].rsplit("-", 1)[0]
        totals[step] = totals.get(step, 0.0) + (task["seconds"] or 0.0)
    top = sorted(totals.items(), key=lambda item: -item[1])[:4]
    return ", ".join(f"{step} {seconds:.0f} s" for step, seconds in top)
