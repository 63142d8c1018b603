"""Partitioned DataOps in one process (``tagifai.steps``, as :mod:`tagifai.pipeline` runs
them): the same snapshot, validation and features as one partition; table-level expectations
over the whole dataset, whatever partition a duplicate sits in; a bad row in one partition
fails the run and publishes nothing.

The flows run these steps as Dask tasks (``tests/flows/test_dask_cluster.py``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tagifai import extract, features, pipeline, steps, validation
from tagifai.config import Settings, get_settings
from tagifai.errors import DataValidationError
from tests.conftest import REPO

PROJECTS, TAGS = str(REPO / "data/raw/projects.csv"), str(REPO / "data/raw/tags.csv")
SMALL_PARTITIONS = 150  # projects per partition: the shipped data in 6 partitions


def settings_with(stores: Path, partition_rows: int) -> Settings:
    # scale_rows below the data: no sentence embeddings (8 s of CPU per run, the same
    # vectors either way); the flow tests embed.
    return get_settings(
        {
            "TAGIFAI_STORES_DIR": str(stores),
            "TAGIFAI_PARTITION_ROWS": str(partition_rows),
            "TAGIFAI_SCALE_ROWS": "100",
        }
    )


def whole(snapshot: extract.Snapshot, table: str) -> pd.DataFrame:
    parts = [extract.read_partition(snapshot, table, i) for i in range(snapshot.partitions)]
    return pd.concat(parts, ignore_index=True).sort_values("id", ignore_index=True)


def features_of(settings: Settings) -> pd.DataFrame:
    frame = pd.read_parquet(features.features_path(settings))
    return frame.drop(columns="feature_created_at").sort_values("id", ignore_index=True)


def test_partitioned_run_equals_one_partition_on_the_shipped_data(tmp_path):
    outcome = {}
    for name, rows in (("one", 10**6), ("many", SMALL_PARTITIONS)):
        settings = settings_with(tmp_path / name, rows)
        staged = steps.extract_data(settings, PROJECTS, TAGS)
        reports = steps.validate_snapshot(settings, staged)
        snapshot = steps.publish_snapshot(settings, staged, {"projects": PROJECTS})
        feature_set = features.write_features(settings, snapshot)
        outcome[name] = (settings, snapshot, reports, feature_set)
    (one, snap1, reports1, set1), (many, snap6, reports6, set6) = outcome["one"], outcome["many"]
    assert snap1.partitions == 1 and snap6.partitions == 6 == set6.partitions
    assert snap6.id == snap1.id  # content-addressed: partitioning does not change the id
    for table in ("projects", "tags"):
        pd.testing.assert_frame_equal(whole(snap6, table), whole(snap1, table))
        # id ranges: every id sits in exactly one partition of each table
        ids = [set(extract.read_partition(snap6, table, i)["id"]) for i in range(6)]
        assert sum(len(part) for part in ids) == len(set().union(*ids))
        assert all(ids)
    shipped_projects = pd.read_csv(PROJECTS)
    assert snap6.projects_rows == len(shipped_projects)
    assert [r.success for r in reports6] == [True, True, True]
    assert reports6 == reports1
    assert set6.rows == set1.rows == 764
    pd.testing.assert_frame_equal(features_of(many), features_of(one))


def _stage_bad(tmp_path: Path, mutate) -> tuple[Settings, extract.Snapshot, pd.DataFrame]:
    frame = pd.read_csv(PROJECTS, dtype=str)
    frame = mutate(frame)
    path = tmp_path / "projects.csv"
    frame.to_csv(path, index=False)
    settings = settings_with(tmp_path / "stores", SMALL_PARTITIONS)
    return settings, steps.extract_data(settings, str(path), TAGS), frame


def _failures(
    reports: list[validation.ValidationReport],
) -> dict[str, validation.ExpectationFailure]:
    return {f"{r.suite}:{f.expectation}({f.column})": f for r in reports for f in r.failures}


def _partitions_of(staged: extract.Snapshot, ids: list[int]) -> set[int]:
    return {
        i
        for i in range(staged.partitions)
        if extract.read_partition(staged, "projects", i)["id"].isin(ids).any()
    }


def test_a_bad_row_in_one_partition_fails_the_run_and_publishes_nothing(tmp_path):
    frame = pd.read_csv(PROJECTS, dtype=str)
    bad_id = int(frame["id"].astype(int).sort_values().iloc[len(frame) // 2])  # a middle partition

    def mutate(f: pd.DataFrame) -> pd.DataFrame:
        return f.assign(created_on=f["created_on"].where(f["id"] != str(bad_id), "20/02/2020"))

    settings, staged, bad = _stage_bad(tmp_path, mutate)
    assert staged.partitions == 6
    assert _partitions_of(staged, [bad_id]) - {0, staged.partitions - 1}  # not an edge one
    reports = steps.validate_snapshot(settings, staged)
    (failure,) = _failures(reports).values()
    assert failure.expectation.startswith("expect_column_values_to_match_strftime_format")
    assert failure.unexpected_count == 1 and failure.examples == ("'20/02/2020'",)
    # the same failure GX reports on the whole table at once
    whole_report = validation.validate_table(
        extract.read_table(str(tmp_path / "projects.csv"), "projects"), "projects", settings
    )
    assert _failures(reports) == _failures([whole_report])

    steps.extract.discard_staged(staged)
    with pytest.raises(DataValidationError, match="20/02/2020"):
        pipeline.run_dataops(settings, str(tmp_path / "projects.csv"), TAGS)
    assert not settings.snapshots_dir.exists() or not any(settings.snapshots_dir.iterdir())
    assert features.current_feature_set(settings) is None
    assert not any((settings.stores_dir / "staging").glob("[!.]*"))  # staged and discarded


def test_duplicates_across_partitions_are_caught(tmp_path):
    frame = pd.read_csv(PROJECTS, dtype=str)
    ids = frame["id"].astype(int).sort_values()
    low, high = int(ids.iloc[0]), int(ids.iloc[-1])

    def mutate(f: pd.DataFrame) -> pd.DataFrame:
        # the last project's title and description again on the first one
        last = f["id"] == str(high)
        first = f["id"] == str(low)
        f.loc[first, ["title", "description"]] = f.loc[last, ["title", "description"]].to_numpy()
        return f

    settings, staged, _ = _stage_bad(tmp_path, mutate)
    assert _partitions_of(staged, [low]) == {0}
    assert _partitions_of(staged, [high]) == {staged.partitions - 1}
    # And an id twice, in two partitions: the id-range layout never does this itself, so the
    # staged files are edited (the table-level check must not rely on the layout).
    first = extract.read_partition(staged, "projects", 0)
    third = extract.read_partition(staged, "projects", 3)
    twin = first.iloc[[1]].assign(title="Another title", description="Another description")
    pd.concat([third, twin], ignore_index=True).to_parquet(staged.part("projects", 3), index=False)
    reports = steps.validate_snapshot(settings, staged)
    failures = _failures(reports)
    assert set(failures) == {
        "projects:expect_column_values_to_be_unique(id)",
        "projects:expect_compound_columns_to_be_unique(title, description)",
    }, failures
    unique_id = failures["projects:expect_column_values_to_be_unique(id)"]
    assert unique_id.unexpected_count == 2
    assert unique_id.examples == (str(first["id"].iloc[1]),) * 2, unique_id
    pair = failures["projects:expect_compound_columns_to_be_unique(title, description)"]
    assert pair.unexpected_count == 2
    assert not next(r for r in reports if r.suite == "projects").success
    # what GX reports on the whole table at once
    projects = pd.concat(
        [extract.read_partition(staged, "projects", i) for i in range(staged.partitions)]
    )
    whole_report = validation.validate_table(projects, "projects", settings)
    assert {k: v for k, v in failures.items() if k.startswith("projects:")} == _failures(
        [whole_report]
    )


def test_a_validated_partition_is_freed_once_the_next_one_is_validated(tmp_path):
    """GX's validator, engine and batch form reference cycles around the partition's frame,
    and a worker validates partition after partition: an earlier frame must not wait for the
    cyclic collector's rare full pass (at 10M rows workers grew by ~100 MiB a partition).
    GX keeps the last batch of each asset, so one partition per suite stays."""
    import weakref

    settings = settings_with(tmp_path / "stores", SMALL_PARTITIONS)
    projects = pd.read_csv(PROJECTS)
    first, second = projects.iloc[:SMALL_PARTITIONS].copy(), projects.iloc[SMALL_PARTITIONS:].copy()
    alive = weakref.ref(first)
    validation.validate_partition(first, "projects", settings, 0, tmp_path / "keys")
    del first
    result = validation.validate_partition(second, "projects", settings, 1, tmp_path / "keys")
    assert result.rows == len(projects) - SMALL_PARTITIONS
    assert alive() is None
