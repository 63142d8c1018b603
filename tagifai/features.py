"""Model features: one cleaned ``text`` and one mapped ``tag`` per project."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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


@dataclass(frozen=True)
class FeatureSet:
    """The offline source Feast reads: which snapshot it came from and how many rows."""

    snapshot_id: str
    path: Path
    rows: int
    changed: bool


def features_path(settings: Settings) -> Path:
    return settings.features_dir / FEATURES_FILE


def current_feature_set(settings: Settings) -> FeatureSet | None:
    """The features on disk, as their manifest describes them."""
    manifest = settings.features_dir / "manifest.json"
    if not manifest.exists():
        return None
    data = json.loads(manifest.read_text())
    return FeatureSet(data["snapshot_id"], features_path(settings), data["rows"], changed=False)


def write_features(settings: Settings, snapshot: Snapshot) -> FeatureSet:
    """Compute the snapshot's features and replace the offline source atomically.

    A no-op when the features on disk already come from this snapshot.
    """
    current = current_feature_set(settings)
    if current is not None and current.snapshot_id == snapshot.id and current.path.exists():
        return current
    labelled = join_labelled(read_parquet(snapshot.projects_path), read_parquet(snapshot.tags_path))
    features = compute_features(labelled)
    target = features_path(settings)
    with files.replacing(target) as tmp:
        features.to_parquet(tmp, index=False)
    manifest = {"snapshot_id": snapshot.id, "rows": len(features)}
    files.write_json(settings.features_dir / "manifest.json", manifest)
    return FeatureSet(snapshot.id, target, len(features), changed=True)
