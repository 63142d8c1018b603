"""The Dask task runner, built from settings: a local cluster, or an existing scheduler."""

from __future__ import annotations

from typing import Any

from prefect_dask import DaskTaskRunner

from tagifai.config import Settings, get_settings


def dask_runner_options(settings: Settings) -> dict[str, Any]:
    """``TAGIFAI_DASK_ADDRESS`` selects an existing scheduler; otherwise a local process cluster.

    Worker processes talk to the Prefect API of the flow (a real server, never the ephemeral
    one: each worker would start its own and time out).
    """
    if settings.dask_address:
        return {"address": settings.dask_address}
    return {
        "cluster_class": "distributed.LocalCluster",
        "cluster_kwargs": {
            "n_workers": settings.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": ":0",
        },
    }


class SettingsDaskTaskRunner(DaskTaskRunner):
    """Reads ``TAGIFAI_DASK_*`` when each flow run starts, not when the flow is imported.

    Prefect calls ``duplicate()`` at the start of every flow run.
    """

    def duplicate(self) -> DaskTaskRunner:
        return DaskTaskRunner(**dask_runner_options(get_settings()))


def build_task_runner(settings: Settings | None = None) -> DaskTaskRunner:
    """A runner that starts nothing until a flow run enters it."""
    return SettingsDaskTaskRunner(**dask_runner_options(settings or get_settings()))
