"""Feast feature store on the 764 raw projects: apply, materialise, online and historical reads.

One module-scoped store (Feast import, apply and materialisation are shared); the tests that
write to it re-materialise the same source, which must leave the same 764 rows.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tagifai import store
from tagifai.config import REPO_ROOT, Settings, get_settings
from tagifai.errors import FeatureStoreError

N_PROJECTS = 764
KNOWN_ID = 6  # first project: "Comparison between YOLO and RCNN on real world videos"
FEATURE_REPO = REPO_ROOT / "feature_repo"


def feast_store(settings: Settings):
    """Feast's own store over the same configuration and state, for what tagifai does not wrap."""
    from feast import FeatureStore

    return FeatureStore(
        repo_path=str(settings.stores_dir), fs_yaml_file=FEATURE_REPO / "feature_store.yaml"
    )


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(directory.rglob("*"))
    }


def unit_vectors(n: int, dimension: int = 384) -> np.ndarray:
    """Stand-ins for sentence embeddings: what the store keeps is any float32 vector."""
    vectors = np.random.default_rng(0).normal(size=(n, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_source(settings: Settings) -> pd.DataFrame:
    """The offline source as the feature step writes it, from the raw CSVs."""
    projects = pd.read_csv(settings.projects_csv)
    tags = pd.read_csv(settings.tags_csv)
    labelled = projects.merge(tags, on="id")
    features = pd.DataFrame(
        {
            "id": labelled["id"].astype("int64"),
            "text": (labelled["title"] + " " + labelled["description"]).str.lower(),
            "embedding": list(unit_vectors(len(labelled))),
            "tag": labelled["tag"],
            "created_on": pd.to_datetime(labelled["created_on"], utc=True),
            "feature_created_at": pd.Timestamp("2024-01-01", tz="UTC"),
        }
    )
    for column in ("created_on", "feature_created_at"):
        features[column] = features[column].astype("datetime64[us, UTC]")
    settings.features_dir.mkdir(parents=True, exist_ok=True)
    features.to_parquet(settings.features_dir / "features.parquet", index=False)
    return features


@pytest.fixture(scope="module")
def repo_before() -> dict[str, tuple[int, int]]:
    return snapshot(FEATURE_REPO)


@pytest.fixture(scope="module")
def materialized(
    tmp_path_factory: pytest.TempPathFactory, repo_before: dict[str, tuple[int, int]]
) -> tuple[Settings, pd.DataFrame, store.MaterializeReport]:
    settings = get_settings({"TAGIFAI_STORES_DIR": str(tmp_path_factory.mktemp("stores"))})
    # The environment may set PYTHONDONTWRITEBYTECODE; allow bytecode while the definitions
    # load so that the feature-repo check below would see a stray __pycache__.
    store._load_definitions.cache_clear()
    dont_write_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    try:
        store.apply_definitions(settings)  # before the source exists: apply must not read it
    finally:
        sys.dont_write_bytecode = dont_write_bytecode
    source = write_source(settings)
    report = store.materialize_features(settings, expected_rows=N_PROJECTS)
    return settings, source, report


def test_materialize_writes_every_project(materialized) -> None:
    settings, _, report = materialized
    assert report.rows == N_PROJECTS
    assert report.windows == 1  # 764 rows fit one default window
    assert report.seconds > 0
    assert report.rows_per_second == pytest.approx(report.rows / report.seconds)
    assert store.count_online_rows(settings) == N_PROJECTS


def test_runtime_state_lives_under_stores(materialized) -> None:
    settings, _, _ = materialized
    assert (settings.feast_dir / "registry.db").is_file()
    assert (settings.feast_dir / "online_store.db").is_file()
    assert feast_store(settings).list_feature_views()[0].name == store.FEATURE_VIEW_NAME


def test_online_features_equal_the_source_row(materialized) -> None:
    settings, source, _ = materialized
    expected = source.set_index("id").loc[KNOWN_ID]
    rows = store.get_online_features(settings, [KNOWN_ID, 999_999, KNOWN_ID])
    assert rows[2] == rows[0]
    np.testing.assert_allclose(rows[0].pop("embedding"), expected["embedding"], rtol=1e-6)
    assert rows[0] == {"id": KNOWN_ID, "text": expected["text"], "tag": expected["tag"]}
    assert rows[1] == {"id": 999_999, "text": None, "embedding": None, "tag": None}
    assert store.get_online_features(settings, []) == []


def test_historical_features_keep_entity_order_and_values(materialized) -> None:
    settings, source, _ = materialized
    shuffled = source.sample(frac=1.0, random_state=0)
    entity_df = pd.DataFrame(
        {
            "id": shuffled["id"].to_numpy(),
            "event_timestamp": (shuffled["created_on"] + pd.Timedelta(days=1)).to_numpy(),
            "split": "train",
        },
        index=pd.RangeIndex(100, 100 + len(shuffled)),
    )
    # a repeated entity row must come back twice, at its own position
    entity_df = pd.concat([entity_df, entity_df.iloc[[0]]])

    result = store.get_historical_features(settings, entity_df)

    assert result.index.equals(entity_df.index)
    assert result["id"].tolist() == entity_df["id"].tolist()
    assert (result["split"] == "train").all()
    assert str(result["event_timestamp"].dtype) == "datetime64[ns, UTC]"
    expected = source.set_index("id").loc[result["id"]]
    assert result["text"].tolist() == expected["text"].tolist()
    assert result["tag"].tolist() == expected["tag"].tolist()


def test_historical_features_at_creation_time_and_naive_utc(materialized) -> None:
    settings, source, _ = materialized
    first = source.iloc[:3]
    entity_df = pd.DataFrame(
        {"id": first["id"], "event_timestamp": first["created_on"].dt.tz_localize(None)}
    )
    result = store.get_historical_features(settings, entity_df)
    assert result["text"].tolist() == first["text"].tolist()


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (-pd.Timedelta(seconds=1), "before the project existed"),
        (pd.Timedelta(days=3651), "beyond the feature view's 3650-day TTL"),
    ],
)
def test_entity_rows_outside_point_in_time_are_reported(materialized, offset, reason) -> None:
    settings, source, _ = materialized
    entity_df = pd.DataFrame(
        {"id": source["id"], "event_timestamp": source["created_on"] + pd.Timedelta(days=1)}
    )
    late_ids = source["id"].iloc[[10, 20]].tolist()
    entity_df.loc[entity_df["id"].isin(late_ids), "event_timestamp"] = (
        source.set_index("id").loc[late_ids, "created_on"].to_numpy() + offset
    )
    with pytest.raises(FeatureStoreError, match=r"^2 of 764 entity rows \(2 ids: ") as error:
        store.get_historical_features(settings, entity_df)
    assert all(str(i) in str(error.value) for i in late_ids), reason


