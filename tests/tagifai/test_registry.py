import pytest

from tagifai import registry
from tagifai.errors import ModelNotFoundError
from tests.conftest import settings_for


def test_production_version_is_registered_with_metrics(trained_stores):
    found = registry.get_version(trained_stores)
    assert found is not None and found.version >= 1
    assert 0.8 < found.metrics["cv_f1_mean"] <= 1.0
    assert 0.8 < found.metrics["test_f1"] <= 1.0
    report = logged_evaluation(trained_stores, found.run_id)
    assert report.f1 == pytest.approx(found.metrics["test_f1"])
    artifacts = trained_stores.mlflow_dir / "artifacts"
    assert artifacts.is_dir()  # artifacts stay under stores/, not ./mlruns
    assert (trained_stores.references_dir / f"v{found.version}.json").exists()


def test_settings_never_leak_into_mlflow_globals(trained_stores, tmp_path):
    """Two stores in one process: each call names its store, nothing is process-wide."""
    import os

    import mlflow

    other = settings_for(tmp_path)
    assert registry.get_version(other) is None
    assert registry.get_version(trained_stores) is not None
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert str(trained_stores.stores_dir) not in mlflow.get_tracking_uri()


def logged_evaluation(settings, run_id):
    import json
    from pathlib import Path

    import mlflow.artifacts

    from tagifai.evaluate import EvaluationReport

    path = mlflow.artifacts.download_artifacts(
        run_id=run_id,
        artifact_path="evaluation/evaluation.json",
        tracking_uri=settings.mlflow_tracking_uri,
    )
    return EvaluationReport.from_dict(json.loads(Path(path).read_text()))


def test_no_model_yet_is_a_clear_error(tmp_path):
    settings = settings_for(tmp_path)
    assert registry.get_version(settings) is None
    with pytest.raises(ModelNotFoundError, match="no production model yet"):
        registry.load_model(settings)


def test_alias_moves_and_reports_previous(trained_stores, shipped_frame):
    from tagifai.steps import train_model
    from tagifai.train import ModelParams

    before = registry.get_version(trained_stores)
    trained = train_model(
        trained_stores, shipped_frame, ModelParams(char_weight=0.0), {"snapshot_id": "test"}
    )
    assert registry.get_version(trained_stores).version == before.version  # not yet deployed
    assert registry.set_production(trained_stores, trained.version) == before.version
    assert registry.get_version(trained_stores).version == trained.version
    assert registry.get_version(trained_stores, trained.version).snapshot_id == "test"
    registry.set_production(trained_stores, before.version)  # leave the fixture as it was
