"""PostgreSQL for team mode: the databases of the Prefect server, MLflow and Optuna.

Debian's binaries (``/usr/lib/postgresql/<version>/bin``) run a cluster of the project's own
under ``stores/team/postgres/data``, as the ``postgres`` system user when we are root
(PostgreSQL refuses root), on the loopback only (TCP, no Unix socket) and on the port of
``stores/team/team.env``. The first start runs ``initdb`` with a generated superuser password;
after each fresh start ``_set_up`` makes sure that each of ``prefect``, ``mlflow`` and
``optuna`` is a role owning the database of the same name, with the password of the team's
pgpass file, and that MLflow's and Optuna's schemas exist before any flow runs (two first
writers at once would race to create them).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deployments.platform.errors import PlatformError
from deployments.platform.ports import HOST
from deployments.platform.processes import as_user
from deployments.platform.spec import Launch, LaunchContext, ServiceSpec, banner_line, child_env
from deployments.platform.team import (
    chown_to,
    ensure_password,
    ensure_pgpass,
    port_of,
    postgres_bindir,
    require_reachable,
    require_team,
    service_user,
    team_dir,
    write_private,
)
from tagifai.config import Settings, TeamSettings

logger = logging.getLogger(__name__)

SUPERUSER = "postgres"
# One role per service, owning the database of the same name.
DATABASES: tuple[str, ...] = ("prefect", "mlflow", "optuna")
MAX_CONNECTIONS = 200  # 4 concurrent flow runs with their pools, the servers, the UI


def superuser_password(secrets: Path) -> str:
    return ensure_password(secrets / "postgres-superuser")


def _data_dir(team: TeamSettings) -> Path:
    return team.directory / "postgres" / "data"


def _initdb(team: TeamSettings, user: str | None) -> None:
    """Create the cluster once: UTF-8, password (SCRAM) authentication everywhere."""
    home = team.directory / "postgres"
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    chown_to(home, user)
    require_reachable(home, user)
    pwfile = home / ".initdb-password"  # readable by the server's user only, then removed
    write_private(pwfile, superuser_password(team.secrets_dir) + "\n", owner=user)
    command = [
        str(postgres_bindir() / "initdb"),
        "--pgdata", str(_data_dir(team)),
        "--username", SUPERUSER,
        f"--pwfile={pwfile}",
        "--auth-local=scram-sha-256", "--auth-host=scram-sha-256",
        "--encoding=UTF8", "--locale=C.UTF-8",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, cwd=home, capture_output=True, text=True, timeout=120, check=False,
            **as_user(user),
        )  # fmt: skip
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        tail = "\n".join("    " + line for line in result.stderr.strip().splitlines()[-10:])
        raise PlatformError(f"initdb failed (exit {result.returncode})", tail)


def _build(context: LaunchContext) -> Launch:
    team = require_team(context.settings)
    user = service_user(SUPERUSER)
    if not (_data_dir(team) / "PG_VERSION").exists():
        _initdb(team, user)
    require_reachable(_data_dir(team), user)
    cmd = (
        str(postgres_bindir() / "postgres"),
        "-D", str(_data_dir(team)),
        "-p", str(team.postgres_port),
        "-c", f"listen_addresses={HOST}",
        "-c", "unix_socket_directories=",  # TCP on the loopback only
        "-c", f"max_connections={MAX_CONNECTIONS}",
    )  # fmt: skip
    url = f"postgresql://{HOST}:{team.postgres_port}"
    return Launch(cmd, child_env(context.settings), url, user)


@contextlib.contextmanager
def _connect(secrets: Path, port: int, database: str = "postgres") -> Iterator[Any]:
    """A superuser connection (autocommit) to one of the cluster's databases."""
    import psycopg

    with psycopg.connect(
        host=HOST,
        port=port,
        user=SUPERUSER,
        password=superuser_password(secrets),
        dbname=database,
        connect_timeout=3,
        autocommit=True,
    ) as connection:
        yield connection


def _healthy(settings: Settings, url: str, prefect_api_url: str | None) -> bool:
    """The server accepts the superuser's connection (not merely the TCP port)."""
    import psycopg

    try:
        with _connect(team_dir(settings) / "secrets", port_of(url)) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _set_up(settings: Settings, url: str) -> None:
    """Roles and databases (idempotent; passwords follow the pgpass file), then schemas."""
    from psycopg import sql

    team = require_team(settings)
    passwords = ensure_pgpass(team, DATABASES)
    with _connect(team.secrets_dir, team.postgres_port) as connection:
        for name in DATABASES:
            role, password = sql.Identifier(name), sql.Literal(passwords[name])
            exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            verb = "ALTER" if exists.fetchone() else "CREATE"
            connection.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(role, password))
            found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not found.fetchone():
                connection.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
    _create_schemas(settings, team)


def _has_table(team: TeamSettings, database: str, table: str) -> bool:
    with _connect(team.secrets_dir, team.postgres_port, database) as connection:
        found = connection.execute("SELECT to_regclass(%s)", (f"public.{table}",)).fetchone()
    return found is not None and found[0] is not None


def _create_schemas(settings: Settings, team: TeamSettings) -> None:
    """MLflow's and Optuna's tables, created by their own code, once."""
    if not _has_table(team, "optuna", "version_info"):
        import optuna

        logger.info("Creating Optuna's schema in database optuna")
        optuna.storages.RDBStorage(team.database_url("optuna"))
    if not _has_table(team, "mlflow", "alembic_version"):
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        logger.info("Creating MLflow's schema in database mlflow")
        artifacts = settings.mlflow_artifacts_dir
        artifacts.mkdir(parents=True, exist_ok=True)
        SqlAlchemyStore(team.database_url("mlflow"), artifacts.as_uri())


def _describe(settings: Settings, url: str) -> list[str]:
    where = settings.team.secrets_dir if settings.team else "stores/team/secrets"
    databases = ", ".join(DATABASES)
    return [banner_line("PostgreSQL", f"{url}    (databases {databases}; passwords in {where})")]


SPEC = ServiceSpec(
    name="postgres",
    label="PostgreSQL",
    log_name="postgres.log",
    build=_build,
    healthy=_healthy,
    startup_timeout_s=60.0,
    default=False,  # team mode: required by the server, MLflow and the worker
    after_start=_set_up,
    describe=_describe,
)