def test_unknown_id_is_reported(materialized) -> None:
    settings, _, _ = materialized
    entity_df = pd.DataFrame(
        {"id": [KNOWN_ID, 999_999], "event_timestamp": pd.Timestamp("2021-01-01", tz="UTC")}
    )
    with pytest.raises(FeatureStoreError, match=r"1 of 2 entity rows \(1 ids: 999999\)"):
        store.get_historical_features(settings, entity_df)


def test_entity_df_without_timestamps_is_rejected(materialized) -> None:
    settings, _, _ = materialized
    with pytest.raises(FeatureStoreError, match="event_timestamp"):
        store.get_historical_features(settings, pd.DataFrame({"id": [KNOWN_ID]}))


def test_wrong_expected_count_raises(materialized) -> None:
    settings, _, _ = materialized
    with pytest.raises(FeatureStoreError, match=r"holds 764 .* expected 765"):
        store.materialize_features(settings, expected_rows=N_PROJECTS + 1)
    assert store.count_online_rows(settings) == N_PROJECTS


@pytest.mark.parametrize(("window", "windows"), [(timedelta(days=30), 8), (None, 1)])
def test_reapply_and_rematerialise_are_idempotent(materialized, window, windows) -> None:
    settings, _, _ = materialized
    before = store.get_online_features(settings, [KNOWN_ID])
    store.apply_definitions(settings)
    report = store.materialize_features(settings, expected_rows=N_PROJECTS, window=window)
    assert (report.rows, report.windows) == (N_PROJECTS, windows)
    assert store.count_online_rows(settings) == N_PROJECTS
    assert store.get_online_features(settings, [KNOWN_ID]) == before


def test_source_rows_removed_disappear_online(materialized) -> None:
    settings, source, _ = materialized
    path = settings.features_dir / "features.parquet"
    try:
        source.iloc[1:].to_parquet(path, index=False)  # drops KNOWN_ID
        store.materialize_features(settings, expected_rows=N_PROJECTS - 1)
        assert store.get_online_features(settings, [KNOWN_ID])[0]["text"] is None
    finally:
        source.to_parquet(path, index=False)
        store.materialize_features(settings, expected_rows=N_PROJECTS)


def test_interrupted_materialisation_is_reported_then_healed(materialized) -> None:
    from feast.feature_view import FeatureViewState

    settings, _, _ = materialized
    # what a worker killed mid-materialisation leaves in the registry
    feast_store(settings).set_feature_view_state(
        store.FEATURE_VIEW_NAME, FeatureViewState.MATERIALIZING
    )
    with pytest.raises(FeatureStoreError, match="interrupted materialisation"):
        store.get_online_features(settings, [KNOWN_ID])
    store.materialize_features(settings, expected_rows=N_PROJECTS)
    assert store.get_online_features(settings, [KNOWN_ID])[0]["tag"] is not None


def test_feature_repo_is_untouched(materialized, repo_before) -> None:
    assert snapshot(FEATURE_REPO) == repo_before
    runtime_names = {"registry.db", "online_store.db", "data", "feast", "__pycache__"}
    assert not runtime_names & {Path(name).parts[0] for name in repo_before}


def test_errors_before_apply_and_without_source(tmp_path: Path) -> None:
    settings = get_settings({"TAGIFAI_STORES_DIR": str(tmp_path)})
    with pytest.raises(FeatureStoreError, match="No Feast registry"):
        store.count_online_rows(settings)
    store.apply_definitions(settings)
    assert store.count_online_rows(settings) == 0
    with pytest.raises(FeatureStoreError, match="Offline source .* not found"):
        store.materialize_features(settings, expected_rows=N_PROJECTS)


def test_window_must_be_positive(materialized) -> None:
    settings, _, _ = materialized
    with pytest.raises(ValueError, match="positive"):
        store.materialize_features(settings, N_PROJECTS, window=timedelta(0))


@pytest.mark.parametrize(
    ("feast_config", "workers", "expected"),
    [("feature_store.yaml", 4, 1), ("feature_store.redis.yaml", 4, 4)],
)
def test_online_writers_follow_the_configured_store(
    tmp_path: Path, feast_config: str, workers: int, expected: int
) -> None:
    """SQLite takes one writer; the team's Redis one per worker (the file settings name)."""
    env = {
        "TAGIFAI_STORES_DIR": str(tmp_path),
        "TAGIFAI_FEAST_CONFIG": feast_config,
        "TAGIFAI_DASK_WORKERS": str(workers),
    }
    assert store.online_writers(get_settings(env)) == expected
    assert store.online_writers(get_settings(env | {"TAGIFAI_ONLINE_WRITERS": "3"})) == 3
