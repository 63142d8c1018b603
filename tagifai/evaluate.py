"""Evaluation: overall, per-class and per-slice metrics, behavioural checks, improvement rule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from tagifai.config import LABELS
from tagifai.data import clean_text


class TextClassifier(Protocol):
    def predict(self, X: Sequence[str]) -> Any: ...


@dataclass(frozen=True)
class ClassMetrics:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class CheckResult:
    """One behavioural test: ``kind`` is invariance, directional or minimum-functionality."""

    name: str
    kind: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class EvaluationReport:
    """Everything measured on one test split."""

    n: int
    precision: float
    recall: float
    f1: float
    per_class: dict[str, ClassMetrics]
    confusion: list[list[int]]
    labels: tuple[str, ...]
    slices: dict[str, ClassMetrics]
    checks: tuple[CheckResult, ...] = ()

    @property
    def checks_passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationReport:
        return cls(
            n=data["n"],
            precision=data["precision"],
            recall=data["recall"],
            f1=data["f1"],
            per_class={k: ClassMetrics(**v) for k, v in data["per_class"].items()},
            confusion=data["confusion"],
            labels=tuple(data["labels"]),
            slices={k: ClassMetrics(**v) for k, v in data["slices"].items()},
            checks=tuple(CheckResult(**c) for c in data.get("checks", ())),
        )

    def flat_metrics(self) -> dict[str, float]:
        """Metric names and values as MLflow wants them."""
        metrics = {
            "test_precision": self.precision,
            "test_recall": self.recall,
            "test_f1": self.f1,
            "behavioural_pass_rate": _pass_rate(self.checks),
        }
        for label, m in self.per_class.items():
            metrics[f"test_f1_{label}"] = m.f1
        for name, m in self.slices.items():
            metrics[f"slice_f1_{name}"] = m.f1
        return metrics


def _pass_rate(checks: Sequence[CheckResult]) -> float:
    return sum(c.passed for c in checks) / len(checks) if checks else 1.0


def compute_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] = LABELS
) -> tuple[ClassMetrics, dict[str, ClassMetrics]]:
    """Weighted and per-class precision/recall/F1 (zero where undefined)."""
    from sklearn.metrics import precision_recall_fscore_support

    labels = list(labels)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = {
        label: ClassMetrics(float(p[i]), float(r[i]), float(f[i]), int(s[i]))
        for i, label in enumerate(labels)
    }
    wp, wr, wf, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="weighted", zero_division=0
    )
    return ClassMetrics(float(wp), float(wr), float(wf), len(y_true)), per_class


# Slices: named subsets of the test split where a model can fail quietly.
SLICES: dict[str, Callable[[str, str], bool]] = {
    "short_text": lambda text, tag: len(text.split()) < 8,
    "long_text": lambda text, tag: len(text.split()) > 40,
    "nlp_with_cnn": lambda text, tag: (
        tag == "natural-language-processing" and "cnn" in text.split()
    ),
    "minority_classes": lambda text, tag: tag in ("mlops", "other"),
}


def evaluate_model(
    model: TextClassifier, X: Any, y_true: Sequence[str], with_checks: bool = True
) -> EvaluationReport:
    """Score ``model`` on one split (the test split, used once per candidate).

    ``X`` is a model input: a list of texts, or a frame of texts and their vectors.
    """
    from sklearn.metrics import confusion_matrix

    from tagifai.train import texts_of

    texts, y_true = texts_of(X), list(y_true)
    y_pred = list(model.predict(X))
    overall, per_class = compute_metrics(y_true, y_pred)
    slices: dict[str, ClassMetrics] = {}
    for name, in_slice in SLICES.items():
        mask = [in_slice(text, tag) for text, tag in zip(texts, y_true, strict=True)]
        if any(mask):
            y_t = [y for y, m in zip(y_true, mask, strict=True) if m]
            y_p = [y for y, m in zip(y_pred, mask, strict=True) if m]
            slices[name] = compute_metrics(y_t, y_p)[0]
    return EvaluationReport(
        n=len(y_true),
        precision=overall.precision,
        recall=overall.recall,
        f1=overall.f1,
        per_class=per_class,
        confusion=confusion_matrix(y_true, y_pred, labels=list(LABELS)).tolist(),
        labels=LABELS,
        slices=slices,
        checks=tuple(behavioural_checks(model)) if with_checks else (),
    )


# Behavioural tests (Ribeiro et al., "Beyond Accuracy", as in Made With ML's tagifai).
MINIMUM_FUNCTIONALITY: tuple[tuple[str, str], ...] = (
    ("Object detection and image segmentation with convolutional networks", "computer-vision"),
    (
        "Fine-tuning a transformer language model for named entity recognition and text "
        "classification",
        "natural-language-processing",
    ),
    (
        "Deploying, monitoring and versioning machine learning models in production with CI/CD",
        "mlops",
    ),
    ("Deep Q-learning agent for Atari games with reinforcement learning", "other"),
)
INVARIANCE: tuple[tuple[str, str], ...] = (
    (
        "Transformers applied to NLP have revolutionized machine learning.",
        "Transformers applied to NLP have disrupted machine learning.",
    ),
    (
        "Semantic segmentation of street scenes from dashcam images.",
        "Semantic segmentation of street scenes from drone images.",
    ),
)
DIRECTIONAL: tuple[tuple[str, str], ...] = (
    ("Generative adversarial networks for image synthesis and style transfer", "computer-vision"),
    ("Sentiment analysis of movie reviews with word embeddings", "natural-language-processing"),
)


def behavioural_checks(model: TextClassifier) -> list[CheckResult]:
    """Minimum functionality, invariance and directional expectations on hand-written sentences."""
    results: list[CheckResult] = []
    mft_pred = model.predict([clean_text(text) for text, _ in MINIMUM_FUNCTIONALITY])
    for (text, expected), got in zip(MINIMUM_FUNCTIONALITY, mft_pred, strict=True):
        results.append(
            CheckResult(
                f"mft: {text[:40]}",
                "minimum-functionality",
                got == expected,
                f"expected {expected}, got {got}",
            )
        )
    for original, perturbed in INVARIANCE:
        a, b = model.predict([clean_text(original), clean_text(perturbed)])
        results.append(CheckResult(f"inv: {original[:40]}", "invariance", a == b, f"{a} vs {b}"))
    for text, expected in DIRECTIONAL:
        got = model.predict([clean_text(text)])[0]
        results.append(
            CheckResult(
                f"dir: {text[:40]}",
                "directional",
                got == expected,
                f"expected {expected}, got {got}",
            )
        )
    return results


@dataclass(frozen=True)
class ImprovementRule:
    """When a candidate replaces production (all configurable, see the README).

    The test split has ~115 rows, so one prediction moves weighted F1 by ~0.01: the
    candidate must not be worse than production by more than ``f1_margin``, no class's F1 may
    fall by more than ``class_tolerance``, and every behavioural check must pass.
    """

    f1_margin: float = 0.02
    class_tolerance: float = 0.10
    require_checks: bool = True


@dataclass(frozen=True)
class Decision:
    improved: bool
    reason: str
    reasons: tuple[str, ...] = field(default_factory=tuple)


def is_improved(
    candidate: EvaluationReport,
    production: EvaluationReport | None,
    rule: ImprovementRule = ImprovementRule(),
) -> Decision:
    """Apply the improvement rule; the first model ever is improved if its checks pass."""
    failures: list[str] = []
    if rule.require_checks and not candidate.checks_passed:
        failed = [c.name for c in candidate.checks if not c.passed]
        failures.append(f"behavioural checks failed: {', '.join(failed)}")
    if production is None:
        if failures:
            return Decision(False, failures[0], tuple(failures))
        return Decision(True, "first model: no production model to beat")
    if candidate.f1 < production.f1 - rule.f1_margin:
        failures.append(
            f"weighted F1 {candidate.f1:.3f} < production {production.f1:.3f} "
            f"- margin {rule.f1_margin:.3f}"
        )
    for label, prod in production.per_class.items():
        cand = candidate.per_class.get(label)
        if cand is not None and cand.f1 < prod.f1 - rule.class_tolerance:
            failures.append(
                f"{label} F1 {cand.f1:.3f} fell more than {rule.class_tolerance:.2f} "
                f"below {prod.f1:.3f}"
            )
    if failures:
        return Decision(False, "; ".join(failures), tuple(failures))
    return Decision(
        True,
        f"weighted F1 {candidate.f1:.3f} vs production {production.f1:.3f} "
        f"(margin {rule.f1_margin:.3f}), no class down more than {rule.class_tolerance:.2f}, "
        "behavioural checks pass",
    )
