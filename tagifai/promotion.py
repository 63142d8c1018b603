"""Promotion as a transaction: references, alias-history entry and alias move, all or nothing.

:func:`promote` runs :data:`STEPS` in order inside a runner's transaction; each step returns
what its ``undo`` needs. When a step fails, the steps already done are undone in reverse
order, so production, its references and the history are left exactly as they were. The
plain runner (:class:`PlainSteps`, for ``tagifai train`` and tests) keeps that undo stack
itself; the flows' runner makes each step a Prefect task with an ``on_rollback`` hook inside
``prefect.transactions.transaction()``, so the same steps are written once.

The order is what makes a crash (``kill -9``, where no undo runs) harmless: the alias move, one
row of MLflow's registry, is the last step that changes what is served. Before it, production
is untouched (staged references of a version that is not production mean nothing, and a
pending history entry is settled as abandoned by :func:`tagifai.history.reconcile`); after it,
only the history entry is marked applied, which ``reconcile`` also settles.

Callers hold the deploy lock (:func:`tagifai.steps.deploy_lock` or Prefect's ``tagifai-deploy``
limit) around :func:`promote`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from tagifai import files, history, registry
from tagifai.config import Settings
from tagifai.errors import TagifaiError
from tagifai.monitoring import references_path

logger = logging.getLogger(__name__)


class PromotionError(TagifaiError):
    """A promotion cannot go ahead (no such version, no references, production moved)."""


@dataclass(frozen=True)
class Promotion:
    """One move of ``production`` and everything recorded with it."""

    action: Literal["deploy", "rollback"]
    to_version: int
    from_version: int | None  # what production must still be when the alias moves
    reason: str
    actor: str
    flow_run_id: str | None = None
    references: Path | None = None  # staged references to install; None: the version's own


@dataclass(frozen=True)
class Step:
    """One reversible step: ``apply(settings, promotion, done)`` returns what ``undo`` needs
    (``done`` maps the earlier steps' names to what they returned)."""

    name: str
    apply: Callable[[Settings, Promotion, Mapping[str, Any]], Any]
    undo: Callable[[Settings, Promotion, Any], None]


def _install_references(settings: Settings, promotion: Promotion, done: Mapping[str, Any]) -> Any:
    target = references_path(settings, promotion.to_version)
    previous = target.read_text() if target.is_file() else None
    if promotion.references is None:
        if previous is None:
            raise PromotionError(
                f"v{promotion.to_version} has no monitoring references ({target}): only a version "
                "that was in production, or one being deployed with its references, can serve"
            )
        return {"path": str(target), "previous": previous}
    files.write_text(target, promotion.references.read_text())
    return {"path": str(target), "previous": previous}


def _restore_references(settings: Settings, promotion: Promotion, token: Any) -> None:
    target = Path(token["path"])
    if token["previous"] is None:
        target.unlink(missing_ok=True)
    else:
        files.write_text(target, token["previous"])


def _record_move(settings: Settings, promotion: Promotion, done: Mapping[str, Any]) -> str:
    return history.record(
        settings,
        action=promotion.action,
        from_version=promotion.from_version,
        to_version=promotion.to_version,
        reason=promotion.reason,
        actor=promotion.actor,
        flow_run_id=promotion.flow_run_id,
    )


def _discard_move(settings: Settings, promotion: Promotion, entry_id: Any) -> None:
    history.discard(settings, entry_id)


def _move_alias(settings: Settings, promotion: Promotion, done: Mapping[str, Any]) -> int | None:
    current = registry.production_version(settings)
    if current != promotion.from_version:
        raise PromotionError(
            f"production moved to v{current} meanwhile (expected v{promotion.from_version})"
        )
    return registry.set_production(settings, promotion.to_version)


def _move_alias_back(settings: Settings, promotion: Promotion, previous: Any) -> None:
    registry.set_production(settings, previous)


def _finish_move(settings: Settings, promotion: Promotion, done: Mapping[str, Any]) -> None:
    history.finish(settings, done["record_alias_move"])


def _nothing(settings: Settings, promotion: Promotion, token: Any) -> None:
    return None


STEPS: tuple[Step, ...] = (
    Step("install_references", _install_references, _restore_references),
    Step("record_alias_move", _record_move, _discard_move),
    Step("move_alias", _move_alias, _move_alias_back),  # the single-row commit point
    Step("finish_alias_move", _finish_move, _nothing),
)


class StepRunner(Protocol):
    """Runs :data:`STEPS` all or nothing: a transaction, and each step inside it."""

    def transaction(self) -> contextlib.AbstractContextManager[Any]: ...

    def run(
        self, step: Step, settings: Settings, promotion: Promotion, done: Mapping[str, Any]
    ) -> Any: ...


class PlainSteps:
    """The runner without Prefect: an undo stack, unwound in reverse when a step fails."""

    def __init__(self) -> None:
        self._done: list[tuple[Step, Settings, Promotion, Any]] = []

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self._done = []
        try:
            yield
        except BaseException:
            for step, settings, promotion, token in reversed(self._done):
                try:
                    step.undo(settings, promotion, token)
                except Exception:  # undo what can be undone; the original error wins
                    logger.exception("could not undo %s", step.name)
            raise

    def run(
        self, step: Step, settings: Settings, promotion: Promotion, done: Mapping[str, Any]
    ) -> Any:
        token = step.apply(settings, promotion, done)
        self._done.append((step, settings, promotion, token))
        return token


def promote(
    settings: Settings, promotion: Promotion, runner: StepRunner | None = None
) -> history.AliasMove:
    """Install the references, record the move and move ``production``: all or nothing.

    Raises:
        PromotionError: the target has no references, or production moved meanwhile;
            nothing changed.
    """
    if promotion.to_version == promotion.from_version:
        raise PromotionError(f"v{promotion.to_version} is already in production")
    if registry.get_version(settings, promotion.to_version) is None:
        raise PromotionError(f"no model version {promotion.to_version}")
    runner = runner or PlainSteps()
    done: dict[str, Any] = {}
    with runner.transaction():
        for step in STEPS:
            done[step.name] = runner.run(step, settings, promotion, done)
    if promotion.references is not None:
        promotion.references.unlink(missing_ok=True)
    _attach_references(settings, promotion.to_version)
    return history.AliasMove(
        entry_id=done["record_alias_move"],
        action=promotion.action,
        from_version=promotion.from_version,
        to_version=promotion.to_version,
        reason=promotion.reason,
        actor=promotion.actor,
        flow_run_id=promotion.flow_run_id,
        at=datetime.now(UTC),
        state="applied",
    )


def _attach_references(settings: Settings, version: int) -> None:
    """A copy of the references on the version's MLflow run (best effort: the file rules)."""
    found = registry.get_version(settings, version)
    path = references_path(settings, version)
    if found is None or not path.is_file():
        return
    try:
        registry.connect(settings).log_artifact(found.run_id, str(path), artifact_path="monitoring")
    except Exception as error:
        logger.warning("could not attach the references of v%d to its run: %s", version, error)
