"""Redis for team mode: Feast's online store.

``redis-server`` (Debian's) with a configuration file of the project's own under
``stores/team/redis`` (mode 0600, owned by the ``redis`` system user it runs as when we are
root): loopback only, protected mode, ``requirepass`` from ``stores/team/secrets/redis-password``
(so the password is in no command line), RDB snapshots in the same directory (saved on
``down`` too), and a fixed process title so that ``status`` and ``down`` recognise it.
"""

from __future__ import annotations

from pathlib import Path

from deployments.platform.ports import HOST
from deployments.platform.spec import Launch, LaunchContext, ServiceSpec, banner_line, child_env
from deployments.platform.team import (
    chown_to,
    ensure_password,
    port_of,
    redis_server,
    require_reachable,
    require_team,
    service_user,
    team_dir,
    write_private,
)
from tagifai.config import Settings


def _password(secrets: Path) -> str:
    return ensure_password(secrets / "redis-password")


def _build(context: LaunchContext) -> Launch:
    team = require_team(context.settings)
    user = service_user("redis")
    home = team.directory / "redis"
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    chown_to(home, user)
    require_reachable(home, user)
    config = home / "redis.conf"
    write_private(
        config,
        "\n".join(
            [
                "# Written at each start by deployments/platform/services/redis.py.",
                f"bind {HOST}",
                "protected-mode yes",
                f"port {team.redis_port}",
                f"requirepass {_password(team.secrets_dir)}",
                f'dir "{home}"',
                "dbfilename dump.rdb",
                "save 3600 1 300 100 60 10000",
                "appendonly no",
                "daemonize no",
                "supervised no",
                'logfile ""',
                "loglevel notice",
                "set-proc-title no",
                "",
            ]
        ),
        owner=user,
    )
    cmd = (redis_server(), str(config))
    return Launch(cmd, child_env(context.settings), f"redis://{HOST}:{team.redis_port}", user)


def _healthy(settings: Settings, url: str, prefect_api_url: str | None) -> bool:
    import redis

    client = redis.Redis(
        host=HOST,
        port=port_of(url),
        password=_password(team_dir(settings) / "secrets"),
        socket_timeout=3,
        socket_connect_timeout=3,
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _describe(settings: Settings, url: str) -> list[str]:
    where = settings.team.redis_password_file if settings.team else "stores/team/secrets"
    return [banner_line("Redis", f"{url}    (Feast online store; password in {where})")]


SPEC = ServiceSpec(
    name="redis",
    label="Redis",
    log_name="redis.log",
    build=_build,
    healthy=_healthy,
    startup_timeout_s=30.0,
    default=False,  # team mode: required by the worker
    describe=_describe,
)
