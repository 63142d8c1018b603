"""The task runner's layout comes from settings read when a flow run starts."""

from __future__ import annotations

from flows.runner import SettingsDaskTaskRunner, dask_runner_options
from tagifai.config import get_settings


def test_local_cluster_of_threads_by_default():
    options = dask_runner_options(get_settings({}))
    kwargs = options["cluster_kwargs"]
    assert kwargs["processes"] is False and kwargs["n_workers"] == 1
    assert kwargs["threads_per_worker"] == 2


def test_local_cluster_of_worker_processes():
    env = {"TAGIFAI_DASK_PROCESSES": "true", "TAGIFAI_DASK_WORKERS": "3"}
    kwargs = dask_runner_options(get_settings(env))["cluster_kwargs"]
    assert kwargs == {
        "n_workers": 3,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": ":0",
    }


def test_existing_scheduler():
    options = dask_runner_options(get_settings({"TAGIFAI_DASK_ADDRESS": "tcp://h:8786"}))
    assert options == {"address": "tcp://h:8786"}


def test_runner_reads_settings_when_the_run_starts(monkeypatch):
    runner = SettingsDaskTaskRunner()
    monkeypatch.setenv("TAGIFAI_DASK_ADDRESS", "tcp://later:8786")
    assert runner.duplicate().address == "tcp://later:8786"
