"""MLOps past ``scale_rows``: the training frame is read one partition at a time; the
incremental model (hashing + SGD, ``partial_fit``) learns from every train+val row, and
cross-validation and tuning take a stratified sample of a set size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tagifai import frames, steps
from tagifai.config import Settings, get_settings
from tagifai.synth import write_synthetic
from tagifai.tune import default_params

ROWS = 6_000
PARTS = 4


@pytest.fixture(scope="module")
def partitioned_frame(tmp_path_factory) -> tuple[Settings, Path]:
    """A training frame of 6,000 synthetic rows in four partition files, past scale_rows."""
    tmp = tmp_path_factory.mktemp("frames")
    data = write_synthetic(ROWS, tmp / "data", seed=7)
    settings = get_settings(
        {
            "TAGIFAI_STORES_DIR": str(tmp / "stores"),
            "TAGIFAI_SCALE_ROWS": "2000",  # smaller than the frame: never loaded whole
            "TAGIFAI_MAX_CV_ROWS": "900",
            "TAGIFAI_MAX_TUNE_ROWS": "600",
        }
    )
    single = steps.features_from_sources(settings, str(data.projects_path), str(data.tags_path))
    frame = pd.read_parquet(single).sort_values("id", ignore_index=True)
    folder = tmp / "training.parquet"
    folder.mkdir()
    size = len(frame) // PARTS + 1
    for index in range(PARTS):
        part = frame.iloc[index * size : (index + 1) * size]
        part.to_parquet(folder / f"part-{index:05d}.parquet", index=False)
    return settings, folder


@pytest.fixture
def reads(monkeypatch) -> list[tuple[str, int]]:
    """Every ``pandas.read_parquet`` call: what it read and how many rows it returned."""
    calls: list[tuple[str, int]] = []
    original = pd.read_parquet

    def spy(path, *args, **kwargs):
        frame = original(path, *args, **kwargs)
        calls.append((str(path), len(frame)))
        return frame

    monkeypatch.setattr(pd, "read_parquet", spy)
    return calls


def _train_val_ids(folder: Path, seed: int) -> pd.Series:
    ids = pd.concat(pd.read_parquet(p, columns=["id"]) for p in frames.frame_parts(folder))["id"]
    return ids[np.isin(frames.split_of(ids, seed), frames.TRAIN_VAL)]


def test_incremental_fit_learns_every_row_one_partition_at_a_time(partitioned_frame, reads):
    settings, folder = partitioned_frame
    assert steps.is_large(settings, folder)
    params = default_params("scale")
    model, rows = steps._fit_final(settings, folder, params)
    reads = list(reads)
    expected = _train_val_ids(folder, settings.seed)
    assert rows == len(expected) > 0.6 * ROWS
    # Two passes (counts, then partial_fit), each reading one partition file at a time.
    assert [Path(path).parent for path, _ in reads] == [folder] * (2 * PARTS)
    assert max(n for _, n in reads) <= ROWS // PARTS + 1
    # The model it learnt tags held-out texts well (synthetic tags keep their vocabulary).
    test = frames.sample_split(folder, frames.TEST, 500, settings.seed)
    accuracy = (model.predict(test["text"]) == test["tag"]).mean()
    assert accuracy > 0.7, accuracy


def test_partitions_hashed_apart_fit_the_same_model_and_are_removed(partitioned_frame):
    """What the flow does at scale: each partition hashed by its own task (any worker), then
    one incremental fit over the hashed files gives exactly the model fitted from the texts."""
    settings, folder = partitioned_frame
    params = default_params("scale")
    from_texts, rows = steps._fit_final(settings, folder, params)
    hashed = [steps.hash_partition(settings, folder, params, p, "run-1") for p in range(PARTS)]
    assert {path.parent for path in hashed} == {steps.hashed_dir(folder, "run-1")}
    from_hashed, hashed_rows = steps._fit_final(settings, folder, params, list(reversed(hashed)))
    assert hashed_rows == rows
    np.testing.assert_array_equal(
        from_hashed.named_steps["classifier"].coef_, from_texts.named_steps["classifier"].coef_
    )
    test = frames.sample_split(folder, frames.TEST, 500, settings.seed)["text"].tolist()
    np.testing.assert_array_equal(from_hashed.predict_proba(test), from_texts.predict_proba(test))
    assert not steps.hashed_dir(folder, "run-1").exists()  # gigabytes at 10M rows


def test_incremental_idf_equals_tfidf_on_all_rows(partitioned_frame):
    from sklearn.feature_extraction.text import TfidfTransformer

    from tagifai.train import build_pipeline, fit_incremental, texts_of

    settings, folder = partitioned_frame
    params = default_params("scale")

    def batches():
        return frames.iter_split(folder, frames.TRAIN_VAL, settings.seed)

    model, _ = fit_incremental(batches, params, seed=settings.seed)
    everything = pd.concat(list(batches()), ignore_index=True)
    word = dict(build_pipeline(params, settings.seed).named_steps["features"].transformer_list)
    counts = word["word"].named_steps["hash"].transform(texts_of(everything))
    whole = TfidfTransformer().fit(counts)
    fitted = dict(model.named_steps["features"].transformer_list)["word"].named_steps["tfidf"]
    np.testing.assert_allclose(fitted.idf_, whole.idf_)


def test_samples_have_the_set_size_and_the_tags_proportions(partitioned_frame, reads):
    settings, folder = partitioned_frame
    sample = steps.train_val_rows(settings, folder, settings.max_cv_rows)
    assert len(sample) == settings.max_cv_rows
    assert max(n for _, n in reads) <= ROWS // PARTS + 1  # never the whole frame
    population = pd.concat(list(frames.iter_split(folder, frames.TRAIN_VAL, settings.seed)))
    assert set(sample["id"]) <= set(population["id"])
    shares = sample["tag"].value_counts(normalize=True)
    expected = population["tag"].value_counts(normalize=True)
    assert (shares.reindex(expected.index, fill_value=0) - expected).abs().max() < 0.02
    # the same rows every time (the same seed): every model is scored on the same sample
    again = steps.train_val_rows(settings, folder, settings.max_cv_rows)
    pd.testing.assert_frame_equal(sample, again)
