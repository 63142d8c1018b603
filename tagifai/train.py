"""The model: a scikit-learn Pipeline of TF-IDF (or hashing) vectorisers and a linear classifier."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from tagifai.config import SEED

logger = logging.getLogger(__name__)

Classifier = Literal["logreg", "svm", "sgd"]


@dataclass(frozen=True)
class ModelParams:
    """One point of the search space; the defaults are a strong untuned baseline."""

    vectorizer: Literal["tfidf", "hashing"] = "tfidf"
    word_ngram_max: int = 2
    char_ngram_min: int = 2
    char_ngram_max: int = 5
    char_weight: float = 1.0  # 0 turns the char_wb block off
    min_df: int = 1
    sublinear_tf: bool = True
    classifier: Classifier = "svm"
    C: float = 0.5
    class_weight: Literal["balanced"] | None = "balanced"
    n_features: int = 2**20  # hashing only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelParams:
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown model parameters: {sorted(unknown)}")
        return cls(**values)


def _vectorizers(params: ModelParams) -> list[tuple[str, Any]]:
    from sklearn.feature_extraction.text import (
        HashingVectorizer,
        TfidfTransformer,
        TfidfVectorizer,
    )

    def make(analyzer: str, ngram_range: tuple[int, int]) -> Any:
        if params.vectorizer == "hashing":
            hashing = HashingVectorizer(
                analyzer=analyzer,
                ngram_range=ngram_range,
                n_features=params.n_features,
                alternate_sign=False,
                norm=None,
            )
            return Pipeline(
                [("hash", hashing), ("tfidf", TfidfTransformer(sublinear_tf=params.sublinear_tf))]
            )
        return TfidfVectorizer(
            analyzer=analyzer,
            ngram_range=ngram_range,
            min_df=params.min_df,
            sublinear_tf=params.sublinear_tf,
            dtype=np.float32,
        )

    blocks = [("word", make("word", (1, params.word_ngram_max)))]
    if params.char_weight > 0:
        char_range = (params.char_ngram_min, max(params.char_ngram_min, params.char_ngram_max))
        blocks.append(("char", make("char_wb", char_range)))
    return blocks


def _classifier(params: ModelParams, seed: int) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.svm import LinearSVC

    if params.classifier == "logreg":
        return LogisticRegression(C=params.C, class_weight=params.class_weight, max_iter=3000)
    if params.classifier == "sgd":
        return SGDClassifier(
            loss="modified_huber",
            alpha=1e-4 / params.C,
            class_weight=params.class_weight,
            random_state=seed,
        )
    # LinearSVC has no probabilities: one SVM on all rows, sigmoid-calibrated on 3 folds.
    svm = LinearSVC(C=params.C, class_weight=params.class_weight, random_state=seed)
    return CalibratedClassifierCV(svm, cv=3, method="sigmoid", ensemble=False)


def build_pipeline(params: ModelParams, seed: int = SEED) -> Pipeline:
    """Vectoriser(s) + linear classifier for these parameters."""
    from sklearn.pipeline import FeatureUnion

    blocks = _vectorizers(params)
    weights = {"word": 1.0, "char": params.char_weight}
    union = FeatureUnion(blocks, transformer_weights={name: weights[name] for name, _ in blocks})
    return Pipeline([("features", union), ("classifier", _classifier(params, seed))])


@dataclass(frozen=True)
class CVResult:
    """Stratified k-fold weighted F1."""

    mean: float
    std: float
    scores: tuple[float, ...]


def fit_model(
    texts: pd.Series | list[str],
    labels: pd.Series | list[str],
    params: ModelParams,
    seed: int = SEED,
) -> Pipeline:
    """Fit a fresh pipeline and log how long it took."""
    started = time.perf_counter()
    model = build_pipeline(params, seed).fit(list(texts), list(labels))
    logger.info(
        "fitted %s on %d texts in %.2f s",
        params.classifier,
        len(texts),
        time.perf_counter() - started,
    )
    return model


def cross_validate(
    texts: pd.Series, labels: pd.Series, params: ModelParams, folds: int = 5, seed: int = SEED
) -> CVResult:
    """Stratified k-fold weighted F1 of fresh pipelines (train+val only, never test)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(
        build_pipeline(params, seed), list(texts), list(labels), cv=cv, scoring="f1_weighted"
    )
    return CVResult(
        mean=float(scores.mean()), std=float(scores.std()), scores=tuple(float(s) for s in scores)
    )
