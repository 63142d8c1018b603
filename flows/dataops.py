"""DataOps: extract_data >> [validate_projects, validate_tags] >> compute_features
>> cache_to_feature_store.

Tasks are thin wrappers over ``tagifai``; they take paths and ids, never live clients.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_client, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows.runner import build_task_runner
from tagifai import extract, features, store, validation
from tagifai.config import get_settings
from tagifai.errors import DataSourceError
from tagifai.extract import Snapshot, read_parquet
from tagifai.validation import ValidationReport

# The mlops deployment's trigger on this flow's Completed event reads the snapshot from this
# label of the run (prefect.yaml): the event itself does not carry the flow's return value.
SNAPSHOT_LABEL = "tagifai.snapshot"


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
def extract_data(projects_uri: str, tags_uri: str) -> Snapshot:
    """Read both source tables and stage them, named by their content."""
    settings = get_settings()
    projects = extract.read_table(projects_uri, "projects")
    tags = extract.read_table(tags_uri, "tags")
    return extract.stage_tables(settings, projects, tags)


@task
def validate_projects(staged: Snapshot) -> ValidationReport:
    """The ``projects`` suite on the staged table."""
    return validation.validate_table(read_parquet(staged.projects_path), "projects", get_settings())


@task
def validate_tags(staged: Snapshot) -> list[ValidationReport]:
    """The ``tags`` suite, then ``labelled`` (every tag's project exists) on the join."""
    return validation.validate_tags_and_join(staged.tags_path, staged.projects_path, get_settings())


@task
def compute_features(staged: Snapshot, source: dict[str, str]) -> features.FeatureSet:
    """Publish the validated snapshot and write its features (the offline source)."""
    settings = get_settings()
    snapshot = extract.publish_snapshot(settings, staged, source)
    return features.write_features(settings, snapshot)


@task(retries=2, retry_delay_seconds=5)
def cache_to_feature_store(feature_set: features.FeatureSet) -> store.MaterializeReport:
    """Apply the Feast definitions and materialise the features into the online store."""
    settings = get_settings()
    store.apply_definitions(settings)
    return store.materialize_features(settings, expected_rows=feature_set.rows)


@flow(name="dataops", task_runner=build_task_runner(), log_prints=False)
def dataops(projects_uri: str | None = None, tags_uri: str | None = None) -> dict[str, object]:
    """Extract, validate (projects and tags in parallel), compute features, fill the store.

    Bad data fails the run after validation with every failed expectation named, and
    before anything is published: the latest snapshot, the features and the online store
    stay exactly as they were.
    """
    settings = get_settings()
    projects_uri = projects_uri or str(settings.projects_csv)  # the shipped CSVs by default
    tags_uri = tags_uri or str(settings.tags_csv)
    # Every task is submitted, so with TAGIFAI_DASK_ADDRESS all of them run on the cluster.
    staged = extract_data.submit(projects_uri, tags_uri).result()
    try:
        projects_future = validate_projects.submit(staged)
        tags_future = validate_tags.submit(staged)
        reports = [projects_future.result(), *tags_future.result()]
        docs = validation.data_docs_index(settings)  # updated by each checkpoint run
        publish_validation(reports, docs)
        if not all(report.success for report in reports):
            rejected = {
                "snapshot": f"{staged.id} (rejected, nothing published)",
                "rows_extracted": staged.projects_rows + staged.tags_rows,
            }
            create_markdown_artifact(
                key="dataops-summary",
                markdown=summary_markdown(rejected, reports, docs),
                description="DataOps run rejected by validation",
            )
        validation.raise_for_failures(reports)
        source = {"projects": projects_uri, "tags": tags_uri}
        feature_set = compute_features.submit(staged, source).result()
    finally:
        extract.discard_staged(staged)
    materialized = cache_to_feature_store.submit(feature_set).result()
    summary = {
        "snapshot": feature_set.snapshot_id,
        "rows_extracted": staged.projects_rows + staged.tags_rows,
        "features_written": feature_set.rows,
        "features_changed": feature_set.changed,
        "rows_materialized": materialized.rows,
        "materialize_rows_per_second": round(materialized.rows_per_second, 1),
    }
    create_markdown_artifact(
        key="dataops-summary",
        markdown=summary_markdown(summary, reports, docs),
        description="What this DataOps run did",
    )
    label_run(feature_set.snapshot_id)
    return summary


def label_run(snapshot_id: str) -> None:
    """Label this flow run ``tagifai.snapshot=<id>``: what the mlops trigger passes on."""
    with get_client(sync_client=True) as client:
        client.update_flow_run_labels(flow_run.id, {SNAPSHOT_LABEL: snapshot_id})


def publish_validation(reports: list[ValidationReport], docs: Path) -> None:
    """Data Docs link, and a table of failed expectations when there are any."""
    create_link_artifact(
        key="data-docs",
        link=validation.data_docs_url(docs),
        link_text="Great Expectations Data Docs",
        description="Validation results of this run",
    )
    failures = [
        {
            "suite": r.suite,
            "expectation": f.expectation,
            "column": f.column or "",
            "unexpected": f.unexpected_count,
            "examples": ", ".join(f.examples),
        }
        for r in reports
        for f in r.failures
    ]
    if failures:
        create_table_artifact(
            key="failed-expectations", table=failures, description="Expectations the data broke"
        )


def summary_markdown(
    summary: dict[str, object], reports: list[ValidationReport], docs: Path
) -> str:
    lines = ["## DataOps run", "", "| | |", "|---|---|"]
    lines += [f"| {key.replace('_', ' ')} | {value} |" for key, value in summary.items()]
    lines += ["", "| suite | rows | expectations passed | failed |", "|---|---:|---:|---:|"]
    lines += [
        f"| {r.suite} | {r.rows} | {r.passed}/{r.evaluated} | {len(r.failures)} |" for r in reports
    ]
    lines += ["", f"[Data Docs]({validation.data_docs_url(docs)})"]
    return "\n".join(lines)


if __name__ == "__main__":
    dataops()
