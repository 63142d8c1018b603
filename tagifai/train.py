"""The model: a scikit-learn Pipeline of feature blocks and a linear classifier.

The blocks are TF-IDF (or hashing) vectorisers of the text and, optionally, its sentence
embedding. A fitted model takes either a list of texts, which it embeds itself
(:mod:`tagifai.embeddings`), or a frame from :func:`model_input` with ``text`` and precomputed
``embedding`` columns (training with the feature store's vectors): one object serves both.

scikit-learn is imported inside the functions (the transformer classes live in
:mod:`tagifai.blocks`): the flows import this module for :class:`ModelParams`, and a flow-run
process that only orchestrates never needs scikit-learn.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from tagifai.config import SEED

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from tagifai.blocks import SentenceEmbeddings

logger = logging.getLogger(__name__)

# Models pickled before the blocks moved refer to them here (pickle looks them up by name).
_MOVED_TO_BLOCKS = ("TextColumn", "SentenceEmbeddings", "SAME_VECTOR_COSINE")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_BLOCKS:
        from tagifai import blocks

        return getattr(blocks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Classifier = Literal["logreg", "svm", "sgd"]


@dataclass(frozen=True)
class ModelParams:
    """One point of the search space; the defaults are a strong untuned baseline."""

    vectorizer: Literal["tfidf", "hashing"] = "tfidf"
    word_ngram_max: int = 2
    char_ngram_min: int = 2
    char_ngram_max: int = 5
    char_weight: float = 0.0  # 0 turns the char_wb block off
    embedding_weight: float = 1.0  # 0 turns the sentence-embedding block off
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


ModelInput = pd.DataFrame | pd.Series | Sequence[str]


def model_input(
    texts: Sequence[str] | pd.Series, embeddings: np.ndarray | None = None
) -> pd.DataFrame:
    """The frame a model takes: ``text`` and, when computed beforehand, ``embedding`` vectors."""
    frame = pd.DataFrame({"text": [str(t) for t in texts]})
    if embeddings is not None:
        vectors = np.asarray(embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(frame):
            raise ValueError(f"embeddings of shape {vectors.shape} for {len(frame)} texts")
        frame["embedding"] = list(vectors)
    return frame


def texts_of(X: ModelInput) -> list[str]:
    """The texts of a model input: a sequence of strings, or a frame's ``text`` column."""
    if isinstance(X, str):
        raise TypeError("a model takes a list of texts, not one string")
    if isinstance(X, pd.DataFrame):
        if "text" not in X.columns:
            raise ValueError(f"model input has no 'text' column: {list(X.columns)}")
        X = X["text"]
    return ["" if t is None else str(t) for t in X]


def inputs_of(frame: pd.DataFrame) -> ModelInput:
    """A frame's model input: its texts with their precomputed vectors when it has an
    ``embedding`` column with a vector in every row, otherwise the texts alone."""
    vectors = frame["embedding"] if "embedding" in frame.columns else None
    if vectors is None or vectors.isna().any():
        return frame["text"].tolist()
    return model_input(frame["text"], np.stack(vectors.to_numpy()))


def _as_input(X: ModelInput) -> pd.DataFrame | list[str]:
    return X.reset_index(drop=True) if isinstance(X, pd.DataFrame) else texts_of(X)


def _vectorizers(params: ModelParams) -> list[tuple[str, Any]]:
    from sklearn.feature_extraction.text import (
        HashingVectorizer,
        TfidfTransformer,
        TfidfVectorizer,
    )
    from sklearn.pipeline import Pipeline

    from tagifai.blocks import TextColumn

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
                [
                    ("text", TextColumn()),
                    ("hash", hashing),
                    ("tfidf", TfidfTransformer(sublinear_tf=params.sublinear_tf)),
                ]
            )
        tfidf = TfidfVectorizer(
            analyzer=analyzer,
            ngram_range=ngram_range,
            min_df=params.min_df,
            sublinear_tf=params.sublinear_tf,
            dtype=np.float32,
        )
        return Pipeline([("text", TextColumn()), ("tfidf", tfidf)])

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


def embedding_block(model: Any) -> SentenceEmbeddings | None:
    """A fitted pipeline's sentence-embedding block, or None when it has none."""
    from tagifai.blocks import SentenceEmbeddings

    features = getattr(model, "named_steps", {}).get("features")
    for name, block in getattr(features, "transformer_list", ()):
        if name == "embedding" and isinstance(block, SentenceEmbeddings):
            return block
    return None


def build_pipeline(
    params: ModelParams, seed: int = SEED, embedding_model_dir: Path | None = None
) -> Pipeline:
    """Feature blocks + linear classifier for these parameters.

    ``embedding_model_dir`` is the encoder the embedding block uses (None: the packaged default).
    """
    from sklearn.pipeline import FeatureUnion, Pipeline

    from tagifai.blocks import SentenceEmbeddings

    blocks = _vectorizers(params)
    weights = {"word": 1.0, "char": params.char_weight, "embedding": params.embedding_weight}
    if params.embedding_weight > 0:
        blocks.append(("embedding", SentenceEmbeddings(model_dir=embedding_model_dir)))
    union = FeatureUnion(blocks, transformer_weights={name: weights[name] for name, _ in blocks})
    return Pipeline([("features", union), ("classifier", _classifier(params, seed))])


