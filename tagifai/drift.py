"""Drift statistics, accumulated over a prediction log read in pieces (memory stays bounded).

For each numeric monitoring feature: the population stability index (PSI) over the reference
deciles, and the two-sample Kolmogorov-Smirnov test between a uniform sample of the traffic
(at most :data:`SAMPLE_SIZE` values, kept by random priority) and the reference sample. For
the predicted tag: PSI over the tags and Pearson's chi-squared test against the reference
proportions. Decisions use PSI (an effect size, on the same scale for every feature and every
volume of traffic); p-values are shown beside it but, with thousands of predictions, they
flag shifts too small to matter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tagifai.config import SEED
from tagifai.monitoring import FEATURES, LABEL, bin_index, feature_spec

SAMPLE_SIZE = 5000
PSEUDO_COUNT = 0.5  # per bin, both sides: empty bins do not make PSI infinite


def psi(reference_counts: Sequence[float], current_counts: Sequence[float]) -> float:
    """Population stability index of two histograms over the same bins (smoothed)."""
    ref = np.asarray(reference_counts, dtype=float) + PSEUDO_COUNT
    cur = np.asarray(current_counts, dtype=float) + PSEUDO_COUNT
    ref, cur = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


@dataclass(frozen=True)
class FeatureDrift:
    """One row of the drift table."""

    feature: str
    test: str  # "KS" or "chi2"
    statistic: float
    p_value: float
    psi: float
    n: int
    reference_mean: float | None
    current_mean: float | None
    worse: str  # "higher", "lower", "either"
    learnable: bool
    bins: tuple[str, ...]
    reference_share: tuple[float, ...]
    current_share: tuple[float, ...]

    @property
    def harmful(self) -> bool:
        """Whether the shift goes the way that hurts (either way for two-sided features)."""
        if self.worse == "either" or self.current_mean is None or self.reference_mean is None:
            return True
        if self.worse == "higher":
            return self.current_mean > self.reference_mean
        return self.current_mean < self.reference_mean

    def row(self) -> dict[str, Any]:
        """The row as the drift table shows it."""
        return {
            "feature": self.feature,
            "test": self.test,
            "statistic": round(self.statistic, 4),
            "p_value": float(f"{self.p_value:.3g}"),
            "psi": round(self.psi, 4),
            "reference_mean": None
            if self.reference_mean is None
            else round(self.reference_mean, 4),
            "current_mean": None if self.current_mean is None else round(self.current_mean, 4),
            "n": self.n,
            "harmful_direction": self.harmful,
        }


@dataclass(frozen=True)
class TrafficDrift:
    """Logged traffic of one model version against its references."""

    model_version: int
    predictions: int
    features: tuple[FeatureDrift, ...]

    def get(self, name: str) -> FeatureDrift | None:
        return next((f for f in self.features if f.feature == name), None)

    def rows(self) -> list[dict[str, Any]]:
        return [feature.row() for feature in self.features]


@dataclass
class _Numeric:
    edges: np.ndarray
    reference_counts: np.ndarray
    reference_mean: float
    reference_sample: np.ndarray
    rng: np.random.Generator
    counts: np.ndarray = field(init=False)
    n: int = 0
    total: float = 0.0
    sample: np.ndarray = field(init=False)
    keys: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)
        self.sample = np.empty(0)
        self.keys = np.empty(0)

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=float)
        values = values[~np.isnan(values)]
        if not len(values):
            return
        self.counts += np.bincount(bin_index(values, self.edges), minlength=len(self.counts))
        self.n += len(values)
        self.total += float(values.sum())
        # Reservoir by random priority: the SAMPLE_SIZE smallest keys form a uniform sample.
        keys = np.concatenate([self.keys, self.rng.random(len(values))])
        sample = np.concatenate([self.sample, values])
        if len(keys) > SAMPLE_SIZE:
            keep = np.argpartition(keys, SAMPLE_SIZE)[:SAMPLE_SIZE]
            keys, sample = keys[keep], sample[keep]
        self.keys, self.sample = keys, sample

    def result(self, name: str) -> FeatureDrift:
        from scipy.stats import ks_2samp

        spec = feature_spec(name)
        if self.n:
            test = ks_2samp(self.sample, self.reference_sample)
            statistic, p_value = float(test.statistic), float(test.pvalue)
        else:
            statistic, p_value = 0.0, 1.0
        edges = [f"{edge:g}" for edge in self.edges]
        labels = (
            [f"≤{edges[0]}"] + [f"{a}–{b}" for a, b in zip(edges, edges[1:], strict=False)]
            if edges
            else []
        ) + ([f">{edges[-1]}"] if edges else ["all"])
        return FeatureDrift(
            feature=name,
            test="KS",
            statistic=statistic,
            p_value=p_value,
            psi=psi(self.reference_counts, self.counts) if self.n else 0.0,
            n=self.n,
            reference_mean=self.reference_mean,
            current_mean=self.total / self.n if self.n else None,
            worse=spec.worse,
            learnable=spec.learnable,
            bins=tuple(labels),
            reference_share=_shares(self.reference_counts),
            current_share=_shares(self.counts),
        )


@dataclass
class _Labels:
    reference: Mapping[str, float]
    counts: dict[str, int] = field(default_factory=dict)

    def update(self, tags: Iterable[object]) -> None:
        values, counts = np.unique(np.asarray(list(tags), dtype=str), return_counts=True)
        for tag, count in zip(values, counts, strict=True):
            self.counts[str(tag)] = self.counts.get(str(tag), 0) + int(count)

    def result(self) -> FeatureDrift:
        from scipy.stats import chisquare

        labels = tuple(sorted(set(self.reference) | set(self.counts)))
        n = sum(self.counts.values())
        current = np.array([self.counts.get(label, 0) for label in labels], dtype=float)
        reference = np.array([self.reference.get(label, 0.0) for label in labels], dtype=float)
        expected = reference + PSEUDO_COUNT / max(n, 1)
        expected = expected / expected.sum() * n
        if n:
            test = chisquare(current, expected)
            statistic, p_value = float(test.statistic), float(test.pvalue)
        else:
            statistic, p_value = 0.0, 1.0
        return FeatureDrift(
            feature=LABEL,
            test="chi2",
            statistic=statistic,
            p_value=p_value,
            # The reference proportions stand for a reference of n rows (the same weight).
            psi=psi(reference * max(n, 1), current) if n else 0.0,
            n=n,
            reference_mean=None,
            current_mean=None,
            worse="either",
            learnable=False,
            bins=labels,
            reference_share=_shares(reference),
            current_share=_shares(current),
        )


def _shares(counts: Sequence[float]) -> tuple[float, ...]:
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    return tuple((counts / total).round(4).tolist()) if total else tuple(0.0 for _ in counts)


class DriftAccumulator:
    """Feed it the log's rows piece by piece (:meth:`update`), then read :meth:`result`."""

    def __init__(self, references: Mapping[str, Any], model_version: int, seed: int = SEED):
        rng = np.random.default_rng(seed)
        self.model_version = model_version
        self.rows = 0
        self.numeric: dict[str, _Numeric] = {}
        for spec in FEATURES:
            reference = references.get("features", {}).get(spec.name)
            if reference is None:  # older references: that feature is not judged
                continue
            self.numeric[spec.name] = _Numeric(
                edges=np.asarray(reference["edges"], dtype=float),
                reference_counts=np.asarray(reference["counts"], dtype=float),
                reference_mean=float(reference["mean"]),
                reference_sample=np.asarray(reference["sample"], dtype=float),
                rng=rng,
            )
        reference_tags = references.get("predicted_distribution") or references.get(
            "label_distribution", {}
        )
        self.labels = _Labels(reference_tags)

    def update(self, rows: Mapping[str, np.ndarray]) -> None:
        self.rows += len(rows[LABEL])
        self.labels.update(rows[LABEL])
        for name, accumulator in self.numeric.items():
            accumulator.update(rows[name])

    def result(self) -> TrafficDrift:
        features = [self.labels.result()]
        features += [acc.result(name) for name, acc in self.numeric.items()]
        return TrafficDrift(self.model_version, self.rows, tuple(features))
