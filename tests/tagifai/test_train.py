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


@pytest.mark.parametrize(
    ("char_weight", "embedding_weight", "blocks"),
    [
        (0.5, 1.0, ["word", "char", "embedding"]),
        (0.5, 0.0, ["word", "char"]),
        (0.0, 1.0, ["word", "embedding"]),
        (0.0, 0.0, ["word"]),
    ],
)
def test_char_and_embedding_blocks_are_optional(char_weight, embedding_weight, blocks):
    params = ModelParams(char_weight=char_weight, embedding_weight=embedding_weight)
    union = build_pipeline(params).named_steps["features"]
    assert [name for name, _ in union.transformer_list] == blocks
    assert union.transformer_weights["embedding" if embedding_weight else "word"] == (
        embedding_weight or 1.0
    )


def test_params_round_trip_and_reject_unknown():
    params = ModelParams(C=3.0, classifier="logreg")
    assert ModelParams.from_dict(params.to_dict()) == params
    with pytest.raises(ValueError, match="unknown model parameters"):
        ModelParams.from_dict({"C": 1.0, "learning_rate": 0.1})


def test_default_model_beats_scibert_in_repeated_cross_validation(shipped_features):
    """The issue's bar: repeated 5-fold CV weighted F1 >= 0.93 on the shipped data (Made With
    ML's fine-tuned SciBERT: 0.905)."""
    result = cross_validate(shipped_features["text"], shipped_features["tag"], ModelParams())
    assert len(result.scores) == 15  # 5 folds x 3 repeats
    assert result.mean >= 0.93
    assert result.std < 0.05


@pytest.mark.parametrize("char_weight", [0.0, 0.5])
def test_hashing_cv_hashes_each_text_once_and_scores_the_same(
    shipped_features, monkeypatch, char_weight
):
    """Hashing blocks: every text is hashed once for all folds (not once per fold), and each
    fold scores exactly what a fresh pipeline fitted on the fold's texts scores."""
    from sklearn.feature_extraction.text import HashingVectorizer

    from tagifai.train import cv_splits, fold_score, fold_scores

    params = ModelParams(
        vectorizer="hashing",
        classifier="sgd",
        char_weight=char_weight,
        embedding_weight=0.0,
        n_features=2**16,
    )
    texts, labels = shipped_features["text"].tolist(), shipped_features["tag"].tolist()
    splits = cv_splits(labels, folds=5, repeats=2, seed=7)
    expected = [fold_score(params, texts, labels, split) for split in splits]

    hashed_texts: list[int] = []
    transform = HashingVectorizer.transform

    def counting(self, X):
        X = list(X)
        hashed_texts.append(len(X))
        return transform(self, X)

    monkeypatch.setattr(HashingVectorizer, "transform", counting)
    assert list(fold_scores(params, texts, labels, splits)) == expected
    blocks = 2 if char_weight else 1
    assert hashed_texts == [len(texts)] * blocks
