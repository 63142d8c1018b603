"""What ``tagifai status`` reports: model, data snapshot, feature store, last decision."""

from __future__ import annotations

import json
from typing import Any

from tagifai.config import Settings


def collect_status(settings: Settings) -> dict[str, Any]:
    """Read-only view of the stores (nothing is created or changed)."""
    from tagifai.extract import latest_snapshot_id

    state: dict[str, Any] = {
        "stores_dir": str(settings.stores_dir),
        "snapshot": latest_snapshot_id(settings),
    }
    state["production"] = _production(settings)
    state["production_history"] = _history(settings) if state["production"] else []
    decision = settings.reports_dir / "last_decision.json"
    state["last_decision"] = json.loads(decision.read_text()) if decision.exists() else None
    monitor = settings.monitoring_dir / "last_monitor.json"
    state["last_monitor"] = _monitor_summary(monitor) if monitor.exists() else None
    state["online_feature_rows"] = _online_rows(settings)
    return state


def _production(settings: Settings) -> dict[str, Any] | None:
    if (
        settings.mlflow_tracking_uri.startswith("sqlite:///")
        and not (settings.mlflow_dir / "mlflow.db").exists()
    ):
        return None
    from tagifai import registry

    found = registry.get_version(settings)
    if found is None:
        return None
    keep = ("cv_f1_mean", "cv_f1_std", "test_f1", "test_precision", "test_recall")
    return {
        "version": found.version,
        "snapshot": found.snapshot_id,
        "run_id": found.run_id,
        "metrics": {
            k: round(v, 4)
            for k, v in found.metrics.items()
            if k in keep or k.startswith("test_f1_")
        },
    }


def _history(settings: Settings) -> list[dict[str, Any]]:
    """The last moves of ``production`` (who, from, to, why, when, which flow run)."""
    from tagifai import history
    from tagifai.reporting import history_rows

    return history_rows(history.entries(settings, limit=10))


def _monitor_summary(path: Any) -> dict[str, Any]:
    record = json.loads(path.read_text())
    keep = ("at", "model_version", "action", "reason", "predictions", "report")
    return {key: record.get(key) for key in keep}


def _online_rows(settings: Settings) -> int | None:
    from tagifai.store import count_online_rows, registry_file

    if not registry_file(settings).exists():
        return None
    return count_online_rows(settings)
