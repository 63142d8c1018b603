"""Model features: one cleaned ``text`` and one mapped ``tag`` per project, partition by
partition (the snapshot's id ranges), with the sentence embedding of each text while the data
is small enough for the embedding model (:func:`embeds_at`)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from tagifai import files
from tagifai.config import Settings
from tagifai.data import CREATED_ON_FORMAT, clean_text, join_labelled, map_label
from tagifai.extract import Snapshot, read_partition

FEATURE_COLUMNS: tuple[str, ...] = ("id", "created_on", "text", "tag", "feature_created_at")


def build_text(title: pd.Series, description: pd.Series) -> pd.Series:
    """text = clean(title + " " + description)."""
    joined = title.fillna("").astype(str) + " " + description.fillna("").astype(str)
    return joined.map(clean_text)


def to_utc(values: pd.Series) -> pd.Series:
    """Parse ``created_on`` strings (or naive datetimes, taken as UTC) into UTC timestamps."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
    return pd.to_datetime(values, format=CREATED_ON_FORMAT, utc=True)


def compute_features(labelled: pd.DataFrame, computed_at: datetime | None = None) -> pd.DataFrame:
    """Features per project id from the labelled table (id, created_on, title, description, tag).

    ``created_on`` becomes a UTC timestamp (the feature view's event time) and
    ``feature_created_at`` records when this row was computed (Feast's created timestamp).
    """
    computed_at = computed_at or datetime.now(UTC)
    features = pd.DataFrame(
        {
            "id": labelled["id"].astype("int64").to_numpy(),
            "created_on": to_utc(labelled["created_on"]).to_numpy(),
            "text": build_text(labelled["title"], labelled["description"]).to_numpy(),
            "tag": labelled["tag"].map(map_label).to_numpy(),
        }
    )
    features["feature_created_at"] = pd.Timestamp(computed_at).tz_convert("UTC")
    for column in ("created_on", "feature_created_at"):
        features[column] = features[column].astype("datetime64[us, UTC]")
    return features[list(FEATURE_COLUMNS)]


FEATURES_FILE = "features.parquet"
EMBEDDING = "embedding"
TODO_ROWS = 2_000  # texts per embedding task: ~20 s on one thread
PART_FILE = "part-{:05d}.parquet"
# Published features live in versions/<snapshot>/ (one file per snapshot partition);
# features.parquet, the feature store's offline source, is a symlink to the current version,
# swapped atomically. The previous version stays for readers that started before the swap.
VERSIONS_DIR = "versions"


@dataclass(frozen=True)
class FeatureSet:
    """The offline source Feast reads: which snapshot it came from and how many rows."""

    snapshot_id: str
    path: Path
    rows: int
    changed: bool
    # The sentence-embedding model whose vectors the ``embedding`` column holds (None: the
    # column is empty, at sizes where the model does without embeddings).
    embedding_model: str | None = None
    partitions: int = 1

    def part(self, index: int) -> Path:
        """The features of snapshot partition ``index`` (the whole file before partitioning)."""
        return self.path / PART_FILE.format(index) if self.path.is_dir() else self.path


@dataclass(frozen=True)
class FeaturePart:
    """One snapshot partition's features before publication, and its texts still to embed."""

    snapshot_id: str
    index: int
    path: Path
    rows: int
    todo: tuple[Path, ...]
    embedding_model: str | None
    published: bool = False  # the live features already are this snapshot's


def features_path(settings: Settings) -> Path:
    return settings.features_dir / FEATURES_FILE


def feature_schema() -> object:
    """One Arrow schema for every partition file, whatever its values (an empty embedding
    column would otherwise be typed null in one file and list<float> in another)."""
    import pyarrow as pa

    utc = pa.timestamp("us", tz="UTC")
    return pa.schema(
        [
            ("id", pa.int64()),
            ("created_on", utc),
            ("text", pa.string()),
            ("tag", pa.string()),
            ("feature_created_at", utc),
            (EMBEDDING, pa.list_(pa.float32())),
        ]
    )


def current_feature_set(settings: Settings) -> FeatureSet | None:
    """The features on disk, as their manifest describes them."""
    manifest = settings.features_dir / "manifest.json"
    if not manifest.exists():
        return None
    data = json.loads(manifest.read_text())
    return FeatureSet(
        data["snapshot_id"],
        features_path(settings),
        data["rows"],
        changed=False,
        embedding_model=data.get("embedding_model"),
        partitions=data.get("partitions", 1),
    )


def embeds_at(settings: Settings, rows: int) -> bool:
    """Whether features of this many rows carry sentence embeddings: up to
    ``settings.scale_rows``, where ``auto`` picks the embedding model; beyond, the scale model
    (hashing + SGD) does without, and embedding every text would cost hours on a few cores."""
    return rows <= settings.scale_rows


def stage_partition(settings: Settings, snapshot: Snapshot, index: int) -> FeaturePart:
    """Compute one partition's features under ``features/staging/<snapshot>``; vectors of
    texts the live features already embedded (same text, same model) are reused, and the
    rest are cut into pieces of :data:`TODO_ROWS` texts to embed. Nothing to do when the live
    features are this snapshot's."""
    current = current_feature_set(settings)
    if current is not None and current.snapshot_id == snapshot.id and current.path.exists():
        part = current.part(index)
        return FeaturePart(
            snapshot.id, index, part, -1, (), current.embedding_model, published=True
        )
    labelled = join_labelled(
        read_partition(snapshot, "projects", index), read_partition(snapshot, "tags", index)
    )
    features = compute_features(labelled)
    staging = settings.features_dir / "staging" / snapshot.id
    model = None
    todo: list[Path] = []
    # Validated tables have one tag per project: the snapshot's labelled rows are its tags.
    if embeds_at(settings, snapshot.tags_rows):
        from tagifai.embeddings import get_encoder

        model = get_encoder(settings.embedding_model_dir).info.describe()
        known = _known_vectors(current, model, features["text"])
        features[EMBEDDING] = features["text"].map(known)
        missing = features.loc[features[EMBEDDING].isna(), "text"].drop_duplicates()
        for number, start in enumerate(range(0, len(missing), TODO_ROWS)):
            piece = staging / f"part-{index:05d}-todo-{number:04d}.parquet"
            with files.replacing(piece) as tmp:
                missing.iloc[start : start + TODO_ROWS].to_frame().to_parquet(tmp, index=False)
            todo.append(piece)
    else:
        features[EMBEDDING] = None
    path = staging / PART_FILE.format(index)
    _write_features(features, path)
    return FeaturePart(snapshot.id, index, path, len(features), tuple(todo), model)


