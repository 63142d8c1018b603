import pandas as pd
import pytest

from tagifai.errors import DataSourceError
from tagifai.predict import predict_csv, predict_project, predict_texts


def test_predict_project_returns_tag_and_probabilities(production_model):
    prediction = predict_project(
        production_model, "YOLO object detection", "Real-time detection of objects in video frames."
    )
    assert prediction.tag == "computer-vision"
    assert set(prediction.probabilities) == {
        "computer-vision",
        "mlops",
        "natural-language-processing",
        "other",
    }
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-3)
    assert max(prediction.probabilities, key=prediction.probabilities.get) == prediction.tag


def test_batch_matches_single(production_model):
    texts = ["bert for question answering", "kubernetes model serving"]
    batch = predict_texts(production_model, texts)
    assert [p.tag for p in batch] == [predict_texts(production_model, [t])[0].tag for t in texts]


def test_predict_csv_streams_in_chunks(tmp_path, production_model, shipped):
    projects = shipped[0].head(25)[["id", "title", "description"]]
    source = tmp_path / "in.csv"
    projects.to_csv(source, index=False)
    out = tmp_path / "out.csv"
    assert predict_csv(production_model, source, out, chunksize=7) == 25
    result = pd.read_csv(out)
    assert result["id"].tolist() == projects["id"].tolist()
    assert list(result.columns[:2]) == ["id", "tag"]
    assert result.filter(like="p_").sum(axis=1).round(2).eq(1.0).all()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        (b"", "empty"),
        (b"id,title\n1,x\n", r"missing column\(s\) description"),
        (b"id,title,description\n", "no rows"),
        (b"id,title,description\n1,caf\xe9,x\n", "not valid UTF-8"),
    ],
)
def test_predict_csv_rejects_bad_input_and_writes_nothing(
    tmp_path, production_model, content, message
):
    source = tmp_path / "in.csv"
    if content is not None:
        source.write_bytes(content)
    out = tmp_path / "out.csv"
    with pytest.raises(DataSourceError, match=message):
        predict_csv(production_model, source, out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == ([source] if content is not None else [])
