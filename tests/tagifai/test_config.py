"""Settings from the environment: defaults, overrides, and bad values refused in one line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from deployments.cli import app
from tagifai.config import get_settings
from tagifai.errors import ConfigError

runner = CliRunner()


def test_defaults():
    settings = get_settings({"TAGIFAI_STORES_DIR": "/tmp/x"})
    assert settings.dask_address is None
    assert settings.dask_workers == 2 and settings.dask_processes is False
    assert settings.max_tune_rows == 50_000


def test_embedding_model_dir_is_optional(tmp_path):
    assert get_settings({}).embedding_model_dir is None  # the packaged model
    settings = get_settings({"TAGIFAI_EMBEDDING_MODEL_DIR": f" {tmp_path} "})
    assert settings.embedding_model_dir == tmp_path


def test_the_prediction_log_lives_under_stores_unless_pointed_elsewhere(tmp_path):
    settings = get_settings({"TAGIFAI_STORES_DIR": str(tmp_path)})
    assert settings.predictions_dir == tmp_path / "predictions"
    assert settings.prediction_log is True and settings.predict_reload_seconds == 5.0
    shared = get_settings({"TAGIFAI_PREDICTIONS_DIR": str(tmp_path / "shared")})
    assert shared.predictions_dir == tmp_path / "shared"
    assert get_settings({"TAGIFAI_PREDICTION_LOG": "off"}).prediction_log is False


def test_tuning_batches_follow_the_worker_processes():
    assert get_settings({}).tune_batches == 1  # threads: trials do not overlap under the GIL
    assert get_settings({"TAGIFAI_DASK_PROCESSES": "1"}).tune_batches == 2
    address = {"TAGIFAI_DASK_ADDRESS": "tcp://h:8786", "TAGIFAI_DASK_WORKERS": "4"}
    assert get_settings(address).tune_batches == 4


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("TRUE", True), ("no", False)])
def test_dask_processes_accepts_the_usual_spellings(raw, expected):
    assert get_settings({"TAGIFAI_DASK_PROCESSES": raw}).dask_processes is expected


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("TAGIFAI_DASK_WORKERS", "two"),
        ("TAGIFAI_DASK_WORKERS", "0"),
        ("TAGIFAI_MAX_TUNE_ROWS", "-5"),
        ("TAGIFAI_DASK_PROCESSES", "maybe"),
        ("TAGIFAI_PREDICT_MAX_BATCH", "0"),
        ("TAGIFAI_PREDICT_RELOAD_SECONDS", "fast"),
        ("TAGIFAI_PREDICT_RELOAD_SECONDS", "nan"),
        ("TAGIFAI_PREDICTION_LOG_FLUSH_SECONDS", "-1"),
        ("TAGIFAI_PREDICTION_LOG", "sometimes"),
    ],
)
def test_bad_values_are_refused(name, raw):
    with pytest.raises(ConfigError, match=name):
        get_settings({name: raw})


def test_cli_reports_a_bad_setting_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TAGIFAI_STORES_DIR", str(tmp_path / "stores"))
    monkeypatch.setenv("TAGIFAI_DASK_WORKERS", "lots")
    result = runner.invoke(app, ["pipeline", "--trials", "0"])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "TAGIFAI_DASK_WORKERS" in lines[0], result.stderr
    assert not (tmp_path / "stores").exists()  # refused before anything was created
