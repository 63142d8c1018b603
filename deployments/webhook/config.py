"""The receiver's configuration, resolved once when the app is built.

Explicit arguments first, then the environment (``TAGIFAI_WEBHOOK_SECRET``,
``TAGIFAI_WEBHOOK_DATA_ROOT``, ``TAGIFAI_WEBHOOK_MAX_BYTES``, ``TAGIFAI_WEBHOOK_ALLOW_SQL_HOSTS``,
``TAGIFAI_WEBHOOK_ALLOW_S3_BUCKETS``, ``PREFECT_API_URL``, ``PREFECT_API_AUTH_STRING``), then
the project settings built from that same environment (data root, Data Docs directory).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tagifai.config import Settings, get_settings
from tagifai.errors import TagifaiError

MAX_CLOCK_SKEW_S = 300
DEFAULT_MAX_BYTES = 64 * 1024
MIN_SECRET_LENGTH = 16


class WebhookConfigError(TagifaiError):
    """The receiver is missing its secret or has an unusable setting."""


@dataclass(frozen=True)
class WebhookConfig:
    """Everything the receiver needs, resolved once when the app is built."""

    secret: str
    data_roots: tuple[Path, ...]
    prefect_api_url: str | None
    prefect_auth_string: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    allowed_sql_hosts: frozenset[str] = field(default_factory=frozenset)
    allowed_s3_buckets: frozenset[str] = field(default_factory=frozenset)
    max_clock_skew_s: int = MAX_CLOCK_SKEW_S
    docs_dir: Path | None = None  # the Data Docs site the flows build, served read-only
    # Where accepted signatures and claimed batches are recorded (the project's stores).
    settings: Settings | None = None


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def load_config(
    secret: str | None = None,
    *,
    data_roots: Sequence[Path | str] | None = None,
    prefect_api_url: str | None = None,
    prefect_auth_string: str | None = None,
    max_bytes: int | None = None,
    allowed_sql_hosts: Sequence[str] | None = None,
    allowed_s3_buckets: Sequence[str] | None = None,
    docs_dir: Path | str | None = None,
    settings: Settings | None = None,
    env: Mapping[str, str] | None = None,
) -> WebhookConfig:
    """Build the config: explicit arguments first, then the environment, then defaults.

    Raises:
        WebhookConfigError: no secret, a short secret, a relative data root or a bad size cap.
    """
    env = os.environ if env is None else env
    secret = secret or env.get("TAGIFAI_WEBHOOK_SECRET")
    if not secret:
        raise WebhookConfigError(
            "TAGIFAI_WEBHOOK_SECRET is not set: the webhook receiver will not accept unsigned "
            "requests (make one: python -c 'import secrets; print(secrets.token_hex(32))')"
        )
    if len(secret) < MIN_SECRET_LENGTH:
        raise WebhookConfigError(
            f"TAGIFAI_WEBHOOK_SECRET is too short: use at least {MIN_SECRET_LENGTH} characters"
        )
    if data_roots is None:
        data_roots = _csv(env.get("TAGIFAI_WEBHOOK_DATA_ROOT"))
    # The project's settings from the same environment, so every default agrees with it.
    settings = settings or get_settings(dict(env))
    data_roots = data_roots or [settings.data_dir]
    if docs_dir is None:
        docs_dir = settings.gx_state_dir / "data_docs" / "local_site"
    roots = tuple(Path(root).expanduser() for root in data_roots)
    relative = [str(root) for root in roots if not root.is_absolute()]
    if relative:
        raise WebhookConfigError(f"webhook data roots must be absolute: {', '.join(relative)}")
    try:
        cap = int(max_bytes or env.get("TAGIFAI_WEBHOOK_MAX_BYTES") or DEFAULT_MAX_BYTES)
    except ValueError as error:
        raise WebhookConfigError("TAGIFAI_WEBHOOK_MAX_BYTES must be an integer") from error
    if cap <= 0:
        raise WebhookConfigError("TAGIFAI_WEBHOOK_MAX_BYTES must be positive")
    sql_hosts = _csv(env.get("TAGIFAI_WEBHOOK_ALLOW_SQL_HOSTS"))
    s3_buckets = _csv(env.get("TAGIFAI_WEBHOOK_ALLOW_S3_BUCKETS"))
    return WebhookConfig(
        secret=secret,
        data_roots=tuple(root.resolve() for root in roots),
        prefect_api_url=(prefect_api_url or env.get("PREFECT_API_URL") or None),
        prefect_auth_string=prefect_auth_string or env.get("PREFECT_API_AUTH_STRING") or None,
        max_bytes=cap,
        allowed_sql_hosts=frozenset(h.lower() for h in (allowed_sql_hosts or sql_hosts)),
        allowed_s3_buckets=frozenset(allowed_s3_buckets or s3_buckets),
        docs_dir=Path(docs_dir),
        settings=settings,
    )
