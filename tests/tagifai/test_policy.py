"""The monitor's policy: a table of measurements and the action each one must give."""

from __future__ import annotations

import pytest

from tagifai.drift import FeatureDrift, TrafficDrift
from tagifai.monitoring import feature_spec
from tagifai.policy import DriftPolicy, LabelledCheck, decide_action

REFERENCE_MEANS = {"text_length": 21.0, "unseen_share": 0.15, "confidence": 0.86}


def feature(name: str, psi: float = 0.01, mean: float | None = None) -> FeatureDrift:
    """A drift-table row; ``mean`` is the current mean (default: the reference's)."""
    if name == "tag":
        return FeatureDrift(
            "tag", "chi2", 0.0, 1.0, psi, 500, None, None, "either", False, (), (), ()
        )
    spec = feature_spec(name)
    reference = REFERENCE_MEANS[name]
    current = reference if mean is None else mean
    return FeatureDrift(
        name, "KS", 0.0, 1.0, psi, 500, reference, current, spec.worse, spec.learnable, (), (), ()
    )


def traffic(predictions: int = 500, **shifts: tuple[float, float | None]) -> TrafficDrift:
    """Traffic of v3 where ``name=(psi, current mean)`` shifts a feature."""
    features = [feature("tag", shifts.get("tag", (0.01, None))[0])]
    for name in REFERENCE_MEANS:
        psi, mean = shifts.get(name, (0.01, None))
        features.append(feature(name, psi, mean))
    return TrafficDrift(3, predictions, tuple(features))


def labels(rows: int = 80, f1: float = 0.88, previous: float | None = None) -> LabelledCheck:
    return LabelledCheck(
        rows=rows,
        production_version=3,
        production_f1=f1,
        production_accuracy=f1,
        reference_f1=0.90,
        previous_version=2 if previous is not None else None,
        previous_f1=previous,
    )


CASES = {
    # name: (traffic, labelled, retrain_requested, expected action, fragment of the reason)
    "nothing to judge": (None, None, False, "continue", "too little to judge"),
    "too few predictions, however drifted": (
        traffic(50, unseen_share=(3.0, 0.6)),
        None,
        False,
        "continue",
        "50 predictions (< 200)",
    ),
    "stable traffic": (traffic(), None, False, "continue", "no drift above the thresholds"),
    "stable traffic and new labels scored as on the test split": (
        traffic(),
        labels(),
        False,
        "continue",
        "F1 0.880 on 80 new labels",
    ),
    "another mix of predicted tags": (
        traffic(tag=(1.5, None)),
        None,
        False,
        "inspect",
        "tag PSI 1.50",
    ),
    "shorter texts": (
        traffic(text_length=(4.0, 2.0)),
        None,
        False,
        "inspect",
        "text_length PSI 4.00",
    ),
    "longer texts count too (two-sided)": (
        traffic(text_length=(0.3, 60.0)),
        None,
        False,
        "inspect",
        "text_length",
    ),
    "lower confidence on known words": (
        traffic(confidence=(0.6, 0.70)),
        None,
        False,
        "inspect",
        "confidence PSI 0.60",
    ),
    "higher confidence is no harm": (traffic(confidence=(1.5, 0.97)), None, False, "continue", ""),
    "fewer unseen words is no harm": (
        traffic(unseen_share=(3.0, 0.02)),
        None,
        False,
        "continue",
        "",
    ),
    "some unseen words: moderate": (
        traffic(unseen_share=(0.15, 0.2)),
        None,
        False,
        "inspect",
        "unseen_share PSI 0.15",
    ),
    "many unseen words: another domain": (
        traffic(unseen_share=(2.0, 0.5)),
        None,
        False,
        "retrain",
        "unseen_share PSI 2.00",
    ),
    "another domain, retrain already requested": (
        traffic(unseen_share=(2.0, 0.5)),
        None,
        True,
        "inspect",
        "already requested",
    ),
    "new labels production gets wrong": (
        None,
        labels(f1=0.55),
        False,
        "retrain",
        "0.550 < test F1 0.900",
    ),
    "too few new labels to judge": (
        None,
        labels(rows=20, f1=0.1),
        False,
        "continue",
        "20 new labels",
    ),
    "the previous version does better on new labels": (
        traffic(),
        labels(f1=0.55, previous=0.86),
        False,
        "rollback",
        "previous v2 scores 0.860",
    ),
    "rollback beats retrain and inspect": (
        traffic(unseen_share=(2.0, 0.5), tag=(1.0, None)),
        labels(f1=0.55, previous=0.86),
        True,
        "rollback",
        "previous v2",
    ),
    "the previous version is better by less than the margin": (
        traffic(),
        labels(f1=0.84, previous=0.87),
        False,
        "continue",
        "",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_policy_table(case):
    measured, labelled, requested, action, fragment = CASES[case]
    decision = decide_action(measured, labelled, DriftPolicy(), retrain_requested=requested)
    assert decision.action == action, decision
    assert fragment in decision.reason
    if action != "continue":
        assert decision.reasons, decision  # the report lists why


def test_thresholds_are_parameters():
    moderate = traffic(unseen_share=(0.4, 0.3))
    assert decide_action(moderate, None, DriftPolicy()).action == "retrain"
    assert decide_action(moderate, None, DriftPolicy(retrain_psi=0.5)).action == "inspect"
    assert decide_action(moderate, None, DriftPolicy(inspect_psi=0.5, retrain_psi=0.6)).action == (
        "continue"
    )
    assert decide_action(traffic(150), None, DriftPolicy(min_predictions=100)).reason.startswith(
        "no drift"
    )
    worse = labels(f1=0.84, previous=0.87)
    assert decide_action(None, worse, DriftPolicy(rollback_margin=0.02)).action == "rollback"


def test_every_reason_is_kept():
    decision = decide_action(
        traffic(unseen_share=(2.0, 0.5), tag=(1.0, None), text_length=(0.5, 40.0)), None
    )
    assert decision.action == "retrain"
    assert len(decision.reasons) == 3
    assert any(r.startswith("tag PSI") for r in decision.reasons)


@pytest.mark.parametrize(
    "bad",
    [
        {"inspect_psi": 0.3, "retrain_psi": 0.2},
        {"inspect_psi": 0.0},
        {"min_predictions": 0},
        {"rollback_margin": -0.1},
    ],
)
def test_bad_thresholds_are_refused(bad):
    with pytest.raises(ValueError):
        DriftPolicy(**bad)
