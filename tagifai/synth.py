"""Synthetic ``projects`` and ``tags`` tables that look like the shipped ones, at any size.

Each synthetic project resamples a real project of a tag drawn with the real label mix, then
perturbs its title and description word by word: a few words are dropped, swapped with their
neighbour, or replaced by (or joined by) content words from other projects with the same tag.
Ids run 1..N, ``created_on`` strictly increases from 2020-02-20 and (title, description)
pairs are unique, so the output passes the same Great Expectations suites as the real data.

Everything is vectorised over chunks of :data:`CHUNK_ROWS` rows, each drawn from its own
seeded generator, so a million rows take seconds, memory stays bounded by one chunk, and the
same seed always gives byte-identical files.

The tables are for measuring speed and memory, not model quality: every synthetic project is
a near-copy of one of 764 real ones, so the train, validation and test splits share near
duplicates and models score a weighted F1 close to 1.0 on them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from tagifai import files
from tagifai.config import SHIPPED_DATA_DIR
from tagifai.data import PROJECT_COLUMNS, TAG_COLUMNS

logger = logging.getLogger(__name__)

SynthFormat = Literal["csv", "parquet"]

# Rows per chunk: bounds memory (~200 MB of intermediates). Each chunk has its own generator,
# seeded from (seed, chunk index), so changing this changes the output for N > CHUNK_ROWS.
CHUNK_ROWS = 100_000
FIRST_CREATED_ON = datetime(2020, 2, 20)
LAST_CREATED_ON = datetime(2025, 12, 31, 23, 59, 59)
# Mean seconds between two projects: the span grows with N (10k rows cover ~10 weeks) until
# it would pass LAST_CREATED_ON, then the gaps shrink to fit.
MEAN_GAP_SECONDS = 600
_BUDGET_SECONDS = int((LAST_CREATED_ON - FIRST_CREATED_ON).total_seconds())

# Words worth swapping for another project's: alphabetic, four characters or more, not glue.
_CONTENT_WORD = re.compile(r"^[A-Za-z][A-Za-z0-9\-]{3,}$")
_STOPWORD_TEXT = """
    about above after again against also among another because been before being below
    between both but could does doing down during each from further have having here into
    itself just more most much only other over same should some such than that their them
    then there these they this those through under until very were what when where which
    while with within without would your yours using used uses many well like make makes
"""
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


@dataclass(frozen=True)
class Noise:
    """Per-word probabilities of each perturbation of one text column."""

    insert: float  # a content word gains a same-tag content word after it
    replace: float  # a content word becomes a same-tag content word
    drop: float  # a word (never a row's first) disappears
    swap: float  # a word moves after its neighbour
    at_least_one: bool  # every row gets at least one replacement when it has a content word


TITLE_NOISE = Noise(insert=0.04, replace=0.15, drop=0.0, swap=0.0, at_least_one=False)
DESCRIPTION_NOISE = Noise(insert=0.06, replace=0.12, drop=0.05, swap=0.04, at_least_one=True)


@dataclass(frozen=True)
class SynthResult:
    """Where the synthetic tables went, how many rows and how long it took."""

    projects_path: Path
    tags_path: Path
    rows: int
    seconds: float


@dataclass(frozen=True)
class _Corpus:
    """One text column of the real projects as token ids, with same-tag content-word pools."""

    tokens: np.ndarray  # flat token ids of every real row, row after row
    starts: np.ndarray  # first token of each real row
    lengths: np.ndarray  # tokens per real row (all >= 1)
    is_content: np.ndarray  # per vocabulary id
    pool: np.ndarray  # content token ids grouped by tag (with repetition: real frequencies)
    pool_starts: np.ndarray  # per tag code
    pool_lengths: np.ndarray  # per tag code
    pieces: np.ndarray  # word + " " for ids < V, word + "\n" for ids >= V (row ends)


@dataclass(frozen=True)
class _Source:
    """The real data the synthetic rows are drawn from."""

    labels: tuple[str, ...]  # raw tags, sorted
    probabilities: np.ndarray  # per label: its share of the real projects
    members: np.ndarray  # real row positions grouped by label
    member_starts: np.ndarray
    member_lengths: np.ndarray
    title: _Corpus
    description: _Corpus


def synthesize(
    n_rows: int, seed: int = 42, *, data_dir: Path = SHIPPED_DATA_DIR
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``projects`` (id, created_on, title, description) and ``tags`` (id, tag) of N rows.

    Args:
        n_rows: Rows of each table (ids 1..N).
        seed: Same seed, same tables.
        data_dir: Folder with the real ``projects.csv`` and ``tags.csv`` (default: the
            shipped ``data/raw``).

    Raises:
        ValueError: ``n_rows`` is below 1 or above what fits one per second until 2025.
    """
    chunks = list(_iter_chunks(n_rows, seed, _load_source(data_dir)))
    projects = pd.concat([p for p, _ in chunks], ignore_index=True)
    tags = pd.concat([t for _, t in chunks], ignore_index=True)
    # The dtypes tagifai.extract.read_table gives the real tables.
    return (
        projects.astype({"created_on": "string", "title": "string", "description": "string"}),
        tags.astype({"tag": "string"}),
    )


