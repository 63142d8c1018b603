"""The alias history: every move of ``production``, kept in MLflow.

Each move is one run of the experiment ``tagifai-production-history`` (browse it in the MLflow
UI), named ``production v1 -> v2``, with tags for what moved it (``deploy`` or ``rollback``),
from which version to which, why, who or what (``actor``) and in which Prefect flow run; the
run's start time is when. A move is recorded before the alias moves (run status RUNNING:
pending) and finished after it (FINISHED: applied); a promotion that fails in between deletes
its entry. An entry a crash left pending is settled by :func:`reconcile` under the deploy lock:
applied if the alias points where it was going, abandoned (KILLED) otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from tagifai import registry
from tagifai.config import ALIAS_HISTORY_EXPERIMENT, Settings

logger = logging.getLogger(__name__)

MAX_TAG_LENGTH = 5000
State = Literal["pending", "applied", "abandoned"]
_STATES: dict[str, State] = {"RUNNING": "pending", "FINISHED": "applied", "KILLED": "abandoned"}


@dataclass(frozen=True)
class AliasMove:
    """One move of ``production``."""

    entry_id: str
    action: str  # "deploy" or "rollback"
    from_version: int | None
    to_version: int
    reason: str
    actor: str
    flow_run_id: str | None
    at: datetime
    state: State

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"at": self.at.isoformat(timespec="seconds")}


def _version(value: str | None) -> int | None:
    return int(value) if value not in (None, "", "none") else None


def record(
    settings: Settings,
    *,
    action: str,
    from_version: int | None,
    to_version: int,
    reason: str,
    actor: str,
    flow_run_id: str | None = None,
) -> str:
    """Record a move about to happen (pending); returns the entry's id."""
    client = registry.connect(settings)
    tags = {
        "tagifai.action": action,
        "tagifai.from_version": str(from_version) if from_version is not None else "none",
        "tagifai.to_version": str(to_version),
        "tagifai.reason": reason[:MAX_TAG_LENGTH],
        "tagifai.actor": actor[:250],
        "tagifai.flow_run_id": flow_run_id or "",
        "mlflow.note.content": reason[:MAX_TAG_LENGTH],
    }
    run = client.create_run(
        registry.experiment_id(settings, client, ALIAS_HISTORY_EXPERIMENT),
        tags=tags,
        run_name=f"production v{from_version} -> v{to_version}",
    )
    return run.info.run_id


def finish(settings: Settings, entry_id: str) -> None:
    """Mark an entry applied: the alias moved."""
    registry.connect(settings).set_terminated(entry_id, "FINISHED")


def abandon(settings: Settings, entry_id: str) -> None:
    """Mark an entry abandoned: the alias never moved (a crash between record and move)."""
    registry.connect(settings).set_terminated(entry_id, "KILLED")


def discard(settings: Settings, entry_id: str) -> None:
    """Delete an entry whose move was rolled back (it never happened)."""
    registry.connect(settings).delete_run(entry_id)


def entries(settings: Settings, limit: int = 20) -> list[AliasMove]:
    """The newest moves first (applied, pending and abandoned; rolled-back ones are gone)."""
    client = registry.connect(settings)
    experiment = client.get_experiment_by_name(ALIAS_HISTORY_EXPERIMENT)
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=limit,
    )
    moves = []
    for run in runs:
        tags = run.data.tags
        moves.append(
            AliasMove(
                entry_id=run.info.run_id,
                action=tags.get("tagifai.action", "?"),
                from_version=_version(tags.get("tagifai.from_version")),
                to_version=int(tags["tagifai.to_version"]),
                reason=tags.get("tagifai.reason", ""),
                actor=tags.get("tagifai.actor", ""),
                flow_run_id=tags.get("tagifai.flow_run_id") or None,
                at=datetime.fromtimestamp(run.info.start_time / 1000, UTC),
                state=_STATES.get(run.info.status, "abandoned"),
            )
        )
    return moves


def reconcile(settings: Settings) -> list[AliasMove]:
    """Settle entries a crash left pending; returns them as they were. Call under the deploy
    lock (a pending entry of a promotion in progress would otherwise be settled early).

    Only the newest pending entry can have moved the alias (moves are serialised by the lock),
    and it did if the alias now points at its target; every other one is abandoned.
    """
    pending = [move for move in entries(settings, limit=50) if move.state == "pending"]
    if not pending:
        return []
    current = registry.production_version(settings)
    for position, move in enumerate(pending):
        if position == 0 and current == move.to_version:
            finish(settings, move.entry_id)
            logger.warning("alias history: settled %s as applied", move.entry_id)
        else:
            abandon(settings, move.entry_id)
            logger.warning("alias history: settled %s as abandoned", move.entry_id)
    return pending


def previous_production(settings: Settings, current: int) -> int | None:
    """The version ``current`` replaced when it was deployed (a rollback's target): after a
    rollback from v3 to v2, the previous production of v2 is still what v2 replaced."""
    for move in entries(settings, limit=200):
        if move.state == "applied" and move.action == "deploy" and move.to_version == current:
            return move.from_version
    # Moves from before the history existed: the newest deployed version below ``current``.
    deployed = [
        v.version
        for v in registry.list_versions(settings)
        if v.version < current and v.tags.get("decision") == "deployed"
    ]
    return max(deployed) if deployed else None
