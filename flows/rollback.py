"""Rollback: move ``production`` back (by default to the version it replaced), record it in
the alias history and emit ``tagifai.model.rolled_back``.

Run by ``tagifai rollback [--to N] --reason "..."``, by the ``rollback`` deployment
(``prefect deployment run 'rollback/rollback' -p reason="..."``) and by the monitor when its
policy decides ``rollback``. The move is a promotion: alias, references and history entry
succeed together or not at all, under the deploy lock.
"""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event

from flows.promotion import PrefectSteps, deploy_lock, run_actor
from tagifai import history, steps
from tagifai.config import Settings, get_settings
from tagifai.history import AliasMove
from tagifai.reporting import history_rows


@task
def rollback_model(
    settings: Settings,
    reason: str,
    to_version: int | None,
    expected_version: int | None,
    actor: str | None,
) -> AliasMove:
    """Move production back under the deploy lock, as a transaction of tasks."""
    default_actor, run_id = run_actor(settings.actor)
    return steps.rollback_model(
        settings,
        reason,
        deploy_lock(),
        to_version=to_version,
        expected_version=expected_version,
        runner=PrefectSteps(),
        actor=actor or default_actor,
        flow_run_id=run_id,
    )


@task
def announce_rollback(settings: Settings, move: AliasMove) -> None:
    """``tagifai.model.rolled_back`` for automations, a message for people, the history."""
    emit_event(
        event="tagifai.model.rolled_back",
        resource={
            "prefect.resource.id": f"tagifai.model.v{move.to_version}",
            "prefect.resource.name": f"tagifai v{move.to_version}",
        },
        payload={
            "from_version": move.from_version,
            "to_version": move.to_version,
            "reason": move.reason,
            "actor": move.actor,
            "entry_id": move.entry_id,
        },
    )
    message = f"production rolled back from v{move.from_version} by {move.actor}: {move.reason}"
    steps.notify_teams(settings, "rolled back", move.to_version, message)
    create_table_artifact(
        key="alias-history",
        table=history_rows(history.entries(settings, limit=20)),
        description="Moves of the production alias, newest first",
    )


@flow(name="rollback")
def rollback(
    reason: str,
    to_version: int | None = None,
    expected_version: int | None = None,
    actor: str | None = None,
) -> dict[str, object]:
    """Serve an earlier version again: ``to_version``, or the one production replaced.

    ``expected_version`` refuses the rollback if production is no longer that version (the
    monitor passes the version it judged). Fails, changing nothing, when there is nothing to
    go back to or the target has no references.
    """
    settings = get_settings()
    move = rollback_model(settings, reason, to_version, expected_version, actor)
    announce_rollback(settings, move)
    return move.to_dict()


if __name__ == "__main__":
    rollback(reason="manual")
