"""Slack-compatible notifications: best effort, bounded in time, never raising."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    url: str
    ok: bool
    attempts: int
    detail: str


def _redact(url: str) -> str:
    """Webhook URLs carry secrets in their path: keep scheme and host only."""
    from urllib.parse import urlparse

    parts = urlparse(url)
    return f"{parts.scheme}://{parts.netloc}/…"


def post_message(
    urls: Sequence[str], text: str, retries: int = 2, timeout: float = 5.0, backoff: float = 0.5
) -> list[Delivery]:
    """POST ``{"text": text}`` to each URL with retries; failures are reported, not raised."""
    import httpx

    deliveries = []
    for url in urls:
        detail, ok, attempt = "", False, 0
        for attempt in range(1, retries + 2):
            try:
                response = httpx.post(url, json={"text": text}, timeout=timeout)
                ok = response.is_success
                detail = f"HTTP {response.status_code}"
                if ok or response.status_code < 500:
                    break
            except httpx.HTTPError as error:
                detail = type(error).__name__
            time.sleep(backoff * attempt)
        if not ok:
            logger.warning(
                "notification to %s failed after %d attempt(s): %s", _redact(url), attempt, detail
            )
        deliveries.append(Delivery(_redact(url), ok, attempt, detail))
    return deliveries
