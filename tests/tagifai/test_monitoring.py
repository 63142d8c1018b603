"""Monitoring features, references, and synthetic shifts through the real model and log.

Each scenario predicts with the production model of ``trained_stores`` (trained on the shipped
projects), writes the predictions to a prediction log, reads them back the way the monitor
does (``steps.check_traffic``) and asks the policy: the decision must be the expected one.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tagifai import registry, steps
from tagifai.data import clean_text
from tagifai.features import build_text
from tagifai.monitoring import MonitoringContext, load_context, load_references, text_features
from tagifai.policy import DriftPolicy, decide_action
from tagifai.predict import load_served, predict_batch
from tagifai.predlog import write_batches

OTHER_DOMAIN = (
    "slow cooked beef stew with carrots potatoes and fresh thyme for winter evenings",
    "how to knit a wool scarf with a simple garter stitch pattern for beginners",
    "the history of the roman empire from augustus to the fall of constantinople",
    "best hiking trails in the alps with mountain huts and lake views in summer",
    "a guide to watering succulents and repotting cactus plants indoors",
    "football transfer news and match reports from the premier league weekend",
    "baking sourdough bread at home with a starter flour water and salt",
    "learn to play guitar chords and strumming patterns for folk songs",
    "renovating an old kitchen with new cabinets tiles and lighting fixtures",
    "birdwatching tips for spotting owls hawks and migrating geese in autumn",
)


def test_text_features_count_words_and_unseen_words():
    context = MonitoringContext(vocabulary=frozenset({"object", "detection", "with", "yolo"}))
    features = text_features(["object detection with yolo", "object tracking", ""], context)
    assert features["text_length"].tolist() == [4, 2, 0]
    assert features["unseen_share"].tolist() == [0.0, 0.5, 0.0]
    without = text_features(["object tracking"], MonitoringContext())
    assert np.isnan(without["unseen_share"]).all()  # no vocabulary: not measured


def test_references_are_out_of_fold(trained_stores, production_model, shipped_frame):
    references = load_references(trained_stores, registry.production_version(trained_stores))
    assert references is not None and references["method"].startswith("5-fold out of fold")
    features = references["features"]
    assert set(features) == {"text_length", "unseen_share", "confidence", "embedding_distance"}
    assert len(references["embedding_centroid"]) == 384
    assert references["embedding_model"]["model_id"]
    # Out of fold, some words are new to the model that scores them; on its own training rows
    # every word would be known and the model near certain.
    assert 0.05 < features["unseen_share"]["mean"] < 0.4
    train_val = steps.load_split(shipped_frame, 42).train_val
    in_sample = production_model.predict_proba(train_val["text"].tolist()).max(axis=1).mean()
    assert features["confidence"]["mean"] < in_sample - 0.03
    assert {"yolo", "transformer"} <= set(references["vocabulary"])
    for feature in features.values():
        assert sum(feature["counts"]) == references["rows"]
        assert len(feature["counts"]) == len(feature["edges"]) + 1


@pytest.fixture(scope="module")
def texts(shipped):
    projects, tags = shipped
    labelled = projects.merge(tags, on="id")
    everything = build_text(projects["title"], projects["description"]).tolist()
    vision = labelled[labelled["tag"] == "computer-vision"]
    rng = np.random.default_rng(7)
    return {
        "stable": everything,
        "computer-vision only": build_text(vision["title"], vision["description"]).tolist(),
        "very short texts": [" ".join(text.split()[:2]) for text in everything],
        "another domain": [
            clean_text(f"{rng.choice(OTHER_DOMAIN)} {rng.choice(OTHER_DOMAIN)}") for _ in range(300)
        ],
    }


@pytest.mark.parametrize(
    ("scenario", "action", "signal"),
    [
        ("stable", "continue", None),
        ("computer-vision only", "inspect", "tag"),
        ("very short texts", "inspect", "text_length"),
        ("another domain", "retrain", "unseen_share"),
    ],
)
def test_synthetic_shifts_give_the_expected_decision(
    trained_stores, texts, tmp_path, scenario, action, signal
):
    settings = dataclasses.replace(trained_stores, prediction_log_dir=tmp_path)
    served = load_served(settings)
    now = datetime.now(UTC)
    batches = [
        predict_batch(served, texts[scenario][start : start + 50]).log_batch("test")
        for start in range(0, len(texts[scenario]), 50)
    ]
    write_batches(settings.predictions_dir, batches)

    window = (now - timedelta(hours=1), now + timedelta(minutes=1))
    traffic = steps.check_traffic(settings, served.version, *window)
    decision = decide_action(traffic, None, DriftPolicy())

    assert traffic is not None and traffic.predictions == len(texts[scenario])
    assert decision.action == action, (decision, traffic.rows())
    if signal is not None:
        assert decision.reason.startswith(signal) or signal in decision.reasons[0], decision
    later = steps.check_traffic(
        settings, served.version, now + timedelta(hours=2), now + timedelta(hours=3)
    )
    assert later is not None and later.predictions == 0  # outside the window: not counted


@pytest.mark.parametrize(
    ("scenario", "moved"),
    [("stable", False), ("computer-vision only", False), ("another domain", True)],
)
def test_embedding_distance_moves_with_meaning(trained_stores, texts, tmp_path, scenario, moved):
    """Texts of another domain sit far from the training texts' mean embedding; the shipped
    texts and one of their own tags do not. An inspect-only signal: it never retrains."""
    settings = dataclasses.replace(trained_stores, prediction_log_dir=tmp_path)
    served = load_served(settings)
    assert served.context.centroid is not None and served.context.encoder is not None
    now = datetime.now(UTC)
    write_batches(settings.predictions_dir, [predict_batch(served, texts[scenario]).log_batch("t")])
    window = (now - timedelta(hours=1), now + timedelta(minutes=1))
    traffic = steps.check_traffic(settings, served.version, *window)
    drift = traffic.get("embedding_distance")
    assert drift is not None and drift.n == len(texts[scenario])
    means = f"{drift.reference_mean:.3f} -> {drift.current_mean:.3f}"
    print(f"{scenario}: embedding_distance PSI {drift.psi:.3f}, mean {means}")
    assert (drift.psi >= DriftPolicy().retrain_psi) is moved, drift
    assert (drift.current_mean > drift.reference_mean + 0.1) is moved, drift
    assert not drift.learnable


def test_a_model_without_embeddings_logs_no_embedding_distance(trained_stores):
    from tagifai.train import ModelParams, embedding_block, fit_model

    texts = ["object detection", "image segmentation", "language model", "text summarization"]
    labels = ["computer-vision", "computer-vision", "nlp", "nlp"]
    model = fit_model(texts, labels, ModelParams(embedding_weight=0.0, classifier="logreg"))
    assert embedding_block(model) is None
    version = registry.production_version(trained_stores)
    context = load_context(trained_stores, version, model)
    assert context.vocabulary and context.centroid is None
    assert np.isnan(text_features(["object detection"], context)["embedding_distance"]).all()
