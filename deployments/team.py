"""``tagifai team ...``: team mode from the command line (see docs/team-mode.md).

Team mode itself is switched on by ``make up TEAM=1`` (``python -m deployments.platform up
--team``); this group holds what acts on both modes at once: ``migrate`` carries an embedded
install (SQLite MLflow registry, Optuna journal, Feast online store) into team mode.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import typer

from tagifai.cli import fail, friendly_errors, load_settings

app = typer.Typer(
    help="Team mode: PostgreSQL and Redis instead of the embedded SQLite stores.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@friendly_errors
def migrate() -> None:
    """Copy the embedded registry, Optuna studies and online features into team mode.

    Every registered version with its run (params, metrics, tags, artifacts) and the
    production alias; prints the version map and what else moved, as JSON.
    """
    import os

    from deployments.platform import up
    from deployments.platform.services import TEAM_SERVICES
    from tagifai.config import get_settings
    from tagifai.migrate import migrate as migrate_stores

    target = load_settings()
    if target.team is None:
        fail("team mode is off for this stores dir: start it first with `make up TEAM=1`")
    assert target.team is not None
    source = get_settings({**os.environ, "TAGIFAI_TEAM": "0"})  # the same stores, embedded
    up(target, TEAM_SERVICES)
    report = migrate_stores(source, target)
    typer.echo(json.dumps(asdict(report)))
