"""``tagifai pipeline``: the dataops flow, then the mlops flow on the snapshot it published."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from deployments.cli import app
from tagifai import registry, store
from tests.conftest import settings_for

pytestmark = pytest.mark.flows


def test_pipeline_runs_both_flows_on_one_snapshot(prefect_api, tmp_path, monkeypatch):
    stores = tmp_path / "stores"
    monkeypatch.setenv("TAGIFAI_STORES_DIR", str(stores))
    monkeypatch.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(stores / "prefect" / "storage"))

    result = CliRunner().invoke(app, ["pipeline", "--trials", "2"])

    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    data, model = outcome["dataops"], outcome["mlops"]
    assert model["snapshot"] == data["snapshot"]
    assert model["decision"] == "improved" and model["deployed"] is True
    settings = settings_for(stores)
    assert store.count_online_rows(settings) == data["features_written"]
    assert registry.get_version(settings, model["version"]).snapshot_id == data["snapshot"]

    # The same data again: dataops finds nothing new, mlops finds nothing to train.
    again = CliRunner().invoke(app, ["pipeline", "--trials", "2"])
    assert again.exit_code == 0, again.output
    repeat = json.loads(again.stdout.strip().splitlines()[-1])
    assert repeat["dataops"]["new_data"] is False
    assert (
        repeat["dataops"]["message"]
        == f"no new data: snapshot {data['snapshot']} already published"
    )
    assert (
        repeat["mlops"]["decision"] == "skipped" and repeat["mlops"]["version"] == model["version"]
    )
    assert registry.get_version(settings).version == model["version"]
    assert registry.get_version(settings, model["version"] + 1) is None  # no new version


def test_pipeline_refuses_an_unknown_space_before_running_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("TAGIFAI_STORES_DIR", str(tmp_path / "stores"))
    result = CliRunner().invoke(app, ["pipeline", "--space", "huge"])
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: unknown search space 'huge'")
    assert not (tmp_path / "stores").exists()
