"""Two trivial flows deployed like the real chain, to measure the orchestration floor.

    python -m benchmarks.noop_flows      # deploy both to the pool `tagifai` ($PREFECT_API_URL)

``noop-dataops`` and ``noop-mlops`` take the real flows' parameters and do nothing. They are
deployed from this checkout to the same process pool as ``prefect.yaml``'s deployments, with
the same trigger shape: ``noop-dataops`` ends by emitting an event, as dataops emits
``tagifai.snapshot.published``, and ``noop-mlops`` runs on it with the ``snapshot`` parameter
templated from the event's payload.
"""

from __future__ import annotations

from prefect import flow

from tagifai.config import REPO_ROOT

POOL = "tagifai"
EVENT = "noop.snapshot.published"
SNAPSHOT_TEMPLATE = "{{ event.payload.snapshot_id }}"


@flow(name="noop-dataops")
def noop_dataops(projects_uri: str = "", tags_uri: str = "") -> dict[str, object]:
    """Nothing but the event: the cost of a deployed flow run that does no work."""
    from prefect.events import emit_event

    emit_event(
        EVENT, resource={"prefect.resource.id": "noop.snapshot.0"}, payload={"snapshot_id": "0"}
    )
    return {"projects_uri": projects_uri, "tags_uri": tags_uri}


@flow(name="noop-mlops")
def noop_mlops(
    snapshot: str | None = None, n_trials: int = 20, search_space: str = "default"
) -> dict[str, object]:
    """Nothing, started by the trigger on noop-dataops' event."""
    return {"snapshot": snapshot, "n_trials": n_trials, "search_space": search_space}


def deploy(pool: str = POOL) -> list[str]:
    """Deploy both flows from this checkout; returns the deployment ids."""
    from prefect.events import DeploymentEventTrigger

    entry = "benchmarks/noop_flows.py"
    dataops = noop_dataops.from_source(source=str(REPO_ROOT), entrypoint=f"{entry}:noop_dataops")
    mlops = noop_mlops.from_source(source=str(REPO_ROOT), entrypoint=f"{entry}:noop_mlops")
    trigger = DeploymentEventTrigger(
        name=f"noop-mlops on {EVENT}",
        enabled=True,
        match={"prefect.resource.id": "noop.snapshot.*"},
        expect={EVENT},
        parameters={"snapshot": SNAPSHOT_TEMPLATE},
    )
    ids = [
        dataops.deploy(
            name="noop-dataops",
            work_pool_name=pool,
            concurrency_limit=1,
            tags=["benchmarks"],
            print_next_steps=False,
        ),
        mlops.deploy(
            name="noop-mlops",
            work_pool_name=pool,
            concurrency_limit=1,
            tags=["benchmarks"],
            parameters={"n_trials": 20, "search_space": "default"},
            triggers=[trigger],
            print_next_steps=False,
        ),
    ]
    return [str(i) for i in ids]


if __name__ == "__main__":
    print(" ".join(deploy()))
