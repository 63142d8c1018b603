"""The work of ``dataops`` + ``mlops`` as plain tagifai calls in one process, no Prefect.

    python -m benchmarks.plain [--projects URI --tags URI] [--trials 20] [--space auto]

The same steps the flows wire, in the same order (the flows' tasks are thin wrappers over
exactly these calls): stage and validate the tables with the three GX suites (whose
checkpoints update Data Docs), publish the snapshot and its features, apply and materialise
Feast, build the
point-in-time training frame, tune (all trials here, sequentially), train, evaluate, and run
the ``decide`` branch. Prints one JSON line: seconds per step, the process's start-up
(interpreter + imports before ``main``) and the outcome.
"""

from __future__ import annotations

import argparse
import json
import time

_PROCESS_STARTED = time.time()

import psutil  # noqa: E402

from tagifai import extract, features, store, tune, validation, workflow  # noqa: E402
from tagifai.config import get_settings  # noqa: E402
from tagifai.evaluate import ImprovementRule, plot_confusion, regression_markdown  # noqa: E402


class Clock:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = round(now - self._last, 3)
        self._last = now


def run_dataops(projects_uri: str, tags_uri: str, clock: Clock) -> str:
    settings = get_settings()
    projects = extract.read_table(projects_uri, "projects")
    tags = extract.read_table(tags_uri, "tags")
    staged = extract.stage_tables(settings, projects, tags)
    clock.lap("extract")
    try:
        reports = [
            validation.validate_table(
                extract.read_parquet(staged.projects_path), "projects", settings
            ),
            *validation.validate_tags_and_join(staged.tags_path, staged.projects_path, settings),
        ]
        # Each checkpoint's UpdateDataDocsAction keeps Data Docs current, as in the flow.
        validation.raise_for_failures(reports)
        clock.lap("validate")
        snapshot = extract.publish_snapshot(
            settings, staged, {"projects": projects_uri, "tags": tags_uri}
        )
        feature_set = features.write_features(settings, snapshot)
        clock.lap("features")
    finally:
        extract.discard_staged(staged)
    store.apply_definitions(settings)
    store.materialize_features(settings, expected_rows=feature_set.rows)
    clock.lap("feature_store")
    return feature_set.snapshot_id


def run_mlops(snapshot: str, n_trials: int, search_space: str, clock: Clock) -> dict[str, object]:
    settings = get_settings()
    rule = ImprovementRule()
    data_path = workflow.build_training_frame(settings, snapshot)
    split = workflow.load_split(data_path, settings.seed)
    clock.lap("extract_features")
    rows = len(split.train) + len(split.val) + len(split.test)
    space = tune.resolve_space(search_space, rows, settings)
    study_name = f"{snapshot}-{space}"
    params = tune.default_params(space)
    if n_trials > 0:
        # Exactly what the flow's tune_batch does, in one batch: the resolved search space and
        # the full train/val split (no max_tune_rows sample, unlike workflow.tune).
        data = tune.TuneData.from_frames(split.train, split.val)
        tune.run_trials(settings, study_name, data, n_trials, space)
        params = tune.summarize_study(settings, study_name).best_params
    clock.lap("tune")
    trained = workflow.train_candidate(
        settings, split, params, {"snapshot_id": snapshot, "source": "benchmarks.plain"}
    )
    clock.lap("train")
    evaluation = workflow.evaluate_candidate(settings, trained.version, split, rule)
    confusion = settings.reports_dir / f"confusion-v{trained.version}.png"
    plot_confusion(evaluation.candidate, confusion)
    clock.lap("evaluate")
    if evaluation.decision.improved:
        workflow.set_monitoring_references(settings, trained.version, split.train_val)
        deployment = workflow.deploy_if_still_better(settings, evaluation, split, rule)
        deployed = deployment.deployed
    else:
        deployed = False
    if not deployed:
        settings.reports_dir.mkdir(parents=True, exist_ok=True)
        (settings.reports_dir / f"regression-v{trained.version}.md").write_text(
            regression_markdown(
                evaluation.candidate,
                evaluation.production,
                evaluation.decision,
                evaluation.candidate_version,
                evaluation.production_version,
            )
        )
    workflow.record_decision(settings, evaluation, deployed=deployed)
    clock.lap("decide")
    return {
        "version": trained.version,
        "space": space,
        "cv_f1": round(trained.cv.mean, 4),
        "test_f1": round(evaluation.candidate.f1, 4),
        "deployed": deployed,
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
        snapshot = run_dataops(
            args.projects or str(settings.projects_csv), args.tags or str(settings.tags_csv), clock
        )
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
