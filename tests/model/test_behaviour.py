"""Behavioural tests of the trained production model (Ribeiro et al., CheckList)."""

import pytest

from tagifai.predict import predict_project


@pytest.mark.parametrize(
    ("title", "description", "tag"),
    [
        ("Image captioning", "Generate captions for photos with CNN encoders.", "computer-vision"),
        (
            "Face detection in video",
            "Detect and track faces in real-time webcam streams.",
            "computer-vision",
        ),
        (
            "Named entity recognition",
            "Extract entities from text with a BERT tagger.",
            "natural-language-processing",
        ),
        (
            "Machine translation",
            "Translate sentences between languages with seq2seq.",
            "natural-language-processing",
        ),
        ("Model monitoring", "Monitor data drift and model performance in production.", "mlops"),
        ("Graph neural networks", "Node classification on citation graphs with GCNs.", "other"),
    ],
)
def test_minimum_functionality(production_model, title, description, tag):
    assert predict_project(production_model, title, description).tag == tag


@pytest.mark.parametrize(
    ("original", "perturbed"),
    [
        ("Object detection for self-driving cars", "Object detection for autonomous cars"),
        ("Sentiment analysis of tweets", "Sentiment analysis of reviews"),
        ("Serving models with Docker", "Serving models with Kubernetes"),
    ],
)
def test_invariance_to_irrelevant_words(production_model, original, perturbed):
    assert (
        predict_project(production_model, original).tag
        == predict_project(production_model, perturbed).tag
    )


@pytest.mark.parametrize(
    ("base", "addition", "tag"),
    [
        ("A deep learning project", "for image segmentation of medical scans", "computer-vision"),
        (
            "A deep learning project",
            "for text summarization of news articles",
            "natural-language-processing",
        ),
    ],
)
def test_directional(production_model, base, addition, tag):
    before = predict_project(production_model, base).probabilities[tag]
    after = predict_project(production_model, f"{base} {addition}")
    assert after.tag == tag
    assert after.probabilities[tag] > before


def test_built_in_checks_pass(production_model):
    from tagifai.evaluate import behavioural_checks

    failed = [c for c in behavioural_checks(production_model) if not c.passed]
    assert not failed, failed
