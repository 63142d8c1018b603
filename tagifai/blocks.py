"""The model's own scikit-learn transformers: the text column and the sentence-embedding
block (see :mod:`tagifai.train`, which builds the pipeline around them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from tagifai.embeddings import EmbeddingModelInfo, get_encoder
from tagifai.errors import EmbeddingModelError
from tagifai.train import ModelInput, texts_of


class TextColumn(TransformerMixin, BaseEstimator):
    """Selects the texts of the model input for the vectorisers."""

    def fit(self, X: ModelInput, y: Any = None) -> TextColumn:
        return self

    def transform(self, X: ModelInput) -> list[str]:
        return texts_of(X)


class HashedRows(TransformerMixin, BaseEstimator):
    """Rows of a matrix of texts hashed beforehand, selected by row number: the head of a
    hashing block when cross-validation hashes every text once (see
    :func:`tagifai.train.fold_scores`). X is an array of row numbers."""

    def __init__(self, matrix: Any = None) -> None:
        self.matrix = matrix

    def fit(self, X: Any, y: Any = None) -> HashedRows:
        return self

    def transform(self, X: Any) -> Any:
        return self.matrix[np.asarray(X, dtype=np.int64).ravel()]


# Precomputed vectors must be the encoder's own: cosine at least this on a spot check
# (the same model on another CPU differs by ~1e-7; fp32 against int8 weights by ~5e-4).
SAME_VECTOR_COSINE = 1 - 1e-4


class SentenceEmbeddings(TransformerMixin, BaseEstimator):
    """The sentence-embedding block: the input's ``embedding`` column when it has one,
    otherwise (and for rows without a vector) the texts embedded by the encoder.

    Fitting records the encoder's identity (model id and checksums); transforming with a
    different encoder raises :class:`EmbeddingModelError`. The encoder (an onnxruntime
    session) is looked up per process and never pickled with the model.
    """

    def __init__(
        self, model_dir: Path | None = None, threads: int | None = None, spot_check: int = 2
    ) -> None:
        self.model_dir = model_dir
        self.threads = threads
        self.spot_check = spot_check

    def _encoder(self) -> Any:
        return get_encoder(self.model_dir, self.threads)

    def fit(self, X: ModelInput, y: Any = None) -> SentenceEmbeddings:
        encoder = self._encoder()
        self.model_info_: EmbeddingModelInfo = encoder.info
        self.dimension_: int = encoder.dimension
        given = _given_vectors(X)
        if given is not None:
            rows = [i for i, v in enumerate(given) if v is not None][: self.spot_check]
            if rows:
                self._check_width(given[rows[0]])
                texts = texts_of(X)
                fresh = encoder.embed([texts[i] for i in rows])
                supplied = np.stack([given[i] for i in rows]).astype(np.float32)
                cosine = float((fresh * supplied).sum(axis=1).min())
                if cosine < SAME_VECTOR_COSINE:
                    raise EmbeddingModelError(
                        f"the input's embeddings were not made by {self.model_info_.describe()}: "
                        f"cosine {cosine:.4f} with its own vectors of the same texts"
                    )
        return self

    def _check_width(self, vector: np.ndarray) -> None:
        if np.shape(vector) != (self.dimension_,):
            raise EmbeddingModelError(
                f"embedding of shape {np.shape(vector)}; {self.model_info_.model_id} "
                f"gives ({self.dimension_},)"
            )

    def transform(self, X: ModelInput) -> np.ndarray:
        given = _given_vectors(X) or [None] * len(X)
        vectors = np.zeros((len(given), self.dimension_), dtype=np.float32)
        present = [i for i, v in enumerate(given) if v is not None]
        missing = [i for i, v in enumerate(given) if v is None]
        if present:
            for i in present:
                self._check_width(given[i])  # type: ignore[arg-type]
            vectors[present] = np.stack([given[i] for i in present])  # type: ignore[misc]
        if missing:
            encoder = self._encoder()
            if not encoder.info.same_files(self.model_info_):
                raise EmbeddingModelError(
                    f"this model was fitted on embeddings of {self.model_info_.describe()}, "
                    f"but the encoder found is {encoder.info.describe()}"
                )
            texts = texts_of(X)
            vectors[missing] = encoder.embed([texts[i] for i in missing])
        return vectors


def _given_vectors(X: ModelInput) -> list[np.ndarray | None] | None:
    """The frame's ``embedding`` column as a list (None for a row without one), else None."""
    if not isinstance(X, pd.DataFrame) or "embedding" not in X.columns:
        return None
    return [
        None if v is None or (np.ndim(v) == 0 and pd.isna(v)) else np.asarray(v)
        for v in X["embedding"]
    ]
