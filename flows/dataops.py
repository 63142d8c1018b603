"""DataOps: extract_data >> [validate_projects, validate_tags] >> publish_snapshot
>> compute_features >> [embed_texts ...] >> publish_features >> cache_to_feature_store
>> (event) tagifai.snapshot.published.

Each task is a thin wrapper over one :mod:`tagifai.steps` function; retries live in the
decorators. Settings are read once, when the flow run starts, and passed to every task.
"""

from __future__ import annotations

from pathlib import Path

from prefect import State, flow, get_client, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import Completed

from flows.runner import build_task_runner
from tagifai import steps
from tagifai.config import SNAPSHOT_LABEL, Settings, get_settings
from tagifai.errors import DataSourceError
from tagifai.extract import Snapshot, discard_staged, is_announced, mark_announced
from tagifai.features import FeatureSet, StagedFeatures
from tagifai.reporting import dataops_markdown, failed_expectation_rows
from tagifai.store import MaterializeReport
from tagifai.validation import ValidationReport, data_docs_url, raise_for_failures


def retry_unless_bad_input(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's hook
    """Retry I/O hiccups, not sources that are missing, empty or malformed."""
    try:
        state.result()
    except DataSourceError:
        return False
    except Exception:
        return True
    return False


@task(retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_bad_input)
def extract_data(settings: Settings, projects_uri: str, tags_uri: str) -> Snapshot:
    """Read both source tables and stage them, named by their content."""
    return steps.extract_data(settings, projects_uri, tags_uri)


@task
def validate_projects(settings: Settings, staged: Snapshot) -> ValidationReport:
    """The ``projects`` suite on the staged table."""
    return steps.validate_projects(settings, staged)


@task
def validate_tags(settings: Settings, staged: Snapshot) -> list[ValidationReport]:
    """The ``tags`` suite, then ``labelled`` (every tag's project exists) on the join."""
    return steps.validate_tags(settings, staged)


@task
def publish_snapshot(settings: Settings, staged: Snapshot, source: dict[str, str]) -> Snapshot:
    """Make the validated tables the immutable snapshot ``<id>``, marked latest."""
    return steps.publish_snapshot(settings, staged, source)


@task
def compute_features(settings: Settings, snapshot: Snapshot) -> StagedFeatures:
    """Stage the snapshot's features; partitions of the texts not embedded before."""
    return steps.compute_features(settings, snapshot)


@task
def embed_texts(settings: Settings, todo: Path) -> Path:
    """Sentence vectors of one partition of texts (all-MiniLM-L6-v2, ONNX)."""
    return steps.embed_texts(settings, todo)


@task
def publish_features(settings: Settings, staged: StagedFeatures, vectors: list[Path]) -> FeatureSet:
    """Fill in the vectors; make the features the feature store's offline source."""
    return steps.publish_features(settings, staged, vectors)


@task(retries=2, retry_delay_seconds=5)
def cache_to_feature_store(settings: Settings, feature_set: FeatureSet) -> MaterializeReport:
    """Apply the Feast definitions and materialise the features into the online store."""
    return steps.cache_to_feature_store(settings, feature_set)


@flow(name="dataops", task_runner=build_task_runner(), log_prints=False)
def dataops(projects_uri: str | None = None, tags_uri: str | None = None) -> object:
    """Extract, validate (projects and tags in parallel), publish, compute features, fill the
    feature store, and announce the new snapshot (``tagifai.snapshot.published``).

    Data seen before completes at once ("no new data") and announces nothing. Bad data fails
    the run after validation with every failed expectation named, and before anything is
    published: the latest snapshot, the features and the online store stay as they were.
    """
    settings = get_settings()
    source = {
        "projects": projects_uri or str(settings.projects_csv),  # the shipped CSVs by default
        "tags": tags_uri or str(settings.tags_csv),
    }
    # Every task is submitted, so with TAGIFAI_DASK_ADDRESS all of them run on the cluster.
    staged = extract_data.submit(settings, source["projects"], source["tags"]).result()
    summary: dict[str, object] = {"rows_extracted": staged.projects_rows + staged.tags_rows}
    if is_announced(settings, staged.id):
        return no_new_data(settings, staged.id, summary)
    try:
        projects_report = validate_projects.submit(settings, staged)
        tags_reports = validate_tags.submit(settings, staged)
        reports = [projects_report.result(), *tags_reports.result()]
        rejected = {"snapshot": f"{staged.id} (rejected, nothing published)"}
        publish_validation(settings, reports, rejected | summary)
        raise_for_failures(reports)
        snapshot = publish_snapshot.submit(settings, staged, source).result()
        staged_features = compute_features.submit(settings, snapshot).result()
        # One task per partition of new texts, side by side on the Dask workers.
        embedded = [embed_texts.submit(settings, todo) for todo in staged_features.todo]
        vectors = [future.result() for future in embedded]
        feature_set = publish_features.submit(settings, staged_features, vectors).result()
    finally:
        discard_staged(staged)
    materialized = cache_to_feature_store.submit(settings, feature_set).result()
    summary = {
        "snapshot": snapshot.id,
        "new_data": True,
        **summary,
        "features_written": feature_set.rows,
        "features_changed": feature_set.changed,
        "rows_materialized": materialized.rows,
        "materialize_rows_per_second": round(materialized.rows_per_second, 1),
    }
    create_markdown_artifact(
        key="dataops-summary",
        markdown=dataops_markdown(summary, reports, data_docs_url(settings)),
        description="What this DataOps run did",
    )
    label_run(snapshot.id)
    announce(settings, steps.announcement(snapshot, source, feature_set.rows))
    return summary


def no_new_data(settings: Settings, snapshot_id: str, summary: dict[str, object]) -> State:
    """Complete without work: this content was published and announced before."""
    message = f"no new data: snapshot {snapshot_id} already published"
    summary = {"snapshot": snapshot_id, "new_data": False, **summary, "message": message}
    create_markdown_artifact(
        key="dataops-summary",
        markdown=dataops_markdown(summary, [], None),
        description=message,
    )
    return Completed(message=message, data=summary)


def announce(settings: Settings, event: dict) -> None:
    """Emit ``tagifai.snapshot.published`` (the mlops trigger), then record that it was: a
    re-run after a crash in between announces again, and mlops skips what it trained."""
    emitted = emit_event(**event)
    record = {**event, "id": str(emitted.id) if emitted else None, "run": str(flow_run.id)}
    mark_announced(settings, event["payload"]["snapshot_id"], record)


def publish_validation(
    settings: Settings, reports: list[ValidationReport], rejected: dict[str, object]
) -> None:
    """The Data Docs link; when the data broke a suite, the failures and a summary too."""
    docs = data_docs_url(settings)
    create_link_artifact(
        key="data-docs",
        link=docs,
        link_text="Great Expectations Data Docs",
        description="Validation results of this run",
    )
    failures = failed_expectation_rows(reports)
    if failures:
        create_table_artifact(
            key="failed-expectations", table=failures, description="Expectations the data broke"
        )
        create_markdown_artifact(
            key="dataops-summary",
            markdown=dataops_markdown(rejected, reports, docs),
            description="DataOps run rejected by validation: nothing published",
        )


def label_run(snapshot_id: str) -> None:
    """Label this flow run ``tagifai.snapshot=<id>``: what the mlops trigger passes on."""
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(flow_run.id, {SNAPSHOT_LABEL: snapshot_id})


if __name__ == "__main__":
    dataops()
