"""What the monitor does about what it measured: continue, inspect, retrain or roll back.

:func:`decide_action` is a pure function of the drift table, the check on newly labelled
projects and the thresholds (:class:`DriftPolicy`, the monitor flow's parameters), returning
its reasons, like :func:`tagifai.evaluate.is_improved`. The actions, most severe first:

* ``rollback``: on projects labelled since production was trained, the previous production
  version scores a weighted F1 more than ``rollback_margin`` above production's (both scored
  on the same rows, so the comparison is paired).
* ``retrain``: production scores more than ``performance_drop`` below its own test F1 on those
  projects, or the share of words it has never seen rose by a PSI of at least ``retrain_psi``
  (a *learnable* shift: newer labelled data can teach it those words). Unless a retrain for
  this production version and snapshot was already requested: retraining the same data again
  would give the same model, so a person has to look (``inspect``).
* ``inspect``: any other shift of at least ``inspect_psi`` in the harmful direction (the mix of
  predicted tags, text length, lower confidence, or unseen words below the retrain level): the
  traffic changed, the model may still be right, a person reads the report.
* ``continue``: nothing above; also when there are fewer than ``min_predictions`` logged
  predictions and fewer than ``min_labelled`` new labels (too little to judge).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tagifai.drift import TrafficDrift

Action = Literal["continue", "inspect", "retrain", "rollback"]
ACTIONS: tuple[Action, ...] = ("continue", "inspect", "retrain", "rollback")


@dataclass(frozen=True)
class DriftPolicy:
    """The thresholds (defaults explained in the README and ``docs/monitoring.md``).

    PSI below 0.1 is the usual "no real change", 0.1-0.25 "moderate", above 0.25 "major".
    """

    min_predictions: int = 200
    inspect_psi: float = 0.10
    retrain_psi: float = 0.25
    min_labelled: int = 50
    performance_drop: float = 0.10
    rollback_margin: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.inspect_psi <= self.retrain_psi:
            raise ValueError("need 0 < inspect_psi <= retrain_psi")
        if self.min_predictions < 1 or self.min_labelled < 1:
            raise ValueError("min_predictions and min_labelled must be at least 1")
        if self.performance_drop < 0 or self.rollback_margin < 0:
            raise ValueError("performance_drop and rollback_margin must not be negative")


@dataclass(frozen=True)
class LabelledCheck:
    """Production (and the version it replaced) on projects labelled since it was trained."""

    rows: int
    production_version: int
    production_f1: float
    production_accuracy: float
    reference_f1: float | None  # production's F1 on its own test split, when it was evaluated
    previous_version: int | None = None
    previous_f1: float | None = None


@dataclass(frozen=True)
class MonitorDecision:
    action: Action
    reason: str
    reasons: tuple[str, ...] = field(default_factory=tuple)


def decide_action(
    traffic: TrafficDrift | None,
    labelled: LabelledCheck | None,
    policy: DriftPolicy = DriftPolicy(),
    retrain_requested: bool = False,
) -> MonitorDecision:
    """The action for one monitor run, with every reason that led to it.

    Args:
        traffic: the drift table of production's logged predictions (None: none logged).
        labelled: production on newly labelled projects (None: no new labels).
        retrain_requested: a retrain for this production version and the latest snapshot
            was already requested by an earlier run.
    """
    rollback: list[str] = []
    retrain: list[str] = []
    inspect: list[str] = []
    judged: list[str] = []  # what was enough to judge
    too_little: list[str] = []

    if labelled is not None and labelled.rows >= policy.min_labelled:
        judged.append(
            f"v{labelled.production_version} weighted F1 {labelled.production_f1:.3f} on "
            f"{labelled.rows} new labels"
        )
        if (
            labelled.previous_f1 is not None
            and labelled.previous_f1 > labelled.production_f1 + policy.rollback_margin
        ):
            rollback.append(
                f"previous v{labelled.previous_version} scores {labelled.previous_f1:.3f} vs "
                f"production v{labelled.production_version} {labelled.production_f1:.3f} on "
                f"{labelled.rows} new labels (margin {policy.rollback_margin:.2f})"
            )
        if (
            labelled.reference_f1 is not None
            and labelled.production_f1 < labelled.reference_f1 - policy.performance_drop
        ):
            retrain.append(
                f"weighted F1 on {labelled.rows} new labels {labelled.production_f1:.3f} < "
                f"test F1 {labelled.reference_f1:.3f} - {policy.performance_drop:.2f}"
            )
    elif labelled is not None:
        too_little.append(f"{labelled.rows} new labels (< {policy.min_labelled})")

    if traffic is not None and traffic.predictions >= policy.min_predictions:
        judged.append(f"{traffic.predictions} predictions of v{traffic.model_version}")
        for feature in traffic.features:
            if not feature.harmful or feature.psi < policy.inspect_psi:
                continue
            shift = f"{feature.feature} PSI {feature.psi:.2f}"
            if feature.current_mean is not None and feature.reference_mean is not None:
                shift += f" (mean {feature.reference_mean:.3g} -> {feature.current_mean:.3g})"
            if feature.learnable and feature.psi >= policy.retrain_psi:
                retrain.append(f"{shift} >= {policy.retrain_psi:.2f}")
            else:
                inspect.append(f"{shift} >= {policy.inspect_psi:.2f}")
    elif traffic is not None:
        too_little.append(f"{traffic.predictions} predictions (< {policy.min_predictions})")

    if rollback:
        return MonitorDecision("rollback", rollback[0], tuple(rollback + retrain + inspect))
    if retrain and retrain_requested:
        reason = "a retrain was already requested for this version and snapshot; " + retrain[0]
        return MonitorDecision("inspect", reason, tuple(retrain + inspect))
    if retrain:
        return MonitorDecision("retrain", "; ".join(retrain), tuple(retrain + inspect))
    if inspect:
        return MonitorDecision("inspect", "; ".join(inspect), tuple(inspect))
    if not judged:
        what = "; ".join(too_little) or "no predictions and no new labels"
        return MonitorDecision("continue", f"too little to judge: {what}")
    return MonitorDecision("continue", "no drift above the thresholds: " + "; ".join(judged))
