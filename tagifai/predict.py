"""Predict tags for one text or a stream of rows with a fitted pipeline."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tagifai import files
from tagifai.data import clean_text
from tagifai.errors import DataSourceError
from tagifai.features import build_text

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


def predict_csv(model: Any, input_path: Path, output_path: Path, chunksize: int = 50_000) -> int:
    """Stream ``id,title,description`` rows to ``id,tag,p_<class>...``; returns rows written.

    The output is written to a temporary file and renamed at the end, so a failure part-way
    never leaves a half-written OUT.
    """
    classes = [str(c) for c in model.classes_]
    rows = 0
    with files.replacing(output_path) as tmp_path, tmp_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "tag", *(f"p_{c}" for c in classes)])
        for chunk in read_input_chunks(input_path, chunksize):
            texts = build_text(chunk["title"], chunk["description"])
            probabilities = model.predict_proba(texts.tolist())
            tags = [classes[i] for i in probabilities.argmax(axis=1)]
            for row_id, tag, probs in zip(chunk["id"], tags, probabilities, strict=True):
                writer.writerow([row_id, tag, *(f"{p:.4f}" for p in probs)])
            rows += len(chunk)
    return rows
