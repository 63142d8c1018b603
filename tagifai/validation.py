"""Validate tables with the committed Great Expectations 1.x suites.

The File Data Context in ``great_expectations/`` holds one expectation suite, validation
definition and checkpoint per table (:data:`SUITES`) as committed JSON; a run only reads it.
Validation results and Data Docs are written under ``settings.gx_state_dir``: the context's
``great_expectations.yml`` points those stores at ``${TAGIFAI_GX_STATE_DIR}``, which every
call here fills in through GX's ``runtime_environment`` (it outranks the environment and
``config_variables.yml``), so ``TAGIFAI_STORES_DIR`` moves them with the rest of the state.

Partitioned data (:func:`validate_partition`, :func:`validate_dataset`): the suites'
row-level expectations run with GX on each partition's pandas batch (one task per partition,
spread over the Dask workers); the expectations that need the whole table
(:data:`TABLE_LEVEL`: row-count bounds, unique ids, unique (title, description)) are computed
over every partition at once with Dask dataframe aggregations of small per-row keys. Both are
merged into one GX validation result per suite, stored and rendered in the Data Docs like a
checkpoint's, and flattened into the same :class:`ValidationReport`. ("Every tag's project
exists" is the ``labelled`` suite's row-level check on each partition's join: snapshots put a
project and its tag in the same partition.)

``great_expectations`` takes seconds to import, so it is imported inside the functions.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tagifai.data import tags_with_projects
from tagifai.errors import DataValidationError
from tagifai.files import file_lock

if TYPE_CHECKING:
    from great_expectations.data_context import FileDataContext

    from tagifai.config import Settings

logger = logging.getLogger(__name__)

SUITES: tuple[str, ...] = ("projects", "tags", "labelled")

_STATE_VARIABLE = "TAGIFAI_GX_STATE_DIR"
_MAX_EXAMPLES = 3
_MAX_EXAMPLE_CHARS = 60
# get_context() makes the new context GX's process-wide "current" one, and loading a
# checkpoint resolves its validation definitions through that current context: build and
# load one at a time so a thread never picks up another thread's context.
_CONTEXT_LOCK = threading.Lock()


@dataclass(frozen=True)
class ExpectationFailure:
    """One failed expectation: what, on which column, how many rows and a few examples."""

    expectation: str
    column: str | None
    unexpected_count: int | None
    examples: tuple[str, ...]

    def describe(self) -> str:
        """One line, e.g. ``expect_column_values_to_be_unique(id): 2 unexpected, e.g. 5, 5``."""
        name = f"{self.expectation}({self.column})" if self.column else self.expectation
        if self.unexpected_count is None:
            return f"{name}: {', '.join(self.examples)}" if self.examples else name
        text = f"{name}: {self.unexpected_count} unexpected"
        return f"{text}, e.g. {', '.join(self.examples)}" if self.examples else text


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of one checkpoint run on one table."""

    suite: str
    success: bool
    evaluated: int
    passed: int
    failures: tuple[ExpectationFailure, ...]
    rows: int

    def describe(self) -> str:
        """One line: the suite and each failed expectation."""
        if self.success:
            return f"{self.suite}: {self.passed}/{self.evaluated} expectations passed"
        details = "; ".join(failure.describe() for failure in self.failures) or "failed"
        return f"{self.suite}: {details}"


def validate_table(df: pd.DataFrame, suite: str, settings: Settings) -> ValidationReport:
    """Run the committed checkpoint for ``suite`` on ``df``.

    Safe to call from several threads and processes at once: each call opens its own
    context, stores its result under a unique run name and builds Data Docs under a lock.

    Raises:
        ValueError: ``suite`` is not one of :data:`SUITES`.
        FileNotFoundError: ``settings.gx_dir`` holds no ``great_expectations.yml``.
    """
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
    from great_expectations.core.run_identifier import RunIdentifier

    started = time.perf_counter()
    with _CONTEXT_LOCK:
        context = _open_context(settings)
        checkpoint = context.checkpoints.get(suite)
    run_id = RunIdentifier(run_name=f"{suite}-{uuid.uuid4().hex[:12]}")
    result = checkpoint.run(batch_parameters={"dataframe": df}, run_id=run_id)
    (definition,) = checkpoint.validation_definitions
    order = [expectation.id for expectation in definition.suite.expectations]
    report = _to_report(suite, result, rows=len(df), order=order)
    logger.info(
        "%s: %d/%d expectations passed on %d rows in %.2f s",
        suite,
        report.passed,
        report.evaluated,
        report.rows,
        time.perf_counter() - started,
    )
    return report


