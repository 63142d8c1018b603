"""Serving speed of the production model: single-text latency (1000 in-process calls of
``predict_project``, model loaded once) and batch throughput (``predict_texts`` on 2k texts).
Targets: p50 <= 30 ms, >= 300 texts/s (the model embeds every text it is given).

The production model is what ``tagifai train`` deploys on the shipped data (word TF-IDF and
sentence embeddings, calibrated linear SVM: the baseline every study starts from). The
measurement runs in a subprocess (``python -m benchmarks.predict --worker``) so its memory is
its own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

NAME = "predict"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--predict-calls", type=int, default=1000)
    group.add_argument("--predict-batch", type=int, default=2_000)


def run(args: argparse.Namespace) -> Any:
    from benchmarks.common import (
        MIB,
        Result,
        Target,
        cli,
        fresh_dir,
        isolated_env,
        other_load,
        print_table,
        python,
        run_measured,
    )

    result = Result(NAME, "production model: single-text latency and batch throughput")
    base = fresh_dir(NAME)
    env = isolated_env(base / "stores")
    result.figures["load_before"] = other_load()
    trained = run_measured(
        cli("train"), env, log=base / "train.log", timeout=1800, quiet=False
    ).check()
    result.add_command(trained)
    measured = run_measured(
        python(
            "-m",
            "benchmarks.predict",
            "--worker",
            "--calls",
            str(args.predict_calls),
            "--batch",
            str(args.predict_batch),
            "--batch-file",
            str(base / "batch.csv"),
        ),
        env,
        log=base / "worker.log",
        timeout=1800,
    ).check()
    result.add_command(measured)
    report = measured.last_json()
    # The CLI path on the same texts: CSV in, CSV out, start-up and model load included.
    csv_run = run_measured(
        cli("predict", "--input", str(base / "batch.csv"), "--output", str(base / "out.csv")),
        env,
        log=base / "cli.log",
        timeout=1800,
    ).check()
    result.add_command(csv_run)
    latencies = report.pop("latencies_ms")
    result.figures.update(report)
    result.figures.update(
        {
            "worker_peak_rss_mib": round(measured.peak_rss / MIB),
            "cli_predict_csv_seconds": round(csv_run.seconds, 2),
            "cli_predict_csv_texts_per_s": round(args.predict_batch / csv_run.seconds),
            "cli_predict_csv_peak_rss_mib": round(csv_run.peak_rss / MIB),
            "load_after": other_load(),
        }
    )
    result.targets += [
        Target("single-text latency p50", report["p50_ms"], 30.0, "ms", note=_latency_note(report)),
        Target(
            "batch throughput",
            report["batch_texts_per_s"],
            300,
            "texts/s",
            ">=",
            note=_throughput_note(report),
        ),
    ]
    result.notes.append(
        "Single-text calls go through predict_project: clean_text, then predict_proba of the "
        "whole pipeline on a list of one text; the 1000 inputs cycle through the shipped "
        "projects. The batch is synthetic projects (tagifai.synth) cleaned with build_text, "
        "scored by predict_texts in one call; best of 3."
    )
    plot(result, latencies)
    print_table(
        result,
        [
            ("model", f"v{report['model_version']} ({report['model_params']})"),
            ("model load", f"{report['load_seconds']:.2f} s"),
            (
                "latency p50 / p90 / p99",
                f"{report['p50_ms']:.2f} / {report['p90_ms']:.2f} / "
                f"{report['p99_ms']:.2f} ms over {report['calls']} calls",
            ),
            (
                "batch throughput",
                f"{report['batch_texts_per_s']:.0f} texts/s "
                f"({report['batch']} texts in {report['batch_seconds']:.2f} s)",
            ),
            ("  predict_proba alone", f"{report['batch_proba_texts_per_s']:.0f} texts/s"),
            ("  per CPU-second", f"{report['batch_texts_per_cpu_s']:.0f} texts/CPU-s"),
            ("  components", ", ".join(f"{k} {v}" for k, v in report["components"].items())),
            (
                "latency in CPU time p50/p99",
                f"{report['cpu_p50_ms']:.2f} / "
                f"{report['cpu_p99_ms']:.2f} ms (thread CPU time per call)",
            ),
            (
                "tagifai predict --input (CLI)",
                f"{csv_run.seconds:.1f} s for {args.predict_batch} rows, start-up included",
            ),
            ("worker peak RSS", f"{measured.peak_rss / MIB:.0f} MiB"),
        ],
    )
    return result


def _latency_note(report: dict[str, Any]) -> str:
    text = (
        f"CPU time per call p50 {report['cpu_p50_ms']:.2f} ms: much of a call is fixed "
        "per-call cost (scikit-learn's input validation, FeatureUnion's joblib dispatch), not "
        "arithmetic on one text."
    )
    if report["p50_ms"] <= 30:
        return text
    if report["cpu_p50_ms"] <= 30:
        return (
            "Target missed on wall time only: the machine was shared with other busy "
            f"processes (see load_before/after); {text}"
        )
    return "Target missed. " + text


def _throughput_note(report: dict[str, Any]) -> str:
    if report["batch_texts_per_s"] >= 300:
        return ""
    parts = ", ".join(
        f"{k.removesuffix('_texts_per_cpu_s')} {v}"
        for k, v in report["components"].items()
        if k.endswith("_texts_per_cpu_s")
    )
    return (
        f"Target missed: the batch runs at {report['batch_texts_per_cpu_s']:.0f} texts per "
        f"CPU-second; texts per CPU-second by block: {parts}. The slowest block bounds the rate."
    )


def plot(result: Any, latencies: list[float]) -> None:
    from benchmarks.common import plt, save_figure

    pyplot = plt()
    figure, (hist, bars) = pyplot.subplots(1, 2, figsize=(10, 4), width_ratios=(2, 1))
    figures = result.figures
    limit = max(33.0, figures["p99_ms"] * 1.5)  # the few slowest calls pile up at the edge
    hist.hist([min(x, limit) for x in latencies], bins=60, range=(0, limit), color="#4c72b0")
    for key, color in (("p50_ms", "black"), ("p99_ms", "grey")):
        hist.axvline(figures[key], color=color, linestyle="--", linewidth=1)
        hist.text(
            figures[key],
            hist.get_ylim()[1] * 0.9,
            f" {key[:3]} {figures[key]:.2f} ms",
            color=color,
            fontsize=8,
        )
    hist.axvline(30.0, color="red", linewidth=1)
    hist.text(30.0, hist.get_ylim()[1] * 0.6, " target p50 30 ms", color="red", fontsize=8)
    hist.set_xlabel("predict_project latency (ms)")
    hist.set_ylabel("calls")
    hist.set_title(f"Single text, {figures['calls']} calls in-process")
    rates = [figures["batch_texts_per_s"], figures["cli_predict_csv_texts_per_s"]]
    bars.bar([0, 1], rates, color=["#4c72b0", "#999999"], width=0.6)
    bars.axhline(300, color="red", linestyle="--", linewidth=1)
    bars.text(1.4, 300, "target 300/s", color="red", fontsize=8, ha="right", va="bottom")
    bars.set_xticks([0, 1], ["predict_texts\n(in-process)", "tagifai predict\n--input (CLI)"])
    bars.set_ylabel("texts / s")
    bars.set_title(f"Batch of {figures['batch']:,} texts")
    save_figure(figure, NAME)


# --- the measuring subprocess ------------------------------------------------------------


def worker(calls: int, batch: int, batch_file: Path) -> dict[str, Any]:
    from tagifai import registry
    from tagifai.config import get_settings
    from tagifai.embeddings import get_encoder
    from tagifai.extract import read_table
    from tagifai.features import build_text
    from tagifai.predict import predict_project, predict_texts
    from tagifai.synth import synthesize

    settings = get_settings()
    started = time.perf_counter()
    model, found = registry.load_model(settings)
    load_seconds = time.perf_counter() - started

    projects = read_table(str(settings.projects_csv), "projects")
    pairs = list(zip(projects["title"].fillna(""), projects["description"].fillna(""), strict=True))
    for title, description in pairs[:20]:  # warm-up: first calls allocate and import lazily
        predict_project(model, title, description)
    # Every call embeds its text: the 1000 calls cycle through 764 projects, and the encoder's
    # cache would answer the repeats.
    encoder = get_encoder()
    encoder.cache_size = 0
    encoder.clear_cache()
    latencies, cpu = [], []
    for i in range(calls):
        title, description = pairs[i % len(pairs)]
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        predict_project(model, title, description)
        cpu.append((time.thread_time_ns() - c0) / 1e6)
        latencies.append((time.perf_counter_ns() - t0) / 1e6)
    latencies_sorted = sorted(latencies)

    def pct(p: float, values: list[float] = latencies_sorted) -> float:
        return values[min(len(values) - 1, int(p / 100 * len(values)))]

    synthetic, _ = synthesize(batch, seed=7, data_dir=settings.data_dir)
    synthetic[["id", "title", "description"]].to_csv(batch_file, index=False)
    texts = build_text(synthetic["title"], synthetic["description"]).tolist()
    batch_seconds, batch_cpu, proba_seconds = [], [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        predictions = predict_texts(model, texts)
        batch_seconds.append(time.perf_counter() - t0)
        batch_cpu.append(time.process_time() - c0)
        t0 = time.perf_counter()
        model.predict_proba(texts)
        proba_seconds.append(time.perf_counter() - t0)
    assert len(predictions) == len(texts)
    # Where a batch's CPU goes: each vectoriser block and the classifier, CPU-seconds.
    union, classifier = model.named_steps["features"], model.named_steps["classifier"]
    components = {}
    for name, transformer in union.transformer_list:
        c0 = time.process_time()
        matrix = transformer.transform(texts)
        components[f"{name}_texts_per_cpu_s"] = round(len(texts) / (time.process_time() - c0))
        nonzeros = matrix.nnz if hasattr(matrix, "nnz") else matrix.size  # dense: embeddings
        components[f"{name}_nonzeros_per_text"] = round(nonzeros / len(texts), 1)
    features = union.transform(texts)
    c0 = time.process_time()
    classifier.predict_proba(features)
    components["classifier_texts_per_cpu_s"] = round(len(texts) / (time.process_time() - c0))
    best = min(batch_seconds)
    return {
        "model_version": found.version,
        "model_params": _params_of(found),
        "load_seconds": round(load_seconds, 3),
        "calls": calls,
        "p50_ms": round(pct(50), 3),
        "p90_ms": round(pct(90), 3),
        "p99_ms": round(pct(99), 3),
        "mean_ms": round(statistics.fmean(latencies), 3),
        "cpu_p50_ms": round(pct(50, sorted(cpu)), 3),
        "cpu_p99_ms": round(pct(99, sorted(cpu)), 3),
        "max_ms": round(max(latencies), 3),
        "batch": len(texts),
        "batch_seconds": round(best, 3),
        "batch_seconds_all": [round(s, 3) for s in batch_seconds],
        "batch_texts_per_s": round(len(texts) / best, 1),
        "batch_proba_texts_per_s": round(len(texts) / min(proba_seconds), 1),
        "batch_texts_per_cpu_s": round(len(texts) / min(batch_cpu), 1),
        "components": components,
        "latencies_ms": [round(x, 4) for x in latencies],
    }


def _params_of(found: Any) -> str:
    from tagifai import registry
    from tagifai.config import get_settings

    client = registry.connect(get_settings())
    params = client.get_run(found.run_id).data.params
    keys = ("vectorizer", "classifier", "word_ngram_max", "char_weight", "embedding_weight", "C")
    return ", ".join(f"{k}={params.get(k)}" for k in keys)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.predict")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=2_000)
    parser.add_argument("--batch-file", type=Path, required=True)
    args = parser.parse_args()
    print(json.dumps(worker(args.calls, args.batch, args.batch_file)))


if __name__ == "__main__":
    sys.exit(main())
