"""Deploy ``prefect.yaml``, run ``dataops`` on the worker and follow the chain its trigger starts.

    python -m deployments.run [--no-deploy] [--projects URI --tags URI] [--timeout SECONDS]

What ``make run`` calls after ``make up``: it deploys the deployments (``prefect --no-prompt
deploy --all``, the same command a person types) and the project's automations
(``deployments.automations``: the zombie-run crasher), creates a ``dataops`` run as ``prefect
deployment run 'dataops/dataops'`` would, follows it, then finds and follows the ``mlops`` run
that the deployment trigger on dataops' Completed event starts, and prints the outcome: the
decision, the metrics, the production version and links to both runs and to the MLflow UI.

Exit status 1 with one ``error:`` line when a run does not complete, the trigger does not fire
or a run takes longer than ``--timeout``. The Prefect API is the platform's (``up`` starts the
server and worker when they are not running; ``$PREFECT_API_URL`` selects another server).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx

from deployments.platform import PlatformError, status, up
from tagifai.config import MODEL_NAME, REPO_ROOT, SNAPSHOT_LABEL, Settings, get_settings
from tagifai.errors import TagifaiError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun

DATAOPS = "dataops/dataops"
MLOPS = "mlops/mlops"
RUN_TIMEOUT_S = 600.0
TRIGGER_TIMEOUT_S = 120.0  # the automation fires within seconds of the Completed event
DEPLOY_TIMEOUT_S = 300.0
POLL_S = 1.0


class ChainError(TagifaiError):
    """A deployment or run of the chain did not do what it should; the message says which."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass(frozen=True)
class Followed:
    """A finished run and how long it took from creation to its final state."""

    run: FlowRun
    seconds: float


def ui_url(api_url: str) -> str:
    return api_url.rstrip("/").removesuffix("/api")


def run_url(api_url: str, run_id: UUID | str) -> str:
    return f"{ui_url(api_url)}/runs/flow-run/{run_id}"


def deploy(api_url: str, timeout_s: float = DEPLOY_TIMEOUT_S) -> float:
    """``prefect --no-prompt deploy --all`` from the repo root; returns the seconds it took.

    Raises:
        ChainError: the command failed; the message ends with its last output lines.
    """
    started = time.monotonic()
    command = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    env = {**os.environ, "PREFECT_API_URL": api_url}
    try:
        result = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as error:
        raise ChainError(f"`prefect deploy --all` took more than {timeout_s:.0f} s") from error
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        raise ChainError(
            f"`prefect deploy --all` failed (exit {result.returncode})",
            "\n".join("    " + line for line in tail),
        )
    return time.monotonic() - started


def follow(
    client: SyncPrefectClient,
    run_id: UUID,
    timeout_s: float = RUN_TIMEOUT_S,
    on_state: Callable[[FlowRun], None] | None = None,
    label: str = "run",
) -> Followed:
    """Poll a run until it is final, calling ``on_state`` at each new state.

    Raises:
        ChainError: the run is not final after ``timeout_s``.
    """
    started = time.monotonic()
    seen: str | None = None
    while True:
        run = client.read_flow_run(run_id)
        if run.state_name != seen:
            seen = run.state_name
            if on_state is not None:
                on_state(run)
        if run.state is not None and run.state.is_final():
            return Followed(run, time.monotonic() - started)
        if time.monotonic() - started > timeout_s:
            raise ChainError(
                f"{label} run '{run.name}' is still {run.state_name} after {timeout_s:.0f} s"
            )
        time.sleep(POLL_S)


