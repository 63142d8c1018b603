"""Both flows on 10k synthetic projects on a local cluster of worker processes: the shipped
defaults otherwise, only the sources changed."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from tagifai import registry, store
from tagifai.synth import write_synthetic
from tests.conftest import settings_for

pytestmark = [pytest.mark.flows, pytest.mark.scale]

ROWS = 10_000


def test_dataops_and_mlops_on_10k_synthetic_rows(prefect_api, tmp_path, monkeypatch):
    from flows.dataops import dataops
    from flows.mlops import mlops

    data = write_synthetic(ROWS, tmp_path / "data", seed=11)
    stores = tmp_path / "stores"
    monkeypatch.setenv("TAGIFAI_STORES_DIR", str(stores))
    # Worker processes, the local cluster's layout for CPU-bound work at scale (the other flow
    # tests use the default, threads of the flow-run process).
    monkeypatch.setenv("TAGIFAI_DASK_PROCESSES", "true")
    # Past scale_rows the pipeline takes its scale path, which embeds nothing: what a run at
    # scale does, without embedding 10k synthetic texts (~90 s of CPU) in every CI run.
    monkeypatch.setenv("TAGIFAI_SCALE_ROWS", str(ROWS // 2))
    settings = settings_for(stores)

    started = time.perf_counter()
    data_state = dataops(
        projects_uri=str(data.projects_path), tags_uri=str(data.tags_path), return_state=True
    )
    dataops_seconds = time.perf_counter() - started
    assert data_state.is_completed(), data_state.message
    summary = data_state.result()
    assert summary["rows_extracted"] == 2 * ROWS
    assert summary["features_written"] == ROWS and summary["rows_materialized"] == ROWS
    assert store.count_online_rows(settings) == ROWS

    started = time.perf_counter()
    ml_state = mlops(n_trials=4, search_space="scale", return_state=True)
    mlops_seconds = time.perf_counter() - started
    assert ml_state.is_completed(), ml_state.message
    result = ml_state.result()
    assert result["snapshot"] == summary["snapshot"]
    model = registry.get_version(settings, result["version"])
    assert model is not None and model.snapshot_id == summary["snapshot"]
    assert result["test_f1"] > 0.6, result  # synthetic text keeps each tag's vocabulary
    training = pd.read_parquet(settings.stores_dir / "training" / f"{summary['snapshot']}.parquet")
    assert len(training) == ROWS
    # The final fit learnt from partitions hashed by tasks of their own, then removed them.
    assert _task_names(ml_state).count("hash_partition") == summary["partitions"]
    assert not list((settings.stores_dir / "training").glob("*.hashed-*"))

    print(
        f"\n10k synthetic rows: dataops {dataops_seconds:.1f} s, mlops {mlops_seconds:.1f} s, "
        f"test F1 {result['test_f1']}"
    )


def _task_names(state) -> list[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[state.state_details.flow_run_id])
            )
        )
    return [run.name.rsplit("-", 1)[0] for run in runs]
