"""Drift statistics: PSI, the streaming accumulator, and the tests beside them."""

from __future__ import annotations

import numpy as np
import pytest

from tagifai import drift
from tagifai.drift import DriftAccumulator, psi
from tagifai.monitoring import reference_bins


def references(seed: int = 0) -> dict:
    """References like a version's: deciles of normal-ish features and a tag mix."""
    rng = np.random.default_rng(seed)
    values = {
        "text_length": rng.normal(21, 6, 2000).clip(1).round(),
        "unseen_share": rng.beta(2, 10, 2000),
        "confidence": rng.beta(8, 2, 2000),
    }
    return {
        "features": {name: reference_bins(v, rng) for name, v in values.items()},
        "predicted_distribution": {"computer-vision": 0.35, "mlops": 0.1, "other": 0.15,
                                   "natural-language-processing": 0.4},
    }  # fmt: skip


def rows(n: int, seed: int = 1, unseen_shift: float = 0.0, tags: list[str] | None = None) -> dict:
    rng = np.random.default_rng(seed)
    mix = ["computer-vision", "mlops", "other", "natural-language-processing"]
    return {
        "tag": np.array(tags or rng.choice(mix, n, p=[0.35, 0.1, 0.15, 0.4]).tolist()),
        "text_length": rng.normal(21, 6, n).clip(1).round(),
        "unseen_share": (rng.beta(2, 10, n) + unseen_shift).clip(0, 1),
        "confidence": rng.beta(8, 2, n),
    }


def test_psi_is_zero_for_the_same_histogram_and_grows_with_the_shift():
    base = [100, 100, 100, 100]
    assert psi(base, base) == pytest.approx(0.0)
    small, large = psi(base, [120, 100, 90, 90]), psi(base, [300, 50, 30, 20])
    assert 0 < small < 0.1 < 0.25 < large
    assert np.isfinite(psi(base, [400, 0, 0, 0]))  # empty bins are smoothed, never infinite


def test_same_distribution_shows_no_drift():
    accumulator = DriftAccumulator(references(), model_version=1)
    accumulator.update(rows(3000))
    result = accumulator.result()
    assert result.predictions == 3000
    assert [f.feature for f in result.features] == [
        "tag", "text_length", "unseen_share", "confidence",
    ]  # fmt: skip
    assert max(f.psi for f in result.features) < 0.05, result.rows()


def test_a_shift_shows_in_psi_ks_and_the_mean():
    accumulator = DriftAccumulator(references(), model_version=1)
    accumulator.update(rows(2000, unseen_shift=0.3))
    unseen = accumulator.result().get("unseen_share")
    assert unseen.psi > 1.0 and unseen.p_value < 1e-6 and unseen.statistic > 0.5
    assert unseen.current_mean > unseen.reference_mean and unseen.harmful
    assert sum(unseen.current_share) == pytest.approx(1.0, abs=1e-3)


def test_a_tag_mix_shift_shows_in_chi_squared_and_psi():
    accumulator = DriftAccumulator(references(), model_version=1)
    accumulator.update(rows(500, tags=["computer-vision"] * 500))
    tag = accumulator.result().get("tag")
    assert tag.test == "chi2" and tag.p_value < 1e-10 and tag.psi > 1.0
    assert dict(zip(tag.bins, tag.current_share, strict=True))["computer-vision"] == 1.0


def test_reading_in_pieces_gives_the_same_histograms_as_at_once(monkeypatch):
    monkeypatch.setattr(drift, "SAMPLE_SIZE", 300)  # the sample stays bounded across pieces
    data = rows(2000, unseen_shift=0.1)
    whole = DriftAccumulator(references(), model_version=1)
    whole.update(data)
    pieces = DriftAccumulator(references(), model_version=1)
    for start in range(0, 2000, 170):
        pieces.update({name: values[start : start + 170] for name, values in data.items()})
    for a, b in zip(whole.result().features, pieces.result().features, strict=True):
        assert a.psi == pytest.approx(b.psi) and a.current_mean == pytest.approx(b.current_mean)
    assert len(pieces.numeric["confidence"].sample) == 300


def test_missing_values_and_older_references_are_skipped():
    old = references()
    del old["features"]["unseen_share"]  # references from before the feature existed
    data = rows(400)
    data["unseen_share"][:] = np.nan
    accumulator = DriftAccumulator(old, model_version=1)
    accumulator.update(data)
    result = accumulator.result()
    assert result.get("unseen_share") is None
    assert result.get("confidence").n == 400


def test_no_traffic_gives_an_empty_table_not_an_error():
    result = DriftAccumulator(references(), model_version=1).result()
    assert result.predictions == 0
    assert all(f.psi == 0.0 and f.p_value == 1.0 for f in result.features)
