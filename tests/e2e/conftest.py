"""The deployed platform the chain modules share (server, worker, receiver, sensor and the
warm Dask cluster)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import Deployed, applied, deployed_platform

SENSOR_TICK_S = 1


@pytest.fixture
def deployed(shared_platform: Deployed) -> Iterator[Deployed]:
    """The shared platform, with its clients' environment set for the test."""
    with applied(shared_platform.env):
        yield shared_platform


@pytest.fixture(scope="session")
def shared_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """One platform for ``test_deployments`` and ``test_new_data`` (each counts the runs it
    causes): the sensor watches ``<data root>/landing`` and ``<data root>/warehouse.db``,
    ticking every second."""
    tmp = tmp_path_factory.mktemp("deployed")
    data = (tmp / "data").resolve()  # the harness fills it; the receiver's data root
    env = {
        "TAGIFAI_SENSOR_SOURCES": f"{data / 'landing'};sqlite:///{data / 'warehouse.db'}",
        "TAGIFAI_SENSOR_INTERVAL": str(SENSOR_TICK_S),
    }
    # The warm Dask cluster too: the deployed flow runs submit their tasks there.
    services = ("server", "worker", "webhook", "sensor", "dask-scheduler", "dask-workers")
    with deployed_platform(tmp, services, extra_env=env) as platform:
        (platform.data_root / "landing").mkdir()
        print(f"\nprefect deploy --all: {platform.deploy_seconds:.1f} s")
        yield platform
