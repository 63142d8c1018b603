"""MLOps: extract_features >> optimization >> train_model >> evaluate_model >> decide,
where ``decide`` runs exactly one branch:
improved >> [set_monitoring_references, deploy_model, notify_teams];
regressed >> [notify_teams, file_report].
"""

from __future__ import annotations

import base64
import time
from pathlib import Path
from typing import Literal

from prefect import flow, get_client, get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.concurrency.sync import concurrency
from prefect.context import get_run_context
from prefect.events import emit_event

from flows.runner import build_task_runner
from tagifai import notify, tune, workflow
from tagifai.config import get_settings
from tagifai.evaluate import (
    ImprovementRule,
    plot_confusion,
    regression_markdown,
    report_markdown,
)
from tagifai.train import ModelParams
from tagifai.workflow import Evaluation, TrainedModel

DEPLOY_LOCK = "tagifai-deploy"


@task(retries=2, retry_delay_seconds=5)
def extract_features(snapshot: str | None) -> Path:
    """Point-in-time features of the snapshot's labelled projects, from Feast."""
    return workflow.build_training_frame(get_settings(), snapshot)


@task
def tune_batch(
    study_name: str,
    data_path: Path,
    n_trials: int,
    space: tune.SearchSpace,
    batch: int,
    run_id: str,
) -> tune.BatchResult:
    """One worker's trials, taken from the run's pool of ``n_trials`` until it is used up;
    progress in the UI."""
    settings = get_settings()
    split = workflow.load_split(data_path, settings.seed)
    progress = create_progress_artifact(
        0.0, description=f"Optuna batch {batch}: trials from a pool of {n_trials}"
    )

    last_update = time.monotonic()

    def on_trial(done: int, value: float | None) -> None:
        # Each update is an API call: at most one a second, however cheap the trials.
        nonlocal last_update
        if time.monotonic() - last_update >= 1.0:
            update_progress_artifact(progress, min(99.0, 100.0 * done / n_trials))
            last_update = time.monotonic()

    result = tune.run_trials(
        settings,
        study_name,
        tune.TuneData.from_frames(split.train, split.val, settings.max_tune_rows),
        n_trials,
        space,
        # One sampler seed per batch: with the same seed, parallel batches propose identical
        # parameters until the shared study has enough trials to steer them apart.
        seed=settings.seed + batch,
        on_trial=on_trial,
        run_id=run_id,
    )
    update_progress_artifact(progress, 100.0)  # a batch ends when the run's pool is used up
    return result


@task
def summarize_study(study_name: str) -> tune.TuneSummary:
    """Best trial and parameter importances, as artifacts."""
    summary = tune.summarize_study(get_settings(), study_name)
    create_markdown_artifact(
        key="optuna-best-trial",
        markdown=f"## Best trial\n\nValidation weighted F1 **{summary.best_value:.4f}** "
        f"({summary.n_trials} trials, {summary.n_pruned} pruned, study `{study_name}`)\n\n"
        + "\n".join(f"- `{k}` = {v}" for k, v in summary.best_params.to_dict().items()),
    )
    if summary.importances:
        create_table_artifact(
            key="optuna-param-importance",
            table=[
                {"parameter": k, "importance": round(v, 4)} for k, v in summary.importances.items()
            ],
            description="fANOVA importance of each hyperparameter",
        )
    return summary


@task
def train_model(data_path: Path, params: ModelParams, snapshot: str) -> TrainedModel:
    """Fit the best configuration on train+val; log to MLflow; register a new version."""
    settings = get_settings()
    context = get_run_context()
    flow_run_id = str(context.task_run.flow_run_id) if context.task_run else ""
    trained = workflow.train_candidate(
        settings,
        workflow.load_split(data_path, settings.seed),
        params,
        {"snapshot_id": snapshot, "prefect_flow_run_id": flow_run_id},
    )
    if trained.run_url:
        create_link_artifact(
            key="mlflow-run",
            link=trained.run_url,
            link_text=f"MLflow run of model v{trained.version}",
        )
    return trained


@task
def evaluate_model(data_path: Path, version: int, rule: ImprovementRule) -> Evaluation:
    """Candidate and production on the same test split; the decision and its reason."""
    settings = get_settings()
    evaluation = workflow.evaluate_candidate(
        settings, version, workflow.load_split(data_path, settings.seed), rule
    )
    markdown = report_markdown(evaluation.candidate, f"Candidate v{version}")
    if evaluation.production is not None:
        markdown += "\n\n" + report_markdown(
            evaluation.production, f"Production v{evaluation.production_version}"
        )
    verdict = "improved" if evaluation.decision.improved else "regressed"
    markdown += f"\n\n## Decision: {verdict}\n\n{evaluation.decision.reason}"
    create_markdown_artifact(
        key="evaluation-report", markdown=markdown, description=f"Model v{version}: {verdict}"
    )
    png = plot_confusion(evaluation.candidate, settings.reports_dir / f"confusion-v{version}.png")
    create_image_artifact(
        image_url="data:image/png;base64," + base64.b64encode(png.read_bytes()).decode(),
        key="confusion-matrix",
        description=f"Confusion matrix of candidate v{version}",
    )
    return evaluation


