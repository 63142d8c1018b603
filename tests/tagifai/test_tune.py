import optuna
import pytest

from tagifai.data import split_data
from tagifai.train import ModelParams
from tagifai.tune import TuneData, run_trials, suggest_params, summarize_study
from tests.conftest import settings_for


@pytest.fixture(scope="module")
def tune_data(shipped_features):
    split = split_data(shipped_features)
    return TuneData.from_frame(split.train_val, repeats=1)


def sample_space(space: str, n: int = 200) -> list[ModelParams]:
    """``n`` configurations drawn at random from a named space (nothing is trained)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    return [suggest_params(study.ask(), space) for _ in range(n)]


def test_default_space_searches_tfidf_blocks_classifiers_and_regularisation():
    drawn = sample_space("default")
    assert {p.vectorizer for p in drawn} == {"tfidf"}
    assert {p.classifier for p in drawn} == {"svm", "logreg", "sgd"}
    assert {p.word_ngram_max for p in drawn} == {1, 2, 3}
    assert {p.class_weight for p in drawn} == {"balanced", None}
    assert any(p.char_weight == 0 for p in drawn) and max(p.char_weight for p in drawn) > 1
    assert all(p.char_ngram_min <= p.char_ngram_max for p in drawn)
    assert min(p.C for p in drawn) < 0.2 and max(p.C for p in drawn) > 10


def test_weak_space_is_unigrams_and_heavy_regularisation_only():
    drawn = sample_space("weak")
    assert {(p.word_ngram_max, p.char_weight, p.classifier, p.class_weight) for p in drawn} == {
        (1, 0.0, "sgd", None)
    }
    assert all(8 <= p.min_df <= 15 and p.C <= 1e-3 for p in drawn)


def test_scale_space_is_hashing_and_sgd_only():
    drawn = sample_space("scale")
    assert {(p.vectorizer, p.char_weight, p.classifier) for p in drawn} == {("hashing", 0.0, "sgd")}
    assert {p.word_ngram_max for p in drawn} == {1, 2}
    assert {p.class_weight for p in drawn} == {"balanced", None}


def test_baseline_trial_is_the_default_model():
    from tagifai.tune import BASELINE_TRIAL

    study = optuna.create_study()
    study.enqueue_trial(BASELINE_TRIAL)
    assert suggest_params(study.ask(), "default") == ModelParams()
    assert ModelParams().embedding_weight > 0


@pytest.mark.parametrize("space", ["weak", "scale"])
def test_weak_and_scale_spaces_never_embed(space):
    from tagifai.tune import default_params

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert all(suggest_params(study.ask(), space).embedding_weight == 0 for _ in range(20))
    assert default_params("scale").embedding_weight == 0


def test_study_is_shared_and_persisted(tmp_path, tune_data):
    settings = settings_for(tmp_path)
    seen = []
    first = run_trials(settings, "s1", tune_data, 4, on_trial=lambda n, v: seen.append(n))
    second = run_trials(settings, "s1", tune_data, 3)
    assert first.completed + first.pruned == 4 and seen == [1, 2, 3, 4]
    assert second.completed + second.pruned == 3
    summary = summarize_study(settings, "s1")
    assert summary.n_trials == 7
    assert 0.5 < summary.best_value <= 1.0
    assert isinstance(summary.best_params, ModelParams)
    assert settings.optuna_journal.exists()


def test_batches_of_one_run_share_one_pool_of_trials(tmp_path, tune_data):
    """Two workers with the same run id take trials from one pool until it is used up."""
    from concurrent.futures import ThreadPoolExecutor

    settings = settings_for(tmp_path)
    run_trials(settings, "pool", tune_data, 2)  # an earlier run's trials do not count
    with ThreadPoolExecutor(2) as pool:
        batches = list(
            pool.map(
                lambda seed: run_trials(settings, "pool", tune_data, 6, seed=seed, run_id="r1"),
                (1, 2),
            )
        )
    ran = sum(b.completed + b.pruned for b in batches)
    assert 6 <= ran <= 7  # a simultaneous claim of the last trial may add one, never lose one
    assert all(b.completed + b.pruned >= 1 for b in batches)
    assert summarize_study(settings, "pool").n_trials == 2 + ran
    late = run_trials(settings, "pool", tune_data, 6, run_id="r1")  # the pool is used up
    assert late.completed + late.pruned == 0


def test_weak_space_scores_clearly_worse(tmp_path, tune_data):
    settings = settings_for(tmp_path)
    run_trials(settings, "weak", tune_data, 3, space="weak")
    run_trials(settings, "good", tune_data, 3, space="default")
    weak, good = summarize_study(settings, "weak"), summarize_study(settings, "good")
    assert weak.best_value < good.best_value - 0.1


def test_auto_space_switches_to_hashing_at_scale(tmp_path):
    from tagifai.tune import default_params, resolve_space

    settings = settings_for(tmp_path)
    assert resolve_space("auto", 764, settings) == "default"
    assert resolve_space("auto", settings.scale_rows + 1, settings) == "scale"
    assert resolve_space("weak", 10**7, settings) == "weak"
    assert default_params("scale").vectorizer == "hashing"
    assert default_params("default") == ModelParams()
    with pytest.raises(ValueError, match="unknown search space"):
        resolve_space("huge", 10, settings)


def test_tuning_data_is_sampled_past_the_limit(shipped_features):
    split = split_data(shipped_features)
    data = TuneData.from_frame(split.train_val, max_rows=100)
    assert len(data.X) == len(data.y) == 100
    assert set(data.y) == set(split.train["tag"])  # stratified: every class kept


def test_trials_are_scored_on_repeated_folds_of_train_and_val_only(shipped_features):
    split = split_data(shipped_features)
    data = TuneData.from_frame(split.train_val, repeats=3)
    assert len(data.splits) == 15  # 5 folds x 3 repeats
    test_rows = [tuple(sorted(test)) for _, test in data.splits]
    assert len(set(test_rows)) == 15  # every repeat reshuffles
    for repeat in range(3):  # each repeat's test folds cover train+val once
        folds = data.splits[repeat * 5 : repeat * 5 + 5]
        covered = sorted(i for _, test in folds for i in test)
        assert covered == list(range(len(split.train_val)))
    texts = set(split.test["text"])
    assert not texts & set(data.X if isinstance(data.X, list) else data.X["text"])