def validate_tags_and_join(
    tags_path: Path, projects_path: Path, settings: Settings
) -> list[ValidationReport]:
    """The ``tags`` suite on a Parquet table, then ``labelled`` on its join to projects."""
    tags = pd.read_parquet(tags_path)
    projects = pd.read_parquet(projects_path)
    return [
        validate_table(tags, "tags", settings),
        validate_table(tags_with_projects(projects, tags), "labelled", settings),
    ]


def data_docs_url(settings: Settings, index: Path | None = None) -> str:
    """Where a browser opens a Data Docs page (default: the home page): under
    ``settings.data_docs_url`` (the local platform serves the site there) or else as a
    ``file://`` URL."""
    base = settings.data_docs_url
    site = data_docs_site(settings)
    index = index or site / "index.html"
    if base and index.resolve().is_relative_to(site.resolve()):
        return f"{base.rstrip('/')}/{index.resolve().relative_to(site.resolve()).as_posix()}"
    return index.resolve().as_uri()


def data_docs_site(settings: Settings) -> Path:
    """The Data Docs site; each checkpoint's UpdateDataDocsAction keeps it current."""
    return settings.gx_state_dir / "data_docs" / "local_site"


def raise_for_failures(reports: Iterable[ValidationReport]) -> None:
    """Raise :class:`DataValidationError` naming every failed expectation of every report."""
    failed = [report for report in reports if not report.success]
    if failed:
        details = " | ".join(report.describe() for report in failed)
        raise DataValidationError(f"Data validation failed: {details}")


def _open_context(settings: Settings) -> FileDataContext:
    """Open the committed File Data Context with its runtime state under ``gx_state_dir``."""
    import great_expectations as gx

    config = settings.gx_dir / "great_expectations.yml"
    if not config.is_file():
        # Without this check GX would scaffold a fresh project wherever gx_dir points.
        raise FileNotFoundError(f"no Great Expectations config at {config}")
    context = gx.get_context(
        mode="file",
        context_root_dir=settings.gx_dir,
        runtime_environment={_STATE_VARIABLE: str(settings.gx_state_dir)},
    )
    context.build_data_docs = _under_file_lock(  # type: ignore[method-assign]
        context.build_data_docs, settings.gx_state_dir / "data_docs.lock"
    )
    return context


def _under_file_lock(build: Callable[..., Any], lock_path: Path) -> Callable[..., Any]:
    """Wrap a Data Docs build so that one writer at a time (thread or process) touches the site.

    GX writes ``index.html`` in place; two interleaved writers could leave it corrupt.
    """

    def locked_build(*args: Any, **kwargs: Any) -> Any:
        with file_lock(lock_path):
            return build(*args, **kwargs)

    return locked_build


def _to_report(
    suite: str, checkpoint_result: Any, rows: int, order: list[str | None]
) -> ValidationReport:
    """Flatten a checkpoint result; failures keep the order of the suite's expectations."""
    (suite_result,) = checkpoint_result.run_results.values()
    return _suite_report(suite, suite_result, rows, order)


def _suite_report(
    suite: str, suite_result: Any, rows: int, order: list[str | None]
) -> ValidationReport:
    statistics = suite_result.statistics
    position = {expectation_id: i for i, expectation_id in enumerate(order)}
    failed = sorted(
        (result for result in suite_result.results if not result.success),
        key=lambda result: position.get(result.expectation_config.id, len(position)),
    )
    failures = tuple(_to_failure(result) for result in failed)
    return ValidationReport(
        suite=suite,
        success=bool(suite_result.success),
        evaluated=int(statistics["evaluated_expectations"]),
        passed=int(statistics["successful_expectations"]),
        failures=failures,
        rows=rows,
    )


