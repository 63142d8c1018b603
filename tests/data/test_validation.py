"""Great Expectations suites on the shipped data and on one broken frame per expectation family.

Every test shares one stores directory (and so one GX import and one growing Data Docs site);
the committed ``great_expectations/`` folder must come out of all of it unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tagifai import validation
from tagifai.config import REPO_ROOT, Settings, get_settings
from tagifai.data import tags_with_projects
from tagifai.errors import DataValidationError
from tagifai.validation import ExpectationFailure, ValidationReport

DTYPES = {"created_on": "string", "title": "string", "description": "string", "tag": "string"}
Frames = dict[str, pd.DataFrame]


def read_frames(settings: Settings) -> Frames:
    """The tables as extract produces them (text columns as pandas ``string``)."""
    projects = pd.read_csv(settings.projects_csv, dtype=DTYPES)
    tags = pd.read_csv(settings.tags_csv, dtype=DTYPES)
    return {
        "projects": projects,
        "tags": tags,
        "labelled": tags_with_projects(projects, tags),
    }


def folder_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return get_settings({"TAGIFAI_STORES_DIR": str(tmp_path_factory.mktemp("stores"))})


@pytest.fixture(scope="module")
def frames(settings: Settings) -> Frames:
    return read_frames(settings)


@pytest.fixture(scope="module")
def shipped_reports(frames: Frames, settings: Settings) -> dict[str, ValidationReport]:
    return {suite: validation.validate_table(frames[suite], suite, settings) for suite in frames}


def find_failure(report: ValidationReport, expectation: str, column: str | None):
    matches = [f for f in report.failures if f.expectation == expectation and f.column == column]
    assert matches, f"{expectation}({column}) not among {[f.describe() for f in report.failures]}"
    return matches[0]


# --- the shipped data --------------------------------------------------------------------------


@pytest.mark.parametrize("suite", validation.SUITES)
def test_shipped_data_passes(
    suite: str, shipped_reports: dict[str, ValidationReport], frames: Frames
) -> None:
    report = shipped_reports[suite]
    assert report.success, [f.describe() for f in report.failures]
    assert report.failures == ()
    assert report.evaluated == report.passed >= 8
    assert report.rows == len(frames[suite]) > 700


def test_shipped_reports_do_not_raise(shipped_reports: dict[str, ValidationReport]) -> None:
    validation.raise_for_failures(shipped_reports.values())


def test_validation_leaves_the_frame_as_it_was(frames: Frames, settings: Settings) -> None:
    df = duplicate_text(frames)
    before = df.copy()
    validation.validate_table(df, "projects", settings)
    pd.testing.assert_frame_equal(df, before)


def test_tags_and_their_join_from_parquet(
    tmp_path: Path, frames: Frames, settings: Settings
) -> None:
    frames["projects"].to_parquet(tmp_path / "projects.parquet")
    null_tag(frames).to_parquet(tmp_path / "tags.parquet")
    tags, labelled = validation.validate_tags_and_join(
        tmp_path / "tags.parquet", tmp_path / "projects.parquet", settings
    )
    assert (tags.suite, labelled.suite) == ("tags", "labelled")
    assert [f.describe() for f in tags.failures] == [
        "expect_column_values_to_not_be_null(tag): 1 unexpected, e.g. null"
    ]
    assert find_failure(labelled, "expect_column_values_to_not_be_null", "tag").examples == (
        f"id={frames['tags'].loc[5, 'id']}",
    )


def test_tags_with_projects_keeps_tags_without_a_project(frames: Frames) -> None:
    orphan = pd.DataFrame({"id": [10**9], "tag": ["mlops"]}).astype({"tag": "string"})
    tags = pd.concat([frames["tags"], orphan], ignore_index=True)
    labelled = tags_with_projects(frames["projects"], tags)
    assert labelled.columns.tolist() == ["id", "tag", "created_on", "title", "description"]
    assert len(labelled) == len(tags)
    assert labelled.loc[labelled["id"] == 10**9, "title"].isna().all()


# --- one broken frame per expectation family ---------------------------------------------------


def duplicate_id(f: Frames) -> pd.DataFrame:
    projects = f["projects"].copy()
    projects.loc[1, "id"] = projects.loc[0, "id"]
    return projects


def null_id(f: Frames) -> pd.DataFrame:
    # A blank id in the CSV makes pandas read the column as float: null and not integer.
    projects = f["projects"].astype({"id": "float64"})
    projects.loc[3, "id"] = np.nan
    return projects


def text_id(f: Frames) -> pd.DataFrame:
    projects = f["projects"].astype({"id": "object"})
    projects.loc[3, "id"] = "x7"
    return projects


def bad_created_on(f: Frames) -> pd.DataFrame:
    projects = f["projects"].copy()
    projects.loc[2, "created_on"] = "20/02/2020 06:43"
    return projects


def impossible_date(f: Frames) -> pd.DataFrame:
    projects = f["projects"].copy()
    projects.loc[2, "created_on"] = "2020-02-30 06:43:18"
    return projects


def empty_title(f: Frames) -> pd.DataFrame:
    projects = f["projects"].copy()
    projects.loc[4, "title"] = ""
    return projects


def blank_description(f: Frames) -> pd.DataFrame:
    projects = f["projects"].copy()
    projects.loc[4, "description"] = "   "
    return projects


def duplicate_text(f: Frames) -> pd.DataFrame:
    projects = f["projects"].copy()
    projects.loc[6, ["title", "description"]] = ["Same title", "Same description"]
    projects.loc[7, ["title", "description"]] = ["Same title", "Same description"]
    return projects


def swapped_columns(f: Frames) -> pd.DataFrame:
    return f["projects"][["id", "title", "created_on", "description"]]


def missing_column(f: Frames) -> pd.DataFrame:
    return f["projects"].drop(columns=["description"])


def no_rows(f: Frames) -> pd.DataFrame:
    return f["projects"].iloc[0:0]


def duplicate_tag_id(f: Frames) -> pd.DataFrame:
    tags = f["tags"].copy()
    tags.loc[1, "id"] = tags.loc[0, "id"]
    return tags


def null_tag(f: Frames) -> pd.DataFrame:
    tags = f["tags"].copy()
    tags.loc[5, "tag"] = pd.NA
    return tags


def unknown_project(f: Frames) -> pd.DataFrame:
    orphan = pd.DataFrame({"id": [999999], "tag": ["mlops"]}).astype({"tag": "string"})
    return tags_with_projects(f["projects"], pd.concat([f["tags"], orphan]))


CASES: list[tuple[Callable[[Frames], pd.DataFrame], str, str, str | None, int | None, str]] = [
    # (break the data, suite, expectation, column, unexpected count, an example)
    (duplicate_id, "projects", "expect_column_values_to_be_unique", "id", 2, "6"),
    (null_id, "projects", "expect_column_values_to_not_be_null", "id", 1, "null"),
    (
        null_id,
        "projects",
        "expect_column_values_to_be_in_type_list",
        "id",
        None,
        "observed float64",
    ),
    (text_id, "projects", "expect_column_values_to_be_in_type_list", "id", 1, "'x7'"),
    (
        bad_created_on,
        "projects",
        "expect_column_values_to_match_strftime_format",
        "created_on",
        1,
        "'20/02/2020 06:43'",
    ),
    (
        impossible_date,
        "projects",
        "expect_column_values_to_match_strftime_format",
        "created_on",
        1,
        "'2020-02-30 06:43:18'",
    ),
    (empty_title, "projects", "expect_column_values_to_match_regex", "title", 1, "''"),
    (
        blank_description,
        "projects",
        "expect_column_values_to_match_regex",
        "description",
        1,
        "'   '",
    ),
    (
        duplicate_text,
        "projects",
        "expect_compound_columns_to_be_unique",
        "title, description",
        2,
        "('Same title', 'Same description')",
    ),
    (
        swapped_columns,
        "projects",
        "expect_table_columns_to_match_ordered_list",
        None,
        None,
        "observed ['id', 'title', 'created_on', 'description']",
    ),
    (
        missing_column,
        "projects",
        "expect_table_columns_to_match_ordered_list",
        None,
        None,
        "observed ['id', 'created_on', 'title']",
    ),
    (
        missing_column,
        "projects",
        "expect_column_values_to_not_be_null",
        "description",
        None,
        'error: The column "description" in BatchData does not exist.',
    ),
    (no_rows, "projects", "expect_table_row_count_to_be_between", None, None, "observed 0"),
    (duplicate_tag_id, "tags", "expect_column_values_to_be_unique", "id", 2, "6"),
    (null_tag, "tags", "expect_column_values_to_not_be_null", "tag", 1, "null"),
    (unknown_project, "labelled", "expect_column_values_to_not_be_null", "title", 1, "id=999999"),
    (
        unknown_project,
        "labelled",
        "expect_column_values_to_not_be_null",
        "created_on",
        1,
        "id=999999",
    ),
]


@pytest.mark.parametrize(
    ("breaks", "suite", "expectation", "column", "count", "example"),
    CASES,
    ids=[f"{case[0].__name__}-{case[2].removeprefix('expect_')}" for case in CASES],
)
def test_broken_data_fails_with_details(
    breaks: Callable[[Frames], pd.DataFrame],
    suite: str,
    expectation: str,
    column: str | None,
    count: int | None,
    example: str,
    frames: Frames,
    settings: Settings,
) -> None:
    df = breaks(frames)
    report = validation.validate_table(df, suite, settings)

    assert not report.success
    assert report.passed < report.evaluated
    assert report.rows == len(df)
    failure = find_failure(report, expectation, column)
    assert failure.unexpected_count == count
    assert example in failure.examples
    assert len(failure.examples) <= 3

    with pytest.raises(DataValidationError) as raised:
        validation.raise_for_failures([report])
    message = str(raised.value)
    assert "\n" not in message
    assert f"{suite}: " in message
    assert failure.describe() in message
    assert example in message


def test_only_the_broken_expectation_fails(frames: Frames, settings: Settings) -> None:
    report = validation.validate_table(duplicate_id(frames), "projects", settings)
    assert [f.describe() for f in report.failures] == [
        "expect_column_values_to_be_unique(id): 2 unexpected, e.g. 6, 6"
    ]
    assert report.passed == report.evaluated - 1


def test_message_names_every_failed_suite(frames: Frames, settings: Settings) -> None:
    reports = [
        validation.validate_table(empty_title(frames), "projects", settings),
        validation.validate_table(frames["tags"], "tags", settings),
        validation.validate_table(unknown_project(frames), "labelled", settings),
    ]
    with pytest.raises(DataValidationError) as raised:
        validation.raise_for_failures(reports)
    message = str(raised.value)
    assert "projects: expect_column_values_to_match_regex(title): 1 unexpected, e.g. ''" in message
    assert " | labelled: expect_column_values_to_not_be_null(created_on)" in message
    assert "expect_column_values_to_not_be_null(title): 1 unexpected, e.g. id=999999" in message
    assert "tags:" not in message


@pytest.mark.parametrize(
    ("failure", "line"),
    [
        (
            ExpectationFailure("expect_column_values_to_be_unique", "id", 2, ("5", "5")),
            "expect_column_values_to_be_unique(id): 2 unexpected, e.g. 5, 5",
        ),
        (
            ExpectationFailure("expect_table_row_count_to_be_between", None, None, ("observed 0",)),
            "expect_table_row_count_to_be_between: observed 0",
        ),
        (
            ExpectationFailure("expect_column_values_to_not_be_null", "tag", 4, ()),
            "expect_column_values_to_not_be_null(tag): 4 unexpected",
        ),
    ],
)
def test_failure_describes_itself_on_one_line(failure: ExpectationFailure, line: str) -> None:
    assert failure.describe() == line


def test_unknown_suite_is_refused(frames: Frames, settings: Settings) -> None:
    with pytest.raises(ValueError, match="unknown suite"):
        validation.validate_table(frames["projects"], "features", settings)


def test_missing_context_is_an_error_not_a_new_project(
    tmp_path: Path, frames: Frames, settings: Settings
) -> None:
    elsewhere = dataclasses.replace(settings, gx_dir=tmp_path / "great_expectations")
    with pytest.raises(FileNotFoundError, match="great_expectations.yml"):
        validation.validate_table(frames["tags"], "tags", elsewhere)
    assert list(tmp_path.iterdir()) == []


# --- where state goes ---------------------------------------------------------------------------


def test_results_and_data_docs_go_to_the_stores_dir(
    shipped_reports: dict[str, ValidationReport], settings: Settings
) -> None:
    state = settings.stores_dir / "gx"
    for suite in validation.SUITES:
        assert list((state / "validations" / suite).rglob("*.json")), suite
    # Each checkpoint run updates the docs (UpdateDataDocsAction).
    index = state / "data_docs" / "local_site" / "index.html"
    assert index.is_file() and validation.data_docs_site(settings) / "index.html" == index
    html = index.read_text(encoding="utf-8")
    assert all(suite in html for suite in validation.SUITES)
    assert html.rstrip().endswith("</html>")
    assert validation.data_docs_url(settings).startswith("file://")


def test_a_run_leaves_the_repository_alone(frames: Frames, settings: Settings) -> None:
    committed = folder_digest(settings.gx_dir)
    repo_state = folder_digest(REPO_ROOT / "stores" / "gx")
    assert "great_expectations.yml" in committed
    assert "checkpoints/projects.json" in committed

    for suite in validation.SUITES:
        validation.validate_table(frames[suite], suite, settings)
    validation.validate_table(missing_column(frames), "projects", settings)

    assert folder_digest(settings.gx_dir) == committed
    assert not (REPO_ROOT / "gx").exists()
    assert not (settings.gx_dir / "uncommitted").exists()
    assert folder_digest(REPO_ROOT / "stores" / "gx") == repo_state


def test_no_progress_bars(frames: Frames, settings: Settings, capfd) -> None:
    validation.validate_table(frames["tags"], "tags", settings)
    captured = capfd.readouterr()
    assert "Calculating Metrics" not in captured.err + captured.out
    assert "%|" not in captured.err


# --- concurrency --------------------------------------------------------------------------------


def test_threads_validate_at_the_same_time(frames: Frames, settings: Settings) -> None:
    jobs = [
        ("projects", frames["projects"], True),
        ("tags", null_tag(frames), False),
        ("projects", duplicate_id(frames), False),
        ("labelled", frames["labelled"], True),
    ]
    reports: dict[int, ValidationReport] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def run(i: int, suite: str, df: pd.DataFrame) -> None:
        start.wait()
        try:
            reports[i] = validation.validate_table(df, suite, settings)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [
        threading.Thread(target=run, args=(i, suite, df)) for i, (suite, df, _) in enumerate(jobs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert [reports[i].success for i in range(len(jobs))] == [ok for *_, ok in jobs]
    assert [reports[i].suite for i in range(len(jobs))] == [suite for suite, *_ in jobs]


def _validate_in_child(stores: str, suite: str, broken: bool) -> tuple[bool, tuple[str, ...]]:
    settings = get_settings({"TAGIFAI_STORES_DIR": stores})
    f = read_frames(settings)
    df = duplicate_tag_id(f) if broken else f[suite]
    report = validation.validate_table(df, suite, settings)
    return report.success, tuple(failure.describe() for failure in report.failures)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs fork (shares GX import)"
)
def test_processes_validate_at_the_same_time(
    shipped_reports: dict[str, ValidationReport], settings: Settings
) -> None:
    before = len(list((settings.gx_state_dir / "validations").rglob("*.json")))
    # fork: the children reuse this process's GX import; the stores are shared as on Dask.
    pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("fork"))
    with pool:
        futures = [
            pool.submit(_validate_in_child, str(settings.stores_dir), "projects", False),
            pool.submit(_validate_in_child, str(settings.stores_dir), "tags", True),
            pool.submit(_validate_in_child, str(settings.stores_dir), "tags", False),
            pool.submit(_validate_in_child, str(settings.stores_dir), "labelled", False),
        ]
        outcomes = [future.result(timeout=120) for future in futures]

    assert outcomes == [
        (True, ()),
        (False, ("expect_column_values_to_be_unique(id): 2 unexpected, e.g. 6, 6",)),
        (True, ()),
        (True, ()),
    ]
    after = len(list((settings.gx_state_dir / "validations").rglob("*.json")))
    assert after == before + 4
    html = (settings.gx_state_dir / "data_docs" / "local_site" / "index.html").read_text()
    assert html.rstrip().endswith("</html>")


def test_data_docs_url_prefers_the_served_site(tmp_path):
    from tagifai.config import get_settings
    from tagifai.validation import data_docs_url

    settings = get_settings({"TAGIFAI_STORES_DIR": str(tmp_path)})
    index = settings.gx_state_dir / "data_docs" / "local_site" / "index.html"
    assert data_docs_url(settings) == index.resolve().as_uri()
    served = get_settings(
        {"TAGIFAI_STORES_DIR": str(tmp_path), "TAGIFAI_DATA_DOCS_URL": "http://h:8787/data-docs/"}
    )
    assert data_docs_url(served) == "http://h:8787/data-docs/index.html"
