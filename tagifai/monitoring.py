"""Reference distributions a drift check compares live traffic against, versioned per model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tagifai import files
from tagifai.config import Settings


def _summary(values: np.ndarray) -> dict[str, Any]:
    quantiles = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95]).round(4).tolist()
    counts, edges = np.histogram(values, bins=10)
    return {
        "mean": round(float(values.mean()), 4),
        "std": round(float(values.std()), 4),
        "quantiles": dict(zip(["p05", "p25", "p50", "p75", "p95"], quantiles, strict=True)),
        "histogram": {"counts": counts.tolist(), "edges": edges.round(4).tolist()},
    }


def compute_references(model: Any, features: pd.DataFrame) -> dict[str, Any]:
    """Label distribution, text-length statistics and prediction confidence on ``features``."""
    from tagifai.train import inputs_of

    texts = features["text"].tolist()
    lengths = np.array([len(t.split()) for t in texts], dtype=float)
    confidence = model.predict_proba(inputs_of(features)).max(axis=1)
    labels = features["tag"].value_counts(normalize=True).round(4).sort_index()
    return {
        "rows": len(features),
        "label_distribution": labels.to_dict(),
        "text_length_words": _summary(lengths),
        "prediction_confidence": _summary(confidence),
    }


def save_references(settings: Settings, version: int, references: dict[str, Any]) -> Path:
    """Write ``references/v<version>.json`` atomically and return its path."""
    path = settings.references_dir / f"v{version}.json"
    return files.write_json(path, {"model_version": version, **references})
