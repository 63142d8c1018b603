"""The library's commands: train, evaluate, predict, show state and features, make data.

The ``tagifai`` console script (``deployments/cli.py``) mounts these and adds the commands
that run flows and the platform, which live above the library. Heavy libraries (MLflow,
Feast, Great Expectations) are imported inside the commands that use them, so
``tagifai --help`` answers at once.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tagifai.config import SEARCH_SPACES, Settings, get_settings
from tagifai.errors import TagifaiError

app = typer.Typer(
    help="Tag ML projects (computer-vision, mlops, natural-language-processing, other).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str) -> None:
    """One readable line on stderr and exit status 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def friendly_errors(command: F) -> F:
    """Turn domain errors (and bad values) into one line on stderr and a non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TagifaiError as error:
            fail(str(error).splitlines()[0] if str(error) else type(error).__name__)
        except (ValueError, OSError) as error:
            fail(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")

    return wrapper  # type: ignore[return-value]


QUIET_ENVIRONMENT = {
    "MLFLOW_LOGGING_LEVEL": "ERROR",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "DASK_LOGGING__DISTRIBUTED": "warning",
}


def load_settings() -> Settings:
    """The command's settings, read from the environment once (the edge), libraries quiet."""
    import os

    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for noisy in ("mlflow", "alembic", "urllib3", "distributed", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return get_settings()


def check_space(space: str) -> None:
    if space not in SEARCH_SPACES:
        fail(f"unknown search space {space!r}: use {', '.join(SEARCH_SPACES)}")


def rule_from(f1_margin: float, class_tolerance: float) -> Any:
    from tagifai.evaluate import ImprovementRule

    return ImprovementRule(f1_margin=f1_margin, class_tolerance=class_tolerance)


Margin = Annotated[
    float,
    typer.Option(
        help="Candidate may trail production's weighted F1 by at most this much.", min=0.0, max=1.0
    ),
]
Tolerance = Annotated[
    float, typer.Option(help="No class's F1 may fall by more than this.", min=0.0, max=1.0)
]
ProjectsUri = Annotated[
    str | None, typer.Option(help="Projects table URI (path, or <sqlalchemy-url>#<table>).")
]
TagsUri = Annotated[str | None, typer.Option(help="Tags table URI.")]
Trials = Annotated[int, typer.Option(help="Optuna trials (0: default parameters).", min=0)]
Space = Annotated[
    str,
    typer.Option(
        help="Search space: auto (default up to 200k rows, then scale), default (TF-IDF), "
        "weak (deliberately poor) or scale (hashing + SGD)."
    ),
]


@app.command()
@friendly_errors
def train(
    projects: ProjectsUri = None,
    tags: TagsUri = None,
    trials: Annotated[
        int, typer.Option(help="Optuna trials before the final fit (0: defaults).", min=0)
    ] = 0,
    space: Space = "auto",
    f1_margin: Margin = 0.02,
    class_tolerance: Tolerance = 0.10,
) -> None:
    """Train on the tables (shipped CSVs by default), evaluate, register, deploy if improved.

    The MLOps steps of the flow in this one process, on features read straight from the
    tables (no Prefect, no Feast); the deploy holds a file lock instead of Prefect's limit.
    """
    import time

    from tagifai import pipeline, steps

    settings = load_settings()
    check_space(space)
    started = time.perf_counter()
    data_path = steps.features_from_sources(
        settings, projects or str(settings.projects_csv), tags or str(settings.tags_csv)
    )
    outcome = pipeline.run_mlops(
        settings,
        data_path,
        n_trials=trials,
        search_space=space,
        rule=rule_from(f1_margin, class_tolerance),
        tags={"source": "cli", "features_id": data_path.stem},
        study_name="tagifai-cli",
    )
    trained, evaluation = outcome.trained, outcome.evaluation
    typer.echo(
        f"cross-validated weighted F1 (5-fold x {len(trained.cv.scores) // 5}, train+val): "
        f"{trained.cv.mean:.4f} ± {trained.cv.std:.4f}"
    )
    typer.echo(
        f"test-split weighted F1: {evaluation.candidate.f1:.4f} "
        f"(precision {evaluation.candidate.precision:.4f}, "
        f"recall {evaluation.candidate.recall:.4f}, n={evaluation.candidate.n})"
    )
    if evaluation.production is not None:
        typer.echo(
            f"production v{evaluation.production_version} on the same split: "
            f"{evaluation.production.f1:.4f}"
        )
    typer.echo(
        f"final fit: {trained.fit_seconds:.2f} s; total {time.perf_counter() - started:.1f} s"
    )
    verdict = "improved -> deployed" if outcome.deployed else "regressed -> not deployed"
    typer.echo(f"model version {trained.version}: {verdict} ({outcome.reason})")


@app.command()
@friendly_errors
def evaluate(
    version: Annotated[
        int | None, typer.Option(help="Model version (default: production).")
    ] = None,
    projects: Annotated[str | None, typer.Option(help="Projects table URI.")] = None,
    tags: Annotated[str | None, typer.Option(help="Tags table URI.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Evaluate a model on the test split of the tables (per class, slices, behavioural)."""
    from tagifai import registry, steps
    from tagifai.evaluate import evaluate_model
    from tagifai.reporting import report_markdown

    settings = load_settings()
    model, found = registry.load_model(settings, version)
    data_path = steps.features_from_sources(
        settings, projects or str(settings.projects_csv), tags or str(settings.tags_csv)
    )
    test = steps.load_split(data_path, settings.seed).test
    report = evaluate_model(model, test["text"], test["tag"])
    if as_json:
        typer.echo(json.dumps({"version": found.version, **report.to_dict()}, indent=2))
    else:
        typer.echo(report_markdown(report, f"tagifai v{found.version} on the test split"))


@app.command()
@friendly_errors
def predict(
    title: Annotated[str | None, typer.Option(help="Project title.")] = None,
    description: Annotated[str, typer.Option(help="Project description.")] = "",
    input: Annotated[
        Path | None, typer.Option("--input", help="CSV with id,title,description.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="CSV to write id,tag,p_*.")
    ] = None,
    chunksize: Annotated[int, typer.Option(help="Rows per chunk when streaming.", min=1)] = 50_000,
    version: Annotated[
        int | None, typer.Option(help="Model version (default: production).")
    ] = None,
) -> None:
    """Predict one project's tag (--title/--description) or a CSV file (--input/--output).

    Every prediction is logged to the prediction log (``TAGIFAI_PREDICTION_LOG=false``: not).
    """
    from tagifai.predict import (
        describe_batch,
        load_served,
        predict_batch,
        predict_csv,
        read_input_chunks,
    )

    if (title is None) == (input is None):
        fail("give either --title (and --description) or --input and --output")
    if input is not None and output is None:
        fail("--input needs --output")
    if input is not None:
        next(iter(read_input_chunks(input, 1)))  # bad input fails before loading the model
    from tagifai.data import clean_text
    from tagifai.predlog import PredictionLog

    settings = load_settings()
    served = load_served(settings, version)
    log = PredictionLog(settings.predictions_dir) if settings.prediction_log else None
    if title is not None:
        batch = predict_batch(served, [clean_text(f"{title} {description}")])
        if log is not None:
            log.append(batch.log_batch("cli"))
            log.close()
        row = batch.rows()[0]
        typer.echo(json.dumps({"tag": row["tag"], "probabilities": row["probabilities"]}))
        return
    assert input is not None and output is not None

    def on_chunk(texts: Any, probabilities: Any) -> None:
        assert log is not None
        log.append(describe_batch(served, texts, probabilities).log_batch("cli"))
        log.flush()  # one file per chunk: memory stays one chunk

    rows = predict_csv(served.model, input, output, chunksize, on_chunk if log else None)
    typer.echo(f"wrote {rows} predictions to {output}", err=True)


@app.command()
@friendly_errors
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Production model, its data snapshot and metrics, the last decision, the feature store."""
    from tagifai.status import collect_status

    state = collect_status(load_settings())
    if as_json:
        typer.echo(json.dumps(state, indent=2, default=str))
        return
    for key, value in state.items():
        typer.echo(f"{key}: {json.dumps(value, default=str)}")


@app.command()
@friendly_errors
def features(
    ids: Annotated[list[int], typer.Option("--id", help="Project id (repeatable).")],
) -> None:
    """Print projects' online features from the Feast online store."""
    from tagifai.store import get_online_features

    rows = get_online_features(load_settings(), ids)
    for row in rows:
        typer.echo(json.dumps(row, default=str))
    if any(row.get("text") is None for row in rows):
        fail(
            "no online features for id(s) "
            + ", ".join(str(r["id"]) for r in rows if r.get("text") is None)
        )


@app.command()
@friendly_errors
def synth(
    rows: Annotated[int, typer.Option("--rows", help="Rows of each table (ids 1..N).")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the tables into.")],
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = 42,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
) -> None:
    """Write synthetic projects and tags tables that look like the shipped ones."""
    from tagifai.synth import write_synthetic

    if fmt not in ("csv", "parquet"):
        fail(f"unknown format {fmt!r}: use csv or parquet")
    result = write_synthetic(
        rows,
        out,
        seed,
        fmt="parquet" if fmt == "parquet" else "csv",
        data_dir=load_settings().data_dir,
    )
    typer.echo(
        f"wrote {result.rows} rows to {result.projects_path} and {result.tags_path} "
        f"in {result.seconds:.2f} s (seed {seed})"
    )


def leave(code: int = 0) -> None:
    """Exit now without tearing the interpreter down.

    With GX, Feast, MLflow and Prefect loaded, the interpreter's own shutdown (freeing every
    module and object) takes 2-3 s after the work is done. Every ``atexit`` handler still runs
    first (logging, Prefect's log and event workers, multiprocessing), then the process exits.
    """
    import atexit
    import os

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
