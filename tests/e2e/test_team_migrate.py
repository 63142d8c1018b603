"""Moving an embedded install to team mode: ``tagifai team migrate`` carries the production model.

An embedded install (SQLite MLflow, Optuna journal, SQLite online store) gets a production
model (v1) and a regressed candidate (v2); after ``make up TEAM=1``'s switch and the migrate
command, team mode serves the same production model: same version, metrics, params and tags,
identical predictions, the studies and the online features; the embedded store is untouched,
and a second migration is refused instead of duplicating versions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deployments.platform import down, up
from tagifai import pipeline, registry, steps, store
from tagifai.config import MODEL_NAME, PRODUCTION_ALIAS, REPO_ROOT, get_settings
from tagifai.migrate import MIGRATED_FROM_TAG
from tests.e2e.test_team import study_trials
from tests.team import team_environment, team_root

pytestmark = [pytest.mark.team, pytest.mark.timeout(900)]

TEXTS = [
    "yolo real time object detection in images and videos",
    "transformers for text classification and named entity recognition",
    "feature store, model registry and ci/cd for machine learning pipelines",
    "a collection of awesome resources",
]


def versions_of(settings) -> list[tuple]:
    found = registry.connect(settings).search_model_versions(f"name='{MODEL_NAME}'")
    return sorted((int(v.version), v.run_id, v.source, v.tags) for v in found)


def migrate_command() -> subprocess.CompletedProcess[str]:
    command = [str(Path(sys.executable).with_name("tagifai")), "team", "migrate"]
    return subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )


def test_migrate_carries_the_production_model_its_studies_and_features() -> None:
    with team_root("tagifai-migrate-") as root, pytest.MonkeyPatch.context() as env:
        env.setenv("TAGIFAI_STORES_DIR", str(root / "stores"))
        for name in ("MLFLOW_TRACKING_URI", "TAGIFAI_OPTUNA_STORAGE", "TAGIFAI_FEAST_CONFIG"):
            env.delenv(name, raising=False)
        embedded = get_settings()
        assert embedded.team is None and embedded.mlflow_tracking_uri.startswith("sqlite:")
        data = pipeline.run_dataops(embedded, str(embedded.projects_csv), str(embedded.tags_csv))
        frame = steps.extract_features(embedded, data.snapshot_id)
        tags = {"snapshot_id": data.snapshot_id}
        first = pipeline.run_mlops(embedded, frame, n_trials=2, tags=tags, study_name="s")
        weak = pipeline.run_mlops(
            embedded, frame, n_trials=2, search_space="weak", tags=tags, study_name="w"
        )
        assert (first.trained.version, first.deployed) == (1, True)
        assert (weak.trained.version, weak.deployed) == (2, False)
        model, before = registry.load_model(embedded)
        probabilities = model.predict_proba(TEXTS)
        embedded_versions = versions_of(embedded)

        team = team_environment(env, root)
        try:
            up(team, ("postgres", "redis"))
            assert registry.get_version(team) is None  # a fresh team registry

            result = migrate_command()
            assert result.returncode == 0, result.stdout + result.stderr
            report = json.loads(result.stdout.strip().splitlines()[-1])
            assert report["versions"] == {"1": 1, "2": 2}
            assert report["aliases"] == {PRODUCTION_ALIAS: 1}
            assert sorted(report["studies"]) == ["s-default", "w-weak"]
            assert report["online_rows"] == 764

            migrated_model, after = registry.load_model(team)
            assert after.version == before.version == 1
            assert after.metrics == before.metrics  # cv, test and per-class F1...
            assert after.tags == before.tags
            team_client, embedded_client = registry.connect(team), registry.connect(embedded)
            team_run, embedded_run = (
                team_client.get_run(after.run_id),
                embedded_client.get_run(before.run_id),
            )
            assert team_run.data.params == embedded_run.data.params
            assert team_run.data.tags[MIGRATED_FROM_TAG] == before.run_id
            artifacts = {a.path for a in team_client.list_artifacts(after.run_id)}
            assert artifacts == {a.path for a in embedded_client.list_artifacts(before.run_id)}
            assert artifacts >= {"model", "evaluation", "monitoring"}
            np.testing.assert_array_equal(migrated_model.predict_proba(TEXTS), probabilities)
            assert list(migrated_model.predict(TEXTS)) == list(model.predict(TEXTS))
            # The regressed candidate came too, still not in production.
            v2 = registry.get_version(team, 2)
            assert v2 is not None and v2.tags.get("decision") == "not deployed"
            aliases = team_client.get_registered_model(MODEL_NAME).aliases
            assert {alias: int(v) for alias, v in aliases.items()} == {PRODUCTION_ALIAS: 1}

            # The study's trials, and the online store refilled on Redis.
            assert len(study_trials(team, "s-default")) == 2
            assert store.count_online_rows(team) == 764
            online = store.get_online_features(team, [6])[0]
            assert online["text"].startswith("comparison between yolo")

            # The embedded store is left as it was; a second run refuses to duplicate.
            assert versions_of(embedded) == embedded_versions
            again = migrate_command()
            assert again.returncode == 1
            assert "already holds tagifai v1..v2" in again.stderr
        finally:
            down(team)
