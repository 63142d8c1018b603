"""``up``, ``down`` and ``status`` of the registry's services, under the platform lock.

``up`` is idempotent: a service whose record still matches a live, healthy process is reused;
a stale record is cleared (with any leftovers that carry its token) and the service started
again, as is a service that needs the Prefect API when that API has moved.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from deployments.platform.errors import PlatformError
from deployments.platform.ports import choose_port
from deployments.platform.processes import spawn, stop, tree_rss, verified_process
from deployments.platform.records import (
    ServiceRecord,
    forget,
    log_tail,
    platform_lock,
    read_record,
    recorded_services,
)
from deployments.platform.services import REGISTRY, TEAM_SERVICES, server
from deployments.platform.spec import LaunchContext, ServiceSpec
from tagifai.config import Settings

logger = logging.getLogger(__name__)

SERVER = server.SPEC.name


@dataclass(frozen=True)
class ServiceStatus:
    """State of one service: running, unhealthy, stopped, external or unreachable."""

    service: str
    state: str
    url: str | None = None
    pid: int | None = None
    rss_bytes: int | None = None


def _requirements(spec: ServiceSpec, settings: Settings) -> tuple[str, ...]:
    team = spec.team_requires if settings.team is not None else ()
    return ((SERVER,) if spec.needs_prefect_api else ()) + spec.requires + team


def _plan(
    names: Sequence[str], registry: Sequence[ServiceSpec], settings: Settings
) -> list[ServiceSpec]:
    """The named services and everything they require, in registry order."""
    known = [spec.name for spec in registry]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise PlatformError(f"unknown service(s) {', '.join(unknown)}; choose from {tuple(known)}")
    for position, spec in enumerate(registry):
        late = [name for name in _requirements(spec, settings) if name not in known[:position]]
        if late:
            raise PlatformError(f"{spec.name} requires {', '.join(late)}, registered before it")
    wanted = set(names)
    for spec in reversed(registry):  # requirements come earlier, so theirs are seen too
        if spec.name in wanted:
            wanted.update(_requirements(spec, settings))
    return [spec for spec in registry if spec.name in wanted]


def _external_url(spec: ServiceSpec) -> str | None:
    url = os.environ.get(spec.external_env) if spec.external_env else None
    return url.rstrip("/") if url else None


def _reusable(settings: Settings, spec: ServiceSpec, api_url: str | None) -> ServiceRecord | None:
    """The running record of ``spec``, or None after clearing a stale or outdated one."""
    record = read_record(settings, spec.name)
    if record is None:
        return None
    if verified_process(record) is None:
        stop(record)  # leftovers of a crashed leader that still carry its token
        forget(settings, spec.name)
        return None
    if spec.needs_prefect_api and record.prefect_api_url != api_url:
        logger.info("Restarting %s: the Prefect API moved to %s", spec.name, api_url)
        stop(record)
        forget(settings, spec.name)
        return None
    if spec.team_requires and record.team != (settings.team is not None):
        mode = "team" if settings.team is not None else "embedded"
        logger.warning("Restarting %s in %s mode", spec.name, mode)
        stop(record)
        forget(settings, spec.name)
        return None
    return record


def _start(
    settings: Settings, spec: ServiceSpec, api_url: str | None
) -> tuple[ServiceRecord, bool]:
    """The service's record and whether it was started now (False: reused)."""
    record = _reusable(settings, spec, api_url)
    if record is not None:
        return record, False
    port = choose_port(spec.name, spec.port_env, spec.default_port) if spec.port_env else None
    launch = spec.build(LaunchContext(settings, port, api_url))
    record = spawn(
        settings, spec.name, spec.log_name, launch.cmd, launch.env, launch.url, api_url, launch.user
    )
    return record, True


def _timeout(spec: ServiceSpec) -> float:
    scale = float(os.environ.get("TAGIFAI_PLATFORM_TIMEOUT_SCALE") or 1.0)
    return spec.startup_timeout_s * scale


def _await_healthy(
    settings: Settings, spec: ServiceSpec, record: ServiceRecord, fresh: bool
) -> None:
    """Wait until ``record``'s service is healthy; stop and forget a fresh one that isn't."""
    deadline = time.monotonic() + _timeout(spec)
    while True:
        if spec.healthy(settings, record.url, record.prefect_api_url):
            if fresh and spec.after_start is not None:
                _after_start(settings, spec, record)
            return
        exited = verified_process(record) is None
        if exited or time.monotonic() > deadline:
            what = (
                "exited during start-up"
                if exited
                else f"is not healthy after {_timeout(spec):.0f} s"
            )
            tail = log_tail(record.log)
            if fresh or exited:
                stop(record)
                forget(settings, record.service)
            hint = "" if fresh else "; run `python -m deployments.platform down` and retry"
            raise PlatformError(f"{record.service} {what} (log: {record.log}){hint}", tail)
        time.sleep(0.25)


