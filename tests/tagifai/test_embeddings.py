"""Sentence embeddings: pooling, padding, truncation, pinned files, errors, and the model block."""

from __future__ import annotations

import json
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tagifai.embeddings import (
    DEFAULT_MODEL,
    Encoder,
    ModelFiles,
    embed,
    get_encoder,
    l2_normalize,
    locate_model,
    mean_pool,
    verify_model,
)
from tagifai.errors import EmbeddingModelError, TagifaiError
from tagifai.train import ModelParams, fit_model, model_input
from tests.tagifai.test_layers import imported_after

# sentence-transformers' all-MiniLM-L6-v2 (fp32) for this sentence starts with these values;
# the int8 weights move each by less than 0.003.
EXAMPLE = "This is an example sentence"
EXAMPLE_FP32_HEAD = [0.06765689, 0.0634959, 0.04871311, 0.07930498, 0.03744806]
LONG = " ".join(["a long text about many unrelated things"] * 40)


def fresh_encoder(model_dir: Path | None = None, threads: int | None = None) -> Encoder:
    """An encoder that computes every vector (no cache to answer from)."""
    return Encoder(model_dir, threads=threads, cache_size=0)


@pytest.fixture(scope="module")
def model_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    files = locate_model()
    directory = tmp_path_factory.mktemp("models") / "minilm-copy"
    directory.mkdir()
    shutil.copy(files.model_path, directory / "model.onnx")
    shutil.copy(files.tokenizer_path, directory / "tokenizer.json")
    return directory


def one_line_error(error: pytest.ExceptionInfo[EmbeddingModelError]) -> str:
    message = str(error.value)
    assert isinstance(error.value, TagifaiError)
    assert "\n" not in message and message.strip() == message
    # No chained error from onnxruntime or tokenizers under it.
    assert error.value.__cause__ is None
    assert error.value.__context__ is None or error.value.__suppress_context__
    return message


def test_mean_pool_averages_only_the_masked_tokens():
    hidden = np.array(
        [
            [[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]],  # last token is padding
            [[2.0, 0.0], [4.0, 2.0], [6.0, 4.0]],
        ],
        dtype=np.float32,
    )
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    np.testing.assert_allclose(mean_pool(hidden, mask), [[2.0, 3.0], [4.0, 2.0]])


def test_l2_normalize_gives_unit_rows_and_keeps_zero_rows():
    got = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(got, [[0.6, 0.8], [0.0, 0.0]])


def test_default_model_gives_sentence_transformers_vectors():
    vector = embed([EXAMPLE])[0]
    assert vector.dtype == np.float32 and vector.shape == (384,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(vector[:5], EXAMPLE_FP32_HEAD, atol=3e-3)


def test_vector_is_the_mean_of_the_text_s_own_token_states():
    """By hand: the text's tokens alone through the session, averaged, normalised."""
    encoder = fresh_encoder()
    loaded = encoder._load()
    ids = np.array([loaded.tokenizer.encode(EXAMPLE).ids], dtype=np.int64)
    assert ids.shape[1] == 7  # [CLS] this is an example sentence [SEP]: no fixed padding
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    feeds["token_type_ids"] = np.zeros_like(ids)
    states = loaded.session.run(None, feeds)[0][0]
    by_hand = states.mean(axis=0) / np.linalg.norm(states.mean(axis=0))
    np.testing.assert_allclose(encoder.embed([EXAMPLE, LONG])[0], by_hand, atol=1e-5)


def test_a_text_s_vector_does_not_depend_on_its_batch():
    encoder = fresh_encoder()
    alone = encoder.embed(["image segmentation"])
    batched = encoder.embed([LONG, "image segmentation", "a b"], batch_size=8)
    np.testing.assert_allclose(batched[1], alone[0], atol=1e-5)


def test_texts_are_truncated_at_the_model_s_max_length_not_the_tokenizer_file_s():
    encoder = fresh_encoder()
    filler = " ".join(["word"] * 150)  # past tokenizer.json's 128, within the model's 256
    near = encoder.embed([f"{filler} image segmentation", f"{filler} machine translation"])
    assert float(near[0] @ near[1]) < 0.9999
    far_filler = " ".join(["word"] * 300)  # past 256 tokens: the tail is cut off
    far = encoder.embed([f"{far_filler} image segmentation", f"{far_filler} machine translation"])
    np.testing.assert_allclose(far[0], far[1], atol=1e-6)


def test_thread_count_and_concurrent_calls_give_the_same_vectors():
    texts = [EXAMPLE, "object detection", "deploying models with docker"]
    one = fresh_encoder(threads=1).embed(texts)
    shared = fresh_encoder(threads=2)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: shared.embed(texts), range(4)))
    for result in results:
        np.testing.assert_allclose(result, one, atol=1e-5)


def test_cached_vectors_are_the_fresh_ones():
    encoder = Encoder(cache_size=2)
    first = encoder.embed(["a", "b", "c", "a"])
    again = encoder.embed(["c", "a", "b"])
    np.testing.assert_array_equal(again, first[[2, 0, 1]])
    np.testing.assert_allclose(again, fresh_encoder().embed(["c", "a", "b"]), atol=1e-5)


def test_the_process_shares_one_encoder_and_never_pickles_it():
    assert get_encoder() is get_encoder()
    assert get_encoder(threads=1) is not get_encoder()
    with pytest.raises(TypeError, match="never pickled"):
        pickle.dumps(get_encoder())


def test_default_files_are_pinned_and_verified():
    files = locate_model()
    assert files.expected == DEFAULT_MODEL
    assert fresh_encoder().info == DEFAULT_MODEL