def find_triggered_run(
    client: SyncPrefectClient,
    deployment_id: UUID,
    upstream: FlowRun,
    timeout_s: float = TRIGGER_TIMEOUT_S,
) -> FlowRun:
    """The run of ``deployment_id`` that an automation created for ``upstream``'s completion.

    It is the earliest automation-created run of the deployment created after ``upstream``
    started whose ``snapshot`` parameter is the snapshot ``upstream`` labelled itself with
    (any, when it has no label).

    Raises:
        ChainError: the automation's action failed, or no such run appeared within
            ``timeout_s``.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.client.schemas.sorting import FlowRunSort

    since = upstream.start_time or upstream.created
    snapshot = (upstream.labels or {}).get(SNAPSHOT_LABEL)
    runs_filter = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]))
    deadline = time.monotonic() + timeout_s
    while True:
        candidates = [
            run
            for run in client.read_flow_runs(
                flow_run_filter=runs_filter, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=50
            )
            if run.created_by is not None
            and run.created_by.type == "AUTOMATION"
            and run.created is not None
            and since is not None
            and run.created >= since
            and (snapshot is None or run.parameters.get("snapshot") == snapshot)
        ]
        if candidates:
            return min(candidates, key=lambda run: run.created)
        failure = _failed_action(client, deployment_id, upstream)
        if failure:
            raise ChainError(f"the trigger fired but could not start {MLOPS}: {failure}")
        if time.monotonic() > deadline:
            raise ChainError(
                f"no run of {MLOPS} was triggered within {timeout_s:.0f} s of '{upstream.name}' "
                "completing; check the automation 'mlops on tagifai.snapshot.published' "
                "(prefect automation ls) and the server log"
            )
        time.sleep(POLL_S)


def _failed_action(client: SyncPrefectClient, deployment_id: UUID, upstream: FlowRun) -> str:
    """Why an automation failed to run ``deployment_id`` since ``upstream`` ended, or ''."""
    from prefect.events.filters import (
        EventFilter,
        EventNameFilter,
        EventOccurredFilter,
        EventRelatedFilter,
    )

    if upstream.end_time is None:
        return ""
    events = client.read_events(
        EventFilter(
            occurred=EventOccurredFilter(since=upstream.end_time),
            event=EventNameFilter(name=["prefect.automation.action.failed"]),
            related=EventRelatedFilter(
                resources_in_roles=[(f"prefect.deployment.{deployment_id}", "target")]
            ),
        ),
        limit=1,
    ).events
    if not events:
        return ""
    name = events[0].resource.get("prefect.resource.name", "automation")
    return f"{name}: {events[0].payload.get('reason', 'no reason given')}"


def _gap(upstream: FlowRun, triggered: FlowRun) -> str:
    if upstream.end_time is None or triggered.created is None:
        return "some time"
    return f"{(triggered.created - upstream.end_time).total_seconds():.1f} s"


def _final_message(run: FlowRun) -> str:
    message = (run.state.message if run.state else "") or ""
    return message.strip().splitlines()[0] if message.strip() else "no message"


def _print_state(label: str, api_url: str, started: float) -> Callable[[FlowRun], None]:
    """Print a line per state; the first one carries the run's UI link."""
    linked: set[UUID] = set()

    def on_state(run: FlowRun) -> None:
        where = "" if run.id in linked else f"  {run_url(api_url, run.id)}"
        linked.add(run.id)
        elapsed = time.monotonic() - started
        print(f"[{elapsed:6.1f}s] {label:<8} {run.name}: {run.state_name}{where}", flush=True)

    return on_state


def _require_completed(label: str, followed: Followed, api_url: str) -> None:
    run = followed.run
    if run.state is None or not run.state.is_completed():
        raise ChainError(
            f"{label} run '{run.name}' ended {run.state_name}: {_final_message(run)} "
            f"({run_url(api_url, run.id)})"
        )


@dataclass(frozen=True)
class Outcome:
    """What the mlops run left in the stores: its decision and the production model."""

    decision: dict[str, Any] | None
    production: dict[str, Any] | None


def read_outcome(settings: Settings, mlops: FlowRun | None) -> Outcome:
    """The decision ``mlops`` recorded (``last_decision.json``) and the production model now."""
    from tagifai.status import collect_status

    state = collect_status(settings)
    decision = state.get("last_decision")
    if decision and (
        mlops is None
        or mlops.start_time is None
        or datetime.fromisoformat(decision["at"]) < mlops.start_time.replace(microsecond=0)
    ):
        decision = None  # an older decision: this run did not record one
    return Outcome(decision, state.get("production"))


def print_outcome(
    outcome: Outcome,
    api_url: str,
    dataops: FlowRun,
    mlops: FlowRun | None,
    mlflow_url: str | None,
) -> None:
    """The decision, metrics, production version and links."""
    decision, production = outcome.decision, outcome.production
    if decision:
        verdict = "improved, deployed" if decision["deployed"] else "not deployed"
        print(f"decision    v{decision['candidate_version']} {verdict}: {decision['reason']}")
        before = decision.get("production_f1")
        print(
            f"metrics     candidate test F1 {decision['candidate_f1']}"
            + (f", production before {before}" if before is not None else "")
        )
    elif mlops is None:
        print("decision    none: no new data, so nothing was trained")
    else:
        print(f"decision    not recorded: see the evaluation report of {mlops.name}")
    if production:
        metrics = production["metrics"]
        print(
            f"production  v{production['version']} (snapshot {production['snapshot']}): "
            f"test F1 {metrics.get('test_f1')}, cv F1 {metrics.get('cv_f1_mean')} "
            f"± {metrics.get('cv_f1_std')}"
        )
    else:
        print("production  no model in production")
    print(f"dataops run {run_url(api_url, dataops.id)}")
    if mlops is not None:
        print(f"mlops run   {run_url(api_url, mlops.id)}")
    if mlflow_url:
        version = f"/versions/{production['version']}" if production else ""
        print(f"MLflow      {mlflow_url}/#/models/{MODEL_NAME}{version}")
    else:
        print("MLflow      not running (python -m deployments.platform up mlflow)")


