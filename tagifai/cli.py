"""``tagifai``: train, evaluate, predict, run the pipelines and show their state.

Heavy libraries (MLflow, Prefect, Feast, Great Expectations) are imported inside the commands
that use them, so ``tagifai --help`` answers at once.
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


def _settings() -> Settings:
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    for noisy in ("mlflow", "alembic", "urllib3", "distributed", "py.warnings"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return get_settings()


def _check_space(space: str) -> None:
    if space not in SEARCH_SPACES:
        fail(f"unknown search space {space!r}: use {', '.join(SEARCH_SPACES)}")


def _rule(f1_margin: float, class_tolerance: float) -> Any:
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
    projects: Annotated[str | None, typer.Option(help="Projects table URI.")] = None,
    tags: Annotated[str | None, typer.Option(help="Tags table URI.")] = None,
    trials: Annotated[
        int, typer.Option(help="Optuna trials before the final fit (0: defaults).", min=0)
    ] = 0,
    space: Space = "auto",
    f1_margin: Margin = 0.02,
    class_tolerance: Tolerance = 0.10,
) -> None:
    """Train on the tables (shipped CSVs by default), evaluate, register, deploy if improved."""
    import time

    from tagifai.extract import content_id
    from tagifai.workflow import features_from_sources, train_and_deploy

    settings = _settings()
    _check_space(space)
    started = time.perf_counter()
    features = features_from_sources(
        projects or str(settings.projects_csv), tags or str(settings.tags_csv)
    )
    data_id = content_id(features[["id", "text"]], features[["id", "tag"]])
    outcome = train_and_deploy(
        settings,
        features,
        n_trials=trials,
        space=space,  # type: ignore[arg-type]
        rule=_rule(f1_margin, class_tolerance),
        tags={"source": "cli", "features_id": data_id},
    )
    trained, evaluation = outcome.trained, outcome.evaluation
    typer.echo(
        f"cross-validated weighted F1 (5-fold, train+val): "
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
    typer.echo(f"model version {trained.version}: {verdict} ({evaluation.decision.reason})")


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
    from tagifai import registry
    from tagifai.data import split_data
    from tagifai.evaluate import evaluate_model, report_markdown
    from tagifai.workflow import features_from_sources

    settings = _settings()
    model, found = registry.load_model(settings, version)
    features = features_from_sources(
        projects or str(settings.projects_csv), tags or str(settings.tags_csv)
    )
    test = split_data(features, seed=settings.seed).test
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
    """Predict one project's tag (--title/--description) or a CSV file (--input/--output)."""
    from tagifai.predict import predict_csv, predict_project, read_input_chunks

    if (title is None) == (input is None):
        fail("give either --title (and --description) or --input and --output")
    if input is not None and output is None:
        fail("--input needs --output")
    if input is not None:
        next(iter(read_input_chunks(input, 1)))  # bad input fails before loading the model
    from tagifai import registry

    settings = _settings()
    model, _ = registry.load_model(settings, version)
    if title is not None:
        typer.echo(json.dumps(predict_project(model, title, description).to_dict()))
        return
    assert input is not None and output is not None
    rows = predict_csv(model, input, output, chunksize)
    typer.echo(f"wrote {rows} predictions to {output}", err=True)


@app.command()
@friendly_errors
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Production model, its data snapshot and metrics, the last decision, the feature store."""
    from tagifai.state import collect_status

    state = collect_status(_settings())
    if as_json:
        typer.echo(json.dumps(state, indent=2, default=str))
        return
    for key, value in state.items():
        typer.echo(f"{key}: {json.dumps(value, default=str)}")


def _prefect_api(settings: Settings) -> str:
    """The Prefect API every process of the run uses: PREFECT_API_URL, or the project's local
    server (started in the background on first use, reused afterwards)."""
    import os

    from deployments.platform import ensure_server

    url = ensure_server(settings)
    os.environ["PREFECT_API_URL"] = url
    # Task results (and the Dask workers' copies) live with the rest of the state.
    os.environ.setdefault(
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(settings.prefect_dir / "storage")
    )
    return url


def _run_flow(flow_name: str, **parameters: Any) -> Any:
    """Run a flow in this process against the Prefect API; exit non-zero if it failed."""
    import importlib

    settings = _settings()
    _prefect_api(settings)
    flow = getattr(importlib.import_module(f"flows.{flow_name}"), flow_name)
    state = flow(**parameters, return_state=True)
    if not state.is_completed():
        fail(f"{flow_name} run {state.name}: {_state_message(state)}")
    return state.result()


def _state_message(state: Any) -> str:
    try:
        state.result()
    except Exception as error:  # the flow's own exception carries the readable reason
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return state.message or ""


@app.command()
@friendly_errors
def dataops(
    projects: ProjectsUri = None,
    tags: TagsUri = None,
) -> None:
    """Run the DataOps flow: extract, validate, compute features, fill the feature store."""
    settings = get_settings()
    summary = _run_flow(
        "dataops",
        projects_uri=projects or str(settings.projects_csv),
        tags_uri=tags or str(settings.tags_csv),
    )
    typer.echo(json.dumps(summary, default=str))


@app.command()
@friendly_errors
def mlops(
    trials: Trials = 20,
    snapshot: Annotated[str | None, typer.Option(help="Data snapshot (default: latest).")] = None,
    space: Space = "auto",
    f1_margin: Margin = 0.02,
    class_tolerance: Tolerance = 0.10,
) -> None:
    """Run the MLOps flow: features, tuning, training, evaluation, deploy or report."""
    _check_space(space)
    summary = _run_flow(
        "mlops",
        snapshot=snapshot,
        n_trials=trials,
        search_space=space,
        f1_margin=f1_margin,
        class_tolerance=class_tolerance,
    )
    typer.echo(json.dumps(summary, default=str))


@app.command()
@friendly_errors
def pipeline(
    projects: ProjectsUri = None,
    tags: TagsUri = None,
    trials: Trials = 20,
    space: Space = "auto",
    f1_margin: Margin = 0.02,
    class_tolerance: Tolerance = 0.10,
) -> None:
    """Run DataOps, then MLOps on the snapshot it published: two flow runs in this process.

    What the deployed chain does with a trigger and two flow-run processes, for one machine.
    """
    _check_space(space)
    settings = get_settings()
    data = _run_flow(
        "dataops",
        projects_uri=projects or str(settings.projects_csv),
        tags_uri=tags or str(settings.tags_csv),
    )
    model = _run_flow(
        "mlops",
        snapshot=data["snapshot"],
        n_trials=trials,
        search_space=space,
        f1_margin=f1_margin,
        class_tolerance=class_tolerance,
    )
    typer.echo(json.dumps({"dataops": data, "mlops": model}, default=str))


@app.command()
@friendly_errors
def features(
    ids: Annotated[list[int], typer.Option("--id", help="Project id (repeatable).")],
) -> None:
    """Print projects' online features from the Feast online store."""
    from tagifai.store import get_online_features

    rows = get_online_features(_settings(), ids)
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
        data_dir=get_settings().data_dir,
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


def main() -> None:  # pragma: no cover - console entry point
    """The ``tagifai`` command: run, then :func:`leave` with the command's exit status."""
    import traceback

    code = 0
    try:
        app()
    except SystemExit as stop:
        if isinstance(stop.code, int):
            code = stop.code
        elif stop.code is not None:
            print(stop.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    leave(code)


if __name__ == "__main__":  # pragma: no cover - python -m tagifai.cli
    main()
