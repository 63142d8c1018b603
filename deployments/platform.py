"""One-command local platform: Prefect server, process worker, webhook receiver and MLflow UI.

    python -m deployments.platform up [SERVICE ...]   # start what isn't running, print the URLs
    python -m deployments.platform status [--json]
    python -m deployments.platform url                # the Prefect API URL (starts the server)
    python -m deployments.platform down

Why a real server: without ``PREFECT_API_URL`` every Prefect process starts its own ephemeral
server (15-20 s each) and process-based Dask clusters cannot reach it, so every process of the
project talks to one ``prefect server start`` on SQLite under ``stores/prefect``.

Each service runs detached in its own session (process group), so it outlives the command that
started it; its log, and a JSON record of its PID, start time, command line and URL, live in
``stores/platform/``. ``down`` stops only processes whose record it wrote and whose start time and
command line still match, so a recycled PID is never signalled. A file lock makes concurrent
callers (two test sessions, two terminals) share one server instead of racing to start two.

Environment:
    PREFECT_API_URL                   use this Prefect API; no local server is started
    TAGIFAI_PREFECT_PORT              4200; TAGIFAI_WEBHOOK_PORT 8787; TAGIFAI_MLFLOW_PORT 5000.
                                      A port taken by something else is replaced by a free one.
    PREFECT_WORKER_QUERY_SECONDS      worker poll interval, 2 s here (Prefect's default is 10 s)
    PREFECT_SERVER_API_AUTH_STRING    ``user:password`` basic auth on the server; the worker and
                                      the webhook receiver get it as PREFECT_API_AUTH_STRING
    TAGIFAI_WEBHOOK_SECRET            HMAC secret of the receiver; if unset one is generated once
                                      into ``stores/platform/webhook-secret`` (mode 0600)
    TAGIFAI_PLATFORM_TIMEOUT_SCALE    multiply the start-up timeouts (slow CI machines)

Nothing here imports Prefect: the services are separate processes, so the CLI starts in a
fraction of a second and ``status``/``down`` work even when Prefect itself is broken.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

from tagifai.config import REPO_ROOT, Settings, get_settings
from tagifai.errors import TagifaiError

logger = logging.getLogger(__name__)

SERVICES: tuple[str, ...] = ("server", "worker", "webhook", "mlflow")
WORK_POOL = "tagifai"
HOST = "127.0.0.1"
DEFAULT_PORTS = {"server": 4200, "webhook": 8787, "mlflow": 5000}
PORT_ENV = {
    "server": "TAGIFAI_PREFECT_PORT",
    "webhook": "TAGIFAI_WEBHOOK_PORT",
    "mlflow": "TAGIFAI_MLFLOW_PORT",
}
LOG_NAMES = {
    "server": "prefect-server.log",
    "worker": "prefect-worker.log",
    "webhook": "webhook.log",
    "mlflow": "mlflow.log",
}
# MLflow's CLI alone imports for ~10 s on this machine, hence its longer budget.
STARTUP_TIMEOUT_S = {"server": 60.0, "worker": 60.0, "webhook": 30.0, "mlflow": 120.0}
STOP_TIMEOUT_S = 15.0
# Prefect polls every 10 s by default; 2 s keeps webhook-to-running latency low for a local
# platform at the cost of one cheap SQLite query every 2 s.
DEFAULT_WORKER_QUERY_SECONDS = "2"
# Every process we start, and everything it forks, carries this random token in its
# environment: it lets `down` recognise our own orphans (e.g. MLflow's uvicorn child) safely.
TOKEN_ENV = "TAGIFAI_PLATFORM_TOKEN"

# Popen handles of the services this process started: keeping them lets us reap exited
# children (no zombies in a long-lived caller such as pytest) and avoids ResourceWarnings.
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


class PlatformError(TagifaiError):
    """A platform service could not be started, reached or stopped."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message if not log_tail else f"{message}\n{log_tail}")
        self.summary = message
        self.log_tail = log_tail


