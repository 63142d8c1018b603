"""MLOps: converge >> extract_features (per partition) >> optimization >> train_model
>> evaluate_model >> model_card >> decide,
where ``decide`` runs exactly one branch:
improved >> [set_monitoring_references >> deploy_model, notify_teams];
regressed >> [notify_teams, file_report].

``deploy_model`` promotes as a transaction (references, alias-history entry, alias move: all
or nothing, see ``flows/promotion.py``); ``converge`` first settles what a crashed run left.

Each task is a thin wrapper over one :mod:`tagifai.steps` function plus the artifacts it
shows. Settings are read once, when the flow run starts, and passed to every task.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Literal

from prefect import State, flow, get_client, get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import get_run_context
from prefect.events import emit_event
from prefect.states import Completed

from flows.promotion import DEPLOY_LOCK, PrefectSteps, deploy_lock, run_actor
from flows.runner import build_task_runner
from tagifai import reporting, steps
from tagifai.config import Settings, get_settings
from tagifai.evaluate import ImprovementRule
from tagifai.extract import load_snapshot
from tagifai.notify import Delivery
from tagifai.registry import ModelVersion
from tagifai.steps import Deployment, Evaluation, TrainedModel
from tagifai.train import ModelParams
from tagifai.tune import BatchResult, SearchSpace, TuneSummary, default_params, resolve_space

__all__ = ["DEPLOY_LOCK", "decide", "mlops"]


def run_is_over(version: ModelVersion) -> bool:
    """Whether the flow run that registered ``version`` has ended (Crashed, Failed, ...)."""
    from prefect.exceptions import ObjectNotFound

    run_id = version.tags.get("prefect_flow_run_id")
    if not run_id:
        return False  # registered outside a flow run (tagifai train): nothing to ask
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound:
            return True
    return run.state is not None and run.state.is_final()


@task
def converge(settings: Settings) -> dict[str, list[int]]:
    """Settle what a crashed run left: alias moves recorded but not finished, and versions
    registered by a run that ended before deciding (tagged ``decision=abandoned``)."""
    settled = steps.settle_history(settings, deploy_lock())
    abandoned = steps.abandon_undecided(settings, run_is_over)
    if settled or abandoned:
        get_run_logger().warning("settled alias moves to %s; abandoned %s", settled, abandoned)
    return {"settled_moves": settled, "abandoned_versions": abandoned}


@task(retries=2, retry_delay_seconds=5)
def extract_features(settings: Settings, snapshot: str, partition: int) -> Path:
    """Point-in-time features of one partition's labelled projects, from Feast."""
    return steps.extract_partition_features(settings, snapshot, partition)


@task
def tune_batch(
    settings: Settings,
    study_name: str,
    data_path: Path,
    n_trials: int,
    space: SearchSpace,
    batch: int,
    run_id: str,
) -> BatchResult:
    """One worker's trials, taken from the run's pool until it is used up; a progress bar."""
    progress = create_progress_artifact(0.0, description=f"Optuna batch {batch}: {n_trials} trials")
    last_update = time.monotonic()

    def on_trial(done: int, value: float | None) -> None:
        nonlocal last_update  # each update is an API call: at most one a second
        if time.monotonic() - last_update >= 1.0:
            update_progress_artifact(progress, min(99.0, 100.0 * done / n_trials))
            last_update = time.monotonic()

    result = steps.tune_batch(
        settings, study_name, data_path, n_trials, space, batch, run_id, on_trial
    )
    update_progress_artifact(progress, 100.0)  # a batch ends when the run's pool is used up
    return result


@task
def summarize_study(settings: Settings, study_name: str) -> TuneSummary:
    """Best trial and parameter importances, as artifacts."""
    summary = steps.summarize_study(settings, study_name)
    create_markdown_artifact(
        key="optuna-best-trial", markdown=reporting.best_trial_markdown(summary)
    )
    if summary.importances:
        create_table_artifact(
            key="optuna-param-importance",
            table=reporting.importance_rows(summary.importances),
            description="fANOVA importance of each hyperparameter",
        )
    return summary


@task(retries=2, retry_delay_seconds=5)
def hash_partition(
    settings: Settings, data_path: Path, params: ModelParams, partition: int, key: str
) -> Path:
    """One partition's train+val texts hashed for the incremental final fit."""
    return steps.hash_partition(settings, data_path, params, partition, key)


