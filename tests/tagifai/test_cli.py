"""The CLI through typer's runner: happy paths and every bad input gets one line, exit 1."""

import json

import pytest
from typer.testing import CliRunner

from deployments.cli import app

runner = CliRunner()


@pytest.fixture
def in_stores(monkeypatch, trained_stores):
    monkeypatch.setenv("TAGIFAI_STORES_DIR", str(trained_stores.stores_dir))
    return trained_stores


@pytest.fixture
def empty_stores(monkeypatch, tmp_path):
    monkeypatch.setenv("TAGIFAI_STORES_DIR", str(tmp_path))
    return tmp_path


def one_line_error(result, fragment):
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "command",
    [
        "train",
        "evaluate",
        "predict",
        "status",
        "dataops",
        "mlops",
        "pipeline",
        "features",
        "synth",
        "monitor",
        "rollback",
        "sensor",
    ],  # fmt: skip
)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_predict_one_text_prints_json(in_stores):
    result = runner.invoke(
        app,
        [
            "predict",
            "--title",
            "Transformers for text classification",
            "--description",
            "Fine-tune BERT on sentiment data.",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["tag"] == "natural-language-processing"
    assert set(payload["probabilities"]) == {
        "computer-vision",
        "mlops",
        "natural-language-processing",
        "other",
    }


def test_predict_csv(in_stores, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text(
        "id,title,description\n1,Pose estimation,Human keypoints in images\n"
        "2,Feature store,Serve features online for models in production\n"
    )
    result = runner.invoke(
        app,
        [
            "predict",
            "--input",
            str(source),
            "--output",
            str(tmp_path / "out.csv"),
            "--chunksize",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0].startswith("id,tag,p_")
    assert lines[1].startswith("1,computer-vision,")
    assert lines[2].startswith("2,mlops,")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "input file not found"),
        (b"", "input file is empty"),
        (b"id,name\n1,x\n", "missing column(s) title, description"),
        (b"id,title,description\n1,\xff\xfe,x\n", "not valid UTF-8"),
    ],
)
def test_predict_bad_input(in_stores, tmp_path, content, fragment):
    source = tmp_path / "in.csv"
    if content is not None:
        source.write_bytes(content)
    result = runner.invoke(
        app, ["predict", "--input", str(source), "--output", str(tmp_path / "out.csv")]
    )
    one_line_error(result, fragment)
    assert not (tmp_path / "out.csv").exists()


def test_predict_without_production_model(empty_stores):
    result = runner.invoke(app, ["predict", "--title", "x"])
    one_line_error(result, "no production model yet")


def test_predict_needs_exactly_one_mode(empty_stores):
    one_line_error(runner.invoke(app, ["predict"]), "give either --title")
    one_line_error(runner.invoke(app, ["predict", "--input", "a.csv"]), "--input needs --output")


def test_status_json(in_stores):
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    state = json.loads(result.stdout)
    assert state["production"]["version"] >= 1
    assert state["production"]["metrics"]["test_f1"] > 0.8
    assert state["last_decision"]["deployed"] is True


def test_status_on_empty_stores_creates_nothing(empty_stores):
    result = runner.invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["production"] is None
    assert list(empty_stores.iterdir()) == []


def test_evaluate_prints_per_class_table(in_stores):
    result = runner.invoke(app, ["evaluate"])
    assert result.exit_code == 0, result.output
    assert "| computer-vision |" in result.stdout
    assert "Behavioural checks" in result.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--projects", "/nonexistent/projects.csv"], "source not found"),
        (["--space", "huge"], "unknown search space"),
    ],
)
def test_train_bad_input(empty_stores, args, fragment):
    one_line_error(runner.invoke(app, ["train", *args]), fragment)
    assert not (empty_stores / "mlflow").exists()


def test_train_from_sqlite_registers_and_deploys(empty_stores, shipped):
    import sqlite3

    db = empty_stores / "warehouse.db"
    with sqlite3.connect(db) as connection:
        shipped[0].to_sql("projects", connection, index=False)
        shipped[1].to_sql("tags", connection, index=False)
    result = runner.invoke(
        app,
        [
            "train",
            "--projects",
            f"sqlite:///{db}#projects",
            "--tags",
            f"sqlite:///{db}#tags",
            "--trials",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "cross-validated weighted F1" in result.stdout
    assert "model version 1: improved -> deployed" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "stream", "fragment"),
    [
        (["--help"], 0, "stdout", "Usage"),
        (["predict"], 1, "stderr", "error: give either --title"),
        (["no-such-command"], 2, "stderr", "No such command"),
    ],
)
def test_console_entry_point_keeps_exit_codes_and_output(tmp_path, args, code, stream, fragment):
    """``main`` leaves through os._exit after the atexit handlers: codes and output survive."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TAGIFAI_STORES_DIR": str(tmp_path / "stores")}
    done = subprocess.run(
        [sys.executable, "-m", "deployments.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == code, done
    assert fragment in getattr(done, stream)


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        ("missing directory", "embedding model directory not found"),
        ("missing model file", "model.onnx"),
        ("corrupt model file", "cannot load ONNX model"),
    ],
)
def test_a_broken_embedding_model_is_one_line_and_trains_nothing(
    empty_stores, tmp_path, monkeypatch, damage, fragment
):
    from tagifai.embeddings import locate_model

    model_dir = tmp_path / "minilm"
    if damage != "missing directory":
        model_dir.mkdir()
        (model_dir / "tokenizer.json").write_bytes(locate_model().tokenizer_path.read_bytes())
    if damage == "corrupt model file":
        (model_dir / "model.onnx").write_bytes(b"\x08\x07 not an onnx graph")
    monkeypatch.setenv("TAGIFAI_EMBEDDING_MODEL_DIR", str(model_dir))
    one_line_error(runner.invoke(app, ["train"]), fragment)
    assert not (empty_stores / "mlflow").exists()
