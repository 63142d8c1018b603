"""The few Prefect REST calls the benchmarks make, over plain HTTP.

The benchmark driver talks to several private servers in one process, and Prefect's own
client reads its API URL once, at import; so the driver never imports Prefect and measures
with the server's own timestamps instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx


def _client(api_url: str) -> httpx.Client:
    return httpx.Client(base_url=api_url.rstrip("/") + "/", timeout=30.0, trust_env=False)


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def seconds_between(start: str | None, end: str | None) -> float | None:
    a, b = when(start), when(end)
    return (b - a).total_seconds() if a and b else None


def flow_runs(api_url: str, flow_name: str | None = None, **filters: Any) -> list[dict[str, Any]]:
    """Flow runs, oldest first; ``flow_name`` filters by the flow's name."""
    body: dict[str, Any] = {"sort": "EXPECTED_START_TIME_ASC", "limit": 200}
    if flow_name:
        body["flows"] = {"name": {"any_": [flow_name]}}
    body.update(filters)
    with _client(api_url) as client:
        response = client.post("flow_runs/filter", json=body)
        response.raise_for_status()
        return response.json()


def flow_run(api_url: str, run_id: str) -> dict[str, Any]:
    with _client(api_url) as client:
        response = client.get(f"flow_runs/{run_id}")
        response.raise_for_status()
        return response.json()


def task_runs(api_url: str, flow_run_id: str) -> list[dict[str, Any]]:
    body = {"flow_runs": {"id": {"any_": [flow_run_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
    with _client(api_url) as client:
        response = client.post("task_runs/filter", json=body)
        response.raise_for_status()
        return response.json()


def flow_run_states(api_url: str, run_id: str) -> list[dict[str, Any]]:
    with _client(api_url) as client:
        response = client.get("flow_run_states/", params={"flow_run_id": run_id})
        response.raise_for_status()
        return sorted(response.json(), key=lambda s: s["timestamp"])


def deployment(api_url: str, flow_name: str, deployment_name: str) -> dict[str, Any]:
    with _client(api_url) as client:
        response = client.get(f"deployments/name/{flow_name}/{deployment_name}")
        response.raise_for_status()
        return response.json()


def deployment_runs(api_url: str, deployment_id: str) -> list[dict[str, Any]]:
    return flow_runs(api_url, deployments={"id": {"any_": [deployment_id]}})


def state_times(api_url: str, run_id: str) -> dict[str, str]:
    """First timestamp of each state type a run went through (SCHEDULED, PENDING, ...)."""
    first: dict[str, str] = {}
    for state in flow_run_states(api_url, run_id):
        first.setdefault(state["type"], state["timestamp"])
    return first


def run_summary(api_url: str, run: dict[str, Any]) -> dict[str, Any]:
    """A flow run's timeline from the server's timestamps, in seconds after its creation."""
    states = state_times(api_url, run["id"])
    created = run["created"]
    return {
        "id": run["id"],
        "name": run["name"],
        "state": run["state_type"],
        "created": created,
        "end_time": run.get("end_time"),
        "pending_after_s": seconds_between(created, states.get("PENDING")),
        "running_after_s": seconds_between(created, states.get("RUNNING")),
        "done_after_s": seconds_between(created, run.get("end_time")),
        "run_seconds": seconds_between(run.get("start_time"), run.get("end_time")),
        "parameters": run.get("parameters"),
    }


def task_breakdown(api_url: str, run_id: str) -> list[dict[str, Any]]:
    """Name and seconds of each task run of a flow run."""
    return [
        {
            "task": task["name"],
            "seconds": seconds_between(task.get("start_time"), task.get("end_time")),
            "state": task.get("state_type"),
        }
        for task in task_runs(api_url, run_id)
    ]
