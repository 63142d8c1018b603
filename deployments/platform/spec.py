"""What a platform service is: a declarative spec, and the helpers its module builds it from.

A service module defines one :class:`ServiceSpec`; the registry in
``deployments.platform.services`` lists the specs, and ``up``/``down``/``status`` do the rest
(ports, records, verified PIDs, health waits, restarts when the Prefect API moves).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from deployments.platform.auth import client_auth_string
from deployments.platform.errors import PlatformError
from deployments.platform.ports import http_ok
from tagifai.config import Settings

LABEL_WIDTH = 14


@dataclass(frozen=True)
class LaunchContext:
    """What a service's command is built from."""

    settings: Settings
    chosen_port: int | None = None  # for services with a port
    chosen_api_url: str | None = None  # for services that need the Prefect API

    @property
    def port(self) -> int:
        """The port chosen for this service (declare ``port_env`` to get one)."""
        if self.chosen_port is None:
            raise PlatformError("this service declares no port_env, so it has no port")
        return self.chosen_port

    @property
    def prefect_api_url(self) -> str:
        """The Prefect API URL (declare ``needs_prefect_api`` to get one)."""
        if self.chosen_api_url is None:
            raise PlatformError("this service does not declare needs_prefect_api")
        return self.chosen_api_url


@dataclass(frozen=True)
class Launch:
    """How to start a service: command, environment, and the URL (or description) to record.

    ``user`` runs it as that system user instead of ours (PostgreSQL refuses to run as root).
    """

    cmd: tuple[str, ...]
    env: Mapping[str, str]
    url: str
    user: str | None = None


def http_health(settings: Settings, url: str, prefect_api_url: str | None) -> bool:
    """The default health check: ``GET {url}/health`` answers 200."""
    return http_ok(f"{url}/health")


def _same(url: str) -> str:
    return url


@dataclass(frozen=True)
class ServiceSpec:
    """One long-running service of the platform, declared once.

    Attributes:
        name: the service's name on the command line and in records (``{name}.json``).
        label: how ``up``'s output names it (one line ``label  url`` unless ``describe``).
        log_name: its log file under ``stores/platform``.
        build: its command, environment and recorded URL, from a :class:`LaunchContext`.
        healthy: ``(settings, url, prefect_api_url) -> bool``; ``up`` waits for True.
        startup_timeout_s: how long ``up`` waits (times ``$TAGIFAI_PLATFORM_TIMEOUT_SCALE``).
        port_env: the variable that sets its port; with ``default_port``, a port is chosen
            (a taken one is replaced by a free one) and passed to ``build``.
        needs_prefect_api: it is given the Prefect API URL (the server joins the plan, healthy
            first) and is restarted when that URL moves.
        requires: services that must be healthy before it starts (they join the plan and
            come before it in the registry).
        team_requires: more such services in team mode (``settings.team``); the service is
            also restarted when team mode is switched on or off.
        after_start: ``(settings, url) -> None``, run once when a fresh start is healthy
            (create databases, roles, schemas); an error stops the service.
        external_env: a variable whose URL stands for this service: nothing is started then.
        default: started by ``up`` when no services are named.
        public_url: what ``up``/``status`` show, from the recorded URL.
        describe: ``(settings, public_url) -> lines`` for ``up``'s output.
    """

    name: str
    label: str
    log_name: str
    build: Callable[[LaunchContext], Launch]
    healthy: Callable[[Settings, str, str | None], bool] = http_health
    startup_timeout_s: float = 60.0
    port_env: str | None = None
    default_port: int = 0
    needs_prefect_api: bool = False
    requires: tuple[str, ...] = ()
    team_requires: tuple[str, ...] = ()
    after_start: Callable[[Settings, str], None] | None = None
    external_env: str | None = None
    default: bool = True
    public_url: Callable[[str], str] = _same
    describe: Callable[[Settings, str], Sequence[str]] | None = None

    def lines(self, settings: Settings, public_url: str) -> list[str]:
        """The lines ``up`` prints for this service."""
        if self.describe is not None:
            return list(self.describe(settings, public_url))
        return [banner_line(self.label, public_url)]


def banner_line(label: str, text: str) -> str:
    return f"{label:<{LABEL_WIDTH}}{text}"


def python_command(module: str, *args: str) -> tuple[str, ...]:
    """``python -m module args`` with this interpreter (the project's environment)."""
    return (sys.executable, "-m", module, *args)


def child_env(settings: Settings) -> dict[str, str]:
    """This environment plus the project's locations: what every service starts with."""
    env = dict(os.environ)
    env.update(
        TAGIFAI_STORES_DIR=str(settings.stores_dir),
        TAGIFAI_DATA_DIR=str(settings.data_dir),
        PREFECT_HOME=str(settings.prefect_dir),
        DO_NOT_TRACK="1",
    )
    return env


def prefect_client_env(settings: Settings, api_url: str) -> dict[str, str]:
    """:func:`child_env` for a Prefect client of ``api_url``, with only the client credential."""
    env = child_env(settings)
    env["PREFECT_API_URL"] = api_url
    env.pop("PREFECT_SERVER_API_AUTH_STRING", None)  # clients need only their own credential
    auth = client_auth_string()
    if auth:
        env["PREFECT_API_AUTH_STRING"] = auth
    env.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tagifai")
    return env
