"""Credentials: the Prefect basic-auth header and the webhook receiver's HMAC secret."""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
from pathlib import Path

from deployments.platform.records import platform_dir
from tagifai.config import Settings

WEBHOOK_SECRET_ENV = "TAGIFAI_WEBHOOK_SECRET"


def client_auth_string() -> str | None:
    """The ``user:password`` a Prefect client sends: its own setting, else the server's."""
    return os.environ.get("PREFECT_API_AUTH_STRING") or (
        os.environ.get("PREFECT_SERVER_API_AUTH_STRING") or None
    )


def basic_auth_headers(auth_string: str | None) -> dict[str, str]:
    """The Authorization header for a ``user:password`` string; none without one."""
    if not auth_string:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


def prefect_auth_headers() -> dict[str, str]:
    """The Authorization header Prefect's own client sends when an auth string is configured."""
    return basic_auth_headers(client_auth_string())


def webhook_secret_path(settings: Settings) -> Path:
    return platform_dir(settings) / "webhook-secret"


def stored_webhook_secret(settings: Settings) -> str | None:
    """The secret the platform generated, if it has generated one (never creates it)."""
    try:
        return webhook_secret_path(settings).read_text().strip()
    except OSError:
        return None


def webhook_secret(settings: Settings) -> str:
    """``$TAGIFAI_WEBHOOK_SECRET``, else the platform's generated secret (created once, 0600)."""
    from_env = os.environ.get(WEBHOOK_SECRET_ENV)
    if from_env:
        return from_env
    path = webhook_secret_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()
