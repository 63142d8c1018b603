"""The data-arrival sensor (``python -m deployments.sensor``): new batches become events."""

from __future__ import annotations

import json
import time

from deployments.platform.spec import (
    Launch,
    LaunchContext,
    ServiceSpec,
    prefect_client_env,
    python_command,
)
from tagifai.config import Settings


def _build(context: LaunchContext) -> Launch:
    settings = context.settings
    env = prefect_client_env(settings, context.prefect_api_url)
    watched = ", ".join(source.label for source in settings.sensor_sources)
    description = f"{watched} every {settings.sensor_interval_s} s"
    return Launch(python_command("deployments.sensor"), env, description)


def _healthy(settings: Settings, url: str, prefect_api_url: str | None) -> bool:
    """Healthy while it ticks: its heartbeat is at most three intervals old."""
    try:
        beat = json.loads((settings.sensor_dir / "heartbeat.json").read_text())
    except (OSError, ValueError):
        return False
    return time.time() - float(beat.get("at", 0)) < max(3 * settings.sensor_interval_s, 15)


SPEC = ServiceSpec(
    name="sensor",
    label="Sensor",
    log_name="sensor.log",
    build=_build,
    healthy=_healthy,
    startup_timeout_s=60.0,
    needs_prefect_api=True,
)
