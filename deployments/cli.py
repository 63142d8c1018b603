"""The ``tagifai`` console script: the library's commands plus those that run flows.

``tagifai.cli`` holds the commands that need only the library (train, evaluate, predict,
status, features, synth); this module mounts them and adds ``dataops``, ``mlops``,
``pipeline``, ``monitor`` and ``rollback``, which run the Prefect flows against the project's
Prefect server. It sits above
``flows/`` and the platform, so the library never imports either. Prefect and the flows are
imported inside the commands, so ``tagifai --help`` answers at once.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from deployments.team import app as team_app
from tagifai.cli import (
    Margin,
    ProjectsUri,
    Space,
    TagsUri,
    Tolerance,
    Trials,
    check_space,
    fail,
    friendly_errors,
    leave,
    load_settings,
)
from tagifai.cli import app as library_app
from tagifai.config import Settings

app = typer.Typer(
    help=library_app.info.help,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.registered_commands.extend(library_app.registered_commands)
app.add_typer(team_app, name="team")


def _use_prefect_api(settings: Settings) -> str:
    """Point this process at the project's Prefect API: ``PREFECT_API_URL``, or the local
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

    _use_prefect_api(load_settings())
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
def dataops(projects: ProjectsUri = None, tags: TagsUri = None) -> None:
    """Run the DataOps flow: extract, validate, compute features, fill the feature store."""
    summary = _run_flow("dataops", projects_uri=projects, tags_uri=tags)
    typer.echo(json.dumps(summary, default=str))


@app.command()
@friendly_errors
def mlops(
    trials: Trials = 20,
    snapshot: Annotated[str | None, typer.Option(help="Data snapshot (default: latest).")] = None,
    space: Space = "auto",
    f1_margin: Margin = 0.02,
    class_tolerance: Tolerance = 0.10,
    force: Annotated[
        bool, typer.Option(help="Train even if this snapshot was trained with the same settings.")
    ] = False,
) -> None:
    """Run the MLOps flow: features, tuning, training, evaluation, deploy or report."""
    check_space(space)
    summary = _run_flow(
        "mlops",
        snapshot=snapshot,
        n_trials=trials,
        search_space=space,
        f1_margin=f1_margin,
        class_tolerance=class_tolerance,
        force=force,
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
    check_space(space)
    data = _run_flow("dataops", projects_uri=projects, tags_uri=tags)
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
def sensor(
    once: Annotated[bool, typer.Option("--once", help="One tick, then print what it saw.")] = False,
) -> None:
    """Watch TAGIFAI_SENSOR_SOURCES (default data/landing/) and announce each new batch once.

    `make up` runs the same loop as a platform service; --once looks once, in the foreground.
    """
    import os
    import threading

    from deployments import sensor as process

    settings = load_settings()
    api_url = _use_prefect_api(settings)
    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    if once:
        for result in process.run_tick(settings, api_url, auth):
            typer.echo(process.describe(result))
        return
    process.loop(settings, api_url, auth, threading.Event())


@app.command()
@friendly_errors
def monitor(
    window_hours: Annotated[int, typer.Option(help="Hours of logged predictions.", min=1)] = 24,
    min_predictions: Annotated[
        int, typer.Option(help="Fewer predictions are not judged.", min=1)
    ] = 200,
    inspect_psi: Annotated[float, typer.Option(help="PSI that asks a person to look.")] = 0.10,
    retrain_psi: Annotated[float, typer.Option(help="PSI of unseen words that retrains.")] = 0.25,
    min_labelled: Annotated[int, typer.Option(help="Fewer new labels are not judged.", min=1)] = 50,
    performance_drop: Annotated[
        float, typer.Option(help="F1 drop on new labels (vs test F1) that retrains.")
    ] = 0.10,
    rollback_margin: Annotated[
        float, typer.Option(help="How much better the previous version must be to roll back.")
    ] = 0.05,
    auto_rollback: Annotated[
        bool, typer.Option(help="Roll back when the policy says so (else: inspect).")
    ] = True,
) -> None:
    """Run the monitor flow: drift of production's predictions and new labels; act on it."""
    summary = _run_flow(
        "monitor",
        window_hours=window_hours,
        min_predictions=min_predictions,
        inspect_psi=inspect_psi,
        retrain_psi=retrain_psi,
        min_labelled=min_labelled,
        performance_drop=performance_drop,
        rollback_margin=rollback_margin,
        auto_rollback=auto_rollback,
    )
    typer.echo(json.dumps(summary, default=str))


@app.command()
@friendly_errors
def rollback(
    reason: Annotated[str, typer.Option(help="Why (kept in the alias history).")],
    to: Annotated[
        int | None, typer.Option("--to", help="Version to serve (default: the one it replaced).")
    ] = None,
) -> None:
    """Move production back, record it in the alias history, emit tagifai.model.rolled_back."""
    import getpass

    if not reason.strip():
        fail("--reason must say why")
    actor = f"{getpass.getuser()} (tagifai rollback)"
    move = _run_flow("rollback", reason=reason, to_version=to, actor=actor)
    typer.echo(json.dumps(move, default=str))


def main() -> None:  # pragma: no cover - console entry point
    """The ``tagifai`` command: run, then :func:`~tagifai.cli.leave` with its exit status."""
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


if __name__ == "__main__":  # pragma: no cover - python -m deployments.cli
    main()
