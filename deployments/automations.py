"""Automations the project ships beside ``prefect.yaml``, created idempotently.

    python -m deployments.automations      # `make up`, `make run` and `deployments.run` call it

``tagifai: crash zombie flow runs``: a flow-run process killed with ``kill -9`` is marked
Crashed by its worker, but if the worker dies too the run stays Running forever. Flow runs
of the platform's worker send a ``prefect.flow-run.heartbeat`` event every 30 s
(``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, Prefect's minimum); this proactive trigger fires when a
run that sent one sends neither another nor a final state within ``TAGIFAI_ZOMBIE_AFTER_SECONDS``
(90 s: three missed beats), and its actions mark the run Crashed (which releases its
deployment's concurrency slot and emits ``prefect.flow-run.Crashed``) and post a message to
each ``TAGIFAI_NOTIFY_URLS`` URL through a Webhook block ``tagifai-notify-<n>``. Re-running
converges: mlops settles what the dead run left (``flows.mlops.converge``).

Running it again replaces the automation's definition (same name) and the blocks (same names).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from tagifai.config import Settings, get_settings
from tagifai.errors import ConfigError, TagifaiError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.events.schemas.automations import AutomationCore

ZOMBIE_AUTOMATION = "tagifai: crash zombie flow runs"
DEFAULT_ZOMBIE_AFTER_S = 90
MIN_ZOMBIE_AFTER_S = 45  # heartbeats come every 30 s at best: less would crash live runs
NOTIFY_BLOCK = "tagifai-notify-{index}"
FINAL_EVENTS = (
    "prefect.flow-run.Completed",
    "prefect.flow-run.Failed",
    "prefect.flow-run.Cancelled",
    "prefect.flow-run.Crashed",
)
CRASH_MESSAGE = (
    "tagifai: flow run {{ flow_run.name }} ({{ flow_run.id }}) sent no heartbeat for "
    "%d s: its process and worker are gone, so it was marked Crashed. Re-run it."
)


def zombie_after_seconds(env: dict[str, str] | None = None) -> int:
    """``TAGIFAI_ZOMBIE_AFTER_SECONDS`` (default 90, at least 45)."""
    env = dict(os.environ) if env is None else env
    raw = (env.get("TAGIFAI_ZOMBIE_AFTER_SECONDS") or "").strip()
    if not raw:
        return DEFAULT_ZOMBIE_AFTER_S
    if not raw.isdigit() or int(raw) < MIN_ZOMBIE_AFTER_S:
        raise ConfigError(
            f"TAGIFAI_ZOMBIE_AFTER_SECONDS must be a whole number of at least "
            f"{MIN_ZOMBIE_AFTER_S} (heartbeats come every 30 s), not {raw!r}"
        )
    return int(raw)


def zombie_automation(after_s: int, webhook_blocks: Sequence[UUID] = ()) -> AutomationCore:
    """The automation: no heartbeat or final state for ``after_s`` after a heartbeat."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import CallWebhook, ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    message = CRASH_MESSAGE % after_s
    actions: list = [
        ChangeFlowRunState(
            state=StateType.CRASHED,
            name="Crashed",
            message=f"no heartbeat for {after_s} s: the flow-run process and its worker are gone",
        )
    ]
    actions += [
        CallWebhook(block_document_id=block, payload=json.dumps({"text": message}))
        for block in webhook_blocks
    ]
    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description=(
            "Marks a Running flow run Crashed when its heartbeats stop (worker and flow-run "
            "process both dead) and notifies. Created by deployments/automations.py."
        ),
        enabled=True,
        trigger=EventTrigger(
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *FINAL_EVENTS},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=after_s),
        ),
        actions=actions,
    )


def ensure_notify_blocks(settings: Settings) -> list[UUID]:
    """One Webhook block per notification URL (``tagifai-notify-<n>``), saved over old ones."""
    from prefect.blocks.webhook import Webhook

    blocks = []
    for index, url in enumerate(settings.notify_urls):
        block = Webhook(method="POST", url=url, headers={"Content-Type": "application/json"})
        blocks.append(block.save(NOTIFY_BLOCK.format(index=index), overwrite=True))
    return blocks


def ensure_zombie_automation(client: SyncPrefectClient, automation: AutomationCore) -> UUID:
    """Create the automation, or replace the definition of the one with its name."""
    existing = client.read_automations_by_name(automation.name)
    if not existing:
        return client.create_automation(automation)
    keep, *duplicates = existing
    client.update_automation(keep.id, automation)
    for duplicate in duplicates:
        client.delete_automation(duplicate.id)
    return keep.id


def ensure_automations(settings: Settings) -> dict[str, UUID]:
    """Every automation of the project on the API of ``PREFECT_API_URL``; name -> id."""
    from prefect import get_client

    after_s = zombie_after_seconds()
    blocks = ensure_notify_blocks(settings)
    with get_client(sync_client=True) as client:
        zombie = ensure_zombie_automation(client, zombie_automation(after_s, blocks))
    return {ZOMBIE_AUTOMATION: zombie}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.automations",
        description="Create or update the project's automations on the Prefect API.",
    )
    parser.parse_args(argv)
    settings = get_settings()
    try:
        if not os.environ.get("PREFECT_API_URL"):
            from deployments.platform import ensure_server

            os.environ["PREFECT_API_URL"] = ensure_server(settings)
        created = ensure_automations(settings)
    except TagifaiError as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    for name, automation_id in created.items():
        print(f"automation  {name} ({automation_id})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
