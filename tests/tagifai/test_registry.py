import pytest

from tagifai import registry
from tagifai.errors import ModelNotFoundError
from tests.conftest import settings_for


def test_production_version_is_registered_with_metrics(trained_stores):
    found = registry.get_version(trained_stores)
    assert found is not None and found.version >= 1
    assert 0.8 < found.metrics["cv_f1_mean"] <= 1.0
    assert 0.8 < found.metrics["test_f1"] <= 1.0
    report = registry.load_report(trained_stores, found.run_id)
    assert report.f1 == pytest.approx(found.metrics["test_f1"])
    artifacts = trained_stores.mlflow_dir / "artifacts"
    assert artifacts.is_dir()  # artifacts stay under stores/, not ./mlruns
    assert (trained_stores.references_dir / f"v{found.version}.json").exists()


def test_no_model_yet_is_a_clear_error(tmp_path):
    settings = settings_for(tmp_path)
    assert registry.get_version(settings) is None
    with pytest.raises(ModelNotFoundError, match="no production model yet"):
        registry.load_model(settings)


def test_alias_moves_and_reports_previous(trained_stores, shipped_features):
    from tagifai.data import split_data
    from tagifai.train import ModelParams
    from tagifai.workflow import train_candidate

    before = registry.get_version(trained_stores)
    trained = train_candidate(
        trained_stores,
        split_data(shipped_features),
        ModelParams(char_weight=0.0),
        {"snapshot_id": "test"},
    )
    assert registry.get_version(trained_stores).version == before.version  # not yet deployed
    assert registry.set_production(trained_stores, trained.version) == before.version
    assert registry.get_version(trained_stores).version == trained.version
    assert registry.get_version(trained_stores, trained.version).snapshot_id == "test"
    registry.set_production(trained_stores, before.version)  # leave the fixture as it was
