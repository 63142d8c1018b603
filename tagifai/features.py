"""Model features: one cleaned ``text`` and one mapped ``tag`` per project."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from tagifai import files
from tagifai.config import Settings
from tagifai.data import CREATED_ON_FORMAT, clean_text, join_labelled, map_label
from tagifai.extract import Snapshot, read_parquet

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


@dataclass(frozen=True)
class StagedFeatures:
    """A snapshot's features before publication, and the texts still to embed."""

    snapshot_id: str
    path: Path
    rows: int
    todo: tuple[Path, ...]
    embedding_model: str | None
    published: FeatureSet | None = None  # the live features already are this snapshot's


def features_path(settings: Settings) -> Path:
    return settings.features_dir / FEATURES_FILE


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
    )


def embeds_at(settings: Settings, rows: int) -> bool:
    """Whether features of this many rows carry sentence embeddings: up to
    ``settings.scale_rows``, where ``auto`` picks the embedding model; beyond, the scale model
    (hashing + SGD) does without, and embedding every text would cost hours on a few cores."""
    return rows <= settings.scale_rows


def stage_features(settings: Settings, snapshot: Snapshot) -> StagedFeatures:
    """Compute the snapshot's features under ``features/staging``; vectors of texts the live
    features already embedded (same text, same model) are reused, and the rest are cut into
    partitions to embed. Nothing to do when the live features are this snapshot's."""
    from tagifai.embeddings import get_encoder

    current = current_feature_set(settings)
    if current is not None and current.snapshot_id == snapshot.id and current.path.exists():
        return StagedFeatures(
            snapshot.id, current.path, current.rows, (), current.embedding_model, current
        )
    labelled = join_labelled(read_parquet(snapshot.projects_path), read_parquet(snapshot.tags_path))
    features = compute_features(labelled)
    staging = settings.features_dir / "staging" / snapshot.id
    model = None
    todo: list[Path] = []
    if embeds_at(settings, len(features)):
        model = get_encoder(settings.embedding_model_dir).info.describe()
        known = _known_vectors(current, model)
        features[EMBEDDING] = features["text"].map(known)
        missing = features.loc[features[EMBEDDING].isna(), "text"].drop_duplicates()
        for number, start in enumerate(range(0, len(missing), TODO_ROWS)):
            part = staging / f"todo-{number:04d}.parquet"
            with files.replacing(part) as tmp:
                missing.iloc[start : start + TODO_ROWS].to_frame().to_parquet(tmp, index=False)
            todo.append(part)
    else:
        features[EMBEDDING] = None
    path = staging / FEATURES_FILE
    with files.replacing(path) as tmp:
        features.to_parquet(tmp, index=False)
    return StagedFeatures(snapshot.id, path, len(features), tuple(todo), model)


def _known_vectors(current: FeatureSet | None, model: str) -> dict[str, np.ndarray]:
    """Text -> vector from the live features, when the same model embedded them."""
    if current is None or current.embedding_model != model or not current.path.exists():
        return {}
    known = pd.read_parquet(current.path, columns=["text", EMBEDDING]).dropna()
    return dict(zip(known["text"], known[EMBEDDING], strict=True))


def embed_todo(settings: Settings, todo: Path, threads: int | None = 1) -> Path:
    """Embed one partition of texts; writes ``<todo>.vectors.parquet`` (text, embedding)."""
    from tagifai.embeddings import get_encoder

    texts = pd.read_parquet(todo)["text"]
    vectors = get_encoder(settings.embedding_model_dir, threads).embed(texts.tolist())
    path = todo.with_suffix(".vectors.parquet")
    with files.replacing(path) as tmp:
        pd.DataFrame({"text": texts, EMBEDDING: list(vectors)}).to_parquet(tmp, index=False)
    return path


def publish_features(
    settings: Settings, staged: StagedFeatures, vectors: Sequence[Path] = ()
) -> FeatureSet:
    """Fill in the new vectors and make the staged features the offline source (atomically)."""
    if staged.published is not None:
        return staged.published
    features = pd.read_parquet(staged.path)
    if vectors:
        fresh = pd.concat([pd.read_parquet(path) for path in vectors], ignore_index=True)
        new = dict(zip(fresh["text"], fresh[EMBEDDING], strict=True))
        features[EMBEDDING] = [
            new.get(text) if vector is None or not hasattr(vector, "__len__") else vector
            for text, vector in zip(features["text"], features[EMBEDDING], strict=True)
        ]
    if staged.embedding_model is not None and features[EMBEDDING].isna().any():
        raise ValueError(f"{int(features[EMBEDDING].isna().sum())} texts have no embedding")
    target = features_path(settings)
    with files.replacing(target) as tmp:
        features.to_parquet(tmp, index=False)
    manifest = {
        "snapshot_id": staged.snapshot_id,
        "rows": len(features),
        "embedding_model": staged.embedding_model,
    }
    files.write_json(settings.features_dir / "manifest.json", manifest)
    shutil.rmtree(staged.path.parent, ignore_errors=True)
    return FeatureSet(
        staged.snapshot_id,
        target,
        len(features),
        changed=True,
        embedding_model=staged.embedding_model,
    )


def write_features(settings: Settings, snapshot: Snapshot) -> FeatureSet:
    """Compute, embed (in this process) and publish a snapshot's features in one call."""
    staged = stage_features(settings, snapshot)
    return publish_features(settings, staged, [embed_todo(settings, t, None) for t in staged.todo])
