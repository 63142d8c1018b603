"""What the pipelines show people: markdown and plots for Prefect artifacts, MLflow and reports.

Tasks and commands call these; none of them decides anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tagifai.evaluate import Decision, EvaluationReport

if TYPE_CHECKING:
    from datetime import datetime

    from tagifai.drift import TrafficDrift
    from tagifai.history import AliasMove
    from tagifai.policy import LabelledCheck, MonitorDecision
    from tagifai.steps import Evaluation, TrainedModel
    from tagifai.tune import TuneSummary
    from tagifai.validation import ValidationReport


def report_markdown(report: EvaluationReport, title: str = "Evaluation") -> str:
    """The per-class table, slices and checks as markdown (for Prefect artifacts and reports)."""
    lines = [
        f"## {title}",
        "",
        f"Weighted precision **{report.precision:.3f}**, recall **{report.recall:.3f}**, "
        f"F1 **{report.f1:.3f}** on {report.n} test rows.",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {label} | {m.precision:.3f} | {m.recall:.3f} | {m.f1:.3f} | {m.support} |"
        for label, m in report.per_class.items()
    ]
    lines += ["", "| slice | F1 | rows |", "|---|---:|---:|"]
    lines += [f"| {name} | {m.f1:.3f} | {m.support} |" for name, m in report.slices.items()]
    if report.checks:
        passed = sum(c.passed for c in report.checks)
        lines += ["", f"Behavioural checks: {passed}/{len(report.checks)} passed", ""]
        lines += [
            f"- {'✅' if c.passed else '❌'} {c.kind}: {c.name} ({c.detail})" for c in report.checks
        ]
    return "\n".join(lines)


def plot_confusion(report: EvaluationReport, path: Path) -> Path:
    """Save the confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(report.confusion)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.imshow(matrix, cmap="Blues")
    short = [label.split("-")[0][:8] for label in report.labels]
    ax.set_xticks(range(len(short)), short, rotation=30)
    ax.set_yticks(range(len(short)), short)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > matrix.max() / 2 else "black",
        )
    ax.set_title(f"Confusion matrix (weighted F1 {report.f1:.3f})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def regression_markdown(
    candidate: EvaluationReport,
    production: EvaluationReport | None,
    decision: Decision,
    candidate_version: int,
    production_version: int | None,
) -> str:
    """What regressed, per class and per slice, candidate against production."""
    lines = [
        f"# Regression report: candidate v{candidate_version} vs production v{production_version}",
        "",
        f"**Decision:** not deployed: {decision.reason}",
        "",
    ]
    if production is not None:
        lines += [
            "| | candidate F1 | production F1 | change |",
            "|---|---:|---:|---:|",
            f"| weighted | {candidate.f1:.3f} | {production.f1:.3f} | "
            f"{candidate.f1 - production.f1:+.3f} |",
        ]
        for label, prod in production.per_class.items():
            cand = candidate.per_class[label]
            lines.append(
                f"| class {label} | {cand.f1:.3f} | {prod.f1:.3f} | {cand.f1 - prod.f1:+.3f} |"
            )
        for name, prod in production.slices.items():
            cand = candidate.slices.get(name)
            if cand is not None:
                lines.append(
                    f"| slice {name} | {cand.f1:.3f} | {prod.f1:.3f} | {cand.f1 - prod.f1:+.3f} |"
                )
    failed = [c for c in candidate.checks if not c.passed]
    if failed:
        lines += ["", "Failed behavioural checks:", ""]
        lines += [f"- {c.kind}: {c.name} ({c.detail})" for c in failed]
    return "\n".join(lines)


def evaluation_markdown(
    candidate: EvaluationReport,
    candidate_version: int,
    production: EvaluationReport | None,
    production_version: int | None,
    decision: Decision,
) -> str:
    """Candidate and production side by side, then the decision and its reason."""
    markdown = report_markdown(candidate, f"Candidate v{candidate_version}")
    if production is not None:
        markdown += "\n\n" + report_markdown(production, f"Production v{production_version}")
    verdict = "improved" if decision.improved else "regressed"
    return markdown + f"\n\n## Decision: {verdict}\n\n{decision.reason}"


