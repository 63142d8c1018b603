"""Load and join the two warehouse tables, clean text, map labels, split.

Pure pandas: reading a URI and writing snapshots lives in :mod:`tagifai.extract`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

from tagifai.config import LABELS, OTHER_LABEL, SEED

PROJECT_COLUMNS: tuple[str, ...] = ("id", "created_on", "title", "description")
TAG_COLUMNS: tuple[str, ...] = ("id", "tag")
CREATED_ON_FORMAT = "%Y-%m-%d %H:%M:%S"

_URL = re.compile(r"https?://\S+|www\.\S+")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def clean_text(text: str | None) -> str:
    """Lower-case, drop URLs and punctuation, squeeze whitespace."""
    if text is None or (isinstance(text, float) and pd.isna(text)):
        return ""
    text = _URL.sub(" ", str(text).lower())
    return _NON_ALNUM.sub(" ", text).strip()


def map_label(raw_tag: str) -> str:
    """Map a raw tag into the label space; every other (or unseen) tag is ``other``."""
    tag = str(raw_tag).strip().lower()
    return tag if tag in LABELS and tag != OTHER_LABEL else OTHER_LABEL


def join_labelled(projects: pd.DataFrame, tags: pd.DataFrame) -> pd.DataFrame:
    """Projects that have a tag, with the raw tag: id, created_on, title, description, tag.

    For validated tables (one tag per project); :func:`tags_with_projects` is the join the
    ``labelled`` suite checks before that holds.
    """
    labelled = projects.merge(tags[list(TAG_COLUMNS)], on="id", how="inner", validate="1:1")
    return labelled.sort_values("id", kind="stable").reset_index(drop=True)


def tags_with_projects(projects: pd.DataFrame, tags: pd.DataFrame) -> pd.DataFrame:
    """Every tag row left-joined to its project on id: id, tag, created_on, title, description.

    A tag whose id has no project keeps its row with the project's columns empty, so the
    ``labelled`` expectation suite can report it.
    """
    return tags.merge(projects, on="id", how="left", sort=False)


@dataclass(frozen=True)
class Split:
    """Disjoint, stratified train/val/test frames (each with ``text`` and ``tag``)."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame

    @property
    def train_val(self) -> pd.DataFrame:
        return pd.concat([self.train, self.val], ignore_index=True)


def split_data(
    df: pd.DataFrame,
    *,
    test_size: float = 0.15,
    val_size: float = 0.15,
    seed: int = SEED,
    label: str = "tag",
) -> Split:
    """Stratified train/val/test split, deterministic for a seed and for row order.

    Rows are ordered by ``id`` first, so the same data in any order gives the same split.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1 or not 0 < val_size < 1 or test_size + val_size >= 1:
        raise ValueError("test_size and val_size must be in (0, 1) and sum to less than 1")
    ordered = df.sort_values("id", kind="stable").reset_index(drop=True)
    train_val, test = train_test_split(
        ordered, test_size=test_size, stratify=ordered[label], random_state=seed
    )
    val_fraction = val_size / (1 - test_size)
    train, val = train_test_split(
        train_val, test_size=val_fraction, stratify=train_val[label], random_state=seed
    )
    return Split(
        train=train.reset_index(drop=True),
        val=val.reset_index(drop=True),
        test=test.reset_index(drop=True),
    )


def sample_rows(df: pd.DataFrame, n: int, seed: int = SEED, label: str = "tag") -> pd.DataFrame:
    """At most ``n`` rows, stratified by ``label`` and deterministic (all rows if fewer)."""
    if len(df) <= n:
        return df
    from sklearn.model_selection import train_test_split

    sample, _ = train_test_split(df, train_size=n, stratify=df[label], random_state=seed)
    return sample.reset_index(drop=True)
