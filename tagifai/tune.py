"""Hyperparameter search with Optuna, scored on the validation split only.

The study lives in shared storage (a journal file under ``stores/optuna`` by default, an RDB
URL from ``TAGIFAI_OPTUNA_STORAGE`` for a team), so several processes can each run a batch of
trials against the same study at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from tagifai.config import SEARCH_SPACES, SEED, Settings
from tagifai.data import sample_rows
from tagifai.train import ModelInput, ModelParams, cv_splits, fold_scores, inputs_of

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

SearchSpace = Literal["default", "weak", "scale"]
# Every trial is scored on repeated stratified k-fold CV of train+val.
CV_FOLDS = 5
CV_REPEATS = 3


# The untuned baseline (ModelParams()), as the first trial of every new default study: tuning
# can only beat it.
BASELINE_TRIAL: dict[str, Any] = {
    "embedding_weight": 1.0,
    "char_weight": 0.0,
    "word_ngram_max": 2,
    "char_ngram_min": 2,
    "char_ngram_max": 5,
    "min_df": 1,
    "classifier": "svm",
    "C": 0.5,
    "class_weight": "balanced",
}


def resolve_space(space: str, n_rows: int, settings: Settings) -> SearchSpace:
    """``auto`` is the TF-IDF space up to ``settings.scale_rows`` rows, hashing + SGD beyond."""
    if space not in SEARCH_SPACES:
        raise ValueError(f"unknown search space {space!r}: use one of {', '.join(SEARCH_SPACES)}")
    if space == "auto":
        return "default" if n_rows <= settings.scale_rows else "scale"
    return space  # type: ignore[return-value]


def default_params(space: SearchSpace) -> ModelParams:
    """What an untuned run fits: the TF-IDF baseline, or hashing + SGD at scale."""
    if space == "scale":
        return ModelParams(
            vectorizer="hashing", char_weight=0.0, embedding_weight=0.0, classifier="sgd", C=1.0
        )
    return ModelParams()


def suggest_params(trial: optuna.Trial, space: SearchSpace = "default") -> ModelParams:
    """Sample one configuration from a named search space.

    ``weak`` is deliberately poor (word unigrams, heavy regularisation): it exists to prove
    that a regressed candidate never reaches production.
    """
    if space == "weak":
        return ModelParams(
            word_ngram_max=1,
            char_weight=0.0,
            embedding_weight=0.0,
            min_df=trial.suggest_int("min_df", 8, 15),
            classifier="sgd",
            C=trial.suggest_float("C", 1e-4, 1e-3, log=True),
            class_weight=None,
        )
    if space == "scale":
        return ModelParams(
            vectorizer="hashing",
            word_ngram_max=trial.suggest_int("word_ngram_max", 1, 2),
            char_weight=0.0,
            embedding_weight=0.0,
            classifier="sgd",
            C=trial.suggest_float("C", 0.05, 20.0, log=True),
            class_weight=trial.suggest_categorical("class_weight", ["balanced", None]),
        )
    # Weights below 0.1 turn a block off: the space holds models with and without each block.
    embedding_weight = trial.suggest_float("embedding_weight", 0.0, 2.0)
    char_weight = trial.suggest_float("char_weight", 0.0, 1.5)
    return ModelParams(
        word_ngram_max=trial.suggest_int("word_ngram_max", 1, 3),
        char_ngram_min=trial.suggest_int("char_ngram_min", 1, 3),
        char_ngram_max=trial.suggest_int("char_ngram_max", 3, 6),
        char_weight=0.0 if char_weight < 0.1 else char_weight,
        embedding_weight=0.0 if embedding_weight < 0.1 else embedding_weight,
        min_df=trial.suggest_int("min_df", 1, 3),
        classifier=trial.suggest_categorical("classifier", ["svm", "logreg", "sgd"]),
        C=trial.suggest_float("C", 0.05, 50.0, log=True),
        class_weight=trial.suggest_categorical("class_weight", ["balanced", None]),
    )


@dataclass(frozen=True)
class TuneData:
    """What a trial needs: train+val inputs and labels (never the test split) and the
    repeated stratified folds every trial is scored on.

    Inputs are texts, or :func:`tagifai.train.model_input` frames when the features carry
    precomputed ``embedding`` vectors.
    """

    X: ModelInput
    y: list[str]
    splits: tuple[Any, ...]

    @classmethod
    def from_frame(
        cls,
        train_val: pd.DataFrame,
        max_rows: int | None = None,
        folds: int = CV_FOLDS,
        repeats: int = CV_REPEATS,
        seed: int = SEED,
    ) -> TuneData:
        """Train+val inputs (a stratified sample past ``max_rows``) and their folds."""
        if max_rows is not None:
            train_val = sample_rows(train_val, max_rows, seed)
        labels = train_val["tag"].tolist()
        return cls(inputs_of(train_val), labels, tuple(cv_splits(labels, folds, repeats, seed)))


def objective(trial: optuna.Trial, data: TuneData, space: SearchSpace = "default") -> float:
    """Mean weighted F1 over repeated stratified k-fold CV on train+val: what the search
    selects on (one validation split of ~115 rows picks noise). The running mean is reported
    after every fold, so a clearly weak trial is pruned after a few fits."""
    import optuna

    params = suggest_params(trial, space)
    trial.set_user_attr("params", params.to_dict())
    scores: list[float] = []
    for step, score in enumerate(fold_scores(params, data.X, data.y, data.splits)):
        scores.append(score)
        trial.report(float(np.mean(scores)), step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    trial.set_user_attr("cv_std", float(np.std(scores)))
    return float(np.mean(scores))


def get_storage(settings: Settings) -> Any:
    """The study's shared storage: an RDB URL if configured, else a journal file."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if settings.optuna_storage:
        return optuna.storages.RDBStorage(settings.optuna_storage)
    settings.optuna_journal.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(settings.optuna_journal)))


