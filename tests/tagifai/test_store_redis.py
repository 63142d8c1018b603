"""Feast's online store on Redis (team mode): the same contract as on SQLite, on a real Redis.

The configuration tests need no server; the others (marker ``team``) start the platform's
``redis`` service for the module and fail with the reason if it cannot start.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.platform import down, up
from tagifai import store
from tagifai.config import FEAST_TEAM_CONFIG, REPO_ROOT, Settings, get_settings
from tagifai.errors import FeatureStoreError
from tests.tagifai.test_store import KNOWN_ID, N_PROJECTS, write_source
from tests.team import team_environment, team_root

FEATURE_REPO = REPO_ROOT / "feature_repo"


def redis_settings(stores: Path, repo: Path = FEATURE_REPO, **changes: object) -> Settings:
    settings = get_settings({"TAGIFAI_STORES_DIR": str(stores)})
    return dataclasses.replace(
        settings, feature_repo_dir=repo, feast_config=FEAST_TEAM_CONFIG, **changes
    )


# --- configuration (no server) ---------------------------------------------------------------


def test_redis_config_without_a_redis_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(FeatureStoreError, match=r"needs a Redis: start team mode"):
        store.apply_definitions(redis_settings(tmp_path / "stores"))


def test_only_the_redis_placeholder_is_filled(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(FEATURE_REPO, repo)
    yaml = repo / FEAST_TEAM_CONFIG
    yaml.write_text(yaml.read_text().replace("type: file", "type: ${OFFLINE_TYPE}"))
    settings = redis_settings(tmp_path / "stores", repo, redis_address="127.0.0.1:1")
    with pytest.raises(FeatureStoreError, match=r"may use only \$\{TAGIFAI_REDIS_CONNECTION\}"):
        store.apply_definitions(settings)


def test_a_bad_config_names_the_field_but_never_the_password(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(FEATURE_REPO, repo)
    yaml = repo / FEAST_TEAM_CONFIG
    text = yaml.read_text().replace("  type: redis\n", "  type: redis\n  redis_type: bogus\n")
    yaml.write_text(text)
    password_file = tmp_path / "redis-password"
    password_file.write_text("s3cret-never-shown")
    settings = redis_settings(
        tmp_path / "stores", repo, redis_address="127.0.0.1:1", redis_password_file=password_file
    )
    with pytest.raises(FeatureStoreError) as raised:
        store.apply_definitions(settings)
    assert "redis_type" in str(raised.value)
    assert "s3cret" not in str(raised.value)


def test_registry_file_follows_the_configuration(tmp_path: Path) -> None:
    embedded = get_settings({"TAGIFAI_STORES_DIR": str(tmp_path)})
    assert store.registry_file(embedded) == tmp_path / "feast" / "registry.db"
    team = redis_settings(tmp_path)
    assert store.registry_file(team) == tmp_path / "team" / "feast" / "registry.db"


# --- on a real Redis -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_store() -> Iterator[Settings]:
    """The team's Redis (the platform's service) and a stores dir with the offline source."""
    with team_root("tagifai-redis-") as root, pytest.MonkeyPatch.context() as env:
        settings = team_environment(env, root)
        try:
            up(settings, ("redis",))
            write_source(settings)
            store.apply_definitions(settings)
            yield settings
        finally:
            down(settings)


@pytest.mark.team
def test_materialise_into_redis_then_read_online(redis_store: Settings) -> None:
    report = store.materialize_features(redis_store, expected_rows=N_PROJECTS)
    assert report.rows == N_PROJECTS == store.count_online_rows(redis_store)
    [row, unknown] = store.get_online_features(redis_store, [KNOWN_ID, 10**9])
    assert row["text"].startswith("comparison between yolo") and row["tag"] == "computer-vision"
    assert unknown == {"id": 10**9, "text": None, "embedding": None, "tag": None}
    # Nothing of it went to SQLite.
    assert not (redis_store.feast_dir / "online_store.db").exists()


@pytest.mark.team
def test_rows_removed_from_the_source_disappear_from_redis(redis_store: Settings) -> None:
    source = redis_store.features_dir / "features.parquet"
    full = source.read_bytes()
    try:
        frame = write_source(redis_store)
        frame[frame["id"] != KNOWN_ID].to_parquet(source, index=False)
        store.materialize_features(redis_store, expected_rows=N_PROJECTS - 1)
        assert store.count_online_rows(redis_store) == N_PROJECTS - 1
        assert store.get_online_features(redis_store, [KNOWN_ID])[0]["text"] is None
    finally:
        source.write_bytes(full)
        store.materialize_features(redis_store, expected_rows=N_PROJECTS)


@pytest.mark.team
def test_a_wrong_count_in_redis_raises(redis_store: Settings) -> None:
    with pytest.raises(FeatureStoreError, match=f"holds {N_PROJECTS} project_features rows"):
        store.materialize_features(redis_store, expected_rows=N_PROJECTS + 1)


@pytest.mark.team
def test_a_redis_that_refuses_the_password_is_one_readable_error(
    redis_store: Settings, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password")
    settings = dataclasses.replace(redis_store, redis_password_file=wrong)
    with pytest.raises(FeatureStoreError, match=r"Redis at 127\.0\.0\.1:\d+, does not answer"):
        store.count_online_rows(settings)