def _to_failure(result: Any) -> ExpectationFailure:
    config = result.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column")
    if column is None and config.type == "expect_compound_columns_to_be_unique":
        column = ", ".join(kwargs["column_list"])
    error = _exception_message(result.exception_info)
    details: Mapping[str, Any] = result.result or {}
    if error is not None:
        return ExpectationFailure(config.type, column, None, (f"error: {error}",))
    if details.get("unexpected_count") is None:
        observed = details.get("observed_value")
        shown = observed if isinstance(observed, str) else _show(observed)
        examples = () if observed is None else (f"observed {shown}",)
        return ExpectationFailure(config.type, column, None, examples)
    return ExpectationFailure(
        config.type, column, int(details["unexpected_count"]), _examples(details)
    )


def _examples(details: Mapping[str, Any]) -> tuple[str, ...]:
    """Unexpected rows by their index columns (``id``) when configured, else their values."""
    index_columns = details.get("unexpected_index_column_names")
    indexed = details.get("partial_unexpected_index_list") or []
    if index_columns and indexed and isinstance(indexed[0], Mapping):
        rows = indexed[:_MAX_EXAMPLES]
        return tuple(
            ", ".join(f"{name}={_show(row.get(name))}" for name in index_columns) for row in rows
        )
    values = details.get("partial_unexpected_list") or []
    return tuple(_show(value) for value in values[:_MAX_EXAMPLES])


def _exception_message(info: Mapping[str, Any] | None) -> str | None:
    """GX reports an error either flat or keyed by the metric that raised it."""
    if not info:
        return None
    if "raised_exception" in info:
        errors = [info]
    else:
        errors = [item for item in info.values() if isinstance(item, Mapping)]
    for error in errors:
        if error.get("raised_exception"):
            return str(error.get("exception_message")).removeprefix("Error: ")
    return None


