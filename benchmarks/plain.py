"""The work of ``dataops`` + ``mlops`` as plain tagifai calls in one process, no Prefect.

    python -m benchmarks.plain [--projects URI --tags URI] [--trials 20] [--space auto]

``tagifai.pipeline`` runs the very steps the flows' tasks wrap (:mod:`tagifai.steps`), in
the same order, one after the other: stage and validate the tables with the three GX suites
(whose checkpoints update Data Docs), publish the snapshot and its features, apply and
materialise Feast, build the point-in-time training frame, tune (all trials in one batch),
train, evaluate, and run the ``decide`` branch. Prints one JSON line: seconds per step, the
process's start-up (interpreter + imports before ``main``) and the outcome.
"""

from __future__ import annotations

import argparse
import json
import time

_PROCESS_STARTED = time.time()

import psutil  # noqa: E402

from tagifai import extract, pipeline, steps  # noqa: E402
from tagifai.config import get_settings  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = round(now - self._last, 3)
        self._last = now


def run_mlops(snapshot: str, n_trials: int, search_space: str, clock: Clock) -> dict[str, object]:
    settings = get_settings()
    data_path = steps.extract_features(settings, snapshot)
    clock.lap("extract_features")
    outcome = pipeline.run_mlops(
        settings,
        data_path,
        n_trials=n_trials,
        search_space=search_space,
        tags={"snapshot_id": snapshot, "source": "benchmarks.plain"},
        study_name=snapshot,
        on_step=clock.lap,
    )
    return {
        "version": outcome.trained.version,
        "space": outcome.space,
        "cv_f1": round(outcome.trained.cv.mean, 4),
        "test_f1": round(outcome.evaluation.candidate.f1, 4),
        "deployed": outcome.deployed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plain")
    parser.add_argument("--projects")
    parser.add_argument("--tags")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--space", default="auto")
    parser.add_argument("--skip-dataops", action="store_true", help="mlops on the latest snapshot")
    parser.add_argument("--skip-mlops", action="store_true")
    args = parser.parse_args()
    started = time.time()
    startup = started - psutil.Process().create_time()
    settings = get_settings()
    clock = Clock()
    snapshot = None
    if not args.skip_dataops:
        snapshot = pipeline.run_dataops(
            settings,
            args.projects or str(settings.projects_csv),
            args.tags or str(settings.tags_csv),
            on_step=clock.lap,
        ).snapshot_id
    outcome: dict[str, object] = {}
    if not args.skip_mlops:
        snapshot = snapshot or extract.load_snapshot(settings).id
        outcome = run_mlops(snapshot, args.trials, args.space, clock)
    print(
        json.dumps(
            {
                "startup_seconds": round(startup, 3),
                "module_imports_seconds": round(started - _PROCESS_STARTED, 3),
                "steps": clock.steps,
                "work_seconds": round(time.time() - started, 3),
                "snapshot": snapshot,
                **outcome,
            }
        )
    )


if __name__ == "__main__":
    # Leave as the tagifai command does, so neither side of the comparison pays the
    # interpreter's 2-3 s teardown.
    from tagifai.cli import leave

    main()
    leave(0)
