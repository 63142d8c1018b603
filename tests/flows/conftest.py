"""Flows run for real: a Prefect API (session harness) and a local Dask cluster."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tagifai.config import Settings
from tests.conftest import settings_for


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash: 'nothing changed' made checkable."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@contextlib.contextmanager
def flow_environment(stores: Path, **variables: str) -> Iterator[None]:
    """The environment a worker gives a flow run (a flow reads its settings from it when it
    starts), restored afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TAGIFAI_STORES_DIR", str(stores))
        for name, value in variables.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def dataops_done(prefect_api, tmp_path_factory) -> tuple[Settings, object]:
    """Stores after one good DataOps run on the shipped data (shared, read-only)."""
    from flows.dataops import dataops

    stores = tmp_path_factory.mktemp("dataops-stores")
    with flow_environment(stores):
        state = dataops(return_state=True)
    return settings_for(stores), state


@pytest.fixture
def stores_copy(dataops_done, tmp_path, monkeypatch) -> Settings:
    """A private copy of the good stores, for runs that must not change them."""
    settings, _ = dataops_done
    target = tmp_path / "stores"
    shutil.copytree(settings.stores_dir, target)
    monkeypatch.setenv("TAGIFAI_STORES_DIR", str(target))
    return settings_for(target)
