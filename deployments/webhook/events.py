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
    payload: dict[str, Any] = {
        "projects_uri": projects_uri,
        "tags_uri": tags_uri,
        "batch_id": batch_id,
    }
    if notice.batch_id:
        payload["label"] = notice.batch_id
    if notice.source:
        payload["source"] = notice.source
    resource = {"prefect.resource.id": f"tagifai.data.{batch_id}"}
    if notice.source:
        resource["prefect.resource.name"] = notice.source
    return {
        "id": str(uuid.uuid4()),
        "occurred": datetime.now(UTC).isoformat(),
        "event": EVENT_NAME,
        "resource": resource,
        "payload": payload,
    }


def _prefect_api_url(config: WebhookConfig) -> str:
    if config.prefect_api_url:
        return config.prefect_api_url.rstrip("/")
    # Fall back to the active Prefect profile; imported here because Prefect is slow to import.
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise PrefectUnavailable("PREFECT_API_URL is not set")
    return url.rstrip("/")


async def emit_event(config: WebhookConfig, event: dict[str, Any]) -> None:
    """POST one event to the Prefect API.

    Raises:
        PrefectUnavailable: the API is unreachable or did not accept the event.
    """
    headers = basic_auth_headers(config.prefect_auth_string)
    url = f"{_prefect_api_url(config)}/events"
    try:
        async with httpx.AsyncClient(timeout=PREFECT_TIMEOUT_S) as client:
            response = await client.post(url, json=[event], headers=headers)
    except httpx.HTTPError as error:
        raise PrefectUnavailable(f"Prefect API unreachable ({type(error).__name__})") from error
    if response.status_code >= 300:
        raise PrefectUnavailable(f"Prefect API answered {response.status_code}")