def _show(value: Any, limit: int = _MAX_EXAMPLE_CHARS) -> str:
    """A short, readable example: ``5``, ``'2020/01/01'``, ``null``, ``('a', 'b')``."""
    if isinstance(value, Mapping | list | tuple):
        items = value.values() if isinstance(value, Mapping) else value
        shown = ", ".join(_show(item, limit // 2) for item in items)
        return f"({shown})" if isinstance(value, Mapping) else f"[{shown}]"
    if isinstance(value, str):
        text = repr(value)
    elif _is_missing(value):
        text = "null"
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


# --- partitioned data ------------------------------------------------------------------------

# Expectations that a partition cannot answer alone: computed over the whole dataset.
TABLE_LEVEL: frozenset[str] = frozenset(
    {
        "expect_table_row_count_to_be_between",
        "expect_column_values_to_be_unique",
        "expect_compound_columns_to_be_unique",
    }
)
_PARTITION = "_partition"
_PARTIAL_LIST = 20  # examples kept per merged expectation (GX keeps at most 20 too)
_NO_EXCEPTION = {"raised_exception": False, "exception_traceback": None, "exception_message": None}


@dataclass(frozen=True)
class PartitionResult:
    """One suite's row-level expectations on one partition, and the keys the table-level
    expectations need (written to ``keys``: one small row per data row)."""

    suite: str
    partition: int
    rows: int
    result: dict[str, Any]  # GX's ExpectationSuiteValidationResult, as JSON
    keys: Path


def validate_partition(
    df: pd.DataFrame, suite: str, settings: Settings, partition: int, keys_dir: Path
) -> PartitionResult:
    """Run the row-level expectations of ``suite`` on one partition (nothing is stored; the
    dataset's result is, by :func:`validate_dataset`) and write its table-level keys."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; expected one of {', '.join(SUITES)}")
    from great_expectations.validator.v1_validator import Validator

    from great_expectations import ExpectationSuite

    started = time.perf_counter()
    with _CONTEXT_LOCK:
        context = _open_context(settings)
        checkpoint = context.checkpoints.get(suite)
    (definition,) = checkpoint.validation_definitions
    row_level = [
        copy_expectation(e)
        for e in definition.suite.expectations
        if e.expectation_type not in TABLE_LEVEL
    ]
    validator = Validator(
        batch_definition=definition.batch_definition,
        batch_parameters={"dataframe": df},
        result_format=checkpoint.result_format,
    )
    result = validator.validate_expectation_suite(
        ExpectationSuite(name=f"{suite}-rows", expectations=row_level)
    )
    keys = keys_dir / suite / f"part-{partition:05d}.parquet"
    keys.parent.mkdir(parents=True, exist_ok=True)
    _table_keys(df, definition.suite.expectations, partition).to_parquet(keys, index=False)
    partial = PartitionResult(suite, partition, len(df), result.to_json_dict(), keys)
    # GX's validator, execution engine and batch refer to each other, so the partition's
    # frame and GX's copies of it outlive this call until the cyclic collector's rare full
    # pass: a worker validating partition after partition grew by ~100 MiB each (3 GiB per
    # worker at 10M rows). Collected here, its memory stays one partition's.
    del validator, result
    gc.collect()
    logger.info(
        "%s partition %d: %d rows in %.2f s",
        suite,
        partition,
        len(df),
        time.perf_counter() - started,
    )
    return partial


def copy_expectation(expectation: Any) -> Any:
    """A copy GX lets another (in-memory) suite hold."""
    import copy

    return copy.copy(expectation)


def _table_keys(df: pd.DataFrame, expectations: Iterable[Any], partition: int) -> pd.DataFrame:
    """What the table-level expectations aggregate: the values of each column that must be
    unique, and a 64-bit hash per row of each column list that must be unique together."""
    keys = pd.DataFrame(index=df.index)
    for expectation in expectations:
        kwargs = expectation.configuration.kwargs
        if expectation.expectation_type == "expect_column_values_to_be_unique":
            column = kwargs["column"]
            if column in df.columns:
                keys[column] = df[column]
        elif expectation.expectation_type == "expect_compound_columns_to_be_unique":
            keys[_compound_key(kwargs["column_list"])] = _row_hashes(df, kwargs["column_list"])
    keys[_PARTITION] = np.int32(partition)
    return keys.reset_index(drop=True)


def _compound_key(columns: Sequence[str]) -> str:
    return "hash:" + ",".join(columns)


def _row_hashes(df: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """A 64-bit hash of each row's values in ``columns``; missing where all are missing (GX
    skips those rows)."""
    present = [c for c in columns if c in df.columns]
    if len(present) < len(columns):
        return pd.Series(pd.NA, index=df.index, dtype="UInt64")
    hashes = pd.Series(
        pd.util.hash_pandas_object(df[present], index=False).to_numpy(), index=df.index
    )
    return hashes.astype("UInt64").mask(df[present].isna().all(axis=1))


def validate_dataset(
    settings: Settings,
    partials: Sequence[PartitionResult],
    read_partition: Callable[[str, int], pd.DataFrame],
) -> list[ValidationReport]:
    """Merge the partitions' row-level results with the table-level expectations computed
    over all partitions, store one result per suite (Data Docs included) and report them.

    Args:
        partials: every partition's result for every suite validated.
        read_partition: ``(suite, partition) -> frame``, to show examples of duplicates.

    Returns:
        One report per suite, in :data:`SUITES` order.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    started = time.perf_counter()
    with _CONTEXT_LOCK:
        context = _open_context(settings)
        checkpoints = {suite: context.checkpoints.get(suite) for suite in SUITES}
    run_id = RunIdentifier(run_name=f"dataset-{uuid.uuid4().hex[:12]}", run_time=datetime.now(UTC))
    reports, identifiers = [], []
    for suite in SUITES:
        mine = sorted((p for p in partials if p.suite == suite), key=lambda p: p.partition)
        if not mine:
            continue
        checkpoint = checkpoints[suite]
        (definition,) = checkpoint.validation_definitions
        suite_result = _dataset_result(
            suite, definition, checkpoint.result_format, mine, read_partition, run_id
        )
        identifiers += _store_result(context, suite, suite_result, run_id)
        order = [expectation.id for expectation in definition.suite.expectations]
        reports.append(_suite_report(suite, suite_result, sum(p.rows for p in mine), order))
    context.build_data_docs(resource_identifiers=identifiers)
    logger.info(
        "validated %d partitions of %s in %.2f s",
        len({p.partition for p in partials}),
        ", ".join(r.suite for r in reports),
        time.perf_counter() - started,
    )
    return reports


def _dataset_result(
    suite: str,
    definition: Any,
    result_format: Any,
    partials: Sequence[PartitionResult],
    read_partition: Callable[[str, int], pd.DataFrame],
    run_id: Any,
) -> Any:
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResult,
        ExpectationValidationResult,
    )

    by_key: dict[str, list[dict[str, Any]]] = {}
    for partial in partials:
        for result in partial.result["results"]:
            config = result["expectation_config"]
            by_key.setdefault(_expectation_key(config["type"], config["kwargs"]), []).append(result)
    index_columns = _index_columns(result_format)
    results = []
    for expectation in definition.suite.expectations:
        config = expectation.configuration
        if expectation.expectation_type in TABLE_LEVEL:
            success, details = _table_level(
                suite,
                expectation.expectation_type,
                config.kwargs,
                partials,
                read_partition,
                index_columns,
            )
            exception = dict(_NO_EXCEPTION)
        else:
            success, details, exception = _merge(
                by_key[_expectation_key(config.type, config.kwargs)]
            )
        results.append(
            ExpectationValidationResult(
                success=success, expectation_config=config, result=details, exception_info=exception
            )
        )
    passed = sum(1 for r in results if r.success)
    meta = dict(partials[0].result.get("meta", {}))
    meta.update(
        run_id=run_id,
        validation_time=run_id.run_time,
        validation_id=definition.id,
        batch_parameters={"dataframe": f"<{len(partials)} partitions>"},
        partitions=len(partials),
        rows=sum(p.rows for p in partials),
    )
    return ExpectationSuiteValidationResult(
        success=passed == len(results),
        results=results,
        suite_name=suite,
        statistics={
            "evaluated_expectations": len(results),
            "successful_expectations": passed,
            "unsuccessful_expectations": len(results) - passed,
            "success_percent": 100.0 * passed / len(results) if results else None,
        },
        meta=meta,
    )


