"""Team-mode test helpers: a stores dir the database servers can reach, its settings, SQL.

Used by the ``team`` tests (tests/e2e/test_team*.py, tests/tagifai/test_store_redis.py).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.platform import free_ports
from deployments.platform.team import enable_team
from tagifai.config import Settings, get_settings

SECRET = "team-test-secret-0123456789"
PORT_ENV = (
    "TAGIFAI_PREFECT_PORT",
    "TAGIFAI_WEBHOOK_PORT",
    "TAGIFAI_MLFLOW_PORT",
    "TAGIFAI_POSTGRES_PORT",
    "TAGIFAI_REDIS_PORT",
)
# Settings that would point a test at someone else's state.
FOREIGN_ENV = (
    "PREFECT_API_URL",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_SERVER_API_AUTH_STRING",
    "MLFLOW_TRACKING_URI",
    "TAGIFAI_OPTUNA_STORAGE",
    "TAGIFAI_FEAST_CONFIG",
    "TAGIFAI_REDIS_ADDRESS",
    "TAGIFAI_REDIS_PASSWORD_FILE",
    "TAGIFAI_TEAM",
    "TAGIFAI_DASK_ADDRESS",
    "TAGIFAI_WEBHOOK_DATA_ROOT",
)


@contextlib.contextmanager
def team_root(prefix: str) -> Iterator[Path]:
    """A fresh directory the ``postgres`` and ``redis`` system users can enter (pytest's own
    tmp root is 0700); removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def team_environment(env: pytest.MonkeyPatch, root: Path) -> Settings:
    """Switch a stores dir under ``root`` to team mode, on free ports, nothing inherited."""
    for name in FOREIGN_ENV:
        env.delenv(name, raising=False)
    env.setenv("TAGIFAI_STORES_DIR", str(root / "stores"))
    env.setenv("TAGIFAI_WEBHOOK_SECRET", SECRET)
    env.setenv("TAGIFAI_PLATFORM_TIMEOUT_SCALE", "3")
    for name, port in zip(PORT_ENV, free_ports(len(PORT_ENV)), strict=True):
        env.setenv(name, str(port))
    enable_team(get_settings())
    settings = get_settings()
    assert settings.team is not None
    return settings


def query(settings: Settings, database: str, sql: str, *args: object) -> list[tuple]:
    """Rows from one of the team's databases, as its own role (password from the pgpass)."""
    import psycopg

    assert settings.team is not None
    with psycopg.connect(
        host=settings.team.host,
        port=settings.team.postgres_port,
        user=database,
        dbname=database,
        passfile=str(settings.team.pgpass),
    ) as connection:
        cursor = connection.execute(sql, args)
        return cursor.fetchall() if cursor.description else []