def load_study(
    settings: Settings, study_name: str, seed: int = SEED, prune: bool = True
) -> optuna.Study:
    """Create (or reopen) the named study: maximise, TPE sampler, median pruner (or none)."""
    import optuna

    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)
        if prune
        else optuna.pruners.NopPruner()
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=study_name,
        storage=get_storage(settings),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=8),
        pruner=pruner,
        load_if_exists=True,
    )


@dataclass(frozen=True)
class BatchResult:
    """What one batch of trials did."""

    completed: int
    pruned: int
    best_value: float | None


def run_trials(
    settings: Settings,
    study_name: str,
    data: TuneData,
    n_trials: int,
    space: SearchSpace = "default",
    seed: int = SEED,
    on_trial: Callable[[int, float | None], None] | None = None,
    run_id: str | None = None,
    prune: bool = True,
) -> BatchResult:
    """Run trials against the shared study (one call per parallel worker).

    Without ``run_id`` this call runs exactly ``n_trials``. With it, every call that shares the
    ``run_id`` draws from one pool of ``n_trials``: each worker keeps taking the next trial until
    the run has claimed them all, so a worker that draws cheap (pruned) trials takes more of
    them and the batches finish together, where fixed shares would leave one worker idle while
    the other finishes. Two workers that claim the last trial at the same instant can both run
    it: the run then has one trial more, never fewer. ``prune=False`` trains every trial on
    every rung (the same work whatever the order; the benchmarks use it).
    """
    import optuna

    study = load_study(settings, study_name, seed, prune)
    if space == "default" and not study.trials:
        study.enqueue_trial(BASELINE_TRIAL)
    done = {"completed": 0, "pruned": 0}

    def claimed() -> int:
        return sum(
            1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("run_id") == run_id
        )

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        key = "pruned" if trial.state == optuna.trial.TrialState.PRUNED else "completed"
        done[key] += 1
        logger.info("trial %d %s value=%s", trial.number, trial.state.name, trial.value)
        if on_trial is not None:
            on_trial(done["completed"] + done["pruned"], trial.value)
        if run_id is not None and claimed() >= n_trials:
            study.stop()

    def run_objective(trial: optuna.Trial) -> float:
        if run_id is not None:
            trial.set_user_attr("run_id", run_id)  # claims the trial before any work
        return objective(trial, data, space)

    if run_id is None or claimed() < n_trials:
        study.optimize(run_objective, n_trials=n_trials, callbacks=[callback])
    best = _best_value(study)
    return BatchResult(completed=done["completed"], pruned=done["pruned"], best_value=best)


def _best_value(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:
        return None


@dataclass(frozen=True)
class TuneSummary:
    """The study's outcome: best configuration, its validation F1 and parameter importances."""

    study_name: str
    best_params: ModelParams
    best_value: float
    n_trials: int
    n_pruned: int
    importances: dict[str, float]


def summarize_study(settings: Settings, study_name: str) -> TuneSummary:
    """Best trial and fANOVA parameter importances of the whole study."""
    import optuna

    study = load_study(settings, study_name)
    states = [t.state for t in study.trials]
    try:
        importances = {
            k: float(v) for k, v in optuna.importance.get_param_importances(study).items()
        }
    except (RuntimeError, ValueError, ZeroDivisionError) as error:  # too few distinct trials
        logger.info("no parameter importances: %s", error)
        importances = {}
    best = study.best_trial
    return TuneSummary(
        study_name=study_name,
        best_params=ModelParams.from_dict(best.user_attrs["params"]),
        best_value=float(best.value),
        n_trials=len(states),
        n_pruned=states.count(optuna.trial.TrialState.PRUNED),
        importances=importances,
    )
