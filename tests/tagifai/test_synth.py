"""Synthetic data: deterministic, unique, realistic, and valid under the committed GX suites."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from deployments.cli import app
from tagifai import synth
from tagifai.data import clean_text
from tagifai.errors import DataSourceError
from tagifai.synth import synthesize, write_synthetic
from tests.conftest import REPO, settings_for

ROWS = 10_000
CREATED_ON = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, pd.DataFrame]:
    return synthesize(ROWS, seed=42)


@pytest.fixture(scope="module")
def real() -> pd.DataFrame:
    from tagifai.data import join_labelled

    projects = pd.read_csv(REPO / "data/raw/projects.csv", dtype=str, keep_default_na=False)
    tags = pd.read_csv(REPO / "data/raw/tags.csv", dtype=str, keep_default_na=False)
    return join_labelled(projects, tags)


def words(texts: pd.Series) -> pd.Series:
    return texts.astype(str).map(lambda text: clean_text(text).split())


def file_bytes(result: synth.SynthResult) -> tuple[bytes, bytes]:
    return result.projects_path.read_bytes(), result.tags_path.read_bytes()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_same_seed_same_bytes_other_seed_differs(tmp_path, fmt):
    first = write_synthetic(2_000, tmp_path / "a", seed=7, fmt=fmt)
    again = write_synthetic(2_000, tmp_path / "b", seed=7, fmt=fmt)
    other = write_synthetic(2_000, tmp_path / "c", seed=8, fmt=fmt)
    assert first.projects_path.name == f"projects.{fmt}" and first.rows == 2_000
    assert file_bytes(first) == file_bytes(again)
    assert file_bytes(first)[0] != file_bytes(other)[0]
    assert file_bytes(first)[1] != file_bytes(other)[1]
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temp files


def test_files_read_back_as_the_frames(tmp_path, synthetic):
    from tagifai.extract import read_table

    result = write_synthetic(ROWS, tmp_path, seed=42)
    projects, tags = synthetic
    pd.testing.assert_frame_equal(read_table(str(result.projects_path), "projects"), projects)
    pd.testing.assert_frame_equal(read_table(str(result.tags_path), "tags"), tags)


def test_ids_and_title_description_pairs_are_unique(synthetic):
    projects, tags = synthetic
    assert projects["id"].tolist() == list(range(1, ROWS + 1))
    assert tags["id"].tolist() == projects["id"].tolist()
    assert not projects.duplicated(["title", "description"]).any()
    assert projects["title"].str.strip().str.len().gt(0).all()
    assert projects["description"].str.strip().str.len().gt(0).all()


def test_created_on_strictly_increases_in_the_source_format(synthetic):
    projects, _ = synthetic
    assert projects["created_on"].str.match(CREATED_ON).all()
    stamps = pd.to_datetime(projects["created_on"], format="%Y-%m-%d %H:%M:%S")
    assert stamps.diff().dropna().gt(pd.Timedelta(0)).all()
    assert stamps.iloc[0] >= pd.Timestamp("2020-02-20")
    assert stamps.iloc[-1] - stamps.iloc[0] > pd.Timedelta(days=30)  # spread, not a burst
    assert stamps.iloc[-1] < pd.Timestamp("2026-01-01")


def test_chunks_join_seamlessly(monkeypatch):
    """Several chunks: ids, timestamps and (title, description) stay unique across them."""
    monkeypatch.setattr(synth, "CHUNK_ROWS", 700)
    projects, tags = synthesize(3_000, seed=3)
    assert projects["id"].tolist() == list(range(1, 3_001)) and len(tags) == 3_000
    assert projects["created_on"].is_monotonic_increasing and projects["created_on"].is_unique
    assert not projects.duplicated(["title", "description"]).any()


def test_timestamps_never_pass_the_end_even_when_crowded(monkeypatch):
    """With room for barely more than one row a second, rows squeeze in before the end."""
    monkeypatch.setattr(synth, "_BUDGET_SECONDS", 2_500)
    projects, _ = synthesize(2_000, seed=1)
    stamps = pd.to_datetime(projects["created_on"])
    assert stamps.is_unique and stamps.is_monotonic_increasing
    assert stamps.iloc[-1] <= pd.Timestamp(synth.FIRST_CREATED_ON) + pd.Timedelta(seconds=2_500)


def test_label_mix_matches_the_real_one(synthetic, real):
    _, tags = synthetic
    expected = real["tag"].value_counts(normalize=True)
    observed = tags["tag"].value_counts(normalize=True)
    assert set(observed.index) == set(expected.index)
    for label, share in expected.items():
        assert abs(observed[label] - share) < 0.015, (label, observed[label], share)


def test_text_uses_the_real_vocabulary_of_its_tag(synthetic, real):
    projects, tags = synthetic
    frame = projects.merge(tags, on="id")
    vocab_by_tag = {
        tag: set(w for row in words(group["title"] + " " + group["description"]) for w in row)
        for tag, group in real.groupby("tag")
    }
    tokens = words(frame["title"] + " " + frame["description"])
    in_tag = [
        sum(w in vocab_by_tag[tag] for w in row) / len(row)
        for row, tag in zip(tokens, frame["tag"], strict=True)
    ]
    # Everything comes from projects with the same tag but the rare " #<id>" suffix.
    assert pd.Series(in_tag).mean() > 0.99


def test_lengths_match_and_texts_are_perturbed_not_copied(synthetic, real):
    projects, _ = synthetic
    for column in ("title", "description"):
        real_lengths = real[column].str.split().str.len()
        lengths = projects[column].str.split().str.len()
        assert abs(lengths.mean() - real_lengths.mean()) < 0.1 * real_lengths.mean(), column
        assert abs(lengths.median() - real_lengths.median()) <= 1, column
        assert abs(lengths.std() - real_lengths.std()) < 0.2 * real_lengths.std(), column
    real_descriptions = set(real["description"].str.split().str.join(" "))
    copied = projects["description"].isin(real_descriptions).mean()
    assert copied < 0.02, copied
    # ...but they stay close to a real one: most words of a row are kept.
    assert projects["title"].isin(set(real["title"])).mean() > 0.3


def test_synthetic_tables_pass_every_gx_suite(tmp_path, synthetic):
    from tagifai.data import tags_with_projects
    from tagifai.validation import validate_table

    projects, tags = synthetic
    settings = settings_for(tmp_path / "stores")
    reports = [
        validate_table(projects, "projects", settings),
        validate_table(tags, "tags", settings),
        validate_table(tags_with_projects(projects, tags), "labelled", settings),
    ]
    assert [r.rows for r in reports] == [ROWS, ROWS, ROWS]
    for report in reports:
        assert report.success, report.describe()


def test_gx_catches_a_broken_synthetic_table(tmp_path, synthetic):
    """The suite run above can fail: a duplicated pair in the same data is reported."""
    from tagifai.validation import validate_table

    projects, _ = synthetic
    broken = projects.copy()
    broken.loc[1, ["title", "description"]] = broken.loc[0, ["title", "description"]]
    report = validate_table(broken, "projects", settings_for(tmp_path / "stores"))
    assert not report.success
    assert "expect_compound_columns_to_be_unique" in report.describe()


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"n_rows": 0}, ValueError, "at least 1"),
        ({"n_rows": -5}, ValueError, "at least 1"),
        ({"n_rows": 10**10}, ValueError, "at most"),
        ({"n_rows": 10, "fmt": "xlsx"}, ValueError, "unknown format"),
    ],
)
def test_write_rejects_bad_input(tmp_path, kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        write_synthetic(out_dir=tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_write_rejects_a_file_as_output(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        write_synthetic(10, target)


def test_missing_source_data_is_a_data_source_error(tmp_path):
    with pytest.raises(DataSourceError, match="source not found"):
        synthesize(10, data_dir=tmp_path)


runner = CliRunner()


def one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_cli_writes_tables_and_prints_one_line(tmp_path):
    from tagifai.extract import read_table

    out = tmp_path / "synthetic"
    result = runner.invoke(app, ["synth", "--rows", "500", "--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote 500 rows to ")
    assert len(read_table(str(out / "projects.csv"), "projects")) == 500
    again = runner.invoke(app, ["synth", "--rows", "500", "--out", str(tmp_path / "again")])
    assert again.exit_code == 0
    # Default seed differs from 3.
    assert (out / "projects.csv").read_bytes() != (tmp_path / "again/projects.csv").read_bytes()


def test_cli_writes_parquet(tmp_path):
    result = runner.invoke(
        app, ["synth", "--rows", "50", "--out", str(tmp_path), "--format", "parquet"]
    )
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(tmp_path / "tags.parquet")) == 50


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["--rows", "0"], "rows must be at least 1"),
        (["--rows", "10", "--format", "xml"], "unknown format 'xml'"),
    ],
)
def test_cli_bad_input_is_one_line_exit_1(tmp_path, arguments, fragment):
    result = runner.invoke(app, ["synth", "--out", str(tmp_path / "out"), *arguments])
    one_line_error(result, fragment)


def test_cli_output_that_is_a_file_is_one_line_exit_1(tmp_path):
    target = Path(tmp_path / "taken")
    target.write_text("x")
    result = runner.invoke(app, ["synth", "--rows", "10", "--out", str(target)])
    one_line_error(result, "not a directory")
