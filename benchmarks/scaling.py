"""DataOps and MLOps at 10k, 100k, 1M (and, with ``--max-rows 10000000``, 10M) synthetic
rows: wall time and peak memory of ``tagifai dataops --projects .. --tags ..`` and
``tagifai mlops --trials 4 --space scale`` (subprocesses against a private Prefect server
whose start is not timed). Both work one snapshot partition (``TAGIFAI_PARTITION_ROWS``) at a
time, so peak memory should stay flat in the rows.

Targets: 10x more rows costs <= 12x more time; at 1M rows dataops < 5 min with peak < 4 GiB,
and mlops < 5 min; at 10M rows dataops < 30 min and both peaks < 4 GiB.
``--max-rows 100000`` skips the 1M step (it takes many minutes); ``--min-rows`` skips the
small ones, and ``--scaling-include out.json`` takes their points from an earlier result.
"""

from __future__ import annotations

import argparse
import shutil
from typing import Any

NAME = "scaling"
SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
DEFAULT_MAX_ROWS = 1_000_000
FIVE_MINUTES = 300.0
HALF_AN_HOUR = 1800.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument(
        "--max-rows",
        type=int,
        default=DEFAULT_MAX_ROWS,
        help="largest size of the scaling benchmark (default 1000000; 10000000 runs 10M too)",
    )
    group.add_argument("--min-rows", type=int, default=min(SIZES), help="smallest size")
    group.add_argument(
        "--scaling-scale-rows",
        type=int,
        default=None,
        help="TAGIFAI_SCALE_ROWS for the runs: below the smallest size, every size takes the "
        "scale path (no sentence embeddings, hashing + SGD); default: the setting's 200k",
    )
    group.add_argument(
        "--scaling-include",
        default=None,
        help="a scaling JSON whose points for sizes not run now join this result",
    )
    group.add_argument("--scaling-format", choices=("csv", "parquet"), default="csv")
    group.add_argument("--scaling-trials", type=int, default=4)
    group.add_argument(
        "--scaling-online",
        choices=("sqlite", "redis"),
        default="sqlite",
        help="Feast's online store: the embedded SQLite file, or the team's Redis (started "
        "with `deployments.platform up --team`; one writer per Dask worker)",
    )
    group.add_argument(
        "--scaling-processes",
        action="store_true",
        help="TAGIFAI_DASK_PROCESSES=true: the local cluster's workers are processes (children "
        "of the command, so in its process tree) instead of threads in it",
    )