def test_any_export_directory_works(model_copy):
    encoder = fresh_encoder(model_copy)
    assert encoder.info.model_id == "minilm-copy"
    assert encoder.info.model_sha256 == DEFAULT_MODEL.model_sha256
    np.testing.assert_allclose(encoder.embed([EXAMPLE]), embed([EXAMPLE]), atol=1e-6)


def test_checksum_mismatch_is_one_error_line(tmp_path, model_copy):
    tampered = tmp_path / "model.onnx"
    data = bytearray((model_copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    files = ModelFiles("x", tampered, model_copy / "tokenizer.json", expected=DEFAULT_MODEL)
    with pytest.raises(EmbeddingModelError) as error:
        verify_model(files)
    message = one_line_error(error)
    assert str(tampered) in message and "sha256" in message and "expected 8199be6f" in message


def test_missing_directory_is_one_error_line(tmp_path):
    with pytest.raises(EmbeddingModelError) as error:
        fresh_encoder(tmp_path / "nowhere").embed(["x"])
    assert "directory not found" in one_line_error(error)


@pytest.mark.parametrize("missing", ["model.onnx", "tokenizer.json"])
def test_missing_file_is_one_error_line(tmp_path, model_copy, missing):
    for name in ("model.onnx", "tokenizer.json"):
        if name != missing:
            (tmp_path / name).symlink_to(model_copy / name)
    with pytest.raises(EmbeddingModelError) as error:
        fresh_encoder(tmp_path).embed(["x"])
    assert f"missing: {tmp_path / missing}" in one_line_error(error)


@pytest.mark.parametrize(
    ("corrupt", "content", "expected"),
    [
        ("model.onnx", b"\x08\x07not a model", "cannot load ONNX model"),
        ("model.onnx", b"", "cannot load ONNX model"),
        ("tokenizer.json", b'{"model": {', "cannot read tokenizer"),
    ],
)
def test_corrupt_file_is_one_error_line(tmp_path, model_copy, corrupt, content, expected):
    for name in ("model.onnx", "tokenizer.json"):
        if name != corrupt:
            (tmp_path / name).symlink_to(model_copy / name)
    (tmp_path / corrupt).write_bytes(content)
    with pytest.raises(EmbeddingModelError) as error:
        fresh_encoder(tmp_path).embed(["x"])
    assert one_line_error(error).startswith(expected)


def test_importing_the_module_loads_no_runtime():
    loaded = imported_after("import tagifai.embeddings, tagifai.train")
    assert not {"onnxruntime", "tokenizers"} & loaded


# The model's embedding block: precomputed vectors at training, raw texts at prediction.


@pytest.fixture(scope="module")
def sample(shipped_features):
    rows = shipped_features.groupby("tag", group_keys=False).head(40).reset_index(drop=True)
    held_out = shipped_features.drop(shipped_features.index[rows.index]).head(60)
    return rows, held_out["text"].tolist()


def test_fit_on_vectors_predicts_raw_texts_as_on_vectors(sample):
    import cloudpickle

    train, texts = sample
    params = ModelParams(classifier="logreg", C=5.0)
    model = fit_model(model_input(train["text"], embed(train["text"])), train["tag"], params)
    model = pickle.loads(cloudpickle.dumps(model))  # as MLflow stores and loads it
    on_texts = model.predict_proba(texts)
    on_vectors = model.predict_proba(model_input(texts, fresh_encoder().embed(texts)))
    np.testing.assert_allclose(on_texts, on_vectors, atol=1e-6)
    assert list(model.predict(texts)) == list(model.predict(model_input(texts, embed(texts))))
    # Rows without a vector are embedded; the block really is used.
    partial = model_input(texts, embed(texts))
    partial.loc[::2, "embedding"] = None
    np.testing.assert_allclose(model.predict_proba(partial), on_texts, atol=1e-6)
    no_block = fit_model(
        train["text"], train["tag"], ModelParams(classifier="logreg", C=5.0, embedding_weight=0.0)
    )
    assert not np.allclose(no_block.predict_proba(texts), on_texts, atol=1e-3)


def test_the_block_takes_given_vectors_as_they_are(sample):
    train, texts = sample
    model = fit_model(train["text"], train["tag"], ModelParams())
    block = model.named_steps["features"].transformer_list[-1][1]
    others = embed(texts[::-1])  # not these texts' vectors: taken as given, never recomputed
    np.testing.assert_array_equal(block.transform(model_input(texts, others)), others)


def test_vectors_of_other_texts_are_refused_at_fit(sample):
    train, _ = sample
    shuffled = embed(train["text"])[::-1]
    with pytest.raises(EmbeddingModelError, match="not made by"):
        fit_model(model_input(train["text"], shuffled), train["tag"], ModelParams())


def test_a_different_encoder_at_prediction_is_refused(sample, tmp_path, model_copy):
    train, texts = sample
    model = fit_model(train["text"], train["tag"], ModelParams())
    assert model.named_steps["features"].transformer_list[-1][1].model_info_ == DEFAULT_MODEL
    expected = model.predict(texts[:5])
    model.set_params(features__embedding__model_dir=model_copy)  # same files, other directory
    assert list(model.predict(texts[:5])) == list(expected)
    other = tmp_path / "other-minilm"
    other.mkdir()
    (other / "model.onnx").symlink_to(model_copy / "model.onnx")
    tokenizer = json.loads((model_copy / "tokenizer.json").read_text())
    (other / "tokenizer.json").write_text(json.dumps(tokenizer, indent=1))  # same, re-saved
    model.set_params(features__embedding__model_dir=other)
    with pytest.raises(EmbeddingModelError, match="fitted on embeddings of all-MiniLM"):
        model.predict(texts[:2])
