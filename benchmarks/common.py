"""What every benchmark shares: isolated stores, a private platform, measured subprocesses,
machine facts, and the JSON/PNG/table output.

Heavy work always runs in a subprocess: its wall time then includes interpreter start-up and
imports, and its memory is the peak over time of the summed RSS of its whole process tree
(Dask workers, flow-run processes), sampled every 0.2 s.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform as host_platform
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "benchmarks" / "out"
TMP_DIR = OUT_DIR / "tmp"  # git-ignored: stores, synthetic data and logs of the runs
SAMPLE_SECONDS = 0.2
MIB = 2**20
GIB = 2**30

# Client settings that would point a run at someone else's state.
FOREIGN_ENV = (
    "PREFECT_API_URL",
    "PREFECT_API_KEY",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_SERVER_API_AUTH_STRING",
    "PREFECT_PROFILE",
    "PREFECT_HOME",
    "PREFECT_RESULTS_LOCAL_STORAGE_PATH",
    "MLFLOW_TRACKING_URI",
    "TAGIFAI_DASK_ADDRESS",
    "TAGIFAI_OPTUNA_STORAGE",
    "TAGIFAI_NOTIFY_URLS",
    "TAGIFAI_DATA_DIR",
    "TAGIFAI_MLFLOW_UI_URL",
    "TAGIFAI_DATA_DOCS_URL",
    "TAGIFAI_PLATFORM_TOKEN",
)
QUIET_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_LOGGING_LEVEL": "ERROR",
    "DASK_LOGGING__DISTRIBUTED": "warning",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "tagifai",
    "PYTHONUNBUFFERED": "1",
}


# --- processes ---------------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    """Summed RSS of a process and all its descendants (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for member in members:
        with contextlib.suppress(psutil.Error):
            total += member.memory_info().rss
    return total


class TreeSampler:
    """Samples the summed RSS of one or more process trees every ``interval`` seconds in a
    thread; ``peak`` is the largest sum seen, ``series`` the (seconds, bytes) samples."""

    def __init__(self, pids: Sequence[int] = (), interval: float = SAMPLE_SECONDS) -> None:
        self.pids = list(pids)
        self.interval = interval
        self.peak = 0
        self.series: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._started = time.perf_counter()

    def sample(self) -> int:
        rss = sum(tree_rss(pid) for pid in self.pids)
        self.peak = max(self.peak, rss)
        self.series.append((time.perf_counter() - self._started, rss))
        return rss

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Measured:
    """One subprocess: its command, wall time, peak tree RSS, exit status and output."""

    command: list[str]
    seconds: float
    peak_rss: int
    returncode: int
    stdout: str
    stderr: str
    samples: list[tuple[float, int]] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_json(self) -> Any:
        """The last line of stdout that parses as JSON (how our subprocesses report)."""
        for line in reversed(self.stdout.strip().splitlines()):
            with contextlib.suppress(ValueError):
                return json.loads(line)
        raise ValueError(f"no JSON in the output of {shell(self.command)}:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        text = (self.stdout + "\n" + self.stderr).strip().splitlines()
        return "\n".join(text[-lines:])

    def check(self) -> Measured:
        if not self.ok:
            raise RuntimeError(
                f"`{shell(self.command)}` exited {self.returncode}:\n{self.tail(30)}"
            )
        return self


def shell(command: Sequence[str]) -> str:
    return " ".join(shlex.quote(part) for part in command)


def run_measured(
    command: Sequence[str],
    env: dict[str, str],
    *,
    timeout: float | None = None,
    log: Path | None = None,
    echo: bool = True,
) -> Measured:
    """Run ``command`` from the repo root, timing it and sampling its process tree's RSS."""
    if echo:
        print(f"  $ {shell(command)}", flush=True)
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command),
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a timeout kills the whole group, Dask workers included
    )
    with TreeSampler([process.pid]) as sampler:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            stdout, stderr = process.communicate()
            stderr += f"\n[benchmarks] killed after {timeout} s"
    seconds = time.perf_counter() - started
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {shell(command)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n")
    result = Measured(
        list(command), seconds, sampler.peak, process.returncode, stdout, stderr, sampler.series
    )
    if echo:
        print(
            f"    {seconds:.1f} s, peak {sampler.peak / MIB:.0f} MiB, exit {process.returncode}",
            flush=True,
        )
    return result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- isolated state ----------------------------------------------------------------------


def fresh_dir(*parts: str) -> Path:
    """An empty directory under ``benchmarks/out/tmp``."""
    path = TMP_DIR.joinpath(*parts)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def isolated_env(stores_dir: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """This environment minus anything pointing at shared state, plus our stores and API."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
    env.update(QUIET_ENV)
    env["TAGIFAI_STORES_DIR"] = str(stores_dir)
    env["PREFECT_HOME"] = str(stores_dir / "prefect")
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    """``tagifai ...``: the console script next to this interpreter (the venv's)."""
    script = Path(sys.executable).with_name("tagifai")
    return [str(script) if script.exists() else "tagifai", *args]


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


class PrivatePlatform:
    """``deployments.platform`` on a stores dir of our own and free ports; always ``down``.

    The server start is not part of any measurement: callers time what they run against it.
    """

    def __init__(self, stores_dir: Path, services: Sequence[str] = ("server",)) -> None:
        self.stores_dir = stores_dir
        self.services = list(services)
        self.env = isolated_env(
            stores_dir,
            TAGIFAI_PREFECT_PORT=str(free_port()),
            TAGIFAI_WEBHOOK_PORT=str(free_port()),
            TAGIFAI_MLFLOW_PORT=str(free_port()),
            TAGIFAI_WEBHOOK_SECRET="benchmarks-webhook-secret-0123456789",
            TAGIFAI_PLATFORM_TIMEOUT_SCALE="3",
        )
        self.api_url = ""
        self.up_seconds = 0.0

    def up(self, services: Sequence[str] | None = None) -> dict[str, Any]:
        started = time.perf_counter()
        result = subprocess.run(
            python("-m", "deployments.platform", "up", *(services or self.services)),
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.up_seconds += time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"platform up failed:\n{result.stdout}\n{result.stderr}")
        status = self.status()
        self.api_url = status["server"]["url"]
        return status

    def status(self) -> dict[str, Any]:
        result = subprocess.run(
            python("-m", "deployments.platform", "status", "--json"),
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return json.loads(result.stdout)

    def down(self) -> None:
        subprocess.run(
            python("-m", "deployments.platform", "down"),
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment of a client process of this platform (CLI, deploy, follow)."""
        return isolated_env(self.stores_dir, self.api_url, **extra)

    def __enter__(self) -> PrivatePlatform:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


# --- facts about the machine and the run -------------------------------------------------

PACKAGES = (
    "prefect",
    "prefect-dask",
    "dask",
    "distributed",
    "great-expectations",
    "feast",
    "mlflow",
    "optuna",
    "scikit-learn",
    "pandas",
    "pyarrow",
)


def machine_info() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    cpu_model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "host": host_platform.node(),
        "os": f"{host_platform.system()} {host_platform.release()}",
        "python": host_platform.python_version(),
        "cpu": cpu_model,
        "cpus": psutil.cpu_count(logical=True),
        "memory_gib": round(memory.total / GIB, 1),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "git": git_revision(),
        "packages": versions,
    }


def git_revision() -> dict[str, Any]:
    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(
                ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
            ).stdout.strip()
        return ""

    changed = [line for line in git("status", "--porcelain").splitlines() if line]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_files": len(changed)}


def other_load() -> dict[str, Any]:
    """CPU busy with processes that are not ours (other sessions share this machine)."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    busy = []
    for process in psutil.process_iter(["pid", "name", "cpu_percent"]):
        with contextlib.suppress(psutil.Error):
            process.cpu_percent(None)
    time.sleep(1.0)
    for process in psutil.process_iter(["pid", "name"]):
        with contextlib.suppress(psutil.Error):
            if process.pid in mine:
                continue
            percent = process.cpu_percent(None)
            if percent >= 5:
                busy.append({"pid": process.pid, "name": process.name(), "cpu_percent": percent})
    return {
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "foreign_busy_processes": sorted(busy, key=lambda p: -p["cpu_percent"])[:5],
    }


# --- results -----------------------------------------------------------------------------


@dataclass
class Target:
    """One target from the issue and how the measurement compares."""

    name: str
    measured: float | None
    limit: float
    unit: str
    comparison: str = "<="  # or ">="
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.measured is None:
            return None
        if self.comparison == "<=":
            return self.measured <= self.limit
        return self.measured >= self.limit

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": f"{self.comparison} {self.limit:g} {self.unit}".strip(),
            "measured": None if self.measured is None else round(self.measured, 4),
            "unit": self.unit,
            "pass": self.passed,
            "note": self.note,
        }


@dataclass
class Result:
    """What one benchmark writes to ``benchmarks/out/<name>.json``."""

    name: str
    description: str
    figures: dict[str, Any] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def add_command(self, measured: Measured | Sequence[str]) -> None:
        command = measured.command if isinstance(measured, Measured) else measured
        self.commands.append(shell(command))

    def to_dict(self, command: str, machine: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "command": command,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - self.started, 1),
            "machine": machine,
            "figures": self.figures,
            "targets": [t.to_dict() for t in self.targets],
            "notes": self.notes,
            "subprocess_commands": self.commands,
        }


def write_result(result: Result, command: str) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{result.name}.json"
    data = result.to_dict(command, machine_info())
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def print_table(result: Result, rows: Sequence[tuple[str, str]]) -> None:
    """The figures, then the targets with PASS/FAIL."""
    width = max([len(k) for k, _ in rows] + [10])
    print(f"\n== {result.name}: {result.description}")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if result.targets:
        print("  targets:")
        for target in result.targets:
            verdict = {True: "PASS", False: "FAIL", None: "n/a "}[target.passed]
            measured = "-" if target.measured is None else f"{target.measured:.3g}"
            print(
                f"    [{verdict}] {target.name}: {measured} {target.unit} "
                f"(target {target.comparison} {target.limit:g})"
            )
            if target.note:
                print(f"           {target.note}")
    print(flush=True)


def plt():
    """matplotlib.pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def save_figure(figure: Any, name: str) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.png"
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt().close(figure)
    return path


@contextlib.contextmanager
def step(label: str) -> Iterator[None]:
    started = time.perf_counter()
    print(f"- {label}", flush=True)
    yield
    print(f"  ({label}: {time.perf_counter() - started:.1f} s)", flush=True)