@dataclass(frozen=True)
class ServiceRecord:
    """What `up` wrote about a process it started: enough to find, check and stop it."""

    service: str
    pid: int
    create_time: float
    cmdline: tuple[str, ...]
    token: str
    url: str
    log: str
    started_at: float
    prefect_api_url: str | None = None  # the API the worker/receiver was pointed at
    worker_name: str | None = None


@dataclass(frozen=True)
class ServiceStatus:
    """State of one service: running, unhealthy, stopped or external."""

    service: str
    state: str
    url: str | None = None
    pid: int | None = None
    rss_bytes: int | None = None


# --- files under stores/platform -------------------------------------------------------------


def platform_dir(settings: Settings) -> Path:
    return settings.stores_dir / "platform"


def _record_path(settings: Settings, service: str) -> Path:
    return platform_dir(settings) / f"{service}.json"


def _read_record(settings: Settings, service: str) -> ServiceRecord | None:
    path = _record_path(settings, service)
    try:
        data = json.loads(path.read_text())
        data["cmdline"] = tuple(data["cmdline"])
        return ServiceRecord(**data)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError):
        logger.warning("Ignoring unreadable platform record %s", path)
        return None


def _write_record(settings: Settings, record: ServiceRecord) -> None:
    path = _record_path(settings, record.service)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2))
    os.replace(tmp, path)  # atomic: `status` never reads half a record


def _forget(settings: Settings, service: str) -> None:
    _record_path(settings, service).unlink(missing_ok=True)


@contextlib.contextmanager
def _platform_lock(settings: Settings) -> Iterator[None]:
    """Serialise start/stop across processes (flock is released if the holder dies)."""
    directory = platform_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _log_tail(path: Path | str, lines: int = 25) -> str:
    try:
        with open(path, "rb") as log:  # logs append across restarts: read only the end
            log.seek(max(0, log.seek(0, os.SEEK_END) - 16_384))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


# --- processes -------------------------------------------------------------------------------


def _verified_process(record: ServiceRecord) -> psutil.Process | None:
    """The live process of a record, or None if it exited or the PID now belongs to another."""
    spawned = _SPAWNED.get(record.pid)
    if spawned is not None and spawned.poll() is not None:  # reaps our own exited child
        _SPAWNED.pop(record.pid, None)
        return None
    try:
        process = psutil.Process(record.pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        if abs(process.create_time() - record.create_time) > 0.05:
            return None
        if tuple(process.cmdline()) != record.cmdline:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return process


def _carries_token(process: psutil.Process, token: str) -> bool:
    try:
        return process.environ().get(TOKEN_ENV) == token
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _service_processes(record: ServiceRecord) -> list[psutil.Process]:
    """The verified leader, its descendants, and members of its group that carry its token."""
    found: dict[int, psutil.Process] = {}
    leader = _verified_process(record)
    if leader is not None:
        found[leader.pid] = leader
        with contextlib.suppress(psutil.Error):
            # Flow runs may sit in their own sessions, outside the group: take descendants too.
            found.update({child.pid: child for child in leader.children(recursive=True)})
    for process in psutil.process_iter():
        if process.pid in found:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if os.getpgid(process.pid) == record.pid and _carries_token(process, record.token):
                found[process.pid] = process
    return list(found.values())


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    with contextlib.suppress(psutil.Error):
        for member in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += member.memory_info().rss
    return total


def _signal_all(record: ServiceRecord, processes: list[psutil.Process], sig: int) -> None:
    # The group id is the leader's PID (start_new_session); signal the group only while the
    # leader is verified, otherwise only the individually verified processes.
    if any(p.pid == record.pid for p in processes):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, sig)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)


def _stop(record: ServiceRecord) -> bool:
    """Stop a service's processes; True if anything was running."""
    processes = _service_processes(record)
    if not processes:
        return False
    _signal_all(record, processes, signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=STOP_TIMEOUT_S)
    if alive:
        logger.warning("%s did not stop within %.0f s; killing it", record.service, STOP_TIMEOUT_S)
        _signal_all(record, alive, signal.SIGKILL)
        psutil.wait_procs(alive, timeout=5)
    spawned = _SPAWNED.pop(record.pid, None)
    if spawned is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            spawned.wait(timeout=1)
    return True


