"""Team mode on a real PostgreSQL and Redis: the platform, the chain, 4 concurrent mlops runs,
and both flows on a Dask cluster of worker processes sharing the PostgreSQL study.

One team platform (PostgreSQL, Redis, Prefect server on PostgreSQL, MLflow server, receiver,
worker) on free ports serves the module. Its stores dir sits in a fresh directory of /tmp that
the ``postgres`` and ``redis`` system users can enter (pytest's own tmp root is 0700). If
PostgreSQL or Redis is missing or does not start, the fixture raises and every test here fails
with the reason (``make team-deps`` installs them); nothing is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import psutil
import pytest

from deployments.platform import down, free_ports, platform_dir, status, up
from deployments.platform.team import read_pgpass
from deployments.run import MLOPS, SNAPSHOT_LABEL, deploy, find_triggered_run, follow
from deployments.webhook import send_data_arrived
from tagifai import registry, store
from tagifai.config import LABELS, MODEL_NAME, PRODUCTION_ALIAS, REPO_ROOT, Settings
from tests.e2e.harness import api_client, dataops_runs, lower_mlops_trials
from tests.team import SECRET, query, team_environment, team_root

pytestmark = [pytest.mark.team, pytest.mark.timeout(1800)]

N_TRIALS = 2
CONCURRENT_RUNS = 4
CONCURRENT_TRIALS = 3
RUN_TIMEOUT_S = 600.0
LOCKED = "database is locked"


@dataclass(frozen=True)
class Team:
    """A running team platform with prefect.yaml deployed."""

    settings: Settings
    api_url: str
    hook_url: str
    data_root: Path
    up_seconds: float


@pytest.fixture(scope="module")
def team() -> Iterator[Team]:
    with team_root("tagifai-team-") as root, pytest.MonkeyPatch.context() as env:
        data_root = root / "data"
        data_root.mkdir()
        for name in ("projects.csv", "tags.csv"):
            shutil.copy(REPO_ROOT / "data" / "raw" / name, data_root / name)
        env.setenv("TAGIFAI_DATA_DIR", str(data_root))
        settings = team_environment(env, root)
        try:
            started = time.monotonic()
            urls = up(settings)  # fails here, with the reason, if a server cannot start
            up_seconds = time.monotonic() - started
            api_url = urls["server"]
            env.setenv("PREFECT_API_URL", api_url)
            deploy(api_url)
            lower_mlops_trials(api_url, N_TRIALS)
            yield Team(settings, api_url, urls["webhook"], data_root, up_seconds)
        finally:
            down(settings)


@dataclass(frozen=True)
class Chain:
    snapshot: str
    dataops_id: UUID
    mlops_id: UUID
    seconds: float


@pytest.fixture(scope="module")
def chain(team: Team) -> Chain:
    """A signed webhook call -> dataops -> (trigger) mlops, followed to the end."""
    batch = team.data_root / "incoming" / "batch-1"
    batch.mkdir(parents=True)
    for name in ("projects.csv", "tags.csv"):
        shutil.copy(team.data_root / name, batch / name)
    projects, tags = str(batch / "projects.csv"), str(batch / "tags.csv")
    started = time.monotonic()
    response = send_data_arrived(team.hook_url, SECRET, projects, tags, "pytest", "batch-1")
    assert response.status_code == 202, response.text

    deadline = time.monotonic() + 120
    while not (
        runs := [
            run
            for run in dataops_runs(team.api_url)
            if run.parameters == {"projects_uri": projects, "tags_uri": tags}
        ]
    ):
        assert time.monotonic() < deadline, "the webhook's event started no dataops run"
        time.sleep(1)
    with api_client(team.api_url) as client:
        dataops = follow(client, runs[0].id, RUN_TIMEOUT_S, label="dataops")
        assert dataops.run.state_name == "Completed", dataops.run.state
        mlops_deployment = client.read_deployment_by_name(MLOPS)
        triggered = find_triggered_run(client, mlops_deployment.id, dataops.run)
        mlops = follow(client, triggered.id, RUN_TIMEOUT_S, label="mlops")
    assert mlops.run.state_name == "Completed", mlops.run.state
    seconds = time.monotonic() - started
    print(f"\nteam up {team.up_seconds:.1f} s; webhook -> mlops Completed {seconds:.1f} s")
    return Chain(dataops.run.labels[SNAPSHOT_LABEL], dataops.run.id, mlops.run.id, seconds)


# --- helpers ---------------------------------------------------------------------------------


def study_trials(settings: Settings, study_name: str) -> list:
    import optuna

    from tagifai.tune import get_storage

    storage = get_storage(settings)
    assert isinstance(storage, optuna.storages.RDBStorage)
    return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("tagifai")), *args]
    return subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def platform_logs(settings: Settings) -> dict[str, str]:
    return {
        path.name: path.read_text(errors="replace")
        for path in sorted(platform_dir(settings).glob("*.log"))
    }


def sqlite_files(settings: Settings) -> list[Path]:
    """The embedded stores' files: none may appear in team mode."""
    candidates = [
        settings.prefect_dir / "prefect.db",
        settings.mlflow_dir / "mlflow.db",
        settings.optuna_journal,
        settings.feast_dir / "online_store.db",
    ]
    return [path for path in candidates if path.exists()]