def _store_result(context: Any, suite: str, suite_result: Any, run_id: Any) -> list[Any]:
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    suite_id = ExpectationSuiteIdentifier(name=suite)
    result_id = ValidationResultIdentifier(
        expectation_suite_identifier=suite_id, run_id=run_id, batch_identifier=f"tagifai-{suite}"
    )
    context.validation_results_store.store_validation_results(
        suite_validation_result=suite_result,
        suite_validation_result_identifier=result_id,
        expectation_suite_identifier=suite_id,
    )
    return [result_id, suite_id]


def _expectation_key(kind: str, kwargs: Mapping[str, Any]) -> str:
    """An expectation by type and arguments (GX adds the batch id and reorders results)."""
    arguments = {k: v for k, v in kwargs.items() if k != "batch_id"}
    return json.dumps([kind, arguments], sort_keys=True, default=str)


def _index_columns(result_format: Any) -> list[str]:
    found = (
        result_format.get("unexpected_index_column_names")
        if isinstance(result_format, Mapping)
        else None
    )
    return list(found or [])


def _merge(results: list[dict[str, Any]]) -> tuple[bool, dict[str, Any], dict[str, Any]]:
    """One expectation's results over the partitions: counts summed, examples concatenated;
    an observed value (a column's type, the column list) from the first partition that failed."""
    for result in results:
        if _exception_message(result.get("exception_info")) is not None:
            return False, result.get("result") or {}, result["exception_info"]
    success = all(result["success"] for result in results)
    details = [result.get("result") or {} for result in results]
    quiet = dict(_NO_EXCEPTION)
    if not all("unexpected_count" in d for d in details):
        chosen = next((r for r in results if not r["success"]), results[0])
        return success, chosen.get("result") or {}, quiet
    elements = sum(int(d.get("element_count") or 0) for d in details)
    missing = sum(int(d.get("missing_count") or 0) for d in details)
    unexpected = sum(int(d.get("unexpected_count") or 0) for d in details)
    merged: dict[str, Any] = {
        "element_count": elements,
        "missing_count": missing,
        "missing_percent": _percent(missing, elements),
        "unexpected_count": unexpected,
        "unexpected_percent": _percent(unexpected, elements - missing),
        "unexpected_percent_total": _percent(unexpected, elements),
        "unexpected_percent_nonmissing": _percent(unexpected, elements - missing),
    }
    for field in ("partial_unexpected_list", "partial_unexpected_index_list"):
        values = [v for d in details for v in (d.get(field) or [])]
        merged[field] = values[:_PARTIAL_LIST]
    if any("unexpected_index_column_names" in d for d in details):
        merged["unexpected_index_column_names"] = next(
            d["unexpected_index_column_names"]
            for d in details
            if "unexpected_index_column_names" in d
        )
    return success, merged, quiet


