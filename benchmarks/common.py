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
import resource
import shlex
import shutil
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

from deployments.platform import free_ports, tree_rss

REPO_ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = REPO_ROOT / "benchmarks" / "out"
TMP_DIR = OUT_DIR / "tmp"  # git-ignored: stores, synthetic data and logs of the runs
SAMPLE_SECONDS = 0.2
MB = 10**6
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
    cpu_seconds: float = 0.0  # user + sys of the process and every descendant it waited for
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
    quiet: bool = True,
    exclude: Sequence[int] = (),
) -> Measured:
    """Run ``command`` from the repo root, timing it and sampling its process tree's RSS.

    With ``quiet`` it first waits for other processes (not ours, not ``exclude``'s trees) to
    leave the CPUs alone; see :func:`wait_for_quiet`.
    """
    if echo:
        print(f"  $ {shell(command)}", flush=True)
    if quiet:
        wait_for_quiet(shell(command)[:120], exclude)
    started = time.perf_counter()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {shell(command)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n")
    result = Measured(
        list(command),
        seconds,
        sampler.peak,
        process.returncode,
        stdout,
        stderr,
        cpu,
        sampler.series,
    )
    if echo:
        print(
            f"    {seconds:.1f} s wall, {cpu:.1f} s CPU, peak {sampler.peak / MIB:.0f} MiB, "
            f"exit {process.returncode}",
            flush=True,
        )
    return result


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
    (stores_dir / "prefect").mkdir(parents=True, exist_ok=True)
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


WEBHOOK_SECRET = "benchmarks-webhook-secret-0123456789"


class PrivatePlatform:
    """``deployments.platform`` on a stores dir of our own and free ports; always ``down``.

    The server start is not part of any measurement: callers time what they run against it.
    """

    def __init__(
        self, stores_dir: Path, services: Sequence[str] = ("server",), **extra_env: str
    ) -> None:
        self.stores_dir = stores_dir
        self.services = list(services)
        prefect_port, webhook_port, mlflow_port = free_ports(3)
        self.env = isolated_env(
            stores_dir,
            TAGIFAI_PREFECT_PORT=str(prefect_port),
            TAGIFAI_WEBHOOK_PORT=str(webhook_port),
            TAGIFAI_MLFLOW_PORT=str(mlflow_port),
            TAGIFAI_WEBHOOK_SECRET=WEBHOOK_SECRET,
            TAGIFAI_PLATFORM_TIMEOUT_SCALE="3",
            **extra_env,
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


def _tree_pids(roots: Sequence[int]) -> set[int]:
    pids: set[int] = set()
    for root in roots:
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(root)
            pids.add(root)
            pids.update(child.pid for child in process.children(recursive=True))
    return pids


def foreign_cpu(exclude: Sequence[int] = (), window: float = 2.0) -> tuple[float, list[dict]]:
    """CPU used by processes outside our tree (and the ``exclude`` trees) over ``window``
    seconds, in percent of one core; and the busiest of them."""
    processes = []
    for process in psutil.process_iter(["pid", "name"]):
        with contextlib.suppress(psutil.Error):
            process.cpu_percent(None)
            processes.append(process)
    time.sleep(window)
    mine = _tree_pids([os.getpid(), *exclude])
    busy = []
    for process in processes:
        if process.pid in mine:
            continue
        with contextlib.suppress(psutil.Error):
            percent = process.cpu_percent(None)
            if percent > 0:
                busy.append({"pid": process.pid, "name": process.name(), "cpu_percent": percent})
    busy.sort(key=lambda p: -p["cpu_percent"])
    return sum(p["cpu_percent"] for p in busy), busy[:5]


def other_load(exclude: Sequence[int] = ()) -> dict[str, Any]:
    """How busy the machine is with work that is not ours (other sessions share it)."""
    percent, busy = foreign_cpu(exclude)
    return {
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "foreign_cpu_percent_of_one_core": round(percent),
        "foreign_busy_processes": busy,
    }


QUIET_PERCENT = float(os.environ.get("BENCH_QUIET_PERCENT") or 35)
QUIET_MAX_WAIT_S = float(os.environ.get("BENCH_QUIET_MAX_WAIT") or 300)
QUIET_LOG: list[dict[str, Any]] = []  # every wait of this process, for the JSON


def wait_for_quiet(label: str, exclude: Sequence[int] = ()) -> dict[str, Any]:
    """Wait (up to BENCH_QUIET_MAX_WAIT s) until other processes use less than
    BENCH_QUIET_PERCENT % of one core for a few seconds in a row, so that a measurement does
    not share the 2 cores with someone else's test suite. Records what it saw."""
    started = time.monotonic()
    calm = 0
    percent, busy = foreign_cpu(exclude)
    while time.monotonic() - started < QUIET_MAX_WAIT_S:
        calm = calm + 1 if percent < QUIET_PERCENT else 0
        if calm >= 2:
            break
        if calm == 0 and int(time.monotonic() - started) % 60 < 4:
            names = ", ".join(f"{p['name']} {p['cpu_percent']:.0f}%" for p in busy[:3])
            print(f"    waiting for a quiet machine ({percent:.0f}% busy: {names})", flush=True)
        percent, busy = foreign_cpu(exclude, window=3.0)
    record = {
        "before": label,
        "waited_s": round(time.monotonic() - started, 1),
        "foreign_cpu_percent": round(percent),
        "quiet": percent < QUIET_PERCENT,
        "busiest": busy[:3],
    }
    QUIET_LOG.append(record)
    return record


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
    quiet_from: int = field(default_factory=lambda: len(QUIET_LOG))

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
            "quiet_waits": QUIET_LOG[self.quiet_from :],
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