# --- the platform ----------------------------------------------------------------------------


def test_team_services_run_on_the_loopback_with_private_secrets(team: Team) -> None:
    import redis

    settings = team.settings
    assert settings.team is not None
    states = status(settings)
    assert {name: s.state for name, s in states.items()} == dict.fromkeys(states, "running")
    for name in ("postgres", "redis"):
        assert states[name].rss_bytes and states[name].rss_bytes > 2**20
        listening = {
            (c.laddr.ip, c.laddr.port)
            for p in [psutil.Process(states[name].pid)]
            for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
        port = settings.team.postgres_port if name == "postgres" else settings.team.redis_port
        assert listening == {("127.0.0.1", port)}, (name, listening)
    # PostgreSQL refuses root, so it runs as its system user; so does Redis.
    assert psutil.Process(states["postgres"].pid).username() == "postgres"
    assert psutil.Process(states["redis"].pid).username() == "redis"

    secrets = sorted(settings.team.secrets_dir.iterdir())
    assert {p.name for p in secrets} == {"pgpass", "postgres-superuser", "redis-password"}
    assert settings.team.secrets_dir.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in secrets)
    config = settings.team.directory / "redis" / "redis.conf"
    assert config.stat().st_mode & 0o777 == 0o600

    passwords = [*read_pgpass(settings.team.pgpass).values()]
    passwords.append((settings.team.secrets_dir / "postgres-superuser").read_text().strip())
    passwords.append(settings.team.redis_password_file.read_text().strip())
    assert len(set(passwords)) == 5 and all(len(p) > 30 for p in passwords)
    # Never on a command line (ps shows argv), in a URL or in a log.
    command_lines = []
    for process in psutil.process_iter(["cmdline"]):
        command_lines.append(" ".join(process.info["cmdline"] or []))
    urls = [settings.mlflow_tracking_uri, settings.optuna_storage, team.api_url]
    logs = platform_logs(settings)
    for password in passwords:
        assert not [line for line in command_lines if password in line]
        assert not [url for url in urls if password in url]
        assert not [name for name, text in logs.items() if password in text]

    # Both servers want their password.
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=settings.team.redis_port).ping()
    import psycopg

    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(
            host="127.0.0.1", port=settings.team.postgres_port, user="mlflow", password="wrong"
        )

    # Each service has its own role and database; the Prefect server migrated its own.
    assert query(settings, "prefect", "SELECT current_user") == [("prefect",)]
    import yaml

    declared = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    deployed = query(settings, "prefect", "SELECT count(*) FROM deployment")
    assert deployed == [(len(declared),)]


