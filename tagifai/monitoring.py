"""Monitoring features and the reference distributions drift is measured against.

Every prediction is logged with a few numbers about its input and output (its *monitoring
features*); a version's references hold the same numbers on data the model did not train on,
so the monitor can compare live traffic with what the model is used to. A feature is declared
once in :data:`FEATURES` and everything else (the log's columns, the references, the drift
table, the plot) follows from the declaration. ``embedding_distance`` (the cosine distance of
a text's sentence embedding to the mean embedding of the training texts) needs the model's own
encoder and that centroid: both travel in :class:`MonitoringContext`, and a model without the
embedding block (the ``scale`` space) logs it as NaN and is not judged on it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from tagifai import files
from tagifai.config import SEED, Settings

logger = logging.getLogger(__name__)

REFERENCE_FOLDS = 5
REFERENCE_BINS = 10  # deciles of the reference values: PSI's usual binning
REFERENCE_SAMPLE = 2000  # reference values kept per feature for the KS test


@dataclass(frozen=True)
class FeatureSpec:
    """One number logged per prediction.

    Attributes:
        worse: which direction of a shift hurts: ``higher`` (more unseen words), ``lower``
            (less confident) or ``either`` (text length: both ways leave the training range).
        learnable: a harmful shift is one that newer training data can fix: words the model
            has never seen. Other shifts (shorter texts, another mix of tags, lower confidence
            on words it knows) say the traffic changed, which a person should look at before
            anything is retrained.
    """

    name: str
    description: str
    worse: Literal["higher", "lower", "either"]
    learnable: bool


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("text_length", "words in the cleaned title + description", "either", False),
    FeatureSpec(
        "unseen_share", "share of the words not in the training vocabulary", "higher", True
    ),
    FeatureSpec("confidence", "probability of the predicted tag", "lower", False),
    # Texts unlike the training texts in meaning, even in known words: a person looks first
    # (a new topic, or a client sending something else), so it inspects and never retrains.
    FeatureSpec(
        "embedding_distance",
        "cosine distance of the sentence embedding to the training texts' mean embedding",
        "higher",
        False,
    ),
)
# Features computed from the text alone (``confidence`` comes from the model's output).
TEXT_FEATURES: tuple[str, ...] = ("text_length", "unseen_share", "embedding_distance")
LABEL = "tag"  # the predicted tag: a categorical feature with its own test


def feature_spec(name: str) -> FeatureSpec:
    return next(spec for spec in FEATURES if spec.name == name)


@dataclass(frozen=True)
class MonitoringContext:
    """What computing a model's monitoring features needs besides the text."""

    vocabulary: frozenset[str] | None = None  # None: references without one (older versions)
    # The unit mean embedding of the training texts and the model's encoder (the one its
    # embedding block uses, so the texts it just embedded come from its cache); None: the
    # model has no embedding block, or its references predate the feature.
    centroid: np.ndarray | None = field(default=None, compare=False)
    encoder: Any = field(default=None, compare=False)


def tokens(text: str) -> list[str]:
    """The words of a cleaned text (``clean_text`` leaves lower-case words and spaces)."""
    return text.split()


def unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm else vector


def embedding_distances(vectors: np.ndarray, centroid: np.ndarray) -> np.ndarray:
    """Cosine distance of unit ``vectors`` to ``centroid``: 0 same direction, 2 opposite."""
    return (1.0 - np.asarray(vectors, dtype=np.float32) @ unit(centroid)).astype(np.float32)


def text_features(texts: Sequence[str], context: MonitoringContext) -> dict[str, np.ndarray]:
    """``text_length``, ``unseen_share`` (NaN without a vocabulary) and ``embedding_distance``
    (NaN without an encoder and centroid) of each cleaned text."""
    lengths = np.empty(len(texts), dtype=np.float32)
    unseen = np.full(len(texts), np.nan, dtype=np.float32)
    vocabulary = context.vocabulary
    for i, text in enumerate(texts):
        words = text.split()
        lengths[i] = len(words)
        if vocabulary is not None and words:
            unseen[i] = sum(word not in vocabulary for word in words) / len(words)
        elif vocabulary is not None:
            unseen[i] = 0.0
    distance = np.full(len(texts), np.nan, dtype=np.float32)
    if context.centroid is not None and context.encoder is not None and len(texts):
        distance = embedding_distances(context.encoder.embed(list(texts)), context.centroid)
    return {"text_length": lengths, "unseen_share": unseen, "embedding_distance": distance}


def _summary(values: np.ndarray) -> dict[str, Any]:
    quantiles = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95]).round(4).tolist()
    counts, edges = np.histogram(values, bins=10)
    return {
        "mean": round(float(values.mean()), 4),
        "std": round(float(values.std()), 4),
        "quantiles": dict(zip(["p05", "p25", "p50", "p75", "p95"], quantiles, strict=True)),
        "histogram": {"counts": counts.tolist(), "edges": edges.round(4).tolist()},
    }


def bin_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """The bin of each value: bin i holds ``edges[i-1] < v <= edges[i]`` (open at both ends)."""
    return np.searchsorted(np.asarray(edges, dtype=float), values, side="left")


