"""Team mode in the platform: the switch, the secrets, and the services it pulls in.

The service tests use the tiny file server of ``test_services`` as stand-ins for PostgreSQL
and Redis: ``team_requires`` joins a service to the plan only in team mode, a set-up step runs
once after a fresh start, and a service started in the other mode is restarted.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.platform import PlatformError, down, status, up
from deployments.platform.team import (
    disable_team,
    enable_team,
    ensure_password,
    ensure_pgpass,
    postgres_bindir,
    read_pgpass,
    require_reachable,
)
from tagifai.config import Settings, TeamSettings, get_settings
from tests.conftest import settings_for
from tests.deployments.test_services import _serve
from tests.team import team_root


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Stores of the test's own; whatever a test leaves running is stopped afterwards."""
    (tmp_path / "site").mkdir()
    settings = settings_for(tmp_path / "stores")
    try:
        yield settings
    finally:
        down(settings, ())


def as_team(settings: Settings) -> Settings:
    team = TeamSettings(settings.stores_dir / "team", postgres_port=1, redis_port=2)
    return dataclasses.replace(settings, team=team)


def test_enable_team_fixes_the_ports_once_and_disable_keeps_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAGIFAI_POSTGRES_PORT", "0")  # any free port
    embedded = get_settings({"TAGIFAI_STORES_DIR": str(tmp_path)})
    path = enable_team(embedded)
    text = path.read_text()
    team = get_settings({"TAGIFAI_STORES_DIR": str(tmp_path)}).team
    assert team is not None and team.postgres_port > 0 and team.redis_port > 0
    assert enable_team(embedded).read_text() == text  # kept: the data was made on these ports
    (path.parent / "kept").write_text("data")
    assert disable_team(embedded) is True
    assert get_settings({"TAGIFAI_STORES_DIR": str(tmp_path)}).team is None
    assert (path.parent / "kept").exists() and disable_team(embedded) is False


def test_secrets_are_generated_once_into_private_files(tmp_path: Path) -> None:
    team = TeamSettings(tmp_path / "team", postgres_port=1, redis_port=2)
    password = ensure_password(team.redis_password_file)
    assert ensure_password(team.redis_password_file) == password and len(password) > 30
    passwords = ensure_pgpass(team, ("prefect", "mlflow", "optuna"))
    assert ensure_pgpass(team, ("prefect", "mlflow", "optuna")) == passwords
    assert read_pgpass(team.pgpass) == passwords and len(set(passwords.values())) == 3
    assert (
        team.pgpass.read_text().splitlines()[0]
        == f"127.0.0.1:*:prefect:prefect:{passwords['prefect']}"
    )
    assert team.secrets_dir.stat().st_mode & 0o777 == 0o700
    for path in team.secrets_dir.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path


@pytest.mark.skipif(os.geteuid() != 0, reason="checks another system user's access: needs root")
def test_a_data_dir_the_server_user_cannot_reach_is_refused() -> None:
    with team_root("tagifai-reach-") as root:
        closed = root / "closed"
        (closed / "stores").mkdir(parents=True)
        closed.chmod(0o700)
        with pytest.raises(PlatformError, match=r"the postgres system user cannot enter .*closed"):
            require_reachable(closed / "stores", "postgres")
        closed.chmod(0o711)
        require_reachable(closed / "stores", "postgres")


def test_missing_binaries_say_how_to_install_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGIFAI_POSTGRES_BINDIR", "/nonexistent/bin")
    with pytest.raises(PlatformError, match=r"PostgreSQL is not installed.*make team-deps"):
        postgres_bindir()


def test_team_requirements_join_only_in_team_mode(settings: Settings) -> None:
    files = _serve(settings.stores_dir.parent / "site")
    calls: list[str] = []
    store = dataclasses.replace(
        files, name="store", log_name="store.log", after_start=lambda s, url: calls.append(url)
    )
    app = dataclasses.replace(
        files, name="app", log_name="app.log", port_env="TAGIFAI_TEST_APP_PORT",
        team_requires=("store",),
    )  # fmt: skip
    registry = (store, app)

    assert list(up(settings, ("app",), registry)) == ["app"]  # embedded: no store
    assert calls == []
    embedded_pid = status(settings, registry)["app"].pid

    team = as_team(settings)
    urls = up(team, ("app",), registry)
    assert list(urls) == ["store", "app"]
    assert calls == [urls["store"]]  # the set-up step ran once, after the fresh start
    states = status(team, registry)
    assert states["app"].pid != embedded_pid  # restarted in team mode
    assert up(team, ("app",), registry) == urls  # reused: no restart, no second set-up
    assert calls == [urls["store"]] and status(team, registry)["app"].pid == states["app"].pid


def test_a_failed_set_up_step_stops_the_service(settings: Settings) -> None:
    def fail(settings: Settings, url: str) -> None:
        raise RuntimeError("no databases today")

    files = dataclasses.replace(_serve(settings.stores_dir.parent / "site"), after_start=fail)
    with pytest.raises(PlatformError, match="files: set-up failed: no databases today"):
        up(settings, ("files",), (files,))
    assert status(settings, (files,))["files"].state == "stopped"