def test_stop_and_start_keeps_the_team_data(tmp_path: Path) -> None:
    """down stops PostgreSQL and Redis cleanly; up finds their data (one database, one key)."""
    import redis

    with team_root("tagifai-team-restart-") as root, pytest.MonkeyPatch.context() as env:
        settings = team_environment(env, root)
        assert settings.team is not None
        try:
            urls = up(settings, ("postgres", "redis"))
            assert list(urls) == ["postgres", "redis"]
            pids = {name: s.pid for name, s in status(settings).items() if s.pid}
            query(settings, "optuna", "CREATE TABLE kept (value int)")
            query(settings, "optuna", "INSERT INTO kept VALUES (42)")
            password = settings.team.redis_password_file.read_text().strip()
            redis.Redis(port=settings.team.redis_port, password=password).set("kept", "yes")

            assert sorted(down(settings)) == ["postgres", "redis"]
            assert not [pid for pid in pids.values() if psutil.pid_exists(pid)]
            log = (platform_dir(settings) / "postgres.log").read_text()
            assert "database system is shut down" in log  # a clean shutdown, no recovery
            assert "DB saved on disk" in (platform_dir(settings) / "redis.log").read_text()

            up(settings, ("postgres", "redis"))
            assert query(settings, "optuna", "SELECT value FROM kept") == [(42,)]
            client = redis.Redis(port=settings.team.redis_port, password=password)
            assert client.get("kept") == b"yes"
        finally:
            down(settings)


# --- the chain -------------------------------------------------------------------------------


def test_webhook_dataops_mlops_deploy_predict_on_postgres_and_redis(
    team: Team, chain: Chain
) -> None:
    settings = team.settings
    production = registry.get_version(settings)
    assert production is not None and production.snapshot_id == chain.snapshot
    assert production.tags["prefect_flow_run_id"] == str(chain.mlops_id)
    # The registry, the study and the Prefect runs are rows in PostgreSQL...
    rows = query(
        settings,
        "mlflow",
        "SELECT version FROM registered_model_aliases WHERE name = %s AND alias = %s",
        MODEL_NAME,
        PRODUCTION_ALIAS,
    )
    assert rows == [(production.version,)]
    trials = study_trials(settings, f"{chain.snapshot}-default")
    assert len([t for t in trials if t.user_attrs.get("run_id") == str(chain.mlops_id)]) == N_TRIALS
    runs = query(
        settings, "prefect", "SELECT state_type FROM flow_run WHERE id = %s", chain.mlops_id
    )
    assert runs == [("COMPLETED",)]
    # ...the online features are hashes in Redis...
    assert settings.feast_config == "feature_store.redis.yaml"
    assert store.count_online_rows(settings) == 764
    features = cli("features", "--id", "6")
    assert features.returncode == 0, features.stderr
    assert json.loads(features.stdout)["text"].startswith("comparison between yolo")
    # ...and none of the embedded SQLite stores was created.
    assert sqlite_files(settings) == []

    predicted = cli("predict", "--title", "YOLO v9", "--description", "object detection")
    assert predicted.returncode == 0, predicted.stderr
    assert json.loads(predicted.stdout)["tag"] in LABELS
    status_json = json.loads(cli("status", "--json").stdout)
    assert status_json["production"]["version"] == production.version
    assert status_json["online_feature_rows"] == 764


# --- concurrency -----------------------------------------------------------------------------


