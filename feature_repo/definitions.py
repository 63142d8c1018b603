"""Feast definitions for tagifai: one entity (a project) and one feature view (text, its
sentence embedding, tag).

Declarations only: nothing is read, computed or timed when this module is imported.
``tagifai.store`` loads this file by path and applies every Feast object it defines.
"""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float32, Int64, String

# Relative to the store's repo_path, i.e. the stores directory (see feature_store.yaml):
# the Parquet file that tagifai's feature step writes to ``settings.features_dir``.
FEATURES_PATH = "features/features.parquet"

# A project's title, description and tag do not go stale: a feature row becomes valid at the
# project's ``created_on`` (so nothing is visible before the project existed) and stays valid
# for ten years. Feast needs a TTL for point-in-time joins; ten years covers every entity
# timestamp this data set will be asked about (2020 projects up to 2030) while staying a
# fixed, explicit bound. A longer gap drops the row and tagifai.store reports it.
FEATURE_TTL = timedelta(days=3650)

project = Entity(
    name="project",
    join_keys=["id"],
    value_type=ValueType.INT64,
    description="A machine-learning project posted on Made With ML.",
)

project_source = FileSource(
    name="project_features_source",
    path=FEATURES_PATH,
    timestamp_field="created_on",
    created_timestamp_column="feature_created_at",
    description="Cleaned text, its embedding and the tag per project (tagifai's feature step).",
)

project_features = FeatureView(
    name="project_features",
    entities=[project],
    ttl=FEATURE_TTL,
    schema=[
        Field(name="id", dtype=Int64),
        Field(name="text", dtype=String),
        # all-MiniLM-L6-v2 of the text (384 floats, unit length), computed once per text by
        # the DataOps embedding step; empty at sizes where the model does without it.
        Field(name="embedding", dtype=Array(Float32)),
        Field(name="tag", dtype=String),
    ],
    source=project_source,
    online=True,
    description="Model inputs (text, embedding) and label (tag) per project.",
)
