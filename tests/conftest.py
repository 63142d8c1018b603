"""Shared fixtures: isolated stores, the shipped data, one trained production model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from tagifai.config import Settings, get_settings

# Telemetry off and quiet libraries, before anything imports them.
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "tagifai")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")

REPO = Path(__file__).resolve().parents[1]


def settings_for(stores: Path) -> Settings:
    return get_settings({"TAGIFAI_STORES_DIR": str(stores)})


@pytest.fixture(scope="session")
def shipped() -> tuple[pd.DataFrame, pd.DataFrame]:
    from tagifai.extract import read_table

    return (
        read_table(str(REPO / "data/raw/projects.csv"), "projects"),
        read_table(str(REPO / "data/raw/tags.csv"), "tags"),
    )


@pytest.fixture(scope="session")
def shipped_features(shipped: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    from tagifai.data import join_labelled
    from tagifai.features import compute_features

    return compute_features(join_labelled(*shipped))


@pytest.fixture(scope="session")
def trained_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Stores with one deployed production model (default parameters, no tuning)."""
    from tagifai import pipeline, steps

    settings = settings_for(tmp_path_factory.mktemp("trained-stores"))
    data_path = steps.features_from_sources(
        settings, str(settings.projects_csv), str(settings.tags_csv)
    )
    outcome = pipeline.run_mlops(settings, data_path, tags={"source": "tests"})
    assert outcome.deployed
    yield settings


@pytest.fixture(scope="session")
def shipped_frame(trained_stores: Settings) -> Path:
    """The training frame of the shipped tables (what ``tagifai train`` trains on)."""
    from tagifai import steps

    settings = trained_stores
    return steps.features_from_sources(settings, str(settings.projects_csv), str(settings.tags_csv))


@pytest.fixture(scope="session")
def production_model(trained_stores: Settings):
    from tagifai import registry

    model, _ = registry.load_model(trained_stores)
    return model


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a temporary Prefect server on SQLite (``prefect_test_harness``, ~20 s to start).

    The URL is also exported, so Dask worker processes started later talk to the same API
    instead of each starting an ephemeral one. Results Prefect persists (the exceptions of
    failed runs) go to a temporary directory, not to ``~/.prefect/storage``.
    """
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH,
        temporary_settings,
    )
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    exported = {"PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(storage)}
    with (
        prefect_test_harness(server_startup_timeout=120),
        temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: storage}),
    ):
        exported["PREFECT_API_URL"] = PREFECT_API_URL.value().rstrip("/")
        previous = {name: os.environ.get(name) for name in exported}
        os.environ.update(exported)
        try:
            yield exported["PREFECT_API_URL"]
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
