"""Team mode in settings: stores/team/team.env selects it, the environment overrides it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagifai.config import FEAST_TEAM_CONFIG, get_settings, read_env_file
from tagifai.errors import ConfigError


def write_team_env(stores: Path, text: str = "") -> Path:
    path = stores / "team" / "team.env"
    path.parent.mkdir(parents=True)
    path.write_text(
        "# comment\n\nTAGIFAI_TEAM_POSTGRES_PORT=5433\nTAGIFAI_TEAM_REDIS_PORT=6380\n" + text
    )
    return path


def test_without_team_env_the_stores_are_embedded(tmp_path: Path) -> None:
    settings = get_settings({"TAGIFAI_STORES_DIR": str(tmp_path)})
    assert settings.team is None
    assert settings.mlflow_tracking_uri == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    assert settings.optuna_storage == "" and settings.redis_address is None
    assert settings.feast_config == "feature_store.yaml"
    assert settings.mlflow_artifacts_dir == tmp_path / "mlflow" / "artifacts"


def test_team_env_points_every_store_at_postgres_and_redis(tmp_path: Path) -> None:
    write_team_env(tmp_path)
    settings = get_settings({"TAGIFAI_STORES_DIR": str(tmp_path)})
    assert settings.team is not None and settings.team.postgres_port == 5433
    passfile = tmp_path / "team" / "secrets" / "pgpass"
    assert settings.mlflow_tracking_uri == (
        f"postgresql+psycopg://mlflow@127.0.0.1:5433/mlflow?passfile={passfile}"
    )
    assert settings.optuna_storage.startswith("postgresql+psycopg://optuna@127.0.0.1:5433/optuna?")
    assert settings.team.database_url("prefect", "postgresql+asyncpg").startswith(
        "postgresql+asyncpg://prefect@127.0.0.1:5433/prefect?passfile="
    )
    assert settings.feast_config == FEAST_TEAM_CONFIG
    assert settings.redis_address == "127.0.0.1:6380"
    assert settings.redis_password_file == tmp_path / "team" / "secrets" / "redis-password"
    assert settings.mlflow_artifacts_dir == tmp_path / "team" / "mlflow-artifacts"


def test_the_environment_overrides_team_env_which_overrides_team_defaults(
    tmp_path: Path,
) -> None:
    write_team_env(
        tmp_path, "MLFLOW_TRACKING_URI=http://mlflow.team:5000\nTAGIFAI_DASK_WORKERS=4\n"
    )
    env = {"TAGIFAI_STORES_DIR": str(tmp_path)}
    settings = get_settings(env)
    assert settings.mlflow_tracking_uri == "http://mlflow.team:5000"
    assert settings.dask_workers == 4
    settings = get_settings({**env, "TAGIFAI_DASK_WORKERS": "3", "TAGIFAI_OPTUNA_STORAGE": "x"})
    assert settings.dask_workers == 3 and settings.optuna_storage == "x"
    # An empty variable is unset, as everywhere else: it does not undo team mode.
    assert get_settings({**env, "TAGIFAI_OPTUNA_STORAGE": ""}).optuna_storage.startswith(
        "postgresql+psycopg://optuna@"
    )


def test_tagifai_team_0_ignores_team_env_and_1_requires_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TAGIFAI_TEAM=1 but .*team.env does not exist"):
        get_settings({"TAGIFAI_STORES_DIR": str(tmp_path), "TAGIFAI_TEAM": "1"})
    write_team_env(tmp_path)
    embedded = get_settings({"TAGIFAI_STORES_DIR": str(tmp_path), "TAGIFAI_TEAM": "0"})
    assert embedded.team is None and embedded.mlflow_tracking_uri.startswith("sqlite:///")
    assert get_settings({"TAGIFAI_STORES_DIR": str(tmp_path), "TAGIFAI_TEAM": "1"}).team


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("no equals sign\n", r"team.env:5: expected KEY=VALUE"),
        ("TAGIFAI_TEAM_REDIS_PORT=\n", r"lacks TAGIFAI_TEAM_REDIS_PORT"),
        ("TAGIFAI_TEAM_REDIS_PORT=redis\n", r"TAGIFAI_TEAM_REDIS_PORT must be a whole number"),
    ],
)
def test_a_broken_team_env_is_one_readable_error(tmp_path: Path, text: str, error: str) -> None:
    write_team_env(tmp_path, text)
    with pytest.raises(ConfigError, match=error):
        get_settings({"TAGIFAI_STORES_DIR": str(tmp_path)})


def test_urls_name_a_passfile_never_a_password(tmp_path: Path) -> None:
    write_team_env(tmp_path)
    secrets = tmp_path / "team" / "secrets"
    secrets.mkdir()
    (secrets / "pgpass").write_text("127.0.0.1:*:mlflow:mlflow:s3cret\n")
    settings = get_settings({"TAGIFAI_STORES_DIR": str(tmp_path)})
    assert "s3cret" not in repr(settings)
    assert read_env_file(tmp_path / "missing.env") is None


def test_a_team_store_that_is_down_is_one_readable_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from deployments.cli import app
    from deployments.platform import free_ports

    port = free_ports()[0]  # nothing listens there
    path = write_team_env(tmp_path)
    path.write_text(path.read_text().replace("5433", str(port)))
    env = {"TAGIFAI_STORES_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": ""}
    result = CliRunner().invoke(app, ["predict", "--title", "yolo", "--description", "x"], env=env)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"MLflow's database 127.0.0.1:{port}/mlflow does not answer" in lines[0]
    assert "make up TEAM=1" in lines[0]
