"""DataOps: extract_data >> [validate_projects, validate_tags] per partition
>> validate_dataset >> publish_snapshot >> compute_features per partition >> [embed_texts ...]
>> publish_features >> plan_materialization >> materialize_window per partition
>> finish_materialization >> (event) tagifai.snapshot.published.

Each task is a thin wrapper over one :mod:`tagifai.steps` function; retries and the online
store's writer limit live in the decorators and :func:`online_store_slots`. Settings are read
once, when the flow run starts, and passed to every task. Partition tasks are submitted
together, so the Dask workers take them side by side.
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import State, flow, get_client, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.concurrency.sync import concurrency
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.states import Completed

from flows.runner import build_task_runner
from tagifai import steps
from tagifai.config import SNAPSHOT_LABEL, Settings, get_settings
from tagifai.errors import DataSourceError
from tagifai.extract import Snapshot, discard_staged, is_announced, mark_announced
from tagifai.features import FeaturePart, FeatureSet
from tagifai.reporting import dataops_markdown, failed_expectation_rows
from tagifai.store import MaterializeReport, MaterializeWindow
from tagifai.validation import (
    PartitionResult,
    ValidationReport,
    data_docs_url,
    raise_for_failures,
)

# The Prefect global concurrency limit on online-store writers (its size: the store's own).
ONLINE_WRITERS = "tagifai-online-writers"


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
    """Stream both source tables into partitions, staged under their content id."""
    return steps.extract_data(settings, projects_uri, tags_uri)


@task
def validate_projects(
    settings: Settings, staged: Snapshot, partition: int
) -> list[PartitionResult]:
    """The ``projects`` suite's row-level expectations on one partition."""
    return steps.validate_projects(settings, staged, partition)


@task
def validate_tags(settings: Settings, staged: Snapshot, partition: int) -> list[PartitionResult]:
    """The ``tags`` and ``labelled`` suites' row-level expectations on one partition."""
    return steps.validate_tags(settings, staged, partition)


@task
def validate_dataset(
    settings: Settings, staged: Snapshot, partials: list[list[PartitionResult]]
) -> list[ValidationReport]:
    """Table-level expectations over all partitions, merged into one report per suite."""
    return steps.validate_dataset(settings, staged, [r for results in partials for r in results])


@task
def publish_snapshot(settings: Settings, staged: Snapshot, source: dict[str, str]) -> Snapshot:
    """Make the validated tables the immutable snapshot ``<id>``, marked latest."""
    return steps.publish_snapshot(settings, staged, source)


@task
def compute_features(settings: Settings, snapshot: Snapshot, partition: int) -> FeaturePart:
    """One partition's features; pieces of its texts not embedded before."""
    return steps.compute_features(settings, snapshot, partition)


@task
def embed_texts(settings: Settings, todo: Path) -> Path:
    """Sentence vectors of one piece of texts (all-MiniLM-L6-v2, ONNX)."""
    return steps.embed_texts(settings, todo)


@task
def publish_features(
    settings: Settings, parts: list[FeaturePart], vectors: list[Path]
) -> FeatureSet:
    """Fill in the vectors; make the partitions the feature store's offline source."""
    return steps.publish_features(settings, parts, vectors)


@task(retries=2, retry_delay_seconds=5)
def plan_materialization(settings: Settings, feature_set: FeatureSet) -> list[MaterializeWindow]:
    """Apply the Feast definitions, empty the online table; one window per partition."""
    return steps.plan_materialization(settings, feature_set)


@task(retries=2, retry_delay_seconds=5)
def materialize_window(settings: Settings, window: MaterializeWindow) -> MaterializeReport:
    """One window into the online store, holding one of the store's writer slots."""
    with concurrency(ONLINE_WRITERS, occupy=1, timeout_seconds=3600, strict=True):
        return steps.materialize_window(settings, window)


@task
def finish_materialization(
    settings: Settings,
    feature_set: FeatureSet,
    windows: list[MaterializeWindow],
    reports: list[MaterializeReport],
    seconds: float,
) -> MaterializeReport:
    """Check that the online store holds every feature row."""
    return steps.finish_materialization(settings, feature_set, windows, reports, seconds)


def online_store_slots(settings: Settings) -> None:
    """Size the writer limit as the online store takes writers (SQLite: one)."""
    from tagifai.store import online_writers

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(ONLINE_WRITERS, online_writers(settings))


@flow(name="dataops", task_runner=build_task_runner(), log_prints=False)
def dataops(projects_uri: str | None = None, tags_uri: str | None = None) -> object:
    """Extract, validate (projects and tags of every partition in parallel), publish, compute
    features, fill the feature store, and announce the new snapshot
    (``tagifai.snapshot.published``).

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
    partitions = range(staged.partitions)
    summary["partitions"] = staged.partitions
    try:
        partials = [
            task.submit(settings, staged, partition)
            for partition in partitions
            for task in (validate_projects, validate_tags)
        ]
        reports = validate_dataset.submit(settings, staged, partials).result()
        rejected = {"snapshot": f"{staged.id} (rejected, nothing published)"}
        publish_validation(settings, reports, rejected | summary)
        raise_for_failures(reports)
        snapshot = publish_snapshot.submit(settings, staged, source).result()
        staged_parts = [compute_features.submit(settings, snapshot, p) for p in partitions]
        parts = [future.result() for future in staged_parts]
        # One task per piece of new texts, side by side on the Dask workers.
        embedded = [embed_texts.submit(settings, todo) for part in parts for todo in part.todo]
        feature_set = publish_features.submit(settings, parts, embedded).result()
    finally:
        discard_staged(staged)
    online_store_slots(settings)
    started = time.perf_counter()
    windows = plan_materialization.submit(settings, feature_set).result()
    written = [materialize_window.submit(settings, window) for window in windows]
    window_reports = [future.result() for future in written]
    seconds = time.perf_counter() - started
    materialized = finish_materialization.submit(
        settings, feature_set, windows, window_reports, seconds
    ).result()
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
