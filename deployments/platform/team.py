"""Team mode on this machine: switching it on, its secrets, and the system users and binaries
of the local PostgreSQL and Redis that the ``postgres`` and ``redis`` services run.

Team mode is a property of a stores dir: ``enable_team`` writes ``stores/team/team.env`` (the
two ports, chosen once) and ``tagifai.config.get_settings`` reads it at every edge. Passwords
are generated once into files of mode 0600 under ``stores/team/secrets/`` (a 0700 directory)
and reach the servers through files and the clients through libpq's passfile and the Redis
password file: never a command line, a URL or a log line.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import stat
from pathlib import Path

from deployments.platform.errors import PlatformError
from deployments.platform.ports import choose_port
from tagifai.config import TEAM_ENV_FILE, Settings, TeamSettings

# The team.env keys, the variables that pick a first port, and the usual ports.
PORTS = (
    ("TAGIFAI_TEAM_POSTGRES_PORT", "TAGIFAI_POSTGRES_PORT", 5432, "postgres"),
    ("TAGIFAI_TEAM_REDIS_PORT", "TAGIFAI_REDIS_PORT", 6379, "redis"),
)
INSTALL_HINT = (
    "`make team-deps` installs Debian's postgresql and redis-server "
    "(apt-get update && apt-get install -y postgresql redis-server, as root)"
)


def team_env_path(settings: Settings) -> Path:
    return settings.stores_dir / TEAM_ENV_FILE


def enable_team(settings: Settings) -> Path:
    """Switch the stores dir to team mode: write ``team.env`` with free loopback ports for
    PostgreSQL and Redis (``$TAGIFAI_POSTGRES_PORT``/``$TAGIFAI_REDIS_PORT``, else 5432/6379
    when free). Kept as it is if it exists, so the ports stay those of the team's data."""
    path = team_env_path(settings)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # The servers run as their own system users and must reach their data dirs below.
    path.parent.chmod(0o755)
    lines = [
        "# tagifai team mode: PostgreSQL (Prefect, MLflow, Optuna) and Redis (Feast online store).",
        "# Written by `python -m deployments.platform up --team`; read by every tagifai process",
        "# (tagifai.config.get_settings) whose TAGIFAI_STORES_DIR is this stores dir. Other",
        "# TAGIFAI_*/MLFLOW_* settings may be added here; the environment overrides them all.",
    ]
    for key, variable, default, service in PORTS:
        lines.append(f"{key}={choose_port(service, variable, default)}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def disable_team(settings: Settings) -> bool:
    """Back to the embedded stores: ``team.env`` goes, the team's data stays under
    ``stores/team/`` (``enable_team`` picks it up again). True if team mode was on."""
    path = team_env_path(settings)
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def team_dir(settings: Settings) -> Path:
    """``stores/team``: the team's data and secrets, whether or not team mode is on now."""
    return settings.stores_dir / TEAM_ENV_FILE.parent


def port_of(url: str) -> int:
    """The port of a recorded ``scheme://host:port`` URL."""
    return int(url.rstrip("/").rsplit(":", 1)[1])


def require_team(settings: Settings) -> TeamSettings:
    if settings.team is None:
        raise PlatformError(
            f"team mode is off for {settings.stores_dir}: start it with "
            "`python -m deployments.platform up --team` (make up TEAM=1)"
        )
    return settings.team


# --- secrets ---------------------------------------------------------------------------------


def generated_password() -> str:
    """A password that needs no quoting in a pgpass line, a Redis config or Feast's connection
    string (URL-safe base64: no ``:``, ``,``, ``\\``, spaces or quotes)."""
    return "t" + secrets.token_urlsafe(30)


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (0700)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str, owner: str | None = None) -> None:
    """Write ``text`` atomically into a file of mode 0600 (owned by ``owner`` if given)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(tmp, entry.pw_uid, entry.pw_gid)
    os.replace(tmp, path)


def ensure_password(path: Path) -> str:
    """The password in ``path``, generated (mode 0600) the first time."""
    private_dir(path.parent)
    with contextlib.suppress(FileNotFoundError):
        password = path.read_text(encoding="utf-8").strip()
        if password:
            return password
    write_private(path, generated_password() + "\n")
    return path.read_text(encoding="utf-8").strip()


def read_pgpass(path: Path) -> dict[str, str]:
    """Role -> password from a pgpass file (``host:port:database:user:password`` lines)."""
    found: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split(":")
            if len(parts) == 5 and not line.startswith("#"):
                found[parts[3]] = parts[4]
    return found


def ensure_pgpass(team: TeamSettings, roles: tuple[str, ...]) -> dict[str, str]:
    """Role -> password for each role (role = its database), generated once into the team's
    pgpass file (0600), which libpq, psycopg and asyncpg read through ``passfile=``."""
    private_dir(team.secrets_dir)
    passwords = read_pgpass(team.pgpass)
    if all(role in passwords for role in roles):
        return passwords
    for role in roles:
        passwords.setdefault(role, generated_password())
    text = "".join(
        f"{team.host}:*:{role}:{role}:{password}\n" for role, password in passwords.items()
    )
    write_private(team.pgpass, text)
    return passwords


# --- system users, binaries and paths --------------------------------------------------------


def service_user(name: str) -> str | None:
    """The system user a server runs as: ``name`` when we are root (PostgreSQL refuses to run
    as root; Redis need not run as one), else None: ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise PlatformError(f"there is no system user {name!r}: {INSTALL_HINT}") from None
    return name


def chown_to(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def require_reachable(path: Path, user: str | None) -> None:
    """Refuse a data dir the server's system user cannot reach (a 0700 parent such as
    pytest's temporary root), with the directory to fix."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for parent in reversed(path.resolve().parents):
        mode = parent.stat()
        if mode.st_uid == entry.pw_uid or mode.st_mode & stat.S_IXOTH:
            continue
        if mode.st_gid == entry.pw_gid and mode.st_mode & stat.S_IXGRP:
            continue
        raise PlatformError(
            f"the {user} system user cannot enter {parent} (mode {oct(mode.st_mode & 0o777)}), "
            f"so it cannot reach {path}: chmod o+x {parent}, or set TAGIFAI_STORES_DIR elsewhere"
        )


def _version(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.parent.name))


def postgres_bindir() -> Path:
    """Where ``initdb`` and ``postgres`` are: ``$TAGIFAI_POSTGRES_BINDIR``, else Debian's
    newest ``/usr/lib/postgresql/<version>/bin``."""
    configured = os.environ.get("TAGIFAI_POSTGRES_BINDIR")
    candidates = (
        [Path(configured) / "postgres"]
        if configured
        else sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=_version)
    )
    for server in reversed(candidates):
        if server.is_file() and (server.parent / "initdb").is_file():
            return server.parent
    where = configured or "/usr/lib/postgresql/*/bin"
    raise PlatformError(
        f"PostgreSQL is not installed (no postgres and initdb in {where}): {INSTALL_HINT}"
    )


def redis_server() -> str:
    """The ``redis-server`` binary: ``$TAGIFAI_REDIS_SERVER``, else the one on PATH."""
    configured = os.environ.get("TAGIFAI_REDIS_SERVER") or shutil.which("redis-server")
    if not configured or not Path(configured).is_file():
        raise PlatformError(f"Redis is not installed (no redis-server): {INSTALL_HINT}")
    return configured
