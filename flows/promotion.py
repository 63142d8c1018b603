"""Promotion in Prefect: the deploy lock, and the promotion's steps as tasks in a transaction.

:class:`PrefectSteps` runs :data:`tagifai.promotion.STEPS` (the library's all-or-nothing
promotion, written once) with each step a task whose ``on_rollback`` hook undoes it, inside
``prefect.transactions.transaction()``: when a step fails, Prefect runs the hooks of the steps
that completed, newest first, and marks those task runs RolledBack in the UI.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from prefect import get_client, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run
from prefect.transactions import Transaction, get_transaction, transaction

from tagifai.config import Settings
from tagifai.promotion import Promotion, Step

DEPLOY_LOCK = "tagifai-deploy"


def deploy_lock() -> AbstractContextManager[object]:
    """The global concurrency limit ``tagifai-deploy`` (1 slot), created if missing.

    A holder that dies keeps its slot until its lease (60 s) runs out.
    """
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(DEPLOY_LOCK, limit=1)
    return concurrency(DEPLOY_LOCK, occupy=1, timeout_seconds=600, lease_duration=60, strict=True)


def run_actor(default: str) -> tuple[str, str | None]:
    """Who moves production from this run, and the id of the run (the top-level one)."""
    run_id = flow_run.get_root_flow_run_id() if flow_run.get_id() else None
    name = flow_run.get_name()
    flow_name = flow_run.get_flow_name()
    actor = f"{flow_name} flow run '{name}'" if name else default
    return actor, run_id


# NO_CACHE: a promotion step must run every time, never be satisfied from a cached result.
@task(cache_policy=NO_CACHE)
def promotion_step(
    settings: Settings, step: Step, promotion: Promotion, done: dict[str, Any]
) -> Any:
    """One step of a promotion; its rollback hook undoes it if a later step fails."""
    token = step.apply(settings, promotion, done)
    undo = {"step": step, "settings": settings, "promotion": promotion, "token": token}
    get_transaction().set("undo", undo)
    return token


@promotion_step.on_rollback
def undo_promotion_step(txn: Transaction) -> None:
    undo = txn.get("undo")
    undo["step"].undo(undo["settings"], undo["promotion"], undo["token"])


class PrefectSteps:
    """The promotion's runner in a flow: a Prefect transaction, one task per step."""

    def transaction(self) -> AbstractContextManager[Any]:
        return transaction()

    def run(
        self, step: Step, settings: Settings, promotion: Promotion, done: Mapping[str, Any]
    ) -> Any:
        named = promotion_step.with_options(name=step.name)
        return named(settings, step, promotion, dict(done))
