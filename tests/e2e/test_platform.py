"""The local platform: real Prefect server, worker, webhook receiver and MLflow on free ports."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from deployments.platform import (
    SERVICES,
    PlatformError,
    ServiceRecord,
    down,
    ensure_server,
    free_ports,
    platform_dir,
    status,
    up,
)
from deployments.webhook import EVENT_NAME, send_data_arrived
from tagifai.config import REPO_ROOT, Settings, get_settings

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

SECRET = "platform-test-secret-0123456789"
CLIENT_ENV = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING")


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings for a platform under a temporary stores dir and free ports; always torn down."""
    for name in (*CLIENT_ENV, "MLFLOW_TRACKING_URI", "TAGIFAI_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TAGIFAI_STORES_DIR", str(tmp_path / "stores"))
    monkeypatch.setenv("TAGIFAI_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("TAGIFAI_PLATFORM_TIMEOUT_SCALE", "2")  # slow CI machines
    ports = free_ports(4)
    names = (
        "TAGIFAI_PREFECT_PORT",
        "TAGIFAI_WEBHOOK_PORT",
        "TAGIFAI_MLFLOW_PORT",
        "TAGIFAI_DASK_PORT",
    )
    for name, port in zip(names, ports, strict=True):
        monkeypatch.setenv(name, str(port))
    settings = get_settings()
    try:
        yield settings
    finally:
        down(settings)


def _process_tree(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _read_event(api_url: str, event_id: str, timeout_s: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.post(
            f"{api_url}/events/filter", json={"filter": {"id": {"id": [event_id]}}}, timeout=10
        )
        response.raise_for_status()
        if response.json()["events"]:
            return response.json()["events"][0]
        time.sleep(0.5)
    raise AssertionError(f"event {event_id} never reached {api_url}")


def test_up_status_down_lifecycle(platform: Settings) -> None:
    prefect_port = int(os.environ["TAGIFAI_PREFECT_PORT"])
    urls = up(platform)

    assert list(urls) == list(SERVICES)
    api_url = urls["server"]
    assert api_url == f"http://127.0.0.1:{prefect_port}/api"
    states = status(platform)
    assert {name: s.state for name, s in states.items()} == dict.fromkeys(SERVICES, "running")
    pids = {name: s.pid for name, s in states.items()}
    assert all(s.rss_bytes and s.rss_bytes > 10 * 2**20 for s in states.values())
    # The server keeps its state under stores/prefect and its log under stores/platform.
    assert (platform.prefect_dir / "prefect.db").exists()
    assert "prefect" in (platform_dir(platform) / "prefect-server.log").read_text().lower()

    # The worker created the pool and is polling it.
    pool = httpx.get(f"{api_url}/work_pools/tagifai", timeout=10).json()
    assert pool["type"] == "process"
    # The UI is told the real port, not 4200.
    ui_settings = httpx.get(f"{api_url.removesuffix('/api')}/ui-settings", timeout=10).json()
    assert ui_settings["api_url"] == api_url
    # MLflow answers its REST API for a 127.0.0.1 Host header.
    experiments = httpx.post(
        f"{urls['mlflow']}/api/2.0/mlflow/experiments/search", json={"max_results": 5}, timeout=30
    )
    assert experiments.status_code == 200, experiments.text
    assert (platform.mlflow_dir / "mlflow.db").exists()

    # The real receiver turns a signed notice into an event on the real server.
    response = send_data_arrived(
        urls["webhook"],
        SECRET,
        str(platform.projects_csv),
        str(platform.tags_csv),
        source="platform-test",
        batch_id="lifecycle",
    )
    assert response.status_code == 202, response.text
    event = _read_event(api_url, response.json()["event_id"])
    assert event["event"] == EVENT_NAME
    assert event["payload"]["projects_uri"] == str(platform.projects_csv.resolve())

    # Idempotent: a second `up` and `ensure_server` start nothing new.
    assert up(platform) == urls
    assert ensure_server(platform) == api_url
    assert {name: s.pid for name, s in status(platform).items()} == pids

    processes = [p for pid in pids.values() for p in _process_tree(pid)]
    assert sorted(down(platform)) == sorted(SERVICES)
    psutil.wait_procs(processes, timeout=10)
    assert all(_gone(p) for p in processes)
    assert {s.state for s in status(platform).values()} == {"stopped"}
    assert not list(platform_dir(platform).glob("*.json"))
    assert down(platform) == []


def test_ensure_server_is_shared_by_racing_callers(platform: Settings) -> None:
    """Two CLIs racing for the server get one server (the file lock), then `up` reuses it."""
    command = [sys.executable, "-m", "deployments.platform", "url"]
    racers = [
        subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [racer.communicate(timeout=240)[0].strip() for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    assert outputs[0] == outputs[1] == ensure_server(platform)
    server_pid = status(platform)["server"].pid
    servers = [
        p for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and p.info["cmdline"][1:5] == ["-m", "prefect", "server", "start"]
        and str(os.environ["TAGIFAI_PREFECT_PORT"]) in p.info["cmdline"]
    ]  # fmt: skip
    assert [p.pid for p in servers] == [server_pid]
    assert up(platform, ("server",)) == {"server": outputs[0]}
    assert status(platform)["server"].pid == server_pid

    # A port taken by someone else is replaced by a free one.
    taken = int(os.environ["TAGIFAI_WEBHOOK_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        urls = up(platform, ("server", "webhook"))
    assert urls["server"] == outputs[0]
    assert f":{taken}/" not in urls["webhook"]
    assert status(platform)["webhook"].state == "running"


def test_failed_start_reports_the_log_tail_and_cleans_up(
    platform: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "mysql+nosuchdriver://127.0.0.1:1/mlflow")
    settings = get_settings()
    with pytest.raises(PlatformError, match="mlflow exited during start-up") as raised:
        up(settings, ("mlflow",))
    assert raised.value.log_tail.strip()  # what the process printed before dying
    assert "mlflow.log" in raised.value.summary
    assert status(settings)["mlflow"].state == "stopped"
    assert not (platform_dir(settings) / "mlflow.json").exists()


def test_down_never_signals_a_recycled_pid(platform: Settings) -> None:
    """A record whose PID now belongs to another program (other command line) is left alone."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        create_time = psutil.Process(bystander.pid).create_time()
        records = {
            "server": (create_time, ("python", "-m", "prefect", "server", "start")),
            "webhook": (create_time - 100.0, tuple(psutil.Process(bystander.pid).cmdline())),
        }
        platform_dir(platform).mkdir(parents=True)
        for service, (created, cmdline) in records.items():
            record = ServiceRecord(
                service=service,
                pid=bystander.pid,
                create_time=created,
                cmdline=cmdline,
                token="not-ours",
                url="http://127.0.0.1:1",
                log=str(platform_dir(platform) / "x.log"),
                started_at=time.time(),
            )
            path = platform_dir(platform) / f"{service}.json"
            path.write_text(json.dumps({**record.__dict__, "cmdline": list(cmdline)}))
        assert status(platform)["server"].state == "stopped"
        assert down(platform) == []
        assert bystander.poll() is None
        assert not list(platform_dir(platform).glob("*.json"))
    finally:
        bystander.kill()
        bystander.wait()


def test_basic_auth_server_rejects_anonymous_clients_and_worker_connects(
    platform: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth = "tagifai:" + base64.b16encode(os.urandom(8)).decode()
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", auth)
    urls = up(platform, ("server", "worker"))
    api_url = urls["server"]

    anonymous = httpx.post(f"{api_url}/flows/filter", json={}, timeout=10)
    assert anonymous.status_code == 401
    header = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
    assert httpx.post(f"{api_url}/flows/filter", json={}, headers=header).status_code == 200
    # ONLINE in the pool means the worker's authenticated heartbeats are arriving.
    assert status(platform)["worker"].state == "running"
    worker_env = psutil.Process(status(platform)["worker"].pid).environ()
    assert worker_env["PREFECT_API_AUTH_STRING"] == auth
    assert "PREFECT_SERVER_API_AUTH_STRING" not in worker_env
    assert auth not in " ".join(psutil.Process(status(platform)["server"].pid).cmdline())


def test_cli_reports_errors_in_one_line_and_nonzero_exit(platform: Settings) -> None:
    command = [sys.executable, "-m", "deployments.platform", "up", "nonsense"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: unknown service(s) nonsense; choose from "
        "('postgres', 'redis', 'server', 'mlflow', 'webhook', 'sensor', 'dask-scheduler', "
        "'dask-workers', 'worker', 'predict')"
    ]
    listing = subprocess.run(
        [sys.executable, "-m", "deployments.platform", "status", "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listing.returncode == 0
    assert {s["state"] for s in json.loads(listing.stdout).values()} == {"stopped"}
