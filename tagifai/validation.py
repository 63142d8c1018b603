"""Validate tables with the committed Great Expectations 1.x suites.

The File Data Context in ``great_expectations/`` holds one expectation suite, validation
definition and checkpoint per table (:data:`SUITES`) as committed JSON; a run only reads it.
Validation results and Data Docs are written under ``settings.gx_state_dir``: the context's
``great_expectations.yml`` points those stores at ``${TAGIFAI_GX_STATE_DIR}``, which every
call here fills in through GX's ``runtime_environment`` (it outranks the environment and
``config_variables.yml``), so ``TAGIFAI_STORES_DIR`` moves them with the rest of the state.

``great_expectations`` takes seconds to import, so it is imported inside the functions.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
