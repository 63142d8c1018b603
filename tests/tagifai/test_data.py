import pandas as pd
import pytest

from tagifai.config import LABELS
from tagifai.data import clean_text, join_labelled, map_label, split_data


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Hello, World!", "hello world"),
        ("See https://github.com/x/y for code", "see for code"),
        ("  YOLOv5:   real-time\tdetection\n", "yolov5 real time detection"),
        ("", ""),
        (None, ""),
        ("C++ & CUDA kernels", "c cuda kernels"),
    ],
)
def test_clean_text(raw, clean):
    assert clean_text(raw) == clean


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("computer-vision", "computer-vision"),
        ("natural-language-processing", "natural-language-processing"),
        ("mlops", "mlops"),
        ("MLOps ", "mlops"),
        ("reinforcement-learning", "other"),
        ("graph-learning", "other"),
        ("time-series", "other"),
        ("quantum-computing", "other"),  # never seen before
        ("other", "other"),
    ],
)
def test_map_label(raw, label):
    assert map_label(raw) == label
    assert map_label(raw) in LABELS


def test_join_labelled_keeps_only_tagged_projects():
    projects = pd.DataFrame(
        {
            "id": [3, 1, 2],
            "created_on": ["a", "b", "c"],
            "title": ["t3", "t1", "t2"],
            "description": ["d", "d", "d"],
        }
    )
    tags = pd.DataFrame({"id": [1, 3], "tag": ["mlops", "computer-vision"]})
    joined = join_labelled(projects, tags)
    assert joined["id"].tolist() == [1, 3]
    assert joined["tag"].tolist() == ["mlops", "computer-vision"]


def test_join_labelled_rejects_duplicate_tags():
    projects = pd.DataFrame({"id": [1], "created_on": ["a"], "title": ["t"], "description": ["d"]})
    tags = pd.DataFrame({"id": [1, 1], "tag": ["mlops", "other"]})
    with pytest.raises(pd.errors.MergeError):
        join_labelled(projects, tags)


def test_split_is_disjoint_stratified_and_deterministic(shipped_features):
    split = split_data(shipped_features, seed=7)
    ids = [set(part["id"]) for part in (split.train, split.val, split.test)]
    assert not ids[0] & ids[1] and not ids[0] & ids[2] and not ids[1] & ids[2]
    assert sum(map(len, ids)) == len(shipped_features)
    assert abs(len(split.test) - 0.15 * len(shipped_features)) <= 1
    overall = shipped_features["tag"].value_counts(normalize=True)
    for part in (split.train, split.val, split.test):
        share = part["tag"].value_counts(normalize=True)
        assert (share - overall).abs().max() < 0.02
    shuffled = shipped_features.sample(frac=1, random_state=1)
    again = split_data(shuffled, seed=7)
    assert again.test["id"].tolist() == split.test["id"].tolist()
    assert split_data(shipped_features, seed=8).test["id"].tolist() != split.test["id"].tolist()


@pytest.mark.parametrize(("test_size", "val_size"), [(0, 0.1), (0.5, 0.5), (1.2, 0.1)])
def test_split_rejects_bad_sizes(shipped_features, test_size, val_size):
    with pytest.raises(ValueError):
        split_data(shipped_features, test_size=test_size, val_size=val_size)


def test_sample_rows_is_stratified_and_deterministic(shipped_features):
    from tagifai.data import sample_rows

    sample = sample_rows(shipped_features, 200, seed=3)
    assert len(sample) == 200
    assert sample["id"].tolist() == sample_rows(shipped_features, 200, seed=3)["id"].tolist()
    share = sample["tag"].value_counts(normalize=True)
    overall = shipped_features["tag"].value_counts(normalize=True)
    assert (share - overall).abs().max() < 0.02
    assert sample_rows(shipped_features, 10_000) is shipped_features