def write_synthetic(
    n_rows: int,
    out_dir: Path,
    seed: int = 42,
    *,
    fmt: SynthFormat = "csv",
    data_dir: Path = SHIPPED_DATA_DIR,
) -> SynthResult:
    """Write ``projects.<fmt>`` and ``tags.<fmt>`` of N synthetic rows under ``out_dir``.

    Chunks are generated and appended one at a time, so memory stays bounded for any N.
    Files appear under their final names only when complete.

    Raises:
        ValueError: bad ``n_rows`` or ``fmt``.
        NotADirectoryError: ``out_dir`` exists and is not a directory.
    """
    started = time.perf_counter()
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown format {fmt!r}: use csv or parquet")
    _check_rows(n_rows)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output is not a directory: {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    source = _load_source(data_dir)
    projects_path, tags_path = out_dir / f"projects.{fmt}", out_dir / f"tags.{fmt}"
    writer = _write_parquet if fmt == "parquet" else _write_csv
    with files.replacing(projects_path) as projects_tmp, files.replacing(tags_path) as tags_tmp:
        writer(_iter_chunks(n_rows, seed, source), projects_tmp, tags_tmp)
    result = SynthResult(projects_path, tags_path, n_rows, time.perf_counter() - started)
    logger.info("Wrote %d synthetic rows to %s in %.2f s", n_rows, out_dir, result.seconds)
    return result


def _check_rows(n_rows: int) -> None:
    if n_rows < 1:
        raise ValueError(f"rows must be at least 1, got {n_rows}")
    if n_rows > _BUDGET_SECONDS:
        raise ValueError(f"rows must be at most {_BUDGET_SECONDS} (one per second until 2026)")


def _write_csv(
    chunks: Iterator[tuple[pd.DataFrame, pd.DataFrame]], projects: Path, tags: Path
) -> None:
    with (
        projects.open("w", encoding="utf-8", newline="") as p,
        tags.open("w", encoding="utf-8", newline="") as t,
    ):
        for index, (projects_chunk, tags_chunk) in enumerate(chunks):
            projects_chunk.to_csv(p, index=False, header=index == 0, lineterminator="\n")
            tags_chunk.to_csv(t, index=False, header=index == 0, lineterminator="\n")


def _write_parquet(
    chunks: Iterator[tuple[pd.DataFrame, pd.DataFrame]], projects: Path, tags: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writers: list[pq.ParquetWriter] = []
    try:
        for projects_chunk, tags_chunk in chunks:
            tables = [
                pa.Table.from_pandas(frame, preserve_index=False)
                for frame in (projects_chunk, tags_chunk)
            ]
            if not writers:
                writers = [
                    pq.ParquetWriter(path, table.schema)
                    for path, table in zip((projects, tags), tables, strict=True)
                ]
            for writer, table in zip(writers, tables, strict=True):
                writer.write_table(table)
    finally:
        for writer in writers:
            writer.close()


def _iter_chunks(
    n_rows: int, seed: int, source: _Source
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """(projects, tags) frames of at most CHUNK_ROWS rows each, in id order."""
    _check_rows(n_rows)
    # Spread the rows evenly under the budget if N * MEAN_GAP would overshoot it. The clamp
    # below (row i at most budget - (N - i) seconds) keeps every row inside the budget
    # whatever the random gaps add up to, and keeps the timestamps strictly increasing.
    mean_gap = min(float(MEAN_GAP_SECONDS), 0.9 * _BUDGET_SECONDS / n_rows)
    seen = np.empty(0, dtype=np.uint64)
    elapsed = 0
    for index, first_id in enumerate(range(1, n_rows + 1, CHUNK_ROWS)):
        rng = np.random.default_rng([seed, index])
        ids = np.arange(first_id, min(first_id + CHUNK_ROWS, n_rows + 1), dtype=np.int64)
        tag_codes = rng.choice(len(source.labels), size=len(ids), p=source.probabilities)
        picks = (rng.random(len(ids)) * source.member_lengths[tag_codes]).astype(np.int64)
        base = source.members[source.member_starts[tag_codes] + picks]
        titles = _perturb(source.title, base, tag_codes, rng, TITLE_NOISE)
        descriptions = _perturb(source.description, base, tag_codes, rng, DESCRIPTION_NOISE)
        gaps = 1 + np.floor(rng.exponential(max(mean_gap - 1.0, 0.0), len(ids))).astype(np.int64)
        seconds = elapsed + np.cumsum(gaps)
        elapsed = int(seconds[-1])
        seen = _make_unique(titles, descriptions, ids, seen)
        projects = pd.DataFrame(
            {
                "id": ids,
                "created_on": _created_on(np.minimum(seconds, _BUDGET_SECONDS - (n_rows - ids))),
                "title": titles,
                "description": descriptions,
            }
        )
        tags = pd.DataFrame({"id": ids, "tag": np.asarray(source.labels, dtype=object)[tag_codes]})
        yield projects[list(PROJECT_COLUMNS)], tags[list(TAG_COLUMNS)]


def _created_on(seconds: np.ndarray) -> np.ndarray:
    """Seconds after FIRST_CREATED_ON as ``%Y-%m-%d %H:%M:%S`` strings."""
    stamps = np.datetime64(FIRST_CREATED_ON, "s") + seconds.astype("timedelta64[s]")
    iso = np.datetime_as_string(stamps, unit="s")  # 2020-02-20T06:43:18
    return np.char.replace(iso, "T", " ").astype(object)


def _make_unique(
    titles: np.ndarray, descriptions: np.ndarray, ids: np.ndarray, seen: np.ndarray
) -> np.ndarray:
    """Suffix the title of any (title, description) pair met before with `` #<id>``, in place.

    Returns the hashes of every pair so far (sorted), for the next chunk.
    """
    while True:
        pairs = pd.DataFrame({"title": titles, "description": descriptions}, copy=False)
        hashes = pd.util.hash_pandas_object(pairs, index=False, categorize=False).to_numpy()
        slots = np.minimum(np.searchsorted(seen, hashes), max(len(seen) - 1, 0))
        met = seen[slots] == hashes if len(seen) else np.zeros(len(hashes), dtype=bool)
        repeated = pd.Series(hashes).duplicated().to_numpy() | met
        if not repeated.any():
            return np.sort(np.concatenate([seen, hashes]))
        titles[repeated] = titles[repeated] + np.char.add(" #", ids[repeated].astype(str))


def _perturb(
    corpus: _Corpus, base: np.ndarray, tag_codes: np.ndarray, rng: np.random.Generator, noise: Noise
) -> np.ndarray:
    """The real texts of rows ``base``, perturbed word by word; an object array of str."""
    n = len(base)
    lengths = corpus.lengths[base]
    row = np.repeat(np.arange(n), lengths)
    position = np.arange(len(row)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    tokens = corpus.tokens[np.repeat(corpus.starts[base], lengths) + position]

    # Insert: a content word is doubled and the copy is replaced below.
    inserted = corpus.is_content[tokens] & (rng.random(len(tokens)) < noise.insert)
    repeats = 1 + inserted.astype(np.int64)
    tokens, row, position = (np.repeat(a, repeats) for a in (tokens, row, position))
    replace = np.zeros(len(tokens), dtype=bool)
    replace[(np.cumsum(repeats) - 1)[inserted]] = True

    content = corpus.is_content[tokens]
    replace |= content & (rng.random(len(tokens)) < noise.replace)
    if noise.at_least_one:
        draw = np.where(content, rng.random(len(tokens)), 2.0)
        replace |= content & (draw == np.minimum.reduceat(draw, _row_starts(row))[row])
    tags = tag_codes[row[replace]]
    available = corpus.pool_lengths[tags] > 0
    picks = corpus.pool_starts[tags] + (rng.random(len(tags)) * corpus.pool_lengths[tags]).astype(
        np.int64
    )
    picks = np.minimum(picks, max(len(corpus.pool) - 1, 0))
    if len(corpus.pool):
        tokens[replace] = np.where(available, corpus.pool[picks], tokens[replace])

    # Drop: never a row's first word, so no text ends up empty.
    keep = (position == 0) | (rng.random(len(tokens)) >= noise.drop)
    tokens, row = tokens[keep], row[keep]
    # Swap: a word's sort key jumps past its neighbour's.
    key = _positions(row) + 1.5 * (rng.random(len(tokens)) < noise.swap)
    order = np.lexsort((key, row))
    tokens, row = tokens[order], row[order]

    # Join all rows in one C-level pass: the last word of a row carries "\n" instead of " ".
    last = np.r_[row[1:] != row[:-1], True]
    vocabulary_size = len(corpus.pieces) // 2
    text = "".join(corpus.pieces[tokens + vocabulary_size * last].tolist())
    return np.array(text.split("\n")[:-1], dtype=object)


def _row_starts(row: np.ndarray) -> np.ndarray:
    """Index of each row's first token in a flat, row-sorted token array (rows non-empty)."""
    return np.flatnonzero(np.r_[True, row[1:] != row[:-1]])


def _positions(row: np.ndarray) -> np.ndarray:
    """Each token's position within its row."""
    starts = _row_starts(row)
    return np.arange(len(row)) - np.repeat(starts, np.diff(np.r_[starts, len(row)]))


def _load_source(data_dir: Path) -> _Source:
    """Real projects joined to their tags, tokenised per column."""
    from tagifai.data import join_labelled
    from tagifai.extract import read_table

    labelled = join_labelled(
        read_table(str(Path(data_dir) / "projects.csv"), "projects"),
        read_table(str(Path(data_dir) / "tags.csv"), "tags"),
    )
    codes, labels = pd.factorize(labelled["tag"].astype(str), sort=True)
    counts = np.bincount(codes, minlength=len(labels))
    members = np.argsort(codes, kind="stable").astype(np.int64)
    return _Source(
        labels=tuple(str(label) for label in labels),
        probabilities=counts / counts.sum(),
        members=members,
        member_starts=np.cumsum(counts) - counts,
        member_lengths=counts,
        title=_tokenise(labelled["title"], codes, len(labels)),
        description=_tokenise(labelled["description"], codes, len(labels)),
    )


def _tokenise(texts: pd.Series, tag_codes: np.ndarray, n_tags: int) -> _Corpus:
    words = texts.fillna("").astype(str).str.split()
    lengths = words.str.len().to_numpy(dtype=np.int64)
    if (lengths == 0).any():
        raise ValueError(f"{texts.name} is blank in {int((lengths == 0).sum())} real row(s)")
    tokens, vocabulary = pd.factorize(pd.Series([w for row in words for w in row], dtype=object))
    is_content = np.array(
        [bool(_CONTENT_WORD.match(w)) and w.lower() not in _STOPWORDS for w in vocabulary]
    )
    token_tags = np.repeat(tag_codes, lengths)
    content_tokens = is_content[tokens]
    pool_lengths = np.bincount(token_tags[content_tokens], minlength=n_tags)
    order = np.argsort(token_tags[content_tokens], kind="stable")
    words_list = [str(w) for w in vocabulary]
    return _Corpus(
        tokens=tokens.astype(np.int64),
        starts=np.cumsum(lengths) - lengths,
        lengths=lengths,
        is_content=is_content,
        pool=tokens[content_tokens][order].astype(np.int64),
        pool_starts=np.cumsum(pool_lengths) - pool_lengths,
        pool_lengths=pool_lengths,
        pieces=np.array(
            [w + " " for w in words_list] + [w + "\n" for w in words_list], dtype=object
        ),
    )