@dataclass(frozen=True)
class CVResult:
    """Stratified k-fold weighted F1."""

    mean: float
    std: float
    scores: tuple[float, ...]


def fit_model(
    X: ModelInput,
    labels: pd.Series | list[str],
    params: ModelParams,
    seed: int = SEED,
    embedding_model_dir: Path | None = None,
) -> Pipeline:
    """Fit a fresh pipeline on texts (or a :func:`model_input` frame) and log how long it took."""
    started = time.perf_counter()
    model = build_pipeline(params, seed, embedding_model_dir).fit(_as_input(X), list(labels))
    logger.info(
        "fitted %s on %d texts in %.2f s",
        params.classifier,
        len(X),
        time.perf_counter() - started,
    )
    return model


def cv_splits(labels: Sequence[str], folds: int, repeats: int, seed: int) -> list[Any]:
    """Repeated stratified k-fold (train, test) index pairs: every repeat reshuffles, so the
    mean is not one split's luck (one seed on ~650 rows moves F1 by about 0.02)."""
    from sklearn.model_selection import RepeatedStratifiedKFold

    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    return list(cv.split(np.zeros(len(labels)), list(labels)))


def fold_score(
    params: ModelParams,
    X: ModelInput,
    labels: Sequence[str],
    split: Any,
    seed: int = SEED,
    embedding_model_dir: Path | None = None,
) -> float:
    """Weighted F1 of a fresh pipeline fitted on one fold's train rows, on its test rows."""
    from sklearn.metrics import f1_score

    train, test = split
    X_all, y_all = _as_input(X), np.asarray(list(labels))
    model = build_pipeline(params, seed, embedding_model_dir)
    model.fit(_rows(X_all, train), y_all[train])
    return float(f1_score(y_all[test], model.predict(_rows(X_all, test)), average="weighted"))


def fold_scores(
    params: ModelParams,
    X: ModelInput,
    labels: Sequence[str],
    splits: Iterable[Any],
    seed: int = SEED,
    embedding_model_dir: Path | None = None,
) -> Iterator[float]:
    """:func:`fold_score` of each split in turn, computed lazily (a caller may stop early).

    Hashing vectorisers are stateless: a text hashes to the same row whatever rows it is
    hashed with. So when every block hashes (no TF-IDF vocabulary, no embedding block), each
    text is hashed once for all the splits and every fold's pipeline starts from its rows of
    that matrix: the same fits and scores, without hashing every text once per fold (15
    times in 3x5-fold CV, most of a scale-path trial's time).
    """
    labels = list(labels)
    if params.vectorizer != "hashing" or params.embedding_weight > 0:
        for split in splits:
            yield fold_score(params, X, labels, split, seed, embedding_model_dir)
        return
    from sklearn.metrics import f1_score

    texts = texts_of(X)
    hashed = {
        name: block.named_steps["hash"].transform(texts).tocsr()
        for name, block in _vectorizers(params)
    }
    y_all = np.asarray(labels)
    for train, test in splits:
        model = _from_hashed(build_pipeline(params, seed), hashed)
        model.fit(train, y_all[train])
        yield float(f1_score(y_all[test], model.predict(test), average="weighted"))


def _from_hashed(model: Pipeline, hashed: dict[str, Any]) -> Pipeline:
    """``model`` whose blocks take row numbers of ``hashed`` (block name -> hashed texts)
    instead of texts: each block's text + hashing steps become a lookup of those rows."""
    from sklearn.pipeline import Pipeline

    from tagifai.blocks import HashedRows

    union = model.named_steps["features"]
    for name, block in union.transformer_list:
        after_hashing = block.steps[[step for step, _ in block.steps].index("hash") + 1 :]
        union.set_params(**{name: Pipeline([("rows", HashedRows(hashed[name])), *after_hashing])})
    return model


def _rows(X: pd.DataFrame | list[str], index: np.ndarray) -> pd.DataFrame | list[str]:
    if isinstance(X, pd.DataFrame):
        return X.iloc[index].reset_index(drop=True)
    return [X[i] for i in index]


def cross_validate(
    X: ModelInput,
    labels: pd.Series,
    params: ModelParams,
    folds: int = 5,
    seed: int = SEED,
    embedding_model_dir: Path | None = None,
    repeats: int = 3,
) -> CVResult:
    """Repeated stratified k-fold weighted F1 of fresh pipelines (train+val only, never
    test): mean and standard deviation over all ``folds x repeats`` fits."""
    splits = cv_splits(list(labels), folds, repeats, seed)
    scores = list(fold_scores(params, X, list(labels), splits, seed, embedding_model_dir))
    values = np.array(scores)
    return CVResult(mean=float(values.mean()), std=float(values.std()), scores=tuple(scores))


