"""Files under ``stores/platform``: one JSON record per started service, its log, the lock.

A record holds enough to find, check and stop the process later (PID, create time, command
line, token); it is written atomically so ``status`` never reads half of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from tagifai.config import Settings

logger = logging.getLogger(__name__)


def platform_dir(settings: Settings) -> Path:
    """Where records, logs, the lock and the generated webhook secret live."""
    return settings.stores_dir / "platform"


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
    prefect_api_url: str | None = None  # the API the service was pointed at, if it needs one
    team: bool = False  # started in team mode (PostgreSQL and Redis) rather than embedded


_FIELDS = frozenset(field.name for field in dataclasses.fields(ServiceRecord))


def _record_path(settings: Settings, service: str) -> Path:
    return platform_dir(settings) / f"{service}.json"


def read_record(settings: Settings, service: str) -> ServiceRecord | None:
    """The record `up` wrote for ``service``, or None if there is none or it is unreadable."""
    path = _record_path(settings, service)
    try:
        data = json.loads(path.read_text())
        data["cmdline"] = tuple(data["cmdline"])
        # Fields an older version wrote (e.g. worker_name) must not orphan a running service.
        return ServiceRecord(**{key: value for key, value in data.items() if key in _FIELDS})
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError):
        logger.warning("Ignoring unreadable platform record %s", path)
        return None


def recorded_services(settings: Settings) -> list[str]:
    """Names of every service that has a record, in name order."""
    return sorted(path.stem for path in platform_dir(settings).glob("*.json"))


def write_record(settings: Settings, record: ServiceRecord) -> None:
    path = _record_path(settings, record.service)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2))
    os.replace(tmp, path)  # atomic: `status` never reads half a record


def forget(settings: Settings, service: str) -> None:
    _record_path(settings, service).unlink(missing_ok=True)


@contextlib.contextmanager
def platform_lock(settings: Settings) -> Iterator[None]:
    """Serialise start/stop across processes (flock is released if the holder dies)."""
    directory = platform_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def log_tail(path: Path | str, lines: int = 25) -> str:
    """The last ``lines`` lines of a service log, indented for an error message."""
    try:
        with open(path, "rb") as log:  # logs append across restarts: read only the end
            log.seek(max(0, log.seek(0, os.SEEK_END) - 16_384))
            text = log.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])