def test_four_mlops_runs_at_once_leave_a_consistent_registry_and_study(
    team: Team, chain: Chain
) -> None:
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    settings = team.settings
    versions_before = {int(v.version) for v in registry.connect(settings).search_model_versions()}
    with api_client(team.api_url) as client:
        deployment = client.read_deployment_by_name(MLOPS)
        client.update_deployment(deployment.id, DeploymentUpdate(concurrency_limit=CONCURRENT_RUNS))
        try:
            created = [
                client.create_flow_run_from_deployment(
                    deployment.id,
                    parameters={
                        "snapshot": chain.snapshot,
                        "n_trials": CONCURRENT_TRIALS,
                        "force": True,
                    },
                )
                for _ in range(CONCURRENT_RUNS)
            ]
            done = [follow(client, run.id, RUN_TIMEOUT_S, label="mlops") for run in created]
        finally:
            client.update_deployment(deployment.id, DeploymentUpdate(concurrency_limit=1))
        runs = [d.run for d in done]
        logs = []
        while page := client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs])),
            limit=200,
            offset=len(logs),
        ):
            logs.extend(page)
    assert [r.state_name for r in runs] == ["Completed"] * CONCURRENT_RUNS, [r.state for r in runs]
    # They ran at the same time: every run started before any other finished.
    assert max(r.start_time for r in runs) < min(r.end_time for r in runs), [
        (r.start_time, r.end_time) for r in runs
    ]
    print(
        f"\n{CONCURRENT_RUNS} mlops runs at once: "
        f"{(max(r.end_time for r in runs) - min(r.start_time for r in runs)).total_seconds():.1f} s"
    )

    # The registry: one new version per run, numbered without gaps or duplicates, each
    # pointing at its own run and flow run; one production alias, on a deployed version.
    client = registry.connect(settings)
    new = [v for v in client.search_model_versions() if int(v.version) not in versions_before]
    numbers = sorted(int(v.version) for v in new)
    assert numbers == list(range(max(versions_before) + 1, max(versions_before) + 1 + 4))
    assert len({v.run_id for v in new}) == CONCURRENT_RUNS
    assert {v.tags["prefect_flow_run_id"] for v in new} == {str(r.id) for r in runs}
    assert all(v.tags.get("decision") in ("deployed", "not deployed") for v in new)
    aliases = client.get_registered_model(MODEL_NAME).aliases
    assert list(aliases) == [PRODUCTION_ALIAS]
    production = client.get_model_version_by_alias(MODEL_NAME, PRODUCTION_ALIAS)
    assert production.tags["decision"] == "deployed"

    # Optuna: every run's trials are in the one shared study, none lost or left running.
    trials = study_trials(settings, f"{chain.snapshot}-default")
    for run in runs:
        own = [t for t in trials if t.user_attrs.get("run_id") == str(run.id)]
        assert len(own) >= CONCURRENT_TRIALS, (run.name, len(own))
        assert {t.state.name for t in own} <= {"COMPLETE", "PRUNED"}
    assert len({t.number for t in trials}) == len(trials)

    # No "database is locked" anywhere: server, worker (flow-run output), MLflow, run logs.
    locked = [name for name, text in platform_logs(settings).items() if LOCKED in text]
    assert locked == []
    assert not [log.message for log in logs if LOCKED in log.message]


# --- Dask cluster ----------------------------------------------------------------------------


def compute_intervals(address: str, task: str) -> list[tuple[float, float]]:
    """(start, stop) of the compute of every ``task`` the scheduler recorded."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        stream = client.get_task_stream()
    return sorted(
        (part["start"], part["stop"])
        for record in stream
        if str(record["key"]).rsplit("-", 1)[0] == task
        for part in record["startstops"]
        if part["action"] == "compute"
    )


def test_mlops_batches_on_two_dask_worker_processes_share_the_postgres_study(
    team: Team, chain: Chain, tmp_path: Path
) -> None:
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )

    import flows.mlops  # noqa: F401  (builds its runner before TAGIFAI_DASK_ADDRESS is set)
    from tests.flows.test_dask_cluster import WORKERS, stop, task_placements, wait_for_port

    env = {
        **os.environ,
        "PREFECT_API_URL": team.api_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
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
            with (tmp_path / f"dask-{len(processes)}.log").open("w") as log:
                processes.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        cwd=REPO_ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )  # fmt: skip
                )
            if len(processes) == 1:
                wait_for_port(port, processes[0])
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(len(WORKERS), timeout=120)
            client.get_task_stream()
        with (
            pytest.MonkeyPatch.context() as patch,
            temporary_settings(
                {PREFECT_API_URL: team.api_url, PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path}
            ),
        ):
            patch.setenv("TAGIFAI_DASK_ADDRESS", address)
            from flows.mlops import mlops
            from flows.runner import build_task_runner

            state = mlops.with_options(task_runner=build_task_runner())(
                snapshot=chain.snapshot, n_trials=4, force=True, return_state=True
            )
        assert state.is_completed(), state.message
        placements = task_placements(address)
        batch_intervals = compute_intervals(address, "tune_batch")
    finally:
        stop(processes)

    batches = sorted(worker for task, worker in placements if task == "tune_batch")
    assert batches == sorted(WORKERS), placements
    # The two batches ran at the same time, each in its own process, on the one study.
    first, second = batch_intervals
    assert first[0] < second[1] and second[0] < first[1], batch_intervals
    flow_run_id = str(state.state_details.flow_run_id)
    trials = [
        t
        for t in study_trials(team.settings, f"{chain.snapshot}-default")
        if t.user_attrs.get("run_id") == flow_run_id
    ]
    # The run's pool of 4 (one more when both batches claim the last one at once).
    assert len(trials) in (4, 5), len(trials)
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
