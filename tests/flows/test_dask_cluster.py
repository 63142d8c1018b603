"""Both flows on a real Dask cluster: a ``dask scheduler`` and two ``dask worker`` processes.

The flow process reaches the scheduler through ``TAGIFAI_DASK_ADDRESS``; the workers share
the test's stores directory (same machine, so the path is shared storage) and Prefect API.
The scheduler's task stream shows which worker ran each task.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from deployments.platform import free_ports
from tagifai import registry, store
from tagifai.extract import source_content_id
from tests.conftest import REPO, settings_for

pytestmark = [pytest.mark.flows, pytest.mark.dask_cluster]

WORKERS = ("w1", "w2")


@dataclass(frozen=True)
class DaskCluster:
    address: str
    stores: Path
    logs: Path


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"dask scheduler did not listen on {port} within {timeout} s")


def stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM each process group (CLI, nanny and worker), then SIGKILL whatever is left."""
    import psutil

    tree: list[psutil.Process] = []
    for process in processes:
        try:
            parent = psutil.Process(process.pid)
            tree += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for process in reversed(processes):  # workers first, the scheduler last
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    _, alive = psutil.wait_procs(tree, timeout=10)
    for leftover in alive:
        leftover.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture
def dask_cluster(prefect_api, tmp_path, monkeypatch) -> Iterator[DaskCluster]:
    # The flows build their task runner when their module is imported: import them before
    # TAGIFAI_DASK_ADDRESS is set, so later tests in this session never see this address.
    import flows.dataops  # noqa: F401
    import flows.mlops  # noqa: F401

    stores, logs = tmp_path / "stores", tmp_path / "logs"
    logs.mkdir()
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "TAGIFAI_STORES_DIR": str(stores),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("TAGIFAI_DASK_ADDRESS", None)
    dask = str(Path(sys.executable).with_name("dask"))
    port = free_ports()[0]
    address = f"tcp://127.0.0.1:{port}"
    commands = [
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port)]
        + ["--dashboard-address", ":0", "--no-show"],
        *(
            [dask, "worker", address, "--nthreads", "1", "--nworkers", "1"]
            + ["--name", name, "--no-dashboard"]
            for name in WORKERS
        ),
    ]
    processes: list[subprocess.Popen] = []
    try:
        for command in commands:
            log = (logs / f"{command[1]}-{len(processes)}.log").open("w")
            processes.append(
                subprocess.Popen(
                    command,
                    env=env,
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # one process group per CLI: nanny + worker
                )
            )
            log.close()
            if len(processes) == 1:
                wait_for_port(port, processes[0])
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(len(WORKERS), timeout=90)
            client.get_task_stream()  # installs the scheduler's task stream recorder
        monkeypatch.setenv("TAGIFAI_DASK_ADDRESS", address)
        monkeypatch.setenv("TAGIFAI_STORES_DIR", str(stores))
        yield DaskCluster(address, stores, logs)
    finally:
        stop(processes)
        assert all(p.poll() is not None for p in processes)


def task_placements(address: str) -> list[tuple[str, str]]:
    """(task name, worker name) for every task the scheduler recorded, in start order."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        names = {addr: info["name"] for addr, info in client.scheduler_info()["workers"].items()}
        stream = sorted(
            client.get_task_stream(),
            key=lambda record: min(s["start"] for s in record["startstops"]),
        )
    return [(str(record["key"]).rsplit("-", 1)[0], names[record["worker"]]) for record in stream]


# Projects per partition: the shipped data (764 projects) in 6 partitions.
PARTITION_ROWS = "150"
PARTITION_TASKS = ("validate_projects", "validate_tags", "compute_features", "materialize_window")


def test_dataops_and_mlops_run_on_the_cluster_workers(dask_cluster, tmp_path, monkeypatch):
    from flows.dataops import dataops
    from flows.mlops import mlops
    from flows.runner import build_task_runner
    from tests.flows.conftest import tree_digest

    monkeypatch.setenv("TAGIFAI_PARTITION_ROWS", PARTITION_ROWS)
    runner = build_task_runner().duplicate()  # what a flow run starts with
    assert runner.address == dask_cluster.address and runner.cluster_class is None
    data_state = dataops.with_options(task_runner=build_task_runner())(return_state=True)
    assert data_state.is_completed(), data_state.message
    summary = data_state.result()
    assert summary["partitions"] == 6
    assert summary["rows_materialized"] == 764
    # the same content id as the sources read whole
    projects, tags = (str(REPO / "data/raw" / f"{t}.csv") for t in ("projects", "tags"))
    assert summary["snapshot"] == source_content_id(projects, tags)
    data_placements = task_placements(dask_cluster.address)

    ml_state = mlops.with_options(task_runner=build_task_runner())(n_trials=4, return_state=True)
    assert ml_state.is_completed(), ml_state.message
    result = ml_state.result()
    settings = settings_for(dask_cluster.stores)
    found = registry.get_version(settings, result["version"])
    assert found is not None and found.snapshot_id == summary["snapshot"]
    assert store.count_online_rows(settings) == 764
    placements = task_placements(dask_cluster.address)

    on = {name: {worker for task, worker in placements if task == name} for name, _ in placements}
    # DataOps: every partition task ran once per partition, and each stage's partitions
    # spread over both workers (the two validations of a partition alternate in the queue,
    # so one kind alone may land on one worker).
    for name in PARTITION_TASKS:
        assert [task for task, _ in data_placements].count(name) == 6, data_placements
    assert on["validate_projects"] | on["validate_tags"] == set(WORKERS), data_placements
    for name in ("compute_features", "materialize_window"):
        assert on[name] == set(WORKERS), (name, data_placements)
    # MLOps: the partitions' features on both workers; one Optuna batch per worker.
    assert [task for task, _ in placements].count("extract_features") == 6, placements
    assert on["extract_features"] == set(WORKERS), placements
    batches = [worker for task, worker in placements if task == "tune_batch"]
    assert sorted(batches) == sorted(WORKERS), placements

    # A bad row in one partition: the run fails on the cluster and publishes nothing.
    frame = pd.read_csv(projects, dtype=str)
    bad_id = frame["id"].astype(int).sort_values().iloc[len(frame) // 2]
    bad = frame.assign(
        created_on=frame["created_on"].where(frame["id"] != str(bad_id), "20/02/2020")
    )
    bad.to_csv(tmp_path / "projects.csv", index=False)
    before = tree_digest(dask_cluster.stores)
    bad_state = dataops.with_options(task_runner=build_task_runner())(
        projects_uri=str(tmp_path / "projects.csv"), return_state=True
    )
    assert bad_state.is_failed()
    with pytest.raises(Exception, match="20/02/2020"):
        bad_state.result()
    after = tree_digest(dask_cluster.stores)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not {k for k in changed if not k.startswith(("gx/", "prefect/"))}, changed