def best_trial_markdown(summary: TuneSummary) -> str:
    """The study's best trial and its parameters."""
    return (
        f"## Best trial\n\nValidation weighted F1 **{summary.best_value:.4f}** "
        f"({summary.n_trials} trials, {summary.n_pruned} pruned, study `{summary.study_name}`)"
        "\n\n" + "\n".join(f"- `{k}` = {v}" for k, v in summary.best_params.to_dict().items())
    )


def importance_rows(importances: Mapping[str, float]) -> list[dict[str, Any]]:
    """fANOVA importances as table rows."""
    return [{"parameter": k, "importance": round(v, 4)} for k, v in importances.items()]


def failed_expectation_rows(reports: Iterable[ValidationReport]) -> list[dict[str, Any]]:
    """One row per broken expectation: suite, expectation, column, count, examples."""
    return [
        {
            "suite": report.suite,
            "expectation": failure.expectation,
            "column": failure.column or "",
            "unexpected": failure.unexpected_count,
            "examples": ", ".join(failure.examples),
        }
        for report in reports
        for failure in report.failures
    ]


def dataops_markdown(
    summary: Mapping[str, object], reports: Iterable[ValidationReport], docs_url: str | None
) -> str:
    """The DataOps run: its figures, each suite's expectations, the Data Docs link."""
    lines = ["## DataOps run", "", "| | |", "|---|---|"]
    lines += [f"| {key.replace('_', ' ')} | {value} |" for key, value in summary.items()]
    suites = [
        f"| {r.suite} | {r.rows} | {r.passed}/{r.evaluated} | {len(r.failures)} |" for r in reports
    ]
    if suites:
        lines += ["", "| suite | rows | expectations passed | failed |", "|---|---:|---:|---:|"]
        lines += suites
    if docs_url:
        lines += ["", f"[Data Docs]({docs_url})"]
    return "\n".join(lines)


def model_card_markdown(
    trained: TrainedModel, evaluation: Evaluation, snapshot_id: str, code: str
) -> str:
    """One version's card: what it learned from, how it was chosen and how it scores."""
    candidate = evaluation.candidate
    params = ", ".join(f"`{k}`={v}" for k, v in trained.params.to_dict().items())
    checks = sum(c.passed for c in candidate.checks)
    lines = [
        f"# Model card: tagifai v{trained.version}",
        "",
        "| | |",
        "|---|---|",
        f"| data snapshot | `{snapshot_id}` ({trained.train_rows} train+val rows, "
        f"{candidate.n} test rows) |",
        f"| sentence embeddings | {trained.embedding_model or 'none (TF-IDF/hashing only)'} |",
        f"| cross-validation (repeated stratified 5-fold on train+val, {len(trained.cv.scores)} "
        f"fits) | weighted F1 **{trained.cv.mean:.3f} ± {trained.cv.std:.3f}** |",
        f"| test split (used once, for the decision) | weighted F1 **{candidate.f1:.3f}** "
        f"(precision {candidate.precision:.3f}, recall {candidate.recall:.3f}) |",
        f"| behavioural checks | {checks}/{len(candidate.checks)} passed |",
        f"| training time | final fit {trained.fit_seconds:.2f} s, CV {trained.cv_seconds:.1f} s |",
        f"| decision | {'improved' if evaluation.decision.improved else 'regressed'}: "
        f"{evaluation.decision.reason} |",
        f"| code | tagifai sources `{code}` |",
        "",
        f"Parameters: {params}",
        "",
        report_markdown(candidate, "Test split, per class and per slice"),
    ]
    return "\n".join(lines)