def _spawn(
    settings: Settings,
    service: str,
    cmd: list[str],
    env: dict[str, str],
    url: str,
    prefect_api_url: str | None = None,
    worker_name: str | None = None,
) -> ServiceRecord:
    """Start ``cmd`` detached (own session, stdin closed, output to its log) and record it."""
    log_path = platform_dir(settings) / LOG_NAMES[service]
    token = uuid.uuid4().hex
    with open(log_path, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n--- {stamp} starting {service}: {' '.join(cmd)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env={**env, TOKEN_ENV: token},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _SPAWNED[process.pid] = process
    try:
        create_time = psutil.Process(process.pid).create_time()
    except psutil.NoSuchProcess as error:
        tail = _log_tail(log_path)
        raise PlatformError(f"{service} exited at once (log: {log_path})", tail) from error
    record = ServiceRecord(
        service=service,
        pid=process.pid,
        create_time=create_time,
        cmdline=tuple(cmd),
        token=token,
        url=url,
        log=str(log_path),
        started_at=time.time(),
        prefect_api_url=prefect_api_url,
        worker_name=worker_name,
    )
    _write_record(settings, record)
    logger.info("Started %s (pid %d), log %s", service, process.pid, log_path)
    return record


def _timeout(service: str) -> float:
    scale = float(os.environ.get("TAGIFAI_PLATFORM_TIMEOUT_SCALE") or 1.0)
    return STARTUP_TIMEOUT_S[service] * scale


def _await_healthy(settings: Settings, record: ServiceRecord, fresh: bool) -> None:
    """Wait until ``record``'s service is healthy; stop and forget a fresh one that isn't."""
    deadline = time.monotonic() + _timeout(record.service)
    while True:
        if _is_healthy(record):
            return
        exited = _verified_process(record) is None
        if exited or time.monotonic() > deadline:
            what = (
                "exited during start-up"
                if exited
                else (f"is not healthy after {_timeout(record.service):.0f} s")
            )
            tail = _log_tail(record.log)
            if fresh or exited:
                _stop(record)
                _forget(settings, record.service)
            hint = "" if fresh else "; run `python -m deployments.platform down` and retry"
            raise PlatformError(f"{record.service} {what} (log: {record.log}){hint}", tail)
        time.sleep(0.25)


# --- ports, URLs, auth -----------------------------------------------------------------------


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # uvicorn binds with SO_REUSEADDR too, so sockets in TIME_WAIT don't count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_ports(count: int = 1) -> list[int]:
    """``count`` distinct ports that are free on the loopback now (all held while choosing)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def _choose_port(service: str) -> int:
    wanted = int(os.environ.get(PORT_ENV[service]) or DEFAULT_PORTS[service])
    if wanted and _port_is_free(wanted):
        return wanted
    port = free_ports()[0]
    if wanted:
        logger.warning("Port %d for %s is taken; using %d", wanted, service, port)
    return port


def _client_auth_string() -> str | None:
    return os.environ.get("PREFECT_API_AUTH_STRING") or (
        os.environ.get("PREFECT_SERVER_API_AUTH_STRING") or None
    )


def prefect_auth_headers() -> dict[str, str]:
    """The Authorization header Prefect's own client sends when an auth string is configured."""
    auth = _client_auth_string()
    if not auth:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        # Loopback only: never route through a proxy from the environment.
        response = httpx.get(url, headers=headers, timeout=3.0, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def _worker_name(settings: Settings) -> str:
    digest = hashlib.sha256(str(settings.stores_dir).encode()).hexdigest()[:8]
    return f"tagifai-local-{digest}"


def _worker_online(api_url: str, worker_name: str) -> bool:
    try:
        response = httpx.post(
            f"{api_url}/work_pools/{WORK_POOL}/workers/filter",
            json={"limit": 100},
            headers=prefect_auth_headers(),
            timeout=3.0,
            trust_env=False,
        )
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    return any(
        worker.get("name") == worker_name and worker.get("status") == "ONLINE"
        for worker in response.json()
    )


def _is_healthy(record: ServiceRecord) -> bool:
    if record.service == "server":
        return _http_ok(f"{record.url}/health", prefect_auth_headers())
    if record.service == "worker":
        return (
            record.prefect_api_url is not None
            and record.worker_name is not None
            and _worker_online(record.prefect_api_url, record.worker_name)
        )
    return _http_ok(f"{record.url}/health")


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TAGIFAI_STORES_DIR=str(settings.stores_dir),
        TAGIFAI_DATA_DIR=str(settings.data_dir),
        PREFECT_HOME=str(settings.prefect_dir),
        DO_NOT_TRACK="1",
    )
    return env


def _prefect_client_env(settings: Settings, api_url: str) -> dict[str, str]:
    env = _child_env(settings)
    env["PREFECT_API_URL"] = api_url
    env.pop("PREFECT_SERVER_API_AUTH_STRING", None)  # clients need only their own credential
    auth = _client_auth_string()
    if auth:
        env["PREFECT_API_AUTH_STRING"] = auth
    env.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tagifai")
    return env


# --- the services ----------------------------------------------------------------------------


def _reusable(settings: Settings, service: str, api_url: str | None = None) -> ServiceRecord | None:
    """The running record of ``service``, or None after clearing a stale or outdated one."""
    record = _read_record(settings, service)
    if record is None:
        return None
    if _verified_process(record) is None:
        _stop(record)  # leftovers of a crashed leader that still carry its token
        _forget(settings, service)
        return None
    if api_url is not None and record.prefect_api_url != api_url:
        logger.info("Restarting %s: the Prefect API moved to %s", service, api_url)
        _stop(record)
        _forget(settings, service)
        return None
    return record


def _start_server(settings: Settings) -> tuple[ServiceRecord, bool]:
    record = _reusable(settings, "server")
    if record is not None:
        return record, False
    port = _choose_port("server")
    api_url = f"http://{HOST}:{port}/api"
    settings.prefect_dir.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite+aiosqlite:///{settings.prefect_dir / 'prefect.db'}"
    env = _child_env(settings)
    env.pop("PREFECT_API_URL", None)
    env.update(
        PREFECT_SERVER_DATABASE_CONNECTION_URL=db_url,
        PREFECT_API_DATABASE_CONNECTION_URL=db_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # The UI calls this URL from the browser; it defaults to port 4200.
        PREFECT_UI_API_URL=api_url,
    )
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)]
    return _spawn(settings, "server", cmd, env, api_url), True