@task
def set_monitoring_references(version: int, data_path: Path) -> Path:
    """Reference distributions (labels, text length, confidence) for drift checks."""
    settings = get_settings()
    return workflow.set_monitoring_references(
        settings, version, workflow.load_split(data_path, settings.seed).train_val
    )


@task
def deploy_model(
    evaluation: Evaluation, data_path: Path, rule: ImprovementRule
) -> workflow.Deployment:
    """Move ``production`` under a global lock, re-checking if production moved meanwhile."""
    settings = get_settings()
    split = workflow.load_split(data_path, settings.seed)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(DEPLOY_LOCK, limit=1)
    with concurrency(DEPLOY_LOCK, occupy=1, timeout_seconds=600, strict=True):
        return workflow.deploy_if_still_better(settings, evaluation, split, rule)


@task
def notify_teams(
    outcome: Literal["improved", "regressed"], version: int, message: str
) -> list[notify.Delivery]:
    """Slack-compatible messages to TAGIFAI_NOTIFY_URLS, and a Prefect event; never fails."""
    settings = get_settings()
    emit_event(
        event=f"tagifai.model.{outcome}",
        resource={
            "prefect.resource.id": f"tagifai.model.v{version}",
            "prefect.resource.name": f"tagifai v{version}",
        },
        payload={"version": version, "message": message},
    )
    deliveries = notify.post_message(
        settings.notify_urls, f"tagifai v{version} {outcome}: {message}"
    )
    failed = [d for d in deliveries if not d.ok]
    if failed:
        get_run_logger().warning("%d of %d notifications failed", len(failed), len(deliveries))
    return deliveries


@task
def file_report(evaluation: Evaluation) -> Path:
    """The regression report: markdown under stores/reports and as an artifact."""
    settings = get_settings()
    markdown = regression_markdown(
        evaluation.candidate,
        evaluation.production,
        evaluation.decision,
        evaluation.candidate_version,
        evaluation.production_version,
    )
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    path = settings.reports_dir / f"regression-v{evaluation.candidate_version}.md"
    path.write_text(markdown)
    create_markdown_artifact(
        key="regression-report",
        markdown=markdown,
        description=f"Why v{evaluation.candidate_version} was not deployed",
    )
    return path


@flow(name="decide")
def decide(evaluation: Evaluation, data_path: Path, rule: ImprovementRule) -> dict[str, object]:
    """Run exactly one branch: improved (references, deploy, notify) or regressed (notify,
    report)."""
    settings = get_settings()
    version = evaluation.candidate_version
    if evaluation.decision.improved:
        references = set_monitoring_references.submit(version, data_path)
        deployment = deploy_model.submit(evaluation, data_path, rule).result()
        references.result()
        outcome = "improved" if deployment.deployed else "regressed"
        notify_teams(outcome, version, deployment.reason)
        if not deployment.deployed:
            file_report(evaluation)
        workflow.record_decision(settings, evaluation, deployed=deployment.deployed)
        return {"decision": outcome, "deployed": deployment.deployed, "reason": deployment.reason}
    notify_future = notify_teams.submit("regressed", version, evaluation.decision.reason)
    report = file_report.submit(evaluation)
    notify_future.result()
    workflow.record_decision(settings, evaluation, deployed=False)
    return {
        "decision": "regressed",
        "deployed": False,
        "reason": evaluation.decision.reason,
        "report": str(report.result()),
    }


@flow(name="mlops", task_runner=build_task_runner())
def mlops(
    snapshot: str | None = None,
    n_trials: int = 20,
    search_space: Literal["auto", "default", "weak", "scale"] = "auto",
    f1_margin: float = 0.02,
    class_tolerance: float = 0.10,
) -> dict[str, object]:
    """Train, evaluate and (if it improved) deploy a model from the snapshot's features."""
    settings = get_settings()
    snapshot = snapshot or _latest_snapshot(settings)
    rule = ImprovementRule(f1_margin=f1_margin, class_tolerance=class_tolerance)
    # Every task is submitted, so with TAGIFAI_DASK_ADDRESS all of them run on the cluster.
    data_path = extract_features.submit(snapshot).result()
    space = tune.resolve_space(search_space, _rows(data_path), settings)
    study_name = f"{snapshot}-{space}"
    params = tune.default_params(space)
    if n_trials > 0:
        # One coarse task per worker process (a Dask task costs ~0.2 s of orchestration); the
        # batches share the run's pool of trials, so none idles while another finishes.
        run_id = str(get_run_context().flow_run.id)
        futures = [
            tune_batch.submit(study_name, data_path, n_trials, space, batch, run_id)
            for batch in range(min(settings.tune_batches, n_trials))
        ]
        for future in futures:
            future.result()
        params = summarize_study.submit(study_name).result().best_params
    trained = train_model.submit(data_path, params, snapshot).result()
    evaluation = evaluate_model.submit(data_path, trained.version, rule).result()
    outcome = decide(evaluation, data_path, rule)
    return {
        "snapshot": snapshot,
        "version": trained.version,
        "cv_f1": round(trained.cv.mean, 4),
        "test_f1": round(evaluation.candidate.f1, 4),
        **outcome,
    }


def _latest_snapshot(settings: object) -> str:
    from tagifai.extract import load_snapshot

    return load_snapshot(settings).id  # type: ignore[arg-type]


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


if __name__ == "__main__":
    mlops()
