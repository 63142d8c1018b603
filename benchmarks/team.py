"""Team mode (PostgreSQL + Redis) against the embedded stores (SQLite), the same work in each:

- ``tagifai dataops`` on N synthetic rows (``--team-rows``, 1M by default): Feast's
  materialisation into Redis vs SQLite (rows/s, and its share of the run);
- online lookups on the N-row store: ``get_online_features`` of one random id on an open
  store (what a serving process does), p50/p99 over ``--team-lookups`` calls, and 100 ids a call;
- the deployed chain (``prefect deployment run dataops/dataops`` until the mlops run it
  triggers is Completed) on the shipped data, the Prefect server on PostgreSQL vs SQLite;
- every service's memory at rest: RSS of its process tree, and PSS, which counts PostgreSQL's
  shared buffers once instead of once per backend.

Each mode runs on a private platform of its own (free ports, stores under
``benchmarks/out/tmp/team``); team mode's platform is switched with ``up --team``.

    python -m benchmarks.team lookup --calls N     # the lookup loop, run in a subprocess
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

NAME = "team"
MODES = ("embedded", "team")
SERVICES = ("server", "worker", "webhook", "mlflow")
SETTLE_SECONDS = 15.0
REST_SECONDS = 10.0
RUN_TIMEOUT_S = 3 * 3600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument(
        "--team-rows", type=int, default=1_000_000, help="synthetic rows dataops materialises"
    )
    group.add_argument("--team-lookups", type=int, default=2000, help="online lookups per mode")


def platform_for(mode: str, stores: Path, services: tuple[str, ...]) -> Any:
    """A private platform; in team mode switched with ``up --team`` on free database ports."""
    from benchmarks.common import REPO_ROOT, PrivatePlatform, python
    from deployments.platform import free_ports

    class TeamPlatform(PrivatePlatform):
        def up(self, services: Any = None) -> dict[str, Any]:
            if not (self.stores_dir / "team" / "team.env").exists():
                switched = subprocess.run(
                    python("-m", "deployments.platform", "up", "--team", "postgres", "redis"),
                    cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=600,
                )  # fmt: skip
                if switched.returncode != 0:
                    raise RuntimeError(f"up --team failed:\n{switched.stdout}{switched.stderr}")
            return super().up(services)

    if mode == "embedded":
        return PrivatePlatform(stores, services)
    platform = TeamPlatform(stores, services)
    postgres, redis = free_ports(2)
    platform.env.update(TAGIFAI_POSTGRES_PORT=str(postgres), TAGIFAI_REDIS_PORT=str(redis))
    return platform


def run(args: argparse.Namespace) -> Any:
    from benchmarks import chain
    from benchmarks.common import (
        Result,
        cli,
        fresh_dir,
        isolated_env,
        other_load,
        print_table,
        run_measured,
    )

    rows = args.team_rows
    result = Result(NAME, f"team mode (PostgreSQL + Redis) vs embedded (SQLite); {rows:,} rows")
    base = fresh_dir(NAME)
    result.figures["load_before"] = other_load()

    # The deployed chain and memory at rest, each mode on a platform of its own.
    chains: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for mode in MODES:
        platform = platform_for(mode, base / f"chain-{mode}" / "stores", SERVICES)
        with platform:
            time.sleep(SETTLE_SECONDS)
            env = platform.client_env()
            chain._deploy_real(result, env)
            chains[mode] = chain.run_chain(result, platform, env, "dataops", "mlops")
            time.sleep(SETTLE_SECONDS)
            rest[mode] = measure_rest(platform)

    # Feast at scale: dataops on N synthetic rows, then online lookups on that store.
    data = base / "data"
    synth = run_measured(
        cli("synth", "--rows", str(rows), "--out", str(data)),
        isolated_env(base / "synth-stores"),
        quiet=False,
    ).check()
    result.add_command(synth)
    feast: dict[str, Any] = {}
    for mode in MODES:
        services = ("server", "redis") if mode == "team" else ("server",)
        platform = platform_for(mode, base / f"feast-{mode}" / "stores", services)
        with platform:
            feast[mode] = dataops_and_lookups(result, platform, data, args.team_lookups)
    result.figures["load_after"] = other_load()

    result.figures.update(
        {
            "rows": rows,
            "feast": feast,
            "chains": chains,
            "chain_seconds": {mode: chains[mode]["latency_s"] for mode in MODES},
            "memory_at_rest": rest,
        }
    )
    result.notes += [
        "Materialise again: the same source into the filled store, which is cleared first "
        "(SQLite: one DELETE; Redis: Feast's delete_table, which SCANs 10 keys a round trip).",
        "Materialisation rows/s is the dataops run's own figure (tagifai.store."
        "materialize_features: clear the online table, then Feast's materialize() per window "
        "of ~100k rows, then count the online rows), so both stores do the same work.",
        "Lookups: one FeatureStore opened once per mode (registry cached), then "
        "get_online_features for one uniformly random id of the N per call (and 100 ids a call); "
        "wall time per call in the same process, after 50 warm-up calls.",
        "Chain latency = mlops run end_time - dataops run created (server timestamps), shipped "
        "data, mlops n_trials=20 (prefect.yaml's default), one run per mode from empty stores; "
        "runs vary by a few seconds from one to the next on this machine.",
        "Memory at rest: mean over 10 s of idling, 15 s after the chain; RSS sums every process "
        "of a service's tree, so PostgreSQL's shared memory counts once per backend there; "
        "PSS shares it out.",
    ]
    plot(result, feast, chains, rest)
    print_table(result, table_rows(feast, chains, rest))
    return result


def dataops_and_lookups(result: Any, platform: Any, data: Path, lookups: int) -> dict[str, Any]:
    from benchmarks import prefect_api
    from benchmarks.common import MIB, cli, python, run_measured

    env = platform.client_env()
    dataops = run_measured(
        cli("dataops", "--projects", str(data / "projects.csv"), "--tags", str(data / "tags.csv")),
        env,
        timeout=RUN_TIMEOUT_S,
    ).check()
    result.add_command(dataops)
    summary = dataops.last_json()
    [run] = prefect_api.flow_runs(platform.api_url, "dataops")
    tasks = prefect_api.task_breakdown(platform.api_url, run["id"])
    materialise = sum(
        t["seconds"] or 0 for t in tasks if t["task"].startswith("cache_to_feature_store")
    )
    lookup = run_measured(
        python("-m", "benchmarks.team", "lookup", "--calls", str(lookups)), env
    ).check()
    result.add_command(lookup)
    again = run_measured(python("-m", "benchmarks.team", "rematerialize"), env).check()
    result.add_command(again)
    return {
        "dataops_seconds": round(dataops.seconds, 1),
        "dataops_peak_mib": round(dataops.peak_rss / MIB),
        "rows_materialized": summary["rows_materialized"],
        "materialize_rows_per_second": summary["materialize_rows_per_second"],
        "cache_to_feature_store_seconds": round(materialise, 1),
        "tasks": tasks,
        "lookup": lookup.last_json(),
        "rematerialize": again.last_json(),
    }


def measure_rest(platform: Any) -> dict[str, Any]:
    """Per service: mean RSS and PSS (MB) of its process tree over REST_SECONDS of idling."""
    import psutil

    from benchmarks.common import MB

    status = platform.status()
    pids = {name: s["pid"] for name, s in status.items() if s.get("pid")}
    samples: dict[str, list[tuple[int, int]]] = {name: [] for name in pids}
    deadline = time.monotonic() + REST_SECONDS
    while time.monotonic() < deadline:
        for name, pid in pids.items():
            rss = pss = 0
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        memory = process.memory_full_info()
                        rss, pss = rss + memory.rss, pss + memory.pss
            samples[name].append((rss, pss))
        time.sleep(1.0)
    services = {
        name: {
            "rss_mb": round(statistics.fmean(r for r, _ in values) / MB, 1),
            "pss_mb": round(statistics.fmean(p for _, p in values) / MB, 1),
        }
        for name, values in samples.items()
    }
    return {
        "services": services,
        "total_rss_mb": round(sum(s["rss_mb"] for s in services.values()), 1),
        "total_pss_mb": round(sum(s["pss_mb"] for s in services.values()), 1),
    }


def table_rows(
    feast: dict[str, Any], chains: dict[str, Any], rest: dict[str, Any]
) -> list[tuple[str, str]]:
    rows = []
    for mode in MODES:
        f, lookup = feast[mode], feast[mode]["lookup"]
        store = "Redis" if mode == "team" else "SQLite"
        rows += [
            (
                f"{store}: materialise",
                f"{f['materialize_rows_per_second']:,.0f} rows/s ({f['rows_materialized']:,} rows; "
                f"cache_to_feature_store {f['cache_to_feature_store_seconds']:.0f} s of a "
                f"{f['dataops_seconds']:.0f} s dataops run)",
            ),
            (
                f"{store}: lookup, 1 id",
                f"p50 {lookup['single_p50_ms']:.2f} ms, p99 {lookup['single_p99_ms']:.2f} ms",
            ),
            (f"{store}: lookup, 100 ids", f"p50 {lookup['batch_p50_ms']:.1f} ms"),
            (
                f"{store}: materialise again",
                f"{f['rematerialize']['rows_per_second']:,} rows/s "
                f"({f['rematerialize']['seconds']:.0f} s, clearing the online rows first)",
            ),
        ]
    for mode in MODES:
        database = "PostgreSQL" if mode == "team" else "SQLite"
        rows.append((f"chain on {database}", f"{chains[mode]['latency_s']:.1f} s"))
    for mode in MODES:
        services = ", ".join(
            f"{name} {s['rss_mb']:.0f}/{s['pss_mb']:.0f}"
            for name, s in rest[mode]["services"].items()
        )
        rows.append(
            (
                f"at rest, {mode} (RSS/PSS MB)",
                f"{rest[mode]['total_rss_mb']:.0f}/{rest[mode]['total_pss_mb']:.0f} ({services})",
            )
        )
    return rows


def plot(result: Any, feast: dict[str, Any], chains: dict[str, Any], rest: dict[str, Any]) -> None:
    from benchmarks.common import plt, save_figure

    pyplot = plt()
    figure, axes = pyplot.subplots(1, 4, figsize=(15, 4))
    labels = ["SQLite", "Redis"]
    colors = ["#4c72b0", "#c44e52"]
    speed = [feast[mode]["materialize_rows_per_second"] for mode in MODES]
    axes[0].bar(labels, speed, color=colors)
    axes[0].set_title(f"Feast materialisation, {result.figures['rows']:,} rows")
    axes[0].set_ylabel("rows/s")
    for x, value in enumerate(speed):
        axes[0].text(x, value, f"{value:,.0f}", ha="center", va="bottom", fontsize=8)
    width = 0.35
    for offset, key in ((-width / 2, "single_p50_ms"), (width / 2, "single_p99_ms")):
        values = [feast[mode]["lookup"][key] for mode in MODES]
        axes[1].bar([x + offset for x in range(2)], values, width, label=key.split("_")[1])
    axes[1].set_xticks(range(2), labels)
    axes[1].set_ylabel("ms per lookup (1 id)")
    axes[1].set_title("Online lookup")
    axes[1].legend(fontsize=8)
    seconds = [chains[mode]["latency_s"] for mode in MODES]
    axes[2].bar(["SQLite", "PostgreSQL"], seconds, color=colors)
    axes[2].set_ylabel("seconds, trigger to done")
    axes[2].set_title("Deployed chain (shipped data)")
    for x, value in enumerate(seconds):
        axes[2].text(x, value, f"{value:.1f} s", ha="center", va="bottom", fontsize=8)
    names = sorted({name for mode in MODES for name in rest[mode]["services"]})
    bottoms = [0.0, 0.0]
    for name in names:
        values = [rest[mode]["services"].get(name, {}).get("pss_mb", 0) for mode in MODES]
        axes[3].bar(["embedded", "team"], values, bottom=bottoms, label=name)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    axes[3].set_ylabel("MB (PSS)")
    axes[3].set_title("Services at rest")
    axes[3].legend(fontsize=7)
    save_figure(figure, NAME)


# --- the lookup loop, in a subprocess of the stores' own environment ---------------------------


def lookup_main(calls: int) -> dict[str, Any]:
    """Latency of online reads on an open store: one id a call, then 100 ids a call."""
    from tagifai import store
    from tagifai.config import get_settings
    from tagifai.features import current_feature_set

    settings = get_settings()
    feature_set = current_feature_set(settings)
    assert feature_set is not None, "run dataops first"
    import pyarrow.parquet as pq

    ids = pq.read_table(feature_set.path, columns=["id"]).column("id").to_pylist()
    feast = store.open_store(settings)
    refs = [f"{store.FEATURE_VIEW_NAME}:{name}" for name in store.FEATURE_NAMES]
    draw = random.Random(0)

    def timed(batch: int, repeat: int) -> list[float]:
        took = []
        for _ in range(repeat):
            rows = [{store.JOIN_KEY: draw.choice(ids)} for _ in range(batch)]
            started = time.perf_counter()
            response = feast.get_online_features(features=refs, entity_rows=rows).to_dict()
            took.append((time.perf_counter() - started) * 1000)
            assert all(text is not None for text in response["text"])
        return took

    timed(1, 50)
    single = sorted(timed(1, calls))
    batch = sorted(timed(100, max(calls // 20, 20)))

    def percentile(values: list[float], p: float) -> float:
        return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]

    return {
        "online_store": settings.feast_config,
        "ids": len(ids),
        "calls": calls,
        "single_p50_ms": round(percentile(single, 50), 3),
        "single_p99_ms": round(percentile(single, 99), 3),
        "single_mean_ms": round(statistics.fmean(single), 3),
        "batch_size": 100,
        "batch_p50_ms": round(percentile(batch, 50), 3),
        "batch_p99_ms": round(percentile(batch, 99), 3),
    }


def rematerialize_main() -> dict[str, Any]:
    """Materialise the same source again: the online rows are cleared first (on Redis with
    Feast's ``delete_table``), then rewritten."""
    from tagifai import store
    from tagifai.config import get_settings
    from tagifai.features import current_feature_set

    settings = get_settings()
    feature_set = current_feature_set(settings)
    assert feature_set is not None, "run dataops first"
    report = store.materialize_features(settings, expected_rows=feature_set.rows)
    return {
        "online_store": settings.feast_config,
        "rows": report.rows,
        "seconds": round(report.seconds, 2),
        "rows_per_second": round(report.rows_per_second),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.team")
    commands = parser.add_subparsers(dest="command", required=True)
    lookup = commands.add_parser("lookup", help="time online lookups on this stores dir")
    lookup.add_argument("--calls", type=int, default=2000)
    commands.add_parser("rematerialize", help="materialise this stores dir's source again")
    args = parser.parse_args(argv)
    if args.command == "lookup":
        print(json.dumps(lookup_main(args.calls)))
    else:
        print(json.dumps(rematerialize_main()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