def _ensure_server(settings: Settings) -> str:
    env_url = os.environ.get("PREFECT_API_URL")
    if env_url:
        return env_url.rstrip("/")
    record, fresh = _start_server(settings)
    _await_healthy(settings, record, fresh)
    return record.url


def ensure_server(settings: Settings) -> str:
    """Return a Prefect API URL: ``$PREFECT_API_URL``, else the project's server, started if needed.

    Raises:
        PlatformError: the server did not become healthy; the message carries its log tail.
    """
    env_url = os.environ.get("PREFECT_API_URL")
    if env_url:
        return env_url.rstrip("/")
    with _platform_lock(settings):
        return _ensure_server(settings)


def _start_worker(settings: Settings, api_url: str) -> tuple[ServiceRecord, bool]:
    record = _reusable(settings, "worker", api_url)
    if record is not None:
        return record, False
    name = _worker_name(settings)
    env = _prefect_client_env(settings, api_url)
    env["PREFECT_WORKER_QUERY_SECONDS"] = (
        os.environ.get("PREFECT_WORKER_QUERY_SECONDS") or DEFAULT_WORKER_QUERY_SECONDS
    )
    # Links in the flows' artifacts: the MLflow UI and the Data Docs the receiver serves.
    for service, variable, suffix in (
        ("mlflow", "TAGIFAI_MLFLOW_UI_URL", ""),
        ("webhook", "TAGIFAI_DATA_DOCS_URL", "/data-docs"),
    ):
        started = _read_record(settings, service)
        if started is not None and variable not in os.environ:
            env[variable] = started.url.rstrip("/") + suffix
    # `--type process` makes the worker create the pool, with Prefect's default process job
    # template, when it is missing; health = the pool lists this worker as ONLINE.
    cmd = [
        sys.executable, "-m", "prefect", "worker", "start",
        "--pool", WORK_POOL, "--type", "process", "--name", name,
    ]  # fmt: skip
    description = f"pool '{WORK_POOL}' (process), worker {name}"
    record = _spawn(settings, "worker", cmd, env, description, api_url, worker_name=name)
    return record, True