def _write_features(features: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = feature_schema()
    vectors = features[EMBEDDING].astype(object)
    features = features.assign(**{EMBEDDING: vectors.where(vectors.map(_is_vector), None)})
    table = pa.Table.from_pandas(features, schema=schema, preserve_index=False)  # type: ignore[arg-type]
    with files.replacing(path) as tmp:
        pq.write_table(table, tmp)


def _is_vector(value: object) -> bool:
    return value is not None and hasattr(value, "__len__")


def _known_vectors(
    current: FeatureSet | None, model: str, texts: pd.Series
) -> dict[str, np.ndarray]:
    """Text -> vector from the live features for these texts, when the same model embedded
    them (only the matching rows are read)."""
    if current is None or current.embedding_model != model or not current.path.exists():
        return {}
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    wanted = pc.field("text").isin(texts.dropna().unique().tolist())
    table = ds.dataset(current.path).to_table(columns=["text", EMBEDDING], filter=wanted)
    known = table.to_pandas().dropna()
    return dict(zip(known["text"], known[EMBEDDING], strict=True))


def embed_todo(settings: Settings, todo: Path, threads: int | None = 1) -> Path:
    """Embed one piece of texts; writes ``<todo>.vectors.parquet`` (text, embedding)."""
    from tagifai.embeddings import get_encoder

    texts = pd.read_parquet(todo)["text"]
    vectors = get_encoder(settings.embedding_model_dir, threads).embed(texts.tolist())
    path = todo.with_suffix(".vectors.parquet")
    with files.replacing(path) as tmp:
        pd.DataFrame({"text": texts, EMBEDDING: list(vectors)}).to_parquet(tmp, index=False)
    return path


def publish_features(
    settings: Settings, parts: Sequence[FeaturePart], vectors: Sequence[Path] = ()
) -> FeatureSet:
    """Fill in the new vectors, one partition at a time, and make the partitions the offline
    source: written as a new version, then switched to in one atomic rename."""
    current = current_feature_set(settings)
    if all(part.published for part in parts) and current is not None:
        return current
    (snapshot_id,) = {part.snapshot_id for part in parts}
    (model,) = {part.embedding_model for part in parts}
    if current is not None and current.snapshot_id == snapshot_id:
        return current  # published meanwhile (a retried task): never rewrite the live version
    version = settings.features_dir / VERSIONS_DIR / snapshot_id
    shutil.rmtree(version, ignore_errors=True)
    version.mkdir(parents=True)
    rows = 0
    for part in sorted(parts, key=lambda p: p.index):
        features = pd.read_parquet(part.path)
        mine = [v for v in vectors if v.name.startswith(f"part-{part.index:05d}-todo-")]
        if mine:
            fresh = pd.concat([pd.read_parquet(path) for path in mine], ignore_index=True)
            new = dict(zip(fresh["text"], fresh[EMBEDDING], strict=True))
            features[EMBEDDING] = [
                new.get(text) if vector is None or not hasattr(vector, "__len__") else vector
                for text, vector in zip(features["text"], features[EMBEDDING], strict=True)
            ]
        if model is not None and features[EMBEDDING].isna().any():
            raise ValueError(f"{int(features[EMBEDDING].isna().sum())} texts have no embedding")
        _write_features(features, version / PART_FILE.format(part.index))
        rows += len(features)
    _switch_to(settings, version)
    manifest = {
        "snapshot_id": snapshot_id,
        "rows": rows,
        "embedding_model": model,
        "partitions": len(parts),
    }
    files.write_json(settings.features_dir / "manifest.json", manifest)
    shutil.rmtree(settings.features_dir / "staging" / snapshot_id, ignore_errors=True)
    _drop_old_versions(settings, keep={snapshot_id, current.snapshot_id if current else ""})
    return FeatureSet(
        snapshot_id,
        features_path(settings),
        rows,
        changed=True,
        embedding_model=model,
        partitions=len(parts),
    )


def _switch_to(settings: Settings, version: Path) -> None:
    """Point ``features.parquet`` at ``version`` with one rename (readers see old or new)."""
    link = features_path(settings)
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}.tmp")
    os.symlink(version.relative_to(link.parent), tmp)
    try:
        os.replace(tmp, link)
    finally:
        tmp.unlink(missing_ok=True)


def _drop_old_versions(settings: Settings, keep: set[str]) -> None:
    versions = settings.features_dir / VERSIONS_DIR
    for folder in versions.iterdir() if versions.exists() else ():
        if folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def write_features(settings: Settings, snapshot: Snapshot) -> FeatureSet:
    """Compute, embed (in this process) and publish a snapshot's features, partition by
    partition, in one call."""
    parts = [stage_partition(settings, snapshot, i) for i in range(snapshot.partitions)]
    vectors = [embed_todo(settings, todo, None) for part in parts for todo in part.todo]
    return publish_features(settings, parts, vectors)