def reference_bins(values: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    """Decile edges of the reference values, their counts, mean and a sample for the KS test."""
    quantiles = np.quantile(values, np.linspace(0, 1, REFERENCE_BINS + 1)[1:-1])
    edges = np.unique(quantiles.round(6)).tolist()
    counts = np.bincount(bin_index(values, edges), minlength=len(edges) + 1)
    size = min(REFERENCE_SAMPLE, len(values))
    sample = rng.choice(values, size=size, replace=False) if size < len(values) else values
    return {
        "mean": round(float(values.mean()), 6),
        "edges": edges,
        "counts": counts.tolist(),
        "sample": np.round(sample, 5).tolist(),
    }


def _distribution(labels: Sequence[str]) -> dict[str, float]:
    return pd.Series(list(labels)).value_counts(normalize=True).round(4).sort_index().to_dict()


def compute_references(
    model: Any, features: pd.DataFrame, folds: int = REFERENCE_FOLDS, seed: int = SEED
) -> dict[str, Any]:
    """A version's references on its training rows ``features`` (``text``, ``tag``), out of fold.

    The production model has seen every training row, so its confidence on them (and their
    share of unseen words, zero by definition) says nothing about new traffic. Each row's
    monitoring features therefore come from a copy of the model fitted on the other folds, and
    its vocabulary from those folds only: what the model shows on data it has not seen. The
    vocabulary stored is the whole training vocabulary, which the live model knows.
    """
    from sklearn.base import clone
    from sklearn.model_selection import StratifiedKFold

    from tagifai.train import embedding_block, inputs_of

    rows = features.reset_index(drop=True)
    texts = rows["text"].astype(str).to_numpy()
    y = rows["tag"].astype(str).to_numpy()
    vectors = _training_vectors(model, rows)
    distance = np.empty(len(texts), dtype=float)
    unseen = np.empty(len(texts), dtype=float)
    confidence = np.empty(len(texts), dtype=float)
    predicted = np.empty(len(texts), dtype=object)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train_index, held_index in splitter.split(texts, y):
        vocabulary = frozenset(word for text in texts[train_index] for word in tokens(text))
        held = list(texts[held_index])
        unseen[held_index] = text_features(held, MonitoringContext(vocabulary))["unseen_share"]
        if vectors is not None:
            fold_centroid = vectors[train_index].mean(axis=0)
            distance[held_index] = embedding_distances(vectors[held_index], fold_centroid)
        # The rows' stored vectors (when the frame has them) spare embedding them per fold.
        fold_model = clone(model).fit(inputs_of(rows.iloc[train_index]), y[train_index])
        probabilities = fold_model.predict_proba(inputs_of(rows.iloc[held_index]))
        confidence[held_index] = probabilities.max(axis=1)
        classes = np.asarray([str(c) for c in fold_model.classes_], dtype=object)
        predicted[held_index] = classes[probabilities.argmax(axis=1)]
    lengths = text_features(list(texts), MonitoringContext())["text_length"].astype(float)
    values = {"text_length": lengths, "unseen_share": unseen, "confidence": confidence}
    extra: dict[str, Any] = {}
    if vectors is not None:
        values["embedding_distance"] = distance
        block = embedding_block(model)
        extra = {
            "embedding_centroid": np.round(unit(vectors.mean(axis=0)), 6).tolist(),
            "embedding_model": block.model_info_.to_dict() if block is not None else None,
        }
    rng = np.random.default_rng(seed)
    return {
        **extra,
        "rows": len(texts),
        "method": f"{folds}-fold out of fold on the training rows",
        "label_distribution": _distribution(y),
        "predicted_distribution": _distribution(predicted),
        "text_length_words": _summary(lengths),
        "prediction_confidence": _summary(confidence),
        "features": {name: reference_bins(values[name], rng) for name in values},
        "vocabulary": sorted({word for text in texts for word in tokens(text)}),
    }


def _training_vectors(model: Any, rows: pd.DataFrame) -> np.ndarray | None:
    """The training rows' sentence embeddings when the model has an embedding block: the
    stored vectors if every row has one, else the model's encoder embeds the texts."""
    from tagifai.train import embedding_block

    block = embedding_block(model)
    if block is None:
        return None
    if "embedding" in rows.columns and not rows["embedding"].isna().any():
        return np.stack(rows["embedding"].to_numpy()).astype(np.float32)
    return block._encoder().embed(rows["text"].astype(str).tolist())


def references_path(settings: Settings, version: int) -> Path:
    return settings.references_dir / f"v{version}.json"


def save_references(settings: Settings, version: int, references: dict[str, Any]) -> Path:
    """Write ``references/v<version>.json`` atomically and return its path."""
    return files.write_json(
        references_path(settings, version), {"model_version": version, **references}
    )


def stage_references(settings: Settings, version: int, references: dict[str, Any]) -> Path:
    """Write references where a promotion picks them up (not yet the version's own)."""
    import uuid

    path = settings.references_dir / ".staged" / f"v{version}-{uuid.uuid4().hex[:8]}.json"
    return files.write_json(path, {"model_version": version, **references})


def load_references(settings: Settings, version: int) -> dict[str, Any] | None:
    """A version's references, or None if it has none."""
    path = references_path(settings, version)
    return json.loads(path.read_text()) if path.is_file() else None


def load_context(settings: Settings, version: int | None, model: Any = None) -> MonitoringContext:
    """The monitoring context of a version: its training vocabulary, and its training centroid
    with ``model``'s encoder, when its references hold them (a version that never was in
    production has no references)."""
    from tagifai.train import embedding_block

    references = load_references(settings, version) if version is not None else None
    if references is None or "vocabulary" not in references:
        if version is not None:
            logger.info("v%s has no vocabulary in its references: unseen_share not logged", version)
        return MonitoringContext()
    block = embedding_block(model) if model is not None else None
    centroid = references.get("embedding_centroid")
    if block is None or centroid is None:
        return MonitoringContext(vocabulary=frozenset(references["vocabulary"]))
    return MonitoringContext(
        vocabulary=frozenset(references["vocabulary"]),
        centroid=np.asarray(centroid, dtype=np.float32),
        encoder=block._encoder(),
    )