def drift_markdown_table(traffic: TrafficDrift) -> list[str]:
    """The drift table: one row per monitored feature."""
    lines = [
        "| feature | test | statistic | p-value | PSI | reference mean | current mean | harmful |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in traffic.rows():
        ref = "" if row["reference_mean"] is None else f"{row['reference_mean']:.3g}"
        cur = "" if row["current_mean"] is None else f"{row['current_mean']:.3g}"
        lines.append(
            f"| {row['feature']} | {row['test']} | {row['statistic']:.3f} | "
            f"{row['p_value']:.3g} | **{row['psi']:.3f}** | {ref} | {cur} | "
            f"{'yes' if row['harmful_direction'] else 'no'} |"
        )
    return lines


def monitor_markdown(
    version: int,
    traffic: TrafficDrift | None,
    labelled: LabelledCheck | None,
    decision: MonitorDecision,
    window: tuple[datetime, datetime],
) -> str:
    """The monitor run: decision, drift table, labelled check, and how to read them."""
    since, until = (moment.strftime("%Y-%m-%d %H:%M UTC") for moment in window)
    lines = [
        f"# Monitor: production v{version}",
        "",
        f"**Decision: {decision.action}** — {decision.reason}",
        "",
        f"Window {since} to {until}.",
        "",
    ]
    if traffic is None:
        lines += [f"v{version} has no references: its traffic cannot be compared.", ""]
    elif traffic.predictions == 0:
        lines += [f"No logged predictions of v{version} in the window.", ""]
    else:
        lines += [f"## Drift of {traffic.predictions} logged predictions", ""]
        lines += drift_markdown_table(traffic)
        lines += [
            "",
            "PSI < 0.1: no real change; 0.1-0.25: moderate; > 0.25: major. KS and chi-squared "
            "p-values are shown for reference; with many predictions they flag tiny shifts.",
            "",
        ]
    if labelled is not None:
        lines += [f"## {labelled.rows} newly labelled projects", ""]
        lines += ["| model | weighted F1 |", "|---|---:|"]
        lines.append(
            f"| production v{labelled.production_version} | {labelled.production_f1:.3f} |"
        )
        if labelled.reference_f1 is not None:
            lines.append(f"| (its test split) | {labelled.reference_f1:.3f} |")
        if labelled.previous_f1 is not None:
            lines.append(f"| previous v{labelled.previous_version} | {labelled.previous_f1:.3f} |")
        lines.append("")
    if len(decision.reasons) > 1:
        lines += ["## Reasons", ""] + [f"- {reason}" for reason in decision.reasons]
    return "\n".join(lines)


def plot_drift(traffic: TrafficDrift, path: Path) -> Path:
    """Reference vs current shares per bin, one panel per feature, the predicted tags first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    features = list(traffic.features)
    fig, axes = plt.subplots(1, len(features), figsize=(4.2 * len(features), 3.6), squeeze=False)
    for ax, feature in zip(axes[0], features, strict=True):
        x = np.arange(len(feature.bins))
        ax.bar(x - 0.2, feature.reference_share, width=0.4, label="reference", color="#999999")
        ax.bar(x + 0.2, feature.current_share, width=0.4, label="current", color="#4c72b0")
        labels = [
            label.split("-")[0][:8] if feature.test == "chi2" else label for label in feature.bins
        ]
        ax.set_xticks(x, labels, rotation=60, fontsize=7, ha="right")
        color = "red" if feature.harmful and feature.psi >= 0.1 else "black"
        ax.set_title(f"{feature.feature}: PSI {feature.psi:.2f}", color=color, fontsize=10)
        ax.set_ylabel("share")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"v{traffic.model_version}: {traffic.predictions} predictions vs references")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def history_rows(moves: Iterable[AliasMove]) -> list[dict[str, Any]]:
    """The alias history as table rows, newest first."""
    return [
        {
            "when": move.at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "action": move.action,
            "from": f"v{move.from_version}" if move.from_version is not None else "-",
            "to": f"v{move.to_version}",
            "state": move.state,
            "by": move.actor,
            "reason": move.reason,
            "flow_run": move.flow_run_id or "",
        }
        for move in moves
    ]
