"""The notice (the webhook body) and the Prefect event it becomes, emitted over HTTP.

The event goes to the open-source server's ``POST /api/events`` (a JSON list of events) over
plain HTTP: ``prefect.events.emit_event`` needs an events-client context that an ASGI server
does not provide, and a failed delivery must become a 502 the sender can retry, not a log line.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from deployments.platform.auth import basic_auth_headers
from deployments.webhook.config import WebhookConfig

EVENT_NAME = "tagifai.data.arrived"
PREFECT_TIMEOUT_S = 10.0
_SHORT_TEXT = r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"


class PrefectUnavailable(RuntimeError):
    """The Prefect API could not be reached or refused the event."""


class DataArrived(BaseModel):
    """The webhook body: where the new projects and tags tables are."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    projects_uri: str = Field(min_length=1, max_length=2048)
    tags_uri: str = Field(min_length=1, max_length=2048)
    source: str | None = Field(default=None, max_length=64, pattern=_SHORT_TEXT)
    batch_id: str | None = Field(default=None, max_length=64, pattern=_SHORT_TEXT)


def build_event(
    notice: DataArrived, projects_uri: str, tags_uri: str, batch_id: str
) -> dict[str, Any]:
    """The Prefect event for a checked notice (the shape ``POST /api/events`` accepts).

    ``batch_id`` is the content fingerprint of the two tables (the snapshot id dataops will
    compute); the sender's own ``batch_id``, if any, travels as ``label``.
    """
    source = f"webhook:{notice.source}" if notice.source else "webhook"
    return arrival_event(projects_uri, tags_uri, batch_id, source, notice.batch_id)


def _prefect_api_url(config: WebhookConfig) -> str:
    if config.prefect_api_url:
        return config.prefect_api_url.rstrip("/")
    # Fall back to the active Prefect profile; imported here because Prefect is slow to import.
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise PrefectUnavailable("PREFECT_API_URL is not set")
    return url.rstrip("/")


def arrival_event(
    projects_uri: str, tags_uri: str, batch_id: str, source: str, label: str | None = None
) -> dict[str, Any]:
    """``tagifai.data.arrived`` for a batch: the one event the dataops trigger takes, whether
    the webhook receiver or the sensor saw the batch. ``batch_id`` is its content fingerprint."""
    payload: dict[str, Any] = {
        "projects_uri": projects_uri,
        "tags_uri": tags_uri,
        "batch_id": batch_id,
        "source": source,
    }
    if label:
        payload["label"] = label
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": EVENT_NAME,
        "resource": {
            "prefect.resource.id": f"tagifai.data.{batch_id}",
            "prefect.resource.name": source,
        },
        "payload": payload,
    }


def post_event(api_url: str, auth_string: str | None, event: dict[str, Any]) -> None:
    """POST one event to the Prefect API from synchronous code (the sensor's loop).

    Raises:
        PrefectUnavailable: the API is unreachable or did not accept the event.
    """
    headers = basic_auth_headers(auth_string)
    try:
        response = httpx.post(
            f"{api_url.rstrip('/')}/events",
            json=[event],
            headers=headers,
            timeout=PREFECT_TIMEOUT_S,
            trust_env=False,
        )
    except httpx.HTTPError as error:
        raise PrefectUnavailable(f"Prefect API unreachable ({type(error).__name__})") from error
    if response.status_code >= 300:
        raise PrefectUnavailable(f"Prefect API answered {response.status_code}")


async def emit_event(config: WebhookConfig, event: dict[str, Any]) -> None:
    """POST one event to the Prefect API without blocking the receiver's event loop.

    Raises:
        PrefectUnavailable: the API is unreachable or did not accept the event.
    """
    from anyio.to_thread import run_sync

    api_url = _prefect_api_url(config)
    await run_sync(post_event, api_url, config.prefect_auth_string, event)