def _percent(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


def _table_level(
    suite: str,
    kind: str,
    kwargs: Mapping[str, Any],
    partials: Sequence[PartitionResult],
    read_partition: Callable[[str, int], pd.DataFrame],
    index_columns: list[str],
) -> tuple[bool, dict[str, Any]]:
    """A table-level expectation over every partition: its success and GX-shaped result."""
    rows = sum(p.rows for p in partials)
    if kind == "expect_table_row_count_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        success = (low is None or rows >= low) and (high is None or rows <= high)
        return success, {"observed_value": rows}
    if kind == "expect_column_values_to_be_unique":
        key, shown = kwargs["column"], None
    else:
        key = _compound_key(kwargs["column_list"])
        shown = list(kwargs["column_list"])
    files = [str(p.keys) for p in partials]
    duplicated, total, elements = _duplicates(files, key, len(partials))
    examples: list[Any] = []
    for value, count in duplicated.items():
        examples += [value] * int(count)
    examples = examples[:_PARTIAL_LIST]
    if shown is not None:  # hashes: look the rows up and show their values
        examples = _compound_examples(suite, files, key, shown, examples, read_partition)
    details: dict[str, Any] = {
        "element_count": rows,
        "missing_count": rows - elements,
        "missing_percent": _percent(rows - elements, rows),
        "unexpected_count": total,
        "unexpected_percent": _percent(total, elements),
        "unexpected_percent_total": _percent(total, rows),
        "unexpected_percent_nonmissing": _percent(total, elements),
        "partial_unexpected_list": examples,
    }
    if index_columns == [key]:
        details["partial_unexpected_index_list"] = [{key: value} for value in examples]
        details["unexpected_index_column_names"] = index_columns
    return total == 0, details


def _duplicates(files: list[str], key: str, partitions: int) -> tuple[pd.Series, int, int]:
    """Over all key files: the (at most 20) most repeated values of ``key`` that occur more
    than once with their counts, the rows holding a repeated value, and the non-missing rows.

    Dask dataframe, on this task's threads: the counts are hash-partitioned into as many
    pieces as there are partitions (``split_out``), so no step holds every distinct value.
    """
    import dask
    import dask.dataframe as dd

    values = dd.read_parquet(files, columns=[key])[key]
    counts = values.value_counts(split_out=max(1, partitions))
    repeated = counts[counts > 1]
    top, total, elements = dask.compute(
        repeated.nlargest(_PARTIAL_LIST), repeated.sum(), values.count(), scheduler="threads"
    )
    return top, int(total), int(elements)


def _compound_examples(
    suite: str,
    files: list[str],
    key: str,
    columns: list[str],
    hashes: list[Any],
    read_partition: Callable[[str, int], pd.DataFrame],
) -> list[dict[str, Any]]:
    """The values behind duplicated row hashes, read back from the partitions holding them."""
    if not hashes:
        return []
    wanted = set(int(h) for h in hashes)
    keys = pd.concat(
        [pd.read_parquet(f, columns=[key, _PARTITION]) for f in files], ignore_index=True
    )  # small: one hash and one partition number per row
    found: dict[int, dict[str, Any]] = {}
    for partition in sorted(set(keys.loc[keys[key].isin(wanted), _PARTITION])):
        frame = read_partition(suite, int(partition))
        frame_hashes = _row_hashes(frame, columns)
        for position in np.flatnonzero(frame_hashes.isin(wanted).to_numpy()):
            row = frame.iloc[position]
            found.setdefault(int(frame_hashes.iloc[position]), {c: row[c] for c in columns})
    return [found[int(h)] for h in hashes if int(h) in found]
