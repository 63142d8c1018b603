"""The prediction service with the prediction log on and off, and the monitor flow over 10k and
1M logged predictions.

Service: the production model of ``tagifai train`` behind ``uvicorn deployments.serve:app``
(one process, as ``make up`` runs it), once with ``TAGIFAI_PREDICTION_LOG=true`` and once with
``false``, two interleaved rounds each; a keep-alive client in this process measures
sequential single-project latency (p50/p99), batch throughput (100 projects a request) and
the throughput of 4 concurrent clients sending single projects. In-process, the same
predictions with and without computing and buffering the monitoring features give the CPU
cost of logging alone. Target: logging adds at most 10% to prediction time.

Monitor: a prediction log of N rows (files of 1,000 rows, as the service flushes them, spread
over the last 24 hours, features drawn from production's references) and ``tagifai monitor``
against a private Prefect server: wall time (start-up included), the ``check_traffic`` task's
own time, and peak memory, which must not grow with N (the log is read file by file).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NAME = "serve"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--serve-requests", type=int, default=1000)
    group.add_argument("--serve-rounds", type=int, default=2)
    group.add_argument(
        "--monitor-rows", default="10000,1000000", help="logged predictions, comma-separated"
    )


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@contextlib.contextmanager
def service(env: dict[str, str], log_dir: Path, logging_on: bool, out: Path) -> Iterator[str]:
    """The service under uvicorn on a free port until the block ends (SIGTERM: it flushes)."""
    import httpx

    from benchmarks.common import REPO_ROOT, python
    from deployments.platform import free_ports

    port = free_ports()[0]
    child = {
        **env,
        "TAGIFAI_PREDICTION_LOG": "true" if logging_on else "false",
        "TAGIFAI_PREDICTIONS_DIR": str(log_dir),
    }
    command = python(
        "-m", "uvicorn", "deployments.serve:app", "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning",
    )  # fmt: skip
    with out.open("a") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=child, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"{url}/health", timeout=2, trust_env=False).json()
                if health["model_version"] is not None:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start: see {out}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def measure_service(url: str, projects: list[dict], requests: int) -> dict[str, Any]:
    import httpx

    with httpx.Client(base_url=url, timeout=60, trust_env=False) as client:
        for project in projects[:50]:  # warm-up
            client.post("/predict", json=project)
        latencies = []
        for i in range(requests):
            started = time.perf_counter()
            response = client.post("/predict", json=projects[i % len(projects)])
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
        started = time.perf_counter()
        batches = 30
        for i in range(batches):
            chunk = [projects[(i * 100 + j) % len(projects)] for j in range(100)]
            assert client.post("/predict", json={"projects": chunk}).status_code == 200
        batch_seconds = time.perf_counter() - started

    def worker(offset: int, count: int) -> None:
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as own:
            for i in range(count):
                own.post("/predict", json=projects[(offset + i) % len(projects)])

    threads = [threading.Thread(target=worker, args=(k * 97, 250)) for k in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    concurrent_seconds = time.perf_counter() - started
    return {
        "p50_ms": round(_pct(latencies, 50), 3),
        "p90_ms": round(_pct(latencies, 90), 3),
        "p99_ms": round(_pct(latencies, 99), 3),
        "mean_ms": round(statistics.fmean(latencies), 3),
        "sequential_requests_per_s": round(requests / (sum(latencies) / 1000), 1),
        "batch_texts_per_s": round(batches * 100 / batch_seconds, 1),
        "concurrent_requests_per_s": round(1000 / concurrent_seconds, 1),
        "latencies_ms": [round(x, 3) for x in latencies],
    }


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
        python,
        run_measured,
        wait_for_quiet,
    )

    result = Result(NAME, "prediction service with logging on/off; monitor over 10k and 1M rows")
    base = fresh_dir(NAME)
    stores = base / "stores"
    env = isolated_env(stores)
    result.figures["load_before"] = other_load()
    trained = run_measured(cli("train"), env, log=base / "train.log", timeout=1800, quiet=False)
    result.add_command(trained.check())

    import pandas as pd

    shipped = pd.read_csv(Path(__file__).resolve().parents[1] / "data/raw/projects.csv")
    projects = [
        {"title": t, "description": d}
        for t, d in zip(shipped["title"], shipped["description"].fillna(""), strict=True)
    ]
    rounds: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    for repetition in range(args.serve_rounds):
        for mode in ("off", "on") if repetition % 2 == 0 else ("on", "off"):
            wait_for_quiet(f"service, logging {mode}")
            log_dir = base / f"predictions-{mode}-{repetition}"
            with service(env, log_dir, mode == "on", base / "service.log") as url:
                figures = measure_service(url, projects, args.serve_requests)
            print(
                f"  logging {mode}: p50 {figures['p50_ms']:.2f} ms, p99 {figures['p99_ms']:.2f} "
                f"ms, batch {figures['batch_texts_per_s']:.0f} texts/s, 4 clients "
                f"{figures['concurrent_requests_per_s']:.0f} req/s",
                flush=True,
            )
            if mode == "on":
                import pyarrow.parquet as pq

                files = list(log_dir.rglob("*.parquet"))
                figures["logged_rows"] = sum(pq.read_metadata(f).num_rows for f in files)
                figures["log_files"] = len(files)
            rounds[mode].append(figures)
    best = {mode: min(runs, key=lambda r: r["p50_ms"]) for mode, runs in rounds.items()}
    overhead = run_measured(
        python("-m", "benchmarks.serve", "--overhead"), env, log=base / "overhead.log"
    ).check()
    result.add_command(overhead)
    cpu = overhead.last_json()

    monitor: dict[str, dict[str, Any]] = {}
    with PrivatePlatform(stores) as platform:
        for rows in [int(n) for n in args.monitor_rows.split(",")]:
            log_dir = base / f"log-{rows}"
            synth = run_measured(
                python("-m", "benchmarks.serve", "--synth-log", str(rows), "--dir", str(log_dir)),
                env,
                log=base / f"synth-{rows}.log",
                timeout=3600,
                quiet=False,
            ).check()
            client_env = platform.client_env(TAGIFAI_PREDICTIONS_DIR=str(log_dir))
            measured = run_measured(
                cli("monitor"), client_env, log=base / f"monitor-{rows}.log", timeout=3600
            ).check()
            result.add_command(measured)
            summary = measured.last_json()
            [run_record] = prefect_api.flow_runs(platform.api_url, "monitor")[-1:]
            tasks = {
                t["name"].rsplit("-", 1)[0]: prefect_api.seconds_between(
                    t["start_time"], t["end_time"]
                )
                for t in prefect_api.task_runs(platform.api_url, run_record["id"])
            }
            monitor[str(rows)] = {
                "rows": rows,
                "files": synth.last_json()["files"],
                "flow_seconds": round(measured.seconds, 2),
                "check_traffic_seconds": round(tasks.get("check_traffic") or 0, 2),
                "peak_rss_mib": round(measured.peak_rss / MIB),
                "predictions_judged": summary["predictions"],
                "action": summary["action"],
            }
            print(f"  monitor over {rows} rows: {monitor[str(rows)]}", flush=True)

    on, off = best["on"], best["off"]
    latencies = {"on": on.pop("latencies_ms"), "off": off.pop("latencies_ms")}
    for runs in rounds.values():
        for figures in runs:
            figures.pop("latencies_ms", None)
    result.figures.update(
        {
            "logging_on": on,
            "logging_off": off,
            "all_rounds": rounds,
            "p50_ratio_on_off": round(on["p50_ms"] / off["p50_ms"], 3),
            "in_process": cpu,
            "monitor": monitor,
            "load_after": other_load(),
        }
    )
    ratio_http = on["p50_ms"] / off["p50_ms"] - 1
    result.targets += [
        Target(
            "logging overhead, in-process (features + buffer) / prediction",
            cpu["overhead_single"] * 100,
            10,
            "%",
            note=f"batch of 100: {cpu['overhead_batch'] * 100:.1f}%",
        ),
        Target("logging overhead, HTTP p50 on vs off", ratio_http * 100, 10, "%"),
    ]
    sizes = sorted(monitor.values(), key=lambda m: m["rows"])
    if len(sizes) >= 2:
        result.targets.append(
            Target(
                f"monitor peak memory at {sizes[-1]['rows']:,} vs {sizes[0]['rows']:,} rows",
                sizes[-1]["peak_rss_mib"] / sizes[0]["peak_rss_mib"],
                1.5,
                "x",
                note="bounded: the log is read one file at a time",
            )
        )
    result.notes.append(
        "HTTP figures: one uvicorn process, a keep-alive httpx client in the benchmark process "
        "on the same 2 cores; best p50 of the rounds per mode. In-process: the same model, "
        "single texts and batches of 100, predict_proba alone vs predict_proba + monitoring "
        "features + PredictionLog.append (its writer thread running)."
    )
    plot(result, latencies)
    rows = [
        (
            f"logging {mode}",
            f"p50 {best[mode]['p50_ms']:.2f} ms, p99 {best[mode]['p99_ms']:.2f} ms; "
            f"batch {best[mode]['batch_texts_per_s']:.0f} texts/s; "
            f"4 clients {best[mode]['concurrent_requests_per_s']:.0f} req/s",
        )
        for mode in ("off", "on")
    ]
    rows.append(
        (
            "logging cost in-process",
            f"single {cpu['overhead_single'] * 100:.1f}%, batch {cpu['overhead_batch'] * 100:.1f}%",
        )
    )
    rows += [
        (
            f"monitor, {m['rows']:,} rows",
            f"{m['flow_seconds']:.1f} s (check_traffic {m['check_traffic_seconds']:.1f} s), "
            f"peak {m['peak_rss_mib']} MiB, {m['files']} files",
        )
        for m in sizes
    ]
    print_table(result, rows)
    return result


def plot(result: Any, latencies: dict[str, list[float]]) -> None:
    from benchmarks.common import plt, save_figure

    pyplot = plt()
    figure, (hist, bars, monitor) = pyplot.subplots(1, 3, figsize=(14, 4))
    figures = result.figures
    limit = max(figures["logging_on"]["p99_ms"], figures["logging_off"]["p99_ms"]) * 1.3
    for mode, color in (("off", "#999999"), ("on", "#4c72b0")):
        hist.hist(
            [min(x, limit) for x in latencies[mode]],
            bins=60,
            range=(0, limit),
            alpha=0.6,
            color=color,
            label=f"logging {mode}: p50 {figures[f'logging_{mode}']['p50_ms']:.2f} ms",
        )
    hist.set_xlabel("POST /predict latency, one project (ms)")
    hist.set_ylabel("requests")
    hist.legend(fontsize=8)
    keys = ("batch_texts_per_s", "concurrent_requests_per_s")
    x = range(len(keys))
    for offset, mode, color in ((-0.2, "off", "#999999"), (0.2, "on", "#4c72b0")):
        values = [figures[f"logging_{mode}"][key] for key in keys]
        bars.bar([i + offset for i in x], values, width=0.4, color=color, label=f"logging {mode}")
    bars.set_xticks(list(x), ["batch of 100\n(texts/s)", "4 clients, single\n(requests/s)"])
    bars.legend(fontsize=8)
    sizes = sorted(figures["monitor"].values(), key=lambda m: m["rows"])
    labels = [f"{m['rows']:,}" for m in sizes]
    monitor.bar(labels, [m["flow_seconds"] for m in sizes], color="#4c72b0", label="flow (s)")
    twin = monitor.twinx()
    twin.plot(labels, [m["peak_rss_mib"] for m in sizes], "o-", color="#c44e52")
    twin.set_ylabel("peak RSS (MiB)", color="#c44e52")
    twin.set_ylim(0, max(m["peak_rss_mib"] for m in sizes) * 1.3)
    monitor.set_xlabel("logged predictions")
    monitor.set_ylabel("tagifai monitor, wall (s)")
    save_figure(figure, NAME)


# --- the measuring subprocesses ----------------------------------------------------------


def overhead(repeats: int = 2000) -> dict[str, Any]:
    """CPU cost of logging: predictions with and without monitoring features + buffering."""
    import tempfile

    from tagifai.config import get_settings
    from tagifai.extract import read_table
    from tagifai.features import build_text
    from tagifai.predict import load_served, predict_batch
    from tagifai.predlog import PredictionLog

    settings = get_settings()
    served = load_served(settings)
    projects = read_table(str(settings.projects_csv), "projects")
    texts = build_text(projects["title"], projects["description"]).tolist()
    with tempfile.TemporaryDirectory() as tmp:
        log = PredictionLog(Path(tmp), flush_rows=1000, flush_seconds=5).start()

        def single(with_log: bool) -> float:
            started = time.process_time()
            for i in range(repeats):
                batch = predict_batch(served, [texts[i % len(texts)]], with_log)
                if with_log:
                    log.append(batch.log_batch("bench"))
            return time.process_time() - started

        def batches(with_log: bool) -> float:
            started = time.process_time()
            for i in range(60):
                chunk = [texts[(i * 100 + j) % len(texts)] for j in range(100)]
                batch = predict_batch(served, chunk, with_log)
                if with_log:
                    log.append(batch.log_batch("bench"))
            return time.process_time() - started

        single(True)  # warm-up
        plain_single = min(single(False) for _ in range(3))
        logged_single = min(single(True) for _ in range(3))
        plain_batch = min(batches(False) for _ in range(3))
        logged_batch = min(batches(True) for _ in range(3))
        log.close()
    return {
        "single_ms_without": round(plain_single / repeats * 1000, 4),
        "single_ms_with": round(logged_single / repeats * 1000, 4),
        "overhead_single": round(logged_single / plain_single - 1, 4),
        "batch100_ms_without": round(plain_batch / 60 * 1000, 3),
        "batch100_ms_with": round(logged_batch / 60 * 1000, 3),
        "overhead_batch": round(logged_batch / plain_batch - 1, 4),
    }


def synth_log(rows: int, directory: Path, per_file: int = 1000) -> dict[str, Any]:
    """``rows`` logged predictions of production over the last 24 hours, ``per_file`` a file."""
    from datetime import UTC, datetime

    import numpy as np

    from tagifai import registry
    from tagifai.config import get_settings
    from tagifai.monitoring import load_references
    from tagifai.predlog import PredictionBatch, write_batches

    settings = get_settings()
    version = registry.production_version(settings)
    references = load_references(settings, version)
    rng = np.random.default_rng(11)
    tags = list(references["predicted_distribution"])
    shares = np.array([references["predicted_distribution"][t] for t in tags])
    now = datetime.now(UTC).timestamp()
    files = 0
    for start in range(0, rows, per_file):
        n = min(per_file, rows - start)
        at = now - 24 * 3600 * (1 - start / rows) + 1
        features = {
            name: rng.choice(np.asarray(ref["sample"], dtype=np.float32), n)
            for name, ref in references["features"].items()
        }
        batch = PredictionBatch(
            at, version, list(rng.choice(tags, n, p=shares / shares.sum())), features, "bench"
        )
        files += len(write_batches(directory, [batch]))
    return {"rows": rows, "files": files}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve")
    parser.add_argument("--overhead", action="store_true")
    parser.add_argument("--synth-log", type=int)
    parser.add_argument("--dir", type=Path)
    args = parser.parse_args()
    if args.overhead:
        print(json.dumps(overhead()))
    elif args.synth_log:
        print(json.dumps(synth_log(args.synth_log, args.dir)))
    else:
        parser.error("--overhead or --synth-log N --dir DIR")


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    sys.exit(main())
