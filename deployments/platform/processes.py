"""Process supervision: spawn a service detached, verify its PID, signal and stop its tree.

Each service runs in its own session (process group), so it outlives the command that started
it. A PID is trusted only while its create time and command line match the record, so a
recycled PID is never signalled; every process we start, and everything it forks, carries a
random token in its environment, which lets ``stop`` recognise our own orphans safely.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import psutil

from deployments.platform.errors import PlatformError
from deployments.platform.records import ServiceRecord, log_tail, platform_dir, write_record
from tagifai.config import REPO_ROOT, Settings

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 15.0
TOKEN_ENV = "TAGIFAI_PLATFORM_TOKEN"

# Popen handles of the services this process started: keeping them lets us reap exited
# children (no zombies in a long-lived caller such as pytest) and avoids ResourceWarnings.
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


def verified_process(record: ServiceRecord) -> psutil.Process | None:
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


def _carries_token(process: psutil.Process, token: str) -> bool:
    try:
        return process.environ().get(TOKEN_ENV) == token
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _service_processes(record: ServiceRecord) -> list[psutil.Process]:
    """The verified leader, its descendants, and members of its group that carry its token."""
    found: dict[int, psutil.Process] = {}
    leader = verified_process(record)
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


def _signal_all(record: ServiceRecord, processes: list[psutil.Process], sig: int) -> None:
    # The group id is the leader's PID (start_new_session); signal the group only while the
    # leader is verified, otherwise only the individually verified processes.
    if any(p.pid == record.pid for p in processes):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, sig)
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)


def stop(record: ServiceRecord) -> bool:
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


def as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that drop to ``user`` (and its primary group) before ``exec``."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def spawn(
    settings: Settings,
    service: str,
    log_name: str,
    cmd: Sequence[str],
    env: Mapping[str, str],
    url: str,
    prefect_api_url: str | None = None,
    user: str | None = None,
) -> ServiceRecord:
    """Start ``cmd`` detached (own session, stdin closed, output to its log) and record it;
    as the system ``user`` (its own group, no supplementary groups) when one is given.

    Raises:
        PlatformError: the process exited before it could be recorded; carries its log tail.
    """
    log_path = platform_dir(settings) / log_name
    token = uuid.uuid4().hex
    with open(log_path, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n--- {stamp} starting {service}: {' '.join(cmd)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(cmd),
            cwd=REPO_ROOT,
            env={**env, TOKEN_ENV: token},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            **as_user(user),
        )
    _SPAWNED[process.pid] = process
    try:
        create_time = psutil.Process(process.pid).create_time()
    except psutil.NoSuchProcess as error:
        tail = log_tail(log_path)
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
        team=settings.team is not None,
    )
    write_record(settings, record)
    logger.info("Started %s (pid %d), log %s", service, process.pid, log_path)
    return record
