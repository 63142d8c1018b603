"""Training frames read one partition at a time, for data past ``settings.scale_rows`` rows.

A training frame is a Parquet dataset: ``stores/training/<snapshot>.parquet/`` holds one file
per snapshot partition (a single file for frames built straight from the sources). Up to
``scale_rows`` rows the MLOps steps load it whole and split it as :func:`tagifai.data.split_data`
does. Past that they never hold it: each row's split (train, val or test) follows from a hash
of its id and the seed, so every worker assigns it alike without a pass over the data;
tuning, cross-validation, evaluation and monitoring take stratified samples of a split, and the
incremental model learns from every train+val row, partition by partition
(:func:`tagifai.train.fit_incremental`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tagifai.config import SEED
from tagifai.data import sample_rows

TEST_SIZE = 0.15
VAL_SIZE = 0.15
TRAIN_VAL: tuple[str, ...] = ("train", "val")
TEST: tuple[str, ...] = ("test",)
# Share of a split read into a sample before the exact stratified cut: Bernoulli sampling by
# hash gives about the wanted rows, this margin makes "at least" near-certain.
_OVERSAMPLE = 1.2


def frame_parts(path: Path) -> list[Path]:
    """The Parquet files of a training frame, in partition order."""
    return sorted(path.glob("*.parquet")) if path.is_dir() else [path]


def frame_rows(path: Path) -> int:
    """Rows of a training frame, from its Parquet footers."""
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(part).metadata.num_rows for part in frame_parts(path))


_SPLIT, _SAMPLE = 1, 2  # independent draws from one id
SHARES: dict[str, float] = {"train": 1 - TEST_SIZE - VAL_SIZE, "val": VAL_SIZE, "test": TEST_SIZE}


def _uniform(ids: pd.Series, seed: int, draw: int) -> np.ndarray:
    """A number in [0, 1) per id, fixed by the id, the seed and ``draw``."""
    keyed = pd.DataFrame({"id": ids.astype("int64").to_numpy(), "seed": seed, "draw": draw})
    hashes = pd.util.hash_pandas_object(keyed, index=False).to_numpy(dtype=np.uint64)
    return (hashes >> np.uint64(11)) / float(2**53)


def split_of(ids: pd.Series, seed: int = SEED) -> np.ndarray:
    """``test`` for 15% of ids, ``val`` for 15%, ``train`` for the rest, by hash."""
    u = _uniform(ids, seed, _SPLIT)
    return np.where(u < TEST_SIZE, "test", np.where(u < TEST_SIZE + VAL_SIZE, "val", "train"))


def iter_split(
    path: Path, splits: Sequence[str], seed: int = SEED, columns: list[str] | None = None
) -> Iterator[pd.DataFrame]:
    """The rows of ``splits``, one partition at a time."""
    for part in frame_parts(path):
        yield read_split(part, splits, seed, columns)


def read_split(
    part: Path, splits: Sequence[str], seed: int = SEED, columns: list[str] | None = None
) -> pd.DataFrame:
    """The rows of ``splits`` in one partition file of a frame."""
    frame = pd.read_parquet(part, columns=columns)
    return frame[np.isin(split_of(frame["id"], seed), splits)].reset_index(drop=True)


def sample_split(
    path: Path, splits: Sequence[str], n: int, seed: int = SEED, rows: int | None = None
) -> pd.DataFrame:
    """At most ``n`` rows of ``splits``, stratified by tag and fixed by the seed; memory
    holds about ``n`` rows, never the frame.

    Args:
        rows: the frame's rows, if known (saves reading the footers).
    """
    expected = sum(SHARES[s] for s in splits) * (rows if rows is not None else frame_rows(path))
    rate = min(1.0, _OVERSAMPLE * n / expected) if expected else 1.0
    pieces = []
    for frame in iter_split(path, splits, seed):
        pieces.append(frame[_uniform(frame["id"], seed, _SAMPLE) < rate])
    sample = pd.concat(pieces, ignore_index=True).sort_values("id", kind="stable")
    return sample_rows(sample.reset_index(drop=True), n, seed)
