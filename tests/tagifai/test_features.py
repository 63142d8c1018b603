from datetime import UTC, datetime

import pandas as pd

from tagifai.features import FEATURE_COLUMNS, compute_features


def test_compute_features_cleans_maps_and_stamps_utc():
    labelled = pd.DataFrame(
        {
            "id": [1, 2],
            "created_on": ["2020-02-20 06:43:18", "2020-03-01 00:00:00"],
            "title": ["Graph Nets!", "BERT"],
            "description": ["See https://x.y now", "NLP"],
            "tag": ["graph-learning", "natural-language-processing"],
        }
    )
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    features = compute_features(labelled, computed_at=at)
    assert tuple(features.columns) == FEATURE_COLUMNS
    assert features["text"].tolist() == ["graph nets see now", "bert nlp"]
    assert features["tag"].tolist() == ["other", "natural-language-processing"]
    assert str(features["created_on"].dt.tz) == "UTC"
    assert features["created_on"].iloc[0] == pd.Timestamp("2020-02-20 06:43:18", tz="UTC")
    assert (features["feature_created_at"] == pd.Timestamp(at)).all()


def test_compute_features_accepts_datetimes(shipped_features):
    assert len(shipped_features) == 764
    assert shipped_features["id"].is_unique
    assert set(shipped_features["tag"]) == {
        "computer-vision",
        "mlops",
        "natural-language-processing",
        "other",
    }
    naive = pd.DataFrame(
        {
            "id": [1],
            "created_on": [pd.Timestamp("2020-01-01 12:00")],
            "title": ["a"],
            "description": ["b"],
            "tag": ["mlops"],
        }
    )
    assert compute_features(naive)["created_on"].iloc[0] == pd.Timestamp(
        "2020-01-01 12:00", tz="UTC"
    )
