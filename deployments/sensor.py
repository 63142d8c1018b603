"""The data-arrival sensor process: look at the sources, announce each new batch once.

    python -m deployments.sensor            # loop: one tick every TAGIFAI_SENSOR_INTERVAL s
    python -m deployments.sensor --once     # one tick in the foreground, print what it saw

Open-source Prefect has no sensor primitive (PrefectHQ/prefect#9330), so the platform runs this
small process beside the server (``make up``). A tick is :func:`tagifai.sensor.tick`: cheap
looks at every source in ``TAGIFAI_SENSOR_SOURCES`` (file stats, count/max queries); a new,
complete batch is fingerprinted, claimed in the ledger it shares with the webhook receiver and
announced as ``tagifai.data.arrived`` (``POST /api/events``), the event the dataops
deployment's trigger takes. Ticks that find nothing leave no flow run and no event: nothing
shows in the Prefect UI until there is new data. Each tick writes
``stores/sensor/heartbeat.json``, which the platform's health check reads.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from deployments.webhook.events import PrefectUnavailable, arrival_event, post_event
from tagifai import files
from tagifai.config import Settings, get_settings
from tagifai.errors import TagifaiError
from tagifai.sensor import BatchNotice, TickResult, tick

logger = logging.getLogger("tagifai.sensor")


def announcer(api_url: str, auth_string: str | None) -> object:
    """The ``emit`` a tick calls: one ``tagifai.data.arrived`` event per new batch."""

    def emit(notice: BatchNotice) -> None:
        event = arrival_event(notice.projects_uri, notice.tags_uri, notice.batch_id, notice.source)
        post_event(api_url, auth_string, event)

    return emit


def run_tick(settings: Settings, api_url: str, auth_string: str | None) -> list[TickResult]:
    """One look at every source; records the heartbeat the platform checks."""
    started = time.process_time()
    results = tick(settings, settings.sensor_sources, announcer(api_url, auth_string))
    files.write_json(
        settings.sensor_dir / "heartbeat.json",
        {
            "at": time.time(),
            "interval_s": settings.sensor_interval_s,
            "cpu_seconds": round(time.process_time() - started, 4),
            "results": [result.status for result in results],
        },
    )
    return results


def describe(result: TickResult) -> str:
    """One line per result, for people."""
    where = f" {result.location}" if result.location else ""
    batch = f" [batch {result.batch_id}]" if result.batch_id else ""
    return f"{result.status:<9} {result.source}{where}: {result.reason}{batch}"


def loop(settings: Settings, api_url: str, auth_string: str | None, stop: threading.Event) -> None:
    """Tick every ``settings.sensor_interval_s`` seconds until ``stop`` is set."""
    logger.info(
        "watching %s every %d s",
        ", ".join(source.label for source in settings.sensor_sources),
        settings.sensor_interval_s,
    )
    while not stop.is_set():
        for result in run_tick(settings, api_url, auth_string):
            if result.status in ("emitted", "duplicate", "error"):
                logger.info("%s", describe(result))
        stop.wait(settings.sensor_interval_s)


def prefect_api_url() -> str:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        raise PrefectUnavailable("PREFECT_API_URL is not set: the sensor announces to it")
    return url.rstrip("/")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.sensor",
        description="Watch TAGIFAI_SENSOR_SOURCES and announce each new batch once.",
    )
    parser.add_argument("--once", action="store_true", help="one tick, then print what it saw")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        settings = get_settings()
        api_url, auth = prefect_api_url(), os.environ.get("PREFECT_API_AUTH_STRING")
        if args.once:
            for result in run_tick(settings, api_url, auth):
                print(describe(result))
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        loop(settings, api_url, auth, stop)
    except (TagifaiError, PrefectUnavailable) as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
