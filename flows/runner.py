"""The Dask task runner, built from settings: a local cluster, or an existing scheduler."""

from __future__ import annotations

from typing import Any

from prefect_dask import DaskTaskRunner

from tagifai.config import Settings, get_settings


def dask_runner_options(settings: Settings) -> dict[str, Any]:
    """``TAGIFAI_DASK_ADDRESS`` selects an existing scheduler; otherwise a local cluster.

    The local cluster has ``TAGIFAI_DASK_WORKERS`` workers: threads of the flow-run process by
    default, which start in well under a second and share its imports, or, with
    ``TAGIFAI_DASK_PROCESSES=true``, worker processes, which start in seconds and import every
    library again but run CPU-bound Python side by side. Worker processes talk to the Prefect API
    of the flow (a real server, never the ephemeral one: each would start its own and time out).
    """
    if settings.dask_address:
        return {"address": settings.dask_address}
    if settings.dask_processes:
        layout = {"n_workers": settings.dask_workers, "threads_per_worker": 1, "processes": True}
    else:
        layout = {"n_workers": 1, "threads_per_worker": settings.dask_workers, "processes": False}
    return {
        "cluster_class": "distributed.LocalCluster",
        "cluster_kwargs": {**layout, "dashboard_address": ":0"},
    }


class SettingsDaskTaskRunner(DaskTaskRunner):
    """Reads ``TAGIFAI_DASK_*`` when each flow run starts, not when the flow is imported.

    Prefect calls ``duplicate()`` at the start of every flow run.
    """

    def duplicate(self) -> DaskTaskRunner:
        return DaskTaskRunner(**dask_runner_options(get_settings()))


def build_task_runner() -> DaskTaskRunner:
    """A runner that reads nothing and starts nothing until a flow run enters it."""
    return SettingsDaskTaskRunner()