@task
def train_model(
    settings: Settings,
    data_path: Path,
    params: ModelParams,
    snapshot: str,
    hashed: list[Path] | None = None,
) -> TrainedModel:
    """Fit the best configuration on train+val; log to MLflow; register a new version."""
    context = get_run_context()
    flow_run_id = str(context.task_run.flow_run_id) if context.task_run else ""
    tags = {"snapshot_id": snapshot, "prefect_flow_run_id": flow_run_id}
    trained = steps.train_model(settings, data_path, params, tags, hashed or ())
    if trained.run_url:
        link_text = f"MLflow run of model v{trained.version}"
        create_link_artifact(key="mlflow-run", link=trained.run_url, link_text=link_text)
    return trained


@task
def evaluate_model(
    settings: Settings, data_path: Path, version: int, rule: ImprovementRule
) -> Evaluation:
    """Candidate and production on the same test split; the decision and its reason."""
    evaluation = steps.evaluate_model(settings, data_path, version, rule)
    verdict = "improved" if evaluation.decision.improved else "regressed"
    create_markdown_artifact(
        key="evaluation-report",
        markdown=reporting.evaluation_markdown(
            evaluation.candidate,
            version,
            evaluation.production,
            evaluation.production_version,
            evaluation.decision,
        ),
        description=f"Model v{version}: {verdict}",
    )
    png = evaluation.confusion_png.read_bytes()
    create_image_artifact(
        image_url="data:image/png;base64," + base64.b64encode(png).decode(),
        key="confusion-matrix",
        description=f"Confusion matrix of candidate v{version}",
    )
    return evaluation


@task
def model_card(
    settings: Settings, trained: TrainedModel, evaluation: Evaluation, snapshot: str
) -> Path:
    """The version's model card: data, embedding model, CV, test, checks, training time."""
    path = steps.write_model_card(settings, trained, evaluation, snapshot)
    create_markdown_artifact(
        key="model-card",
        markdown=path.read_text(),
        description=f"Model card of tagifai v{trained.version}",
    )
    return path


@task
def set_monitoring_references(settings: Settings, version: int, data_path: Path) -> Path:
    """Reference distributions (tags, text length, unseen words, confidence), out of fold,
    staged for the promotion to install."""
    return steps.set_monitoring_references(settings, version, data_path)


@task
def deploy_model(
    settings: Settings,
    evaluation: Evaluation,
    data_path: Path,
    rule: ImprovementRule,
    references: Path | None = None,
) -> Deployment:
    """Promote under a global lock (re-checking if production moved meanwhile) as a
    transaction: references, alias-history entry and alias move, all or nothing."""
    actor, run_id = run_actor(settings.actor)
    lock = deploy_lock()
    return steps.deploy_model(
        settings, evaluation, data_path, rule, lock, references, PrefectSteps(), actor, run_id
    )


@task
def notify_teams(
    settings: Settings, outcome: Literal["improved", "regressed"], version: int, message: str
) -> list[Delivery]:
    """A Prefect event for automations and Slack-compatible messages; never fails."""
    resource = {
        "prefect.resource.id": f"tagifai.model.v{version}",
        "prefect.resource.name": f"tagifai v{version}",
    }
    payload = {"version": version, "message": message}
    emit_event(event=f"tagifai.model.{outcome}", resource=resource, payload=payload)
    deliveries = steps.notify_teams(settings, outcome, version, message)
    failed = [d for d in deliveries if not d.ok]
    if failed:
        get_run_logger().warning("%d of %d notifications failed", len(failed), len(deliveries))
    return deliveries


@task
def file_report(settings: Settings, evaluation: Evaluation, reason: str) -> Path:
    """The regression report: markdown under stores/reports and as an artifact."""
    path = steps.file_report(settings, evaluation, reason)
    version = evaluation.candidate_version
    create_markdown_artifact(
        key="regression-report",
        markdown=path.read_text(),
        description=f"Why v{version} was not deployed",
    )
    return path