def run_chain(
    api_url: str, parameters: dict[str, str] | None = None, timeout_s: float = RUN_TIMEOUT_S
) -> tuple[Followed, Followed | None]:
    """Start dataops from its deployment and follow it and the mlops run it triggers (None
    when dataops found no new data, which triggers nothing).

    Raises:
        ChainError: a deployment is missing, a run failed, the trigger did not fire, or a run
            timed out.
    """
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    started = time.monotonic()
    with get_client(sync_client=True) as client:
        try:
            dataops_deployment = client.read_deployment_by_name(DATAOPS)
            mlops_deployment = client.read_deployment_by_name(MLOPS)
        except ObjectNotFound as error:
            raise ChainError(
                f"{DATAOPS} or {MLOPS} is not deployed on {api_url}: run without --no-deploy"
            ) from error
        created = client.create_flow_run_from_deployment(
            dataops_deployment.id, parameters=parameters or {}
        )
        on_state = _print_state("dataops", api_url, started)
        dataops = follow(client, created.id, timeout_s, on_state, "dataops")
        _require_completed("dataops", dataops, api_url)
        if _final_message(dataops.run).startswith("no new data"):
            print(
                f"[{time.monotonic() - started:6.1f}s] trigger  {_final_message(dataops.run)}: "
                "nothing announced, so no mlops run",
                flush=True,
            )
            return dataops, None
        triggered = find_triggered_run(client, mlops_deployment.id, dataops.run)
        print(
            f"[{time.monotonic() - started:6.1f}s] trigger  tagifai.snapshot.published -> "
            f"mlops {triggered.name} created {_gap(dataops.run, triggered)} later, snapshot "
            f"{triggered.parameters.get('snapshot') or 'latest'}",
            flush=True,
        )
        on_state = _print_state("mlops", api_url, started)
        mlops = follow(client, triggered.id, timeout_s, on_state, "mlops")
        _require_completed("mlops", mlops, api_url)
    return dataops, mlops


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.run",
        description="Deploy, run dataops on the worker and follow the mlops run it triggers.",
    )
    parser.add_argument("--no-deploy", action="store_true", help="use the existing deployments")
    parser.add_argument("--projects", help="projects table URI (default: the shipped CSV)")
    parser.add_argument("--tags", help="tags table URI (default: the shipped CSV)")
    parser.add_argument(
        "--timeout", type=float, default=RUN_TIMEOUT_S, help="seconds per run (default 600)"
    )
    args = parser.parse_args(argv)
    if (args.projects is None) != (args.tags is None):
        parser.error("give both --projects and --tags, or neither")

    settings = get_settings()
    started = time.monotonic()
    try:
        urls = up(settings, ("server", "worker"))
        api_url = urls["server"]
        # Before Prefect is imported: its settings are read once, at import.
        os.environ["PREFECT_API_URL"] = api_url
        print(f"platform    Prefect UI {ui_url(api_url)}, worker: {urls['worker']}", flush=True)
        if not args.no_deploy:
            seconds = deploy(api_url)
            print(f"deploy      prefect.yaml deployed in {seconds:.1f} s", flush=True)
            from deployments.automations import ensure_automations

            for name in ensure_automations(settings):
                print(f"automation  {name}", flush=True)
        parameters = (
            {"projects_uri": args.projects, "tags_uri": args.tags} if args.projects else None
        )
        dataops, mlops = run_chain(api_url, parameters, args.timeout)
        trained = f"mlops {mlops.seconds:.1f} s" if mlops else "no mlops (no new data)"
        print(
            f"done        dataops {dataops.seconds:.1f} s, {trained}, "
            f"total {time.monotonic() - started:.1f} s",
            flush=True,
        )
        services = status(settings)
        mlflow = services["mlflow"]
        print_outcome(
            read_outcome(settings, mlops.run if mlops else None),
            api_url,
            dataops.run,
            mlops.run if mlops else None,
            mlflow.url if mlflow.state == "running" else None,
        )
        predict = services.get("predict")
        if predict is not None and predict.state == "running":
            print(f'predictions {predict.url}  (POST {{"title": ..., "description": ...}})')
    except PlatformError as error:
        print(f"error: {error.summary}", file=sys.stderr)
        return 1
    except ChainError as error:
        print(f"error: {error}", file=sys.stderr)
        if error.detail:
            print(error.detail, file=sys.stderr)
        return 1
    except TagifaiError as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    except httpx.HTTPError as error:
        print(f"error: Prefect API: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: the runs go on on the worker (see the Prefect UI)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
