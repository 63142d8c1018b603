"""The prediction service in-process (Starlette's test client over the real app and model):
predictions, logging, hot swap when the alias moves, and every bad request a 4xx that changes
nothing. ``tests/e2e/test_monitoring.py`` runs it under uvicorn on the platform."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from deployments.serve import create_app
from tagifai import registry
from tagifai.config import Settings

PROJECT = {"title": "YOLO object detection", "description": "real-time detection in images"}


def logged_rows(directory: Path) -> int:
    return sum(pq.read_metadata(path).num_rows for path in directory.rglob("*.parquet"))


@pytest.fixture
def settings(trained_stores: Settings, tmp_path: Path) -> Settings:
    return dataclasses.replace(
        trained_stores,
        prediction_log_dir=tmp_path / "predictions",
        prediction_log_flush_seconds=0.2,
        predict_max_batch=8,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, reload_seconds=0.2)) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").json()["model_version"] is None:
            assert time.monotonic() < deadline, client.get("/health").json()
            time.sleep(0.1)
        yield client


def test_health_names_the_production_version(client, settings):
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["model_version"] == registry.production_version(settings)
    assert health["prediction_log"]["directory"] == str(settings.predictions_dir)


def test_one_project_and_a_batch_are_predicted_and_logged(client, settings):
    one = client.post("/predict", json=PROJECT)
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["tag"] == "computer-vision"
    assert body["model_version"] == registry.production_version(settings)
    assert body["confidence"] == max(body["probabilities"].values())
    projects = [{"id": i, **PROJECT} for i in range(3)] + [
        {"id": "nlp", "title": "BERT for named entity recognition", "description": ""}
    ]
    batch = client.post("/predict", json={"projects": projects})
    assert batch.status_code == 200, batch.text
    predictions = batch.json()["predictions"]
    assert [p["id"] for p in predictions] == [0, 1, 2, "nlp"]
    assert predictions[-1]["tag"] == "natural-language-processing"

    deadline = time.monotonic() + 10
    while logged_rows(settings.predictions_dir) < 5:
        assert time.monotonic() < deadline, "predictions were not logged"
        time.sleep(0.05)
    [table] = [pq.read_table(p) for p in settings.predictions_dir.rglob("*.parquet")][:1]
    assert set(table.column_names) >= {"at", "model_version", "tag", "confidence", "unseen_share"}
    assert table["source"][0].as_py() == "service"


def bad_requests() -> dict[str, tuple[bytes | None, dict[str, str], int, str]]:
    """name -> (body, headers, expected status, fragment of the reason)."""

    def body(value: object) -> bytes:
        return json.dumps(value).encode()

    return {
        "not JSON": (b'{"title": "x",', {}, 400, "not valid JSON"),
        "not an object": (body(["a list"]), {}, 400, "JSON object"),
        "no title": (body({"description": "d"}), {}, 422, "title"),
        "empty title": (body({"title": ""}), {}, 422, "title"),
        "title of no words": (body({"title": "!!! ???"}), {}, 422, "no words"),
        "title not a string": (body({"title": 42}), {}, 422, "title"),
        "unknown field": (body({**PROJECT, "text": "x"}), {}, 422, "unknown field 'text'"),
        "title too long": (body({"title": "a " * 600}), {}, 422, "title"),
        "empty batch": (body({"projects": []}), {}, 422, "projects"),
        "batch over the limit": (body({"projects": [PROJECT] * 9}), {}, 422, "at most 8"),
        "bad project in a batch": (
            body({"projects": [PROJECT, {"title": None}]}),
            {},
            422,
            "projects.1.title",
        ),
        "body too large": (b"x" * (8 * 16 * 1024 + 1), {}, 413, "larger than"),
        "declared too large": (body(PROJECT), {"content-length": "999999999"}, 413, "larger"),
    }


@pytest.mark.parametrize("name", list(bad_requests()))
def test_bad_requests_get_a_4xx_with_one_line_and_log_nothing(client, settings, name):
    payload, headers, status, fragment = bad_requests()[name]
    response = client.post(
        "/predict", content=payload, headers={"content-type": "application/json", **headers}
    )
    assert response.status_code == status, response.text
    reason = response.json()["error"]
    assert fragment in reason and "\n" not in reason
    time.sleep(0.3)  # longer than the log's flush interval
    assert not settings.predictions_dir.exists() or logged_rows(settings.predictions_dir) == 0


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/predict", 405), ("GET", "/x", 404)]
)
def test_wrong_routes_get_json_errors(client, method, path, status):
    response = client.request(method, path)
    assert response.status_code == status and "error" in response.json()


def test_the_service_swaps_to_a_new_production_version_without_a_restart(settings, tmp_path):
    import shutil

    from tests.conftest import settings_for

    shutil.copytree(settings.stores_dir, tmp_path / "copy")
    copy = dataclasses.replace(
        settings_for(tmp_path / "copy"), prediction_log_dir=settings.predictions_dir
    )
    served = registry.production_version(copy)
    model, _ = registry.load_model(copy, served)
    other = registry.log_training(copy, model, {}, {}, {"source": "tests"}).version
    shutil.copy(copy.references_dir / f"v{served}.json", copy.references_dir / f"v{other}.json")
    with TestClient(create_app(copy, reload_seconds=0.2)) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").json()["model_version"] != served:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        registry.set_production(copy, other)
        deadline = time.monotonic() + 30
        while client.get("/health").json()["model_version"] != other:
            assert time.monotonic() < deadline, "the service did not pick up the new version"
            time.sleep(0.1)
        assert client.post("/predict", json=PROJECT).json()["model_version"] == other


def test_without_a_production_model_predict_answers_503_and_health_says_so(tmp_path):
    from tests.conftest import settings_for

    empty = settings_for(tmp_path / "empty")
    with TestClient(create_app(empty, reload_seconds=0.2)) as client:
        time.sleep(0.5)
        health = client.get("/health").json()
        assert (health["status"], health["model_version"]) == ("no production model", None)
        response = client.post("/predict", json=PROJECT)
        assert response.status_code == 503 and "no production model" in response.json()["error"]


def test_logging_off_logs_nothing(settings, tmp_path):
    quiet = dataclasses.replace(settings, prediction_log=False)
    with TestClient(create_app(quiet, reload_seconds=0.2)) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").json()["model_version"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert client.post("/predict", json=PROJECT).status_code == 200
        assert client.get("/health").json()["prediction_log"] is None
    assert not quiet.predictions_dir.exists()