@flow(name="decide")
def decide(
    evaluation: Evaluation, data_path: Path, rule: ImprovementRule, training_key: str
) -> dict[str, object]:
    """Run exactly one branch: improved (references, deploy, notify) or regressed (notify,
    report). A subflow is a flow-run edge: it reads its settings itself, so notification
    URLs (secrets) never become parameters stored by the Prefect API."""
    settings = get_settings()
    version = evaluation.candidate_version
    if evaluation.decision.improved:
        references = set_monitoring_references.submit(settings, version, data_path)
        deployment = deploy_model.submit(settings, evaluation, data_path, rule, references)
        deployed, reason = deployment.result().deployed, deployment.result().reason
        notify_teams(settings, "improved" if deployed else "regressed", version, reason)
        report = None if deployed else file_report(settings, evaluation, reason)
    else:
        deployed, reason = False, evaluation.decision.reason
        notified = notify_teams.submit(settings, "regressed", version, reason)
        report = file_report.submit(settings, evaluation, reason).result()
        notified.result()
    steps.record_decision(settings, evaluation, deployed, training_key)
    outcome = "improved" if deployed else "regressed"
    result: dict[str, object] = {"decision": outcome, "deployed": deployed, "reason": reason}
    return result | ({"report": str(report)} if report else {})


@flow(name="mlops", task_runner=build_task_runner())
def mlops(
    snapshot: str | None = None,
    n_trials: int = 20,
    search_space: Literal["auto", "default", "weak", "scale"] = "auto",
    f1_margin: float = 0.02,
    class_tolerance: float = 0.10,
    force: bool = False,
) -> object:
    """Train, evaluate and (if it improved) deploy a model from the snapshot's features.

    A snapshot already trained with the same code and parameters is not trained again
    (``force=true`` does): a cron or a repeated event on unchanged data costs nothing.
    """
    settings = get_settings()
    converge.submit(settings).result()
    published = load_snapshot(settings, snapshot)  # the latest by default; a clear error if none
    snapshot = published.id
    parameters = {"n_trials": n_trials, "search_space": search_space, "f1_margin": f1_margin}
    key = steps.training_key(snapshot, parameters | {"class_tolerance": class_tolerance})
    if not force and (done := steps.already_trained(settings, key)):
        return nothing_to_do(snapshot, done.version)
    rule = ImprovementRule(f1_margin=f1_margin, class_tolerance=class_tolerance)
    # Every task is submitted, so with TAGIFAI_DASK_ADDRESS all of them run on the cluster.
    extracted = [
        extract_features.submit(settings, snapshot, p) for p in range(published.partitions)
    ]
    for future in extracted:
        future.result()
    data_path = steps.training_frame_path(settings, snapshot)
    space = resolve_space(search_space, steps.training_rows(data_path), settings)
    study_name = f"{snapshot}-{space}"
    params = default_params(space)
    run_id = str(get_run_context().flow_run.id)
    if n_trials > 0:
        # One coarse task per worker process (a Dask task costs ~0.2 s of orchestration); the
        # batches share the run's pool of trials, so none idles while another finishes.
        batches = range(min(settings.tune_batches, n_trials))
        futures = [
            tune_batch.submit(settings, study_name, data_path, n_trials, space, batch, run_id)
            for batch in batches
        ]
        for future in futures:
            future.result()
        params = summarize_study.submit(settings, study_name).result().best_params
    hashed = []
    if steps.fits_incrementally(settings, data_path, params):
        # Hashing is most of an incremental fit and needs no shared state: every partition
        # is hashed on a worker of its own, and train_model makes one pass of SGD over them.
        hashed = [
            hash_partition.submit(settings, data_path, params, p, run_id)
            for p in range(published.partitions)
        ]
    trained = train_model.submit(settings, data_path, params, snapshot, hashed).result()
    evaluation = evaluate_model.submit(settings, data_path, trained.version, rule).result()
    model_card.submit(settings, trained, evaluation, snapshot).result()
    outcome = decide(evaluation, data_path, rule, key)
    return {
        "snapshot": snapshot,
        "version": trained.version,
        "cv_f1": round(trained.cv.mean, 4),
        "test_f1": round(evaluation.candidate.f1, 4),
        **outcome,
    }


def nothing_to_do(snapshot: str, version: int) -> State:
    """Complete without work: this snapshot was trained with the same code and parameters."""
    message = (
        f"nothing to do: snapshot {snapshot} was trained as v{version} with the same code "
        "and parameters (force=true trains again)"
    )
    return Completed(
        message=message,
        data={"snapshot": snapshot, "version": version, "decision": "skipped", "reason": message},
    )


if __name__ == "__main__":
    mlops()