def webhook_secret(settings: Settings) -> str:
    """``$TAGIFAI_WEBHOOK_SECRET``, else the platform's generated secret (created once, 0600)."""
    from_env = os.environ.get("TAGIFAI_WEBHOOK_SECRET")
    if from_env:
        return from_env
    path = platform_dir(settings) / "webhook-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _start_webhook(settings: Settings, api_url: str) -> tuple[ServiceRecord, bool]:
    record = _reusable(settings, "webhook", api_url)
    if record is not None:
        return record, False
    port = _choose_port("webhook")
    env = _prefect_client_env(settings, api_url)
    env["TAGIFAI_WEBHOOK_SECRET"] = webhook_secret(settings)  # env, never argv (ps shows argv)
    cmd = [
        sys.executable, "-m", "uvicorn", "deployments.webhook:app",
        "--host", HOST, "--port", str(port), "--lifespan", "on", "--no-server-header",
    ]  # fmt: skip
    url = f"http://{HOST}:{port}"
    return _spawn(settings, "webhook", cmd, env, url, prefect_api_url=api_url), True


def _mlflow_backend_uri(settings: Settings) -> str:
    uri = settings.mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):  # a tracking *server*: serve the local store
        uri = f"sqlite:///{settings.mlflow_dir / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return uri


