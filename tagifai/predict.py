"""Predict tags for one text or a stream of rows with a fitted pipeline.

:class:`ServedModel` is a model with what logging its predictions needs (its version and
monitoring context); :func:`predict_batch` scores cleaned texts and computes each one's
monitoring features, and :meth:`BatchPrediction.log_batch` turns the result into a
:class:`tagifai.predlog.PredictionBatch` for the prediction log.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tagifai import files
from tagifai.data import clean_text
from tagifai.errors import DataSourceError
from tagifai.features import build_text
from tagifai.monitoring import MonitoringContext, text_features

if TYPE_CHECKING:
    from tagifai.config import Settings
    from tagifai.predlog import PredictionBatch

INPUT_COLUMNS: tuple[str, ...] = ("id", "title", "description")


@dataclass(frozen=True)
class Prediction:
    tag: str
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "probabilities": self.probabilities}


def predict_texts(model: Any, texts: Sequence[str]) -> list[Prediction]:
    """Tags and class probabilities for already-cleaned texts."""
    probabilities = model.predict_proba(list(texts))
    classes = [str(c) for c in model.classes_]
    predictions = []
    for row in probabilities:
        best = int(row.argmax())
        predictions.append(
            Prediction(
                tag=classes[best],
                probabilities={c: round(float(p), 4) for c, p in zip(classes, row, strict=True)},
            )
        )
    return predictions


def predict_project(model: Any, title: str, description: str = "") -> Prediction:
    """One project's tag from its raw title and description."""
    return predict_texts(model, [clean_text(f"{title} {description}")])[0]


@dataclass(frozen=True)
class ServedModel:
    """A loaded model version and its monitoring context (the training vocabulary)."""

    model: Any
    version: int
    context: MonitoringContext

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.model.classes_]


def load_served(settings: Settings, version: int | None = None) -> ServedModel:
    """Load a version (default: production) with its monitoring context."""
    from tagifai import registry
    from tagifai.monitoring import load_context

    model, found = registry.load_model(settings, version)
    return ServedModel(model, found.version, load_context(settings, found.version, model))


@dataclass(frozen=True)
class BatchPrediction:
    """Tags, class probabilities and monitoring features of a batch of texts."""

    version: int
    classes: list[str]
    probabilities: np.ndarray
    features: dict[str, np.ndarray]
    at: float

    @property
    def tags(self) -> list[str]:
        return [self.classes[i] for i in self.probabilities.argmax(axis=1)]

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-ready row per text: tag, confidence, probabilities."""
        rows = []
        for tag, probabilities in zip(self.tags, self.probabilities, strict=True):
            rounded = {
                c: round(float(p), 4) for c, p in zip(self.classes, probabilities, strict=True)
            }
            rows.append(
                {
                    "tag": tag,
                    "confidence": round(float(probabilities.max()), 4),
                    "probabilities": rounded,
                }
            )
        return rows

    def log_batch(self, source: str) -> PredictionBatch:
        from tagifai.predlog import PredictionBatch

        return PredictionBatch(self.at, self.version, self.tags, self.features, source)


def predict_batch(
    served: ServedModel, texts: Sequence[str], with_features: bool = True
) -> BatchPrediction:
    """Score cleaned texts and compute their monitoring features (unless not logged)."""
    at = time.time()
    probabilities = served.model.predict_proba(list(texts))
    if not with_features:
        return BatchPrediction(served.version, served.classes, probabilities, {}, at)
    return describe_batch(served, texts, probabilities, at)


def describe_batch(
    served: ServedModel, texts: Sequence[str], probabilities: np.ndarray, at: float | None = None
) -> BatchPrediction:
    """The batch of already-scored texts, with their monitoring features."""
    features = text_features(texts, served.context)
    features["confidence"] = probabilities.max(axis=1).astype(np.float32)
    return BatchPrediction(
        served.version, served.classes, probabilities, features, time.time() if at is None else at
    )


def read_input_chunks(path: Path, chunksize: int) -> Any:
    """Yield validated chunks of an ``id,title,description`` CSV (bad input: DataSourceError)."""
    if not path.is_file():
        raise DataSourceError(f"input file not found: {path}")
    if path.stat().st_size == 0:
        raise DataSourceError(f"input file is empty: {path}")
    try:
        reader = pd.read_csv(
            path,
            chunksize=chunksize,
            dtype={"title": "string", "description": "string"},
            encoding="utf-8",
            encoding_errors="strict",
        )
        for number, chunk in enumerate(reader):
            missing = [c for c in INPUT_COLUMNS if c not in chunk.columns]
            if missing:
                raise DataSourceError(
                    f"{path}: missing column(s) {', '.join(missing)}; "
                    f"expected {','.join(INPUT_COLUMNS)}"
                )
            if number == 0 and chunk.empty:
                raise DataSourceError(f"input file has no rows: {path}")
            yield chunk
    except UnicodeDecodeError as error:
        raise DataSourceError(f"{path} is not valid UTF-8 (byte {error.start})") from None
    except pd.errors.EmptyDataError:
        raise DataSourceError(f"input file is empty: {path}") from None
    except pd.errors.ParserError as error:
        raise DataSourceError(f"{path} is not a readable CSV: {error}") from None


def predict_csv(
    model: Any,
    input_path: Path,
    output_path: Path,
    chunksize: int = 50_000,
    on_chunk: Callable[[Sequence[str], np.ndarray], None] | None = None,
) -> int:
    """Stream ``id,title,description`` rows to ``id,tag,p_<class>...``; returns rows written.

    The output is written to a temporary file and renamed at the end, so a failure part-way
    never leaves a half-written OUT. ``on_chunk(texts, probabilities)`` sees every chunk (the
    CLI logs them).
    """
    classes = [str(c) for c in model.classes_]
    rows = 0
    with files.replacing(output_path) as tmp_path, tmp_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "tag", *(f"p_{c}" for c in classes)])
        for chunk in read_input_chunks(input_path, chunksize):
            texts = build_text(chunk["title"], chunk["description"])
            probabilities = model.predict_proba(texts.tolist())
            if on_chunk is not None:
                on_chunk(texts.tolist(), probabilities)
            tags = [classes[i] for i in probabilities.argmax(axis=1)]
            for row_id, tag, probs in zip(chunk["id"], tags, probabilities, strict=True):
                writer.writerow([row_id, tag, *(f"{p:.4f}" for p in probs)])
            rows += len(chunk)
    return rows
