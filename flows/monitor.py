"""Monitor: [check_traffic, check_new_labels] >> decide_action >> file_monitor_report >> act,
where ``act`` runs exactly one of continue | inspect | retrain | rollback.

Production's logged predictions of the last ``window_hours`` are compared with its references
(predicted tags, confidence, text length, unseen words) and, when the latest snapshot holds
projects production was not trained on, its weighted F1 on them with the previous version's.
The policy (``tagifai.policy.decide_action``) turns that into an action:

* ``inspect``: a message with the report to ``TAGIFAI_NOTIFY_URLS`` and ``tagifai.drift.inspect``;
* ``retrain``: ``tagifai.drift.detected`` (once per production version and snapshot), which
  triggers the ``mlops`` deployment on the latest snapshot with ``force: true``;
* ``rollback``: the ``rollback`` flow as a subflow (refused if production moved meanwhile).

Each task is a thin wrapper over one :mod:`tagifai.steps` function plus the artifacts it shows:
``drift-table``, ``drift-plot`` and ``monitor-report`` on every run page.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

from prefect import State, flow, get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_table_artifact,
)
from prefect.events import emit_event
from prefect.states import Completed

from flows.promotion import run_actor
from flows.rollback import rollback
from tagifai import registry, steps
from tagifai.config import Settings, get_settings
from tagifai.drift import TrafficDrift
from tagifai.policy import DriftPolicy, LabelledCheck, MonitorDecision
from tagifai.steps import MonitorReport


@task
def check_traffic(
    settings: Settings, version: int, since: datetime, until: datetime
) -> TrafficDrift | None:
    """Drift of production's logged predictions in the window, read partition by partition."""
    return steps.check_traffic(settings, version, since, until)


@task
def check_new_labels(settings: Settings, version: int) -> LabelledCheck | None:
    """Production and the version it replaced on newly labelled projects."""
    return steps.check_new_labels(settings, version)


@task
def decide_action(
    settings: Settings,
    version: int,
    traffic: TrafficDrift | None,
    labelled: LabelledCheck | None,
    policy: DriftPolicy,
) -> MonitorDecision:
    """The policy's action and its reasons."""
    return steps.decide_monitor_action(settings, version, traffic, labelled, policy)


@task
def file_monitor_report(
    settings: Settings,
    version: int,
    traffic: TrafficDrift | None,
    labelled: LabelledCheck | None,
    decision: MonitorDecision,
    window: tuple[datetime, datetime],
) -> MonitorReport:
    """The drift table, the plot and the report, as files and as artifacts."""
    report = steps.file_monitor_report(settings, version, traffic, labelled, decision, window)
    if traffic is not None and traffic.predictions:
        create_table_artifact(
            key="drift-table",
            table=traffic.rows(),
            description=f"v{version}: {traffic.predictions} predictions vs references (PSI)",
        )
    if report.plot is not None:
        png = base64.b64encode(report.plot.read_bytes()).decode()
        create_image_artifact(
            image_url=f"data:image/png;base64,{png}",
            key="drift-plot",
            description=f"v{version}: reference vs current distributions",
        )
    create_markdown_artifact(
        key="monitor-report",
        markdown=report.markdown.read_text(),
        description=f"v{version}: {decision.action}",
    )
    return report


@task
def notify_inspect(
    settings: Settings, version: int, decision: MonitorDecision, report: MonitorReport
) -> None:
    """``tagifai.drift.inspect`` for automations and a message pointing at the report."""
    emit_event(
        event="tagifai.drift.inspect",
        resource={"prefect.resource.id": f"tagifai.model.v{version}"},
        payload={"reason": decision.reason, "report": str(report.markdown)},
    )
    message = f"{decision.reason} (report: {report.markdown})"
    steps.notify_teams(settings, "needs inspection", version, message)


@task
def request_retrain(settings: Settings, version: int, decision: MonitorDecision) -> str | None:
    """Emit ``tagifai.drift.detected`` (mlops' trigger) and record it, so later runs on the
    same drift do not ask again; returns the event's id."""
    event = steps.retrain_request(settings, version, decision)
    emitted = emit_event(**event)
    event_id = str(emitted.id) if emitted else None
    steps.record_retrain_request(settings, event, event_id)
    steps.notify_teams(settings, "retrain requested", version, decision.reason)
    return event_id


@flow(name="monitor", log_prints=False)
def monitor(
    window_hours: int = 24,
    min_predictions: int = 200,
    inspect_psi: float = 0.10,
    retrain_psi: float = 0.25,
    min_labelled: int = 50,
    performance_drop: float = 0.10,
    rollback_margin: float = 0.05,
    auto_rollback: bool = True,
) -> object:
    """Compare production's recent predictions and new labels with its references; decide
    continue, inspect, retrain or rollback (thresholds: see ``tagifai.policy.DriftPolicy``)."""
    settings = get_settings()
    if window_hours < 1:
        raise ValueError("window_hours must be at least 1")
    policy = DriftPolicy(
        min_predictions=min_predictions,
        inspect_psi=inspect_psi,
        retrain_psi=retrain_psi,
        min_labelled=min_labelled,
        performance_drop=performance_drop,
        rollback_margin=rollback_margin,
    )
    version = registry.production_version(settings)
    if version is None:
        return Completed(message="nothing to monitor: no production model yet", data=None)
    until = datetime.now(UTC)
    window = (until - timedelta(hours=window_hours), until)
    traffic = check_traffic.submit(settings, version, *window)
    labelled = check_new_labels.submit(settings, version)
    decision = decide_action(settings, version, traffic.result(), labelled.result(), policy)
    report = file_monitor_report(
        settings, version, traffic.result(), labelled.result(), decision, window
    )
    summary: dict[str, object] = {
        "model_version": version,
        "action": decision.action,
        "reason": decision.reason,
        "predictions": traffic.result().predictions if traffic.result() else 0,
        "new_labels": labelled.result().rows if labelled.result() else 0,
        "report": str(report.markdown),
    }
    get_run_logger().info("v%d: %s (%s)", version, decision.action, decision.reason)
    if decision.action == "inspect" or (decision.action == "rollback" and not auto_rollback):
        notify_inspect(settings, version, decision, report)
    elif decision.action == "retrain":
        summary["event_id"] = request_retrain(settings, version, decision)
    elif decision.action == "rollback":
        move = rollback(
            reason=f"monitor: {decision.reason}",
            expected_version=version,
            actor=run_actor(settings.actor)[0],
            return_state=True,
        )
        return _after_rollback(summary, move)
    return summary


def _after_rollback(summary: dict[str, object], move: State) -> object:
    """The monitor fails with the rollback's reason if the rollback failed."""
    if not move.is_completed():
        return move
    return summary | {"rolled_back_to": move.result()["to_version"]}


if __name__ == "__main__":
    monitor()