def is_incremental(params: ModelParams) -> bool:
    """Whether a model with ``params`` can learn partition by partition (``partial_fit``):
    hashed words and SGD, without the blocks that need every text at once."""
    return (
        params.vectorizer == "hashing"
        and params.classifier == "sgd"
        and params.char_weight <= 0
        and params.embedding_weight <= 0
    )


HashedBatch = tuple[Any, np.ndarray]  # (hashed texts as a sparse matrix, their tags)


def hash_texts(params: ModelParams, texts: list[str]) -> Any:
    """Term counts of ``texts`` as the word block of an incremental model hashes them (a
    stateless step: any process, any batch of rows, gives the same rows)."""
    if not is_incremental(params):
        raise ValueError(f"{params} cannot be fitted incrementally")
    return _word_block(build_pipeline(params)).named_steps["hash"].transform(texts).tocsr()


def _word_block(model: Pipeline) -> Pipeline:
    return dict(model.named_steps["features"].transformer_list)["word"]


def fit_incremental(
    batches: Callable[[], Iterable[pd.DataFrame]], params: ModelParams, seed: int = SEED
) -> tuple[Pipeline, int]:
    """Fit the same pipeline as :func:`fit_model` on batches it reads one at a time (frames
    with ``text`` and ``tag``), hashing each batch here; see :func:`fit_hashed`."""

    def hashed() -> Iterator[HashedBatch]:
        for batch in batches():
            yield hash_texts(params, texts_of(batch)), batch["tag"].to_numpy()

    return fit_hashed(hashed, params, seed)


def fit_hashed(
    batches: Callable[[], Iterable[HashedBatch]], params: ModelParams, seed: int = SEED
) -> tuple[Pipeline, int]:
    """Fit the pipeline of :func:`fit_model` on batches of texts hashed beforehand
    (:func:`hash_texts`, e.g. one partition per worker), one batch in memory at a time.

    Two passes over ``batches()``: the first counts labels and, per hashed feature, the
    documents holding it (the TF-IDF weights, as ``TfidfTransformer`` computes them on all
    rows at once); the second is one epoch of ``SGDClassifier.partial_fit``, each batch's rows
    in a seeded random order, through the pipeline's own union and TF-IDF step. The fitted
    model takes texts like any other.

    Returns:
        The fitted pipeline and the number of rows it learnt from.

    Raises:
        ValueError: ``params`` is not incremental (:func:`is_incremental`), or no rows.
    """
    if not is_incremental(params):
        raise ValueError(f"{params} cannot be fitted incrementally")
    import scipy.sparse as sp
    from sklearn.pipeline import FeatureUnion
    from sklearn.pipeline import Pipeline as SkPipeline

    from tagifai.blocks import HashedRows

    started = time.perf_counter()
    model = build_pipeline(params, seed)
    tfidf = _word_block(model).named_steps["tfidf"]
    documents = np.zeros(params.n_features, dtype=np.int64)
    labels: dict[str, int] = {}
    rows = 0
    for counts, tags in batches():
        documents += np.bincount(sp.csr_matrix(counts).indices, minlength=params.n_features)
        for label, count in zip(*np.unique(tags.astype(str), return_counts=True), strict=True):
            labels[str(label)] = labels.get(str(label), 0) + int(count)
        rows += len(tags)
    if rows == 0:
        raise ValueError("no rows to fit")
    tfidf.fit(sp.csr_matrix((1, params.n_features)))  # shape and attributes; idf set below
    tfidf.idf_ = np.log((1 + rows) / (1 + documents)) + 1  # smooth_idf, as fit computes it
    classes = np.array(sorted(labels))
    classifier = model.named_steps["classifier"]
    if params.class_weight == "balanced":  # partial_fit takes explicit weights only
        weights = {c: rows / (len(classes) * labels[c]) for c in classes}
        classifier.set_params(class_weight=weights)
    # The model's union with the hashing step swapped for the batch's hashed rows: the same
    # weights and the same (fitted) TF-IDF step, so rows reach SGD as the model makes them.
    union = model.named_steps["features"]
    hashed = FeatureUnion(
        [("word", SkPipeline([("rows", HashedRows()), ("tfidf", tfidf)]))],
        transformer_weights=union.transformer_weights,
    )
    order = np.random.default_rng(seed)
    for counts, tags in batches():
        if not len(tags):
            continue
        shuffled = order.permutation(len(tags))
        hashed.set_params(word__rows__matrix=sp.csr_matrix(counts))
        classifier.partial_fit(hashed.transform(shuffled), tags[shuffled], classes)
    logger.info(
        "fitted %s incrementally on %d texts in %.2f s",
        params.classifier,
        rows,
        time.perf_counter() - started,
    )
    return model, rows
