import pytest

from tagifai.evaluate import (
    CheckResult,
    ClassMetrics,
    EvaluationReport,
    ImprovementRule,
    compute_metrics,
    evaluate_model,
    is_improved,
)
from tagifai.reporting import plot_confusion, regression_markdown, report_markdown


def test_compute_metrics_matches_hand_computed_values():
    y_true = ["mlops", "mlops", "other", "other"]
    y_pred = ["mlops", "other", "other", "other"]
    overall, per_class = compute_metrics(y_true, y_pred, labels=["mlops", "other"])
    # mlops: p=1, r=1/2, f1=2/3; other: p=2/3, r=1, f1=4/5; weights 2/4 each.
    assert per_class["mlops"] == ClassMetrics(1.0, 0.5, pytest.approx(2 / 3), 2)
    assert per_class["other"].precision == pytest.approx(2 / 3)
    assert per_class["other"].f1 == pytest.approx(0.8)
    assert overall.f1 == pytest.approx((2 / 3 + 0.8) / 2)
    assert overall.precision == pytest.approx((1 + 2 / 3) / 2)


class Constant:
    def __init__(self, label):
        self.label = label

    def predict(self, texts):
        return [self.label] * len(texts)


def test_evaluate_model_reports_classes_slices_and_checks():
    texts = ["short one", "a b c d e f g h i j k", "x y"]
    y_true = ["mlops", "other", "mlops"]
    report = evaluate_model(Constant("mlops"), texts, y_true)
    assert report.n == 3
    assert report.per_class["mlops"].recall == 1.0
    assert report.per_class["other"].f1 == 0.0
    assert report.slices["short_text"].support == 2
    assert report.confusion[1][1] == 2  # labels order: computer-vision, mlops, ...
    assert not report.checks_passed  # a constant model fails minimum functionality
    assert EvaluationReport.from_dict(report.to_dict()) == report


def make_report(f1, per_class_f1, checks_pass=True):
    per_class = {k: ClassMetrics(v, v, v, 10) for k, v in per_class_f1.items()}
    checks = (CheckResult("mft", "minimum-functionality", checks_pass, ""),)
    return EvaluationReport(
        n=40,
        precision=f1,
        recall=f1,
        f1=f1,
        per_class=per_class,
        confusion=[[0]],
        labels=tuple(per_class),
        slices={},
        checks=checks,
    )


@pytest.mark.parametrize(
    ("candidate", "production", "improved", "reason"),
    [
        (make_report(0.90, {"a": 0.9}), None, True, "first model"),
        (make_report(0.90, {"a": 0.9}, checks_pass=False), None, False, "behavioural"),
        (make_report(0.91, {"a": 0.9}), make_report(0.90, {"a": 0.9}), True, "weighted F1"),
        (make_report(0.89, {"a": 0.9}), make_report(0.90, {"a": 0.9}), True, "margin"),
        (make_report(0.87, {"a": 0.9}), make_report(0.90, {"a": 0.9}), False, "< production"),
        (
            make_report(0.95, {"a": 0.95, "b": 0.70}),
            make_report(0.90, {"a": 0.9, "b": 0.85}),
            False,
            "b F1",
        ),
        (
            make_report(0.95, {"a": 0.95}, checks_pass=False),
            make_report(0.90, {"a": 0.9}),
            False,
            "behavioural",
        ),
    ],
)
def test_is_improved(candidate, production, improved, reason):
    decision = is_improved(
        candidate, production, ImprovementRule(f1_margin=0.02, class_tolerance=0.10)
    )
    assert decision.improved is improved
    assert reason in decision.reason


def test_rule_is_configurable():
    candidate, production = make_report(0.89, {"a": 0.9}), make_report(0.90, {"a": 0.9})
    assert not is_improved(candidate, production, ImprovementRule(f1_margin=0.0)).improved
    assert is_improved(candidate, production, ImprovementRule(f1_margin=0.05)).improved


def test_markdown_and_plot(tmp_path):
    candidate, production = make_report(0.80, {"a": 0.7}), make_report(0.90, {"a": 0.9})
    text = report_markdown(candidate)
    assert "| a | 0.700 | 0.700 | 0.700 | 10 |" in text
    decision = is_improved(candidate, production)
    regression = regression_markdown(candidate, production, decision, 2, 1)
    assert "| class a | 0.700 | 0.900 | -0.200 |" in regression
    report = evaluate_model(
        Constant("mlops"), ["a b", "c d"], ["mlops", "other"], with_checks=False
    )
    png = plot_confusion(report, tmp_path / "cm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
