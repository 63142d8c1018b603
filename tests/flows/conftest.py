"""Flows run for real: a Prefect API (session harness) and a local Dask cluster."""

from __future__ import annotations

import hashlib
import shutil
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


@pytest.fixture(scope="session")
def dataops_done(prefect_api, tmp_path_factory) -> tuple[Settings, object]:
    """Stores after one good DataOps run on the shipped data (shared, read-only)."""
    import os

    from flows.dataops import dataops

    stores = tmp_path_factory.mktemp("dataops-stores")
    previous = os.environ.get("TAGIFAI_STORES_DIR")
    os.environ["TAGIFAI_STORES_DIR"] = str(stores)
    try:
        state = dataops(return_state=True)
    finally:
        if previous is None:
            os.environ.pop("TAGIFAI_STORES_DIR")
        else:
            os.environ["TAGIFAI_STORES_DIR"] = previous
    return settings_for(stores), state


@pytest.fixture
def stores_copy(dataops_done, tmp_path, monkeypatch) -> Settings:
    """A private copy of the good stores, for runs that must not change them."""
    settings, _ = dataops_done
    target = tmp_path / "stores"
    shutil.copytree(settings.stores_dir, target)
    monkeypatch.setenv("TAGIFAI_STORES_DIR", str(target))
    return settings_for(target)
