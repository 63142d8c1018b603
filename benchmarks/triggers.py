"""Runs on new data only, on the real platform: how fast a landed file starts dataops, and how
many runs and model versions duplicates and idle ticks create.

A private platform (server, worker, receiver, sensor at its default interval) with
``prefect.yaml`` deployed. Then:

1. a batch folder is renamed into the landing directory with its ``_SUCCESS`` marker (the
   way a writer hands over a finished batch); the time from the rename to the dataops run's
   Pending and Running states, and to the end of the mlops run it triggers. Target: Running
   within the sensor's interval + 3 s;
2. a new batch sent 10 times by webhook (5 replays of one signed request, 5 fresh
   signatures): the dataops runs and model versions created. Target: 1 and 1;
3. 10 sensor ticks with nothing new: the runs and versions created. Target: 0 and 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

NAME = "triggers"
RUN_TIMEOUT_S = 600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(NAME)
    group.add_argument("--triggers-interval", type=int, default=5, help="sensor interval (s)")


def run(args: argparse.Namespace) -> Any:
    from benchmarks import prefect_api
    from benchmarks.common import (
        WEBHOOK_SECRET,
        PrivatePlatform,
        Result,
        Target,
        fresh_dir,
        other_load,
        print_table,
        python,
        run_measured,
    )

    interval = args.triggers_interval
    result = Result(NAME, "new data only: landing-to-running latency, duplicates, idle ticks")
    base = fresh_dir(NAME)
    data = (base / "data").resolve()
    (data / "landing").mkdir(parents=True)
    result.figures["load_before"] = other_load()
    platform = PrivatePlatform(
        base / "stores",
        ("server", "worker", "webhook", "sensor"),
        TAGIFAI_DATA_DIR=str(data),
        TAGIFAI_SENSOR_SOURCES=str(data / "landing"),
        TAGIFAI_SENSOR_INTERVAL=str(interval),
    )
    with platform:
        env = platform.client_env()
        deployed = run_measured(
            python("-m", "prefect", "--no-prompt", "deploy", "--all"), env, quiet=False
        )
        result.add_command(deployed)
        deployed.check()
        api = platform.api_url
        dataops = prefect_api.deployment(api, "dataops", "dataops")
        mlops = prefect_api.deployment(api, "mlops", "mlops")

        # 1. a finished batch renamed into the landing directory
        staging = data / ".staging-1"
        _write_batch(staging, drop=1, marker=True)
        landed = time.time()
        staging.rename(data / "landing" / "batch-1")
        [run_1] = _await_runs(api, dataops["id"], 1)
        times = _await_final(api, run_1["id"])
        [mlops_1] = _await_runs(api, mlops["id"], 1)
        mlops_times = _await_final(api, mlops_1["id"])
        latency = {
            "pending_s": round(prefect_api.when(times["PENDING"]).timestamp() - landed, 2),
            "running_s": round(prefect_api.when(times["RUNNING"]).timestamp() - landed, 2),
            "chain_done_s": round(
                prefect_api.when(mlops_times["COMPLETED"]).timestamp() - landed, 2
            ),
        }

        # 2. one new batch, ten notices
        versions_before = _versions(platform)
        runs_before = len(_runs(api, dataops["id"]))
        _write_batch(data / "incoming", drop=2, marker=False)
        statuses = _notify_ten_times(platform, data / "incoming", WEBHOOK_SECRET)
        _await_runs(api, dataops["id"], runs_before + 1)
        time.sleep(3 * interval)  # anything else the notices could start has started by now
        for run in _runs(api, mlops["id"]):
            _await_final(api, run["id"])
        duplicates = {
            "statuses": statuses,
            "dataops_runs": len(_runs(api, dataops["id"])) - runs_before,
            "model_versions": _versions(platform) - versions_before,
        }

        # 3. ten ticks with nothing new
        versions_before = _versions(platform)
        runs_before = len(_runs(api, dataops["id"]))
        time.sleep(10 * interval + 1)
        beat = json.loads((platform.stores_dir / "sensor" / "heartbeat.json").read_text())
        idle = {
            "seconds": 10 * interval + 1,
            "dataops_runs": len(_runs(api, dataops["id"])) - runs_before,
            "model_versions": _versions(platform) - versions_before,
            "last_tick_cpu_seconds": beat["cpu_seconds"],
        }
    result.figures.update(
        {
            "sensor_interval_s": interval,
            "landed_to": latency,
            "ten_notices_of_one_batch": duplicates,
            "ten_idle_ticks": idle,
            "load_after": other_load(),
        }
    )
    result.targets += [
        Target("landed -> dataops Running", latency["running_s"], interval + 3, "s"),
        Target("dataops runs from 10 notices", duplicates["dataops_runs"], 1, "runs"),
        Target("model versions from 10 notices", duplicates["model_versions"], 1, "versions"),
        Target("dataops runs from 10 idle ticks", idle["dataops_runs"], 0, "runs"),
        Target("model versions from 10 idle ticks", idle["model_versions"], 0, "versions"),
    ]
    result.notes.append(
        "Pending is set by the worker when it picks the run up (it polls every 2 s); Running "
        "by the flow-run process once Python has started and imported the flow's modules."
    )
    print_table(
        result,
        [
            ("landed -> Pending", f"{latency['pending_s']:.1f} s"),
            ("landed -> Running", f"{latency['running_s']:.1f} s (interval {interval} s)"),
            ("landed -> mlops Completed", f"{latency['chain_done_s']:.1f} s"),
            ("10 notices of one batch", f"{duplicates['dataops_runs']} run(s), {statuses}"),
            ("10 idle ticks", f"{idle['dataops_runs']} run(s), {idle['model_versions']} models"),
        ],
    )
    return result


def _write_batch(folder: Path, drop: int, marker: bool) -> None:
    """The shipped tables less ``drop`` labelled projects: data not seen before."""
    import pandas as pd

    from tagifai.config import SHIPPED_DATA_DIR

    folder.mkdir(parents=True)
    projects = pd.read_csv(SHIPPED_DATA_DIR / "projects.csv", dtype=str)
    tags = pd.read_csv(SHIPPED_DATA_DIR / "tags.csv", dtype=str)
    keep = set(tags["id"].iloc[: len(tags) - drop])
    projects[projects["id"].isin(keep)].to_csv(folder / "projects.csv", index=False)
    tags[tags["id"].isin(keep)].to_csv(folder / "tags.csv", index=False)
    if marker:
        (folder / "_SUCCESS").touch()


def _notify_ten_times(platform: Any, folder: Path, secret: str) -> dict[int, int]:
    """Five replays of one signed request and five freshly signed ones: status counts."""
    import httpx

    from deployments.webhook import sign

    url = platform.status()["webhook"]["url"]
    body = json.dumps(
        {"projects_uri": str(folder / "projects.csv"), "tags_uri": str(folder / "tags.csv")}
    ).encode()
    headers = {"Content-Type": "application/json", **sign(secret, body)}
    statuses: dict[int, int] = {}
    for attempt in range(10):
        if attempt >= 5:
            time.sleep(1.0)  # a new second, a new signature
            headers = {"Content-Type": "application/json", **sign(secret, body)}
        code = httpx.post(url, content=body, headers=headers, timeout=60, trust_env=False)
        statuses[code.status_code] = statuses.get(code.status_code, 0) + 1
    return statuses


def _versions(platform: Any) -> int:
    from tagifai import registry
    from tagifai.config import get_settings

    settings = get_settings({"TAGIFAI_STORES_DIR": str(platform.stores_dir)})
    return len(registry.connect(settings).search_model_versions("name='tagifai'"))


def _runs(api: str, deployment_id: str) -> list[dict[str, Any]]:
    """The deployment's runs, less the future ones its schedule adds."""
    from benchmarks import prefect_api

    runs = prefect_api.deployment_runs(api, deployment_id)
    return [run for run in runs if not run.get("auto_scheduled")]


def _await_runs(api: str, deployment_id: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while len(runs := _runs(api, deployment_id)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {len(runs)} run(s) of {deployment_id} after {RUN_TIMEOUT_S} s"
            )
        time.sleep(0.2)
    return runs


def _await_final(api: str, run_id: str) -> dict[str, str]:
    from benchmarks import prefect_api

    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (run := prefect_api.flow_run(api, run_id))["state_type"] not in (
        "COMPLETED",
        "FAILED",
        "CRASHED",
        "CANCELLED",
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run['name']} still {run['state_name']}")
        time.sleep(0.5)
    if run["state_type"] != "COMPLETED":
        raise RuntimeError(f"run {run['name']} ended {run['state_name']}")
    return prefect_api.state_times(api, run_id)