def _after_start(settings: Settings, spec: ServiceSpec, record: ServiceRecord) -> None:
    """Run the service's set-up step; on failure stop it, so the next ``up`` runs it again."""
    assert spec.after_start is not None
    try:
        spec.after_start(settings, record.url)
    except Exception as error:
        stop(record)
        forget(settings, record.service)
        if isinstance(error, PlatformError):
            raise
        raise PlatformError(f"{record.service}: set-up failed: {error}") from error


def up(
    settings: Settings,
    services: Sequence[str] | None = None,
    registry: Sequence[ServiceSpec] = REGISTRY,
) -> dict[str, str]:
    """Start each requested service that isn't already running and wait until all are healthy.

    Idempotent: a second call finds every service healthy and starts nothing. Services start
    in registry order without waiting for each other (slow importers such as MLflow warm up
    meanwhile), except that a service's requirements must be healthy before it starts.

    Args:
        services: names from the registry; None means every service marked ``default``.

    Returns:
        Service name to its URL (``server``: the API URL) or a description (``worker``), for
        the requested services and those they require, in registry order.

    Raises:
        PlatformError: an unknown service, or one failed to start; carries its log tail.
    """
    names = [s.name for s in registry if s.default] if services is None else list(services)
    plan = _plan(names, registry, settings)
    urls: dict[str, str] = {}  # recorded (or external) URLs, which dependants are given
    shown: dict[str, str] = {}
    pending: dict[str, tuple[ServiceSpec, ServiceRecord, bool]] = {}
    with platform_lock(settings):
        for spec in plan:
            for required in _requirements(spec, settings):
                if required in pending:
                    _await_healthy(settings, *pending.pop(required))
            external = _external_url(spec)
            if external:
                urls[spec.name] = shown[spec.name] = external
                continue
            record, fresh = _start(settings, spec, urls[SERVER] if spec.needs_prefect_api else None)
            pending[spec.name] = (spec, record, fresh)
            urls[spec.name] = record.url
            shown[spec.name] = spec.public_url(record.url)
        for waiting in pending.values():
            _await_healthy(settings, *waiting)
    return {spec.name: shown[spec.name] for spec in plan}


def ensure_server(settings: Settings) -> str:
    """Return a Prefect API URL: ``$PREFECT_API_URL``, else the project's server, started if needed.

    In team mode the team's PostgreSQL and Redis are started too: the flows this process runs
    keep their state there.

    Raises:
        PlatformError: the server did not become healthy; the message carries its log tail.
    """
    stores = TEAM_SERVICES if settings.team is not None else ()
    external = _external_url(server.SPEC)
    if external:
        if stores:
            up(settings, stores)
        return external
    return up(settings, (SERVER, *stores))[SERVER]


def down(settings: Settings, registry: Sequence[ServiceSpec] = REGISTRY) -> list[str]:
    """Stop the services this platform started (registry order reversed, the server last).

    Records of services that are no longer registered are stopped first. Idempotent.

    Returns:
        The services that were running and are now stopped.
    """
    stopped: list[str] = []
    with platform_lock(settings):
        registered = [spec.name for spec in reversed(registry)]
        unregistered = [name for name in recorded_services(settings) if name not in registered]
        for service in [*unregistered, *registered]:
            record = read_record(settings, service)
            if record is None:
                continue
            if stop(record):
                stopped.append(service)
            forget(settings, service)
    return stopped


def status(
    settings: Settings, registry: Sequence[ServiceSpec] = REGISTRY
) -> dict[str, ServiceStatus]:
    """State of every service, with the resident memory of its process tree when running.

    A service outside the default set that nothing in this mode requires (PostgreSQL and
    Redis, embedded) is listed only while it has a record.
    """
    result: dict[str, ServiceStatus] = {}
    wanted = {name for spec in registry if spec.default for name in _requirements(spec, settings)}
    for spec in registry:
        record = read_record(settings, spec.name)
        external = _external_url(spec)
        if not (spec.default or spec.name in wanted or record is not None or external):
            continue
        if external and record is None:
            healthy = spec.healthy(settings, external, None)
            result[spec.name] = ServiceStatus(
                spec.name, "external" if healthy else "unreachable", external
            )
            continue
        if record is None or verified_process(record) is None:
            result[spec.name] = ServiceStatus(spec.name, "stopped")
            continue
        healthy = spec.healthy(settings, record.url, record.prefect_api_url)
        result[spec.name] = ServiceStatus(
            spec.name,
            "running" if healthy else "unhealthy",
            spec.public_url(record.url),
            record.pid,
            tree_rss(record.pid),
        )
    return result
