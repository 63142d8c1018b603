import pytest

from tagifai.train import ModelParams, build_pipeline, cross_validate, fit_model


@pytest.mark.parametrize("classifier", ["svm", "logreg", "sgd"])
def test_each_classifier_fits_and_gives_probabilities(shipped_features, classifier):
    params = ModelParams(classifier=classifier, char_weight=0.0)
    model = fit_model(shipped_features["text"], shipped_features["tag"], params)
    probabilities = model.predict_proba(["image classification with convolutional networks"])
    assert probabilities.shape == (1, 4)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-6)


def test_hashing_vectorizer_variant(shipped_features):
    params = ModelParams(vectorizer="hashing", char_weight=0.0, classifier="sgd", n_features=2**16)
    model = fit_model(shipped_features["text"], shipped_features["tag"], params)
    assert model.predict(["semantic segmentation of images"])[0] == "computer-vision"


def test_char_block_is_optional():
    with_char = build_pipeline(ModelParams(char_weight=0.5))
    without = build_pipeline(ModelParams(char_weight=0.0))
    assert [n for n, _ in with_char.named_steps["features"].transformer_list] == ["word", "char"]
    assert [n for n, _ in without.named_steps["features"].transformer_list] == ["word"]


def test_params_round_trip_and_reject_unknown():
    params = ModelParams(C=3.0, classifier="logreg")
    assert ModelParams.from_dict(params.to_dict()) == params
    with pytest.raises(ValueError, match="unknown model parameters"):
        ModelParams.from_dict({"C": 1.0, "learning_rate": 0.1})


def test_default_model_cross_validates_well(shipped_features):
    result = cross_validate(shipped_features["text"], shipped_features["tag"], ModelParams())
    assert len(result.scores) == 5
    assert result.mean > 0.85
    assert result.std < 0.05