def _start_mlflow(settings: Settings) -> tuple[ServiceRecord, bool]:
    record = _reusable(settings, "mlflow")
    if record is not None:
        return record, False
    port = _choose_port("mlflow")
    artifacts = settings.mlflow_dir / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    env = _child_env(settings)
    env.update(
        MLFLOW_DISABLE_TELEMETRY="true",
        # Job execution (GenAI evaluation jobs) adds a huey consumer process; not needed here.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    # A local-path artifact root (not mlflow-artifacts:/) so that runs logged straight to the
    # SQLite store by flows and runs logged through this server share one artifact layout.
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", _mlflow_backend_uri(settings),
        "--default-artifact-root", artifacts.as_uri(),
        "--artifacts-destination", artifacts.as_uri(),
        "--host", HOST, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    return _spawn(settings, "mlflow", cmd, env, f"http://{HOST}:{port}"), True


def _describe(service: str, record: ServiceRecord) -> str:
    if service == "webhook":
        return f"{record.url}/hooks/data-arrived"
    return record.url


def up(settings: Settings, services: Sequence[str] = SERVICES) -> dict[str, str]:
    """Start each requested service that isn't already running and wait until all are healthy.

    Idempotent: a second call finds every service healthy and starts nothing.

    Returns:
        Service name to its URL (``server``: the API URL) or a description (``worker``).

    Raises:
        PlatformError: a service failed to start; the message carries its log tail.
    """
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        raise PlatformError(f"unknown service(s) {', '.join(unknown)}; choose from {SERVICES}")
    urls: dict[str, str] = {}
    with _platform_lock(settings):
        launched: list[tuple[ServiceRecord, bool]] = []
        # MLflow needs nothing from Prefect and imports slowly: let it warm up meanwhile.
        if "mlflow" in services:
            launched.append(_start_mlflow(settings))
        needs_prefect = {"server", "worker", "webhook"} & set(services)
        if needs_prefect:
            api_url = _ensure_server(settings)
            urls["server"] = api_url
            if "webhook" in services:
                launched.append(_start_webhook(settings, api_url))
            if "worker" in services:
                launched.append(_start_worker(settings, api_url))
        for record, fresh in launched:
            _await_healthy(settings, record, fresh)
            urls[record.service] = _describe(record.service, record)
    return {service: urls[service] for service in SERVICES if service in urls}


def down(settings: Settings) -> list[str]:
    """Stop the services this platform started (workers first, server last); idempotent.

    Returns:
        The services that were running and are now stopped.
    """
    stopped: list[str] = []
    with _platform_lock(settings):
        for service in reversed(SERVICES):
            record = _read_record(settings, service)
            if record is None:
                continue
            if _stop(record):
                stopped.append(service)
            _forget(settings, service)
    return stopped


def status(settings: Settings) -> dict[str, ServiceStatus]:
    """State of every service, with the resident memory of its process tree when running."""
    result: dict[str, ServiceStatus] = {}
    env_url = os.environ.get("PREFECT_API_URL")
    for service in SERVICES:
        record = _read_record(settings, service)
        if service == "server" and env_url and record is None:
            healthy = _http_ok(f"{env_url.rstrip('/')}/health", prefect_auth_headers())
            state = "external" if healthy else "unreachable"
            result[service] = ServiceStatus(service, state, env_url.rstrip("/"))
            continue
        process = _verified_process(record) if record is not None else None
        if record is None or process is None:
            result[service] = ServiceStatus(service, "stopped")
            continue
        state = "running" if _is_healthy(record) else "unhealthy"
        url = _describe(service, record)
        result[service] = ServiceStatus(service, state, url, record.pid, _tree_rss(process))
    return result


# --- CLI -------------------------------------------------------------------------------------


def _print_urls(settings: Settings, urls: dict[str, str]) -> None:
    if "server" in urls:
        api_url = urls["server"]
        print(f"Prefect UI    {api_url.removesuffix('/api')}")
        print(f"Prefect API   {api_url}    (export PREFECT_API_URL={api_url})")
    if "worker" in urls:
        print(f"Worker        {urls['worker']}")
    if "webhook" in urls:
        secret_from = (
            "$TAGIFAI_WEBHOOK_SECRET"
            if os.environ.get("TAGIFAI_WEBHOOK_SECRET")
            else str(platform_dir(settings) / "webhook-secret")
        )
        print(f"Webhook       {urls['webhook']}    (secret: {secret_from})")
    if "mlflow" in urls:
        print(f"MLflow        {urls['mlflow']}")
    print(f"Logs          {platform_dir(settings)}")


def _print_status(statuses: dict[str, ServiceStatus], as_json: bool) -> None:
    if as_json:
        print(json.dumps({name: asdict(s) for name, s in statuses.items()}, indent=2))
        return
    for item in statuses.values():
        rss = f"{item.rss_bytes / 2**20:.0f} MiB" if item.rss_bytes else ""
        pid = f"pid {item.pid}" if item.pid else ""
        print(f"{item.service:<8} {item.state:<10} {pid:<11} {rss:>8}  {item.url or ''}".rstrip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.platform",
        description="Local Prefect server, worker, webhook receiver and MLflow UI.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start services (all by default) and print URLs")
    start.add_argument("services", nargs="*", metavar="SERVICE", help=", ".join(SERVICES))
    commands.add_parser("down", help="stop the services this platform started")
    show = commands.add_parser("status", help="show each service's state")
    show.add_argument("--json", action="store_true", help="print JSON")
    commands.add_parser("url", help="print the Prefect API URL, starting the server if needed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    settings = get_settings()
    try:
        if args.command == "up":
            started = time.monotonic()
            urls = up(settings, tuple(args.services) or SERVICES)
            _print_urls(settings, urls)
            print(f"Ready in {time.monotonic() - started:.1f} s")
        elif args.command == "down":
            stopped = down(settings)
            print(f"Stopped {', '.join(stopped)}" if stopped else "Nothing was running")
        elif args.command == "status":
            _print_status(status(settings), args.json)
        else:
            print(ensure_server(settings))
    except PlatformError as error:
        print(f"error: {error.summary}", file=sys.stderr)
        if error.log_tail:
            print(error.log_tail, file=sys.stderr)
        return 1
    except TagifaiError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