def run(args: argparse.Namespace) -> Any:
    from benchmarks import prefect_api
    from benchmarks.common import (
        GIB,
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

    sizes = [n for n in SIZES if args.min_rows <= n <= args.max_rows]
    fmt, trials = args.scaling_format, args.scaling_trials
    result = Result(NAME, f"dataops + mlops ({trials} trials, scale space) at {sizes} rows")
    base = fresh_dir(NAME)
    result.figures["load_before"] = other_load()
    points: list[dict[str, Any]] = []
    online: dict[str, str] = {}
    if args.scaling_online == "redis":
        from benchmarks.team import platform_for

        platform_cm = platform_for("team", base / "platform", ("server", "redis"))
    else:
        platform_cm = PrivatePlatform(base / "platform")
    if args.scaling_processes:
        online["TAGIFAI_DASK_PROCESSES"] = "true"
    with platform_cm as platform:
        result.figures["server_start_seconds_excluded"] = round(platform.up_seconds, 1)
        if args.scaling_online == "redis":
            online.update(redis_env(platform))
        for rows in sizes:
            data = base / f"data-{rows}"
            stores = base / f"stores-{rows}"
            extra = {}
            if args.scaling_scale_rows is not None:
                extra["TAGIFAI_SCALE_ROWS"] = str(args.scaling_scale_rows)
            env = isolated_env(stores, platform.api_url, **extra, **online)
            if args.scaling_online == "redis":
                empty_redis(platform)
            synth = run_measured(
                cli("synth", "--rows", str(rows), "--out", str(data), "--format", fmt),
                env,
                quiet=False,
            ).check()
            result.add_command(synth)
            point: dict[str, Any] = {"rows": rows, "synth_seconds": round(synth.seconds, 2)}
            for flow, command in (
                (
                    "dataops",
                    cli(
                        "dataops",
                        "--projects",
                        str(data / f"projects.{fmt}"),
                        "--tags",
                        str(data / f"tags.{fmt}"),
                    ),
                ),
                ("mlops", cli("mlops", "--trials", str(trials), "--space", "scale")),
            ):
                before = {r["id"] for r in prefect_api.flow_runs(platform.api_url, flow)}
                measured = run_measured(
                    command, env, log=base / f"{flow}-{rows}.log", timeout=3 * 3600
                )
                result.add_command(measured)
                new = [
                    r
                    for r in prefect_api.flow_runs(platform.api_url, flow)
                    if r["id"] not in before
                ]
                point[flow] = {
                    "seconds": round(measured.seconds, 2),
                    "cpu_seconds": round(measured.cpu_seconds, 1),
                    "peak_rss_mib": round(measured.peak_rss / MIB),
                    "exit": measured.returncode,
                    "tasks": prefect_api.task_breakdown(platform.api_url, new[0]["id"])
                    if new
                    else [],
                    "error": "" if measured.ok else measured.tail(5),
                    # The command's own JSON summary (dataops: rows materialised, rows/s).
                    "summary": measured.last_json() if measured.ok else None,
                }
                if args.scaling_online == "redis":
                    point[flow]["redis_rss_mib"] = redis_rss_mib(platform)
                if not measured.ok:
                    break
            points.append(point)
            # Keep the logs, drop the gigabytes (data and stores are re-made on every run).
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(stores, ignore_errors=True)
        result.figures["load_after"] = other_load()

    if args.scaling_include:
        import json
        from pathlib import Path

        earlier = json.loads(Path(args.scaling_include).read_text())
        kept = [p for p in earlier["figures"]["points"] if p["rows"] not in sizes]
        points = sorted(kept + points, key=lambda p: p["rows"])
        result.notes.append(
            f"Points for {[p['rows'] for p in kept]} rows from {args.scaling_include} "
            f"(run {earlier.get('finished_at')}, commit {earlier['machine']['git']['commit']})."
        )
        result.description = (
            f"dataops + mlops ({trials} trials, scale space) at {[p['rows'] for p in points]} rows"
        )
    result.figures.update({"format": fmt, "trials": trials, "points": points})
    for flow in ("dataops", "mlops"):
        for small, large in zip(points, points[1:], strict=False):
            if flow not in small or flow not in large:
                continue
            ratio = large[flow]["seconds"] / small[flow]["seconds"]
            result.targets.append(
                Target(
                    f"{flow} time {large['rows'] // 1000}k / {small['rows'] // 1000}k rows",
                    ratio,
                    12,
                    "x",
                    note=_ratio_note(flow, small, large, ratio),
                )
            )
    million = next((p for p in points if p["rows"] == 1_000_000), None)
    if million is not None:
        dataops, mlops = million.get("dataops", {}), million.get("mlops", {})
        result.targets += [
            Target(
                "dataops at 1M rows",
                dataops.get("seconds"),
                FIVE_MINUTES,
                "s",
                note=_slowest(dataops),
            ),
            Target(
                "dataops peak memory at 1M rows",
                dataops.get("peak_rss_mib", 0) * MIB / GIB,
                4,
                "GiB",
                note="whole process tree: the CLI process (the local Dask cluster runs as its "
                "threads)",
            ),
            Target(
                "mlops at 1M rows", mlops.get("seconds"), FIVE_MINUTES, "s", note=_slowest(mlops)
            ),
        ]
    else:
        result.notes.append(f"1M rows skipped (--max-rows {args.max_rows}).")
    ok = [p for p in points if all(p.get(f, {}).get("exit") == 0 for f in ("dataops", "mlops"))]
    if len(ok) >= 2:
        small, large = ok[0], ok[-1]
        for flow in ("dataops", "mlops"):
            ratio = large[flow]["peak_rss_mib"] / small[flow]["peak_rss_mib"]
            result.targets.append(
                Target(
                    f"{flow} peak memory {large['rows']:,} / {small['rows']:,} rows",
                    ratio,
                    2,
                    "x",
                    note=f"{small[flow]['peak_rss_mib']} MiB -> {large[flow]['peak_rss_mib']} MiB "
                    "(flat: memory follows the partition size, not the rows)",
                )
            )
    ten_million = next((p for p in points if p["rows"] == 10_000_000), None)
    if ten_million is not None:
        dataops, mlops = ten_million.get("dataops", {}), ten_million.get("mlops", {})
        result.targets += [
            Target(
                "dataops at 10M rows",
                dataops.get("seconds"),
                HALF_AN_HOUR,
                "s",
                note=_slowest(dataops),
            ),
            Target(
                "dataops peak memory at 10M rows",
                dataops.get("peak_rss_mib", 0) * MIB / GIB,
                4,
                "GiB",
                note="whole process tree",
            ),
            Target(
                "mlops peak memory at 10M rows",
                mlops.get("peak_rss_mib", 0) * MIB / GIB,
                4,
                "GiB",
                note="whole process tree",
            ),
        ]
    if args.scaling_scale_rows is not None:
        result.notes.append(
            f"TAGIFAI_SCALE_ROWS={args.scaling_scale_rows}: sizes past it take the scale path "
            "(no sentence embeddings; hashing + SGD, partial_fit over partitions)."
        )
    result.figures["scale_rows"] = args.scaling_scale_rows
    result.figures["online_store"] = args.scaling_online
    result.figures["dask_processes"] = args.scaling_processes
    if args.scaling_online == "redis":
        result.notes.append(
            "Feast's online store is the team's Redis (one writer per Dask worker); its "
            "server is not in the command's process tree: redis_rss_mib is its RSS after each "
            "run (it holds every materialised row in memory by design)."
        )
    if args.scaling_processes:
        result.notes.append(
            "TAGIFAI_DASK_PROCESSES=true: the local cluster's 2 workers are processes, "
            "children of the command, counted in its peak."
        )
    result.notes += [
        f"Synthetic {fmt} from tagifai.synth (seed 42); synth time not counted.",
        "Each size starts from empty stores; imports and the Dask cluster start are included.",
    ]
    plot(result, points)
    rows_table = []
    for point in points:
        for flow in ("dataops", "mlops"):
            if flow in point:
                f = point[flow]
                rows_table.append(
                    (
                        f"{flow:<7} {point['rows']:>9,} rows",
                        f"{f['seconds']:8.1f} s  {f['cpu_seconds']:8.1f} s CPU  "
                        f"peak {f['peak_rss_mib']:6d} MiB  exit {f['exit']}",
                    )
                )
    print_table(result, rows_table)
    return result


def redis_env(platform: Any) -> dict[str, str]:
    """The settings that point a run's Feast online store at the platform's Redis (MLflow
    and Optuna stay on the run's own SQLite files)."""
    from tagifai.config import FEAST_TEAM_CONFIG, get_settings

    settings = get_settings(platform.client_env())
    assert settings.redis_address and settings.redis_password_file, "team mode is not up"
    return {
        "TAGIFAI_FEAST_CONFIG": FEAST_TEAM_CONFIG,
        "TAGIFAI_REDIS_ADDRESS": settings.redis_address,
        "TAGIFAI_REDIS_PASSWORD_FILE": str(settings.redis_password_file),
    }


def empty_redis(platform: Any) -> None:
    """Flush the platform's Redis, so a run starts from an empty online store as on SQLite
    (otherwise its `plan_materialization` first SCANs away the previous run's keys)."""
    import redis

    from tagifai.config import get_settings

    settings = get_settings(platform.client_env())
    assert settings.redis_address and settings.redis_password_file, "team mode is not up"
    host, port = settings.redis_address.rsplit(":", 1)
    password = settings.redis_password_file.read_text(encoding="utf-8").strip()
    with redis.Redis(host=host, port=int(port), password=password) as client:
        client.flushall()


def redis_rss_mib(platform: Any) -> int | None:
    import psutil

    from benchmarks.common import MIB

    pid = platform.status().get("redis", {}).get("pid")
    try:
        return round(psutil.Process(pid).memory_info().rss / MIB) if pid else None
    except psutil.Error:
        return None


def _slowest(side: dict[str, Any]) -> str:
    tasks = sorted(side.get("tasks", []), key=lambda t: -(t["seconds"] or 0))[:3]
    text = ", ".join(f"{t['task']} {t['seconds'] or 0:.0f} s" for t in tasks)
    if side.get("error"):
        text = f"failed: {side['error'][-300:]}; " + text
    summary = side.get("summary") or {}
    if "materialize_rows_per_second" in summary:
        text += (
            f"; Feast materialised {summary.get('rows_materialized', 0):,} rows at "
            f"{summary['materialize_rows_per_second']:,.0f} rows/s"
        )
    return f"slowest tasks: {text}" if tasks else text


def _ratio_note(flow: str, small: dict[str, Any], large: dict[str, Any], ratio: float) -> str:
    text = f"{small[flow]['seconds']:.0f} s -> {large[flow]['seconds']:.0f} s"
    if ratio > 12:
        text += "; target missed: " + _slowest(large[flow])
    return text


def plot(result: Any, points: list[dict[str, Any]]) -> None:
    from benchmarks.common import plt, save_figure

    pyplot = plt()
    figure, (times, memory) = pyplot.subplots(1, 2, figsize=(11, 4.5))
    colors = {"dataops": "#4c72b0", "mlops": "#dd8452"}
    for flow, color in colors.items():
        ok = [p for p in points if flow in p and p[flow]["exit"] == 0]
        rows = [p["rows"] for p in ok]
        times.plot(rows, [p[flow]["seconds"] for p in ok], "o-", color=color, label=flow)
        memory.plot(
            rows, [p[flow]["peak_rss_mib"] / 1024 for p in ok], "o-", color=color, label=flow
        )
        if ok:  # what linear scaling from the smallest size would cost
            first = ok[0]
            linear = [first[flow]["seconds"] * r / first["rows"] for r in rows]
            times.plot(rows, linear, ":", color=color, linewidth=1)
    times.axhline(FIVE_MINUTES, color="red", linestyle="--", linewidth=1)
    times.text(
        points[0]["rows"], FIVE_MINUTES, "5 min (1M target)", color="red", fontsize=8, va="bottom"
    )
    times.set_xscale("log")
    times.set_yscale("log")
    times.set_xlabel("rows")
    times.set_ylabel("wall time (s), log; dotted: linear from the smallest size")
    times.set_title("Time vs rows")
    times.legend()
    memory.axhline(4, color="red", linestyle="--", linewidth=1)
    memory.text(points[0]["rows"], 4, "4 GiB (target)", color="red", fontsize=8, va="bottom")
    memory.set_xscale("log")
    memory.set_xlabel("rows")
    memory.set_ylabel("peak RSS of the process tree (GiB)")
    memory.set_title("Memory vs rows")
    memory.legend()
    save_figure(figure, NAME)
