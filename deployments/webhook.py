"""Webhook receiver: a signed "new data arrived" POST becomes the Prefect event that triggers runs.

Routes:
    POST /hooks/data-arrived   202 {"event_id": "..."} after emitting ``tagifai.data.arrived``
    GET  /health               200 {"status": "ok"}

Every rejection is a 4xx (502 if Prefect is down) with a short JSON ``{"error": "..."}``.

Signing (see :func:`sign`): the sender sends ``X-Tagifai-Timestamp: <unix seconds>`` and
``X-Tagifai-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{raw body}")>``. The
timestamp is inside the MAC, so a captured request cannot be replayed with a fresh timestamp,
and timestamps more than 5 minutes old or ahead are refused (401).

Body: at most ``TAGIFAI_WEBHOOK_MAX_BYTES`` (64 KiB; 413, read incrementally, never buffered
whole), JSON (400), exactly ``{"projects_uri", "tags_uri", "source"?, "batch_id"?}`` (422).
Each URI must be one of (422 otherwise):

* an absolute path or ``file://`` URI that resolves (``..`` and symlinks followed) inside a data
  root: ``TAGIFAI_WEBHOOK_DATA_ROOT`` (comma list), default ``settings.data_dir``;
* ``sqlite:////abs/path.db#table`` with the database file inside a data root;
* ``postgresql://`` or ``postgresql+psycopg://host/db#table`` whose host is listed in
  ``TAGIFAI_WEBHOOK_ALLOW_SQL_HOSTS``, with no password and no query string (libpq reads
  ``?host=`` as a host override);
* ``s3://bucket/key`` whose bucket is listed in ``TAGIFAI_WEBHOOK_ALLOW_S3_BUCKETS``.

Paths travel on in canonical (resolved) form, so the flow reads exactly what was checked.

Configuration is read from the environment when the app starts: ``TAGIFAI_WEBHOOK_SECRET``
(required, at least 16 characters: without it uvicorn refuses to start), ``PREFECT_API_URL`` and,
with basic auth on the server, ``PREFECT_API_AUTH_STRING``.

The event goes to the open-source server's ``POST /api/events`` (a JSON list of events) over
plain HTTP: ``prefect.events.emit_event`` needs an events-client context that an ASGI server
does not provide, and a failed delivery must become a 502 the sender can retry, not a log line.

Prefect Cloud: Cloud has webhooks of its own, so there this receiver is not needed. Create one
whose template yields the same event, and the deployment trigger works unchanged::

    prefect cloud webhook create tagifai-data-arrived --template '{
      "event": "tagifai.data.arrived",
      "resource": {"prefect.resource.id": "tagifai.data.{{ body.batch_id }}"},
      "payload": {
        "projects_uri": {{ body.projects_uri | tojson }},
        "tags_uri": {{ body.tags_uri | tojson }},
        "batch_id": {{ body.batch_id | tojson }},
        "source": {{ body.source | default("prefect-cloud-webhook") | tojson }}
      }
    }'

(``tojson`` keeps a quote inside a URI from breaking the JSON; Cloud senders must send
``batch_id``, which this receiver otherwise derives from the URIs.)
Cloud authenticates the sender with its secret URL (and, on paid tiers, a service account's API
key) instead of this HMAC scheme, and checks no paths, so on Cloud the extract step's own checks
are the only guard on the URIs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tagifai.errors import TagifaiError

logger = logging.getLogger(__name__)

EVENT_NAME = "tagifai.data.arrived"
HOOK_PATH = "/hooks/data-arrived"
TIMESTAMP_HEADER = "X-Tagifai-Timestamp"
SIGNATURE_HEADER = "X-Tagifai-Signature"
SIGNATURE_PREFIX = "sha256="
MAX_CLOCK_SKEW_S = 300
DEFAULT_MAX_BYTES = 64 * 1024
MIN_SECRET_LENGTH = 16
PREFECT_TIMEOUT_S = 10.0

SQLITE_SCHEMES = frozenset({"sqlite", "sqlite+pysqlite"})
POSTGRES_SCHEMES = frozenset({"postgresql", "postgresql+psycopg"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SHORT_TEXT = r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"


class WebhookConfigError(TagifaiError):
    """The receiver is missing its secret or has an unusable setting."""


class UriRejected(ValueError):
    """A URI that the receiver will not pass on; the message says why, without echoing it."""


class PrefectUnavailable(RuntimeError):
    """The Prefect API could not be reached or refused the event."""


class DataArrived(BaseModel):
    """The webhook body: where the new projects and tags tables are."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    projects_uri: str = Field(min_length=1, max_length=2048)
    tags_uri: str = Field(min_length=1, max_length=2048)
    source: str | None = Field(default=None, max_length=64, pattern=_SHORT_TEXT)
    batch_id: str | None = Field(default=None, max_length=64, pattern=_SHORT_TEXT)


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
    if not data_roots:
        from tagifai.config import get_settings

        data_roots = [get_settings(dict(env)).data_dir]
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
    )


# --- signing ---------------------------------------------------------------------------------


def compute_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``{timestamp}.{body}`` under ``secret``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers a sender attaches to ``body``."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: compute_signature(secret, stamp, body)}


def _timestamp_problem(timestamp: str, now: float, max_skew_s: int) -> str | None:
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 12:
        return "malformed timestamp"
    if abs(now - int(timestamp)) > max_skew_s:
        return f"timestamp is more than {max_skew_s} s away from the server clock"
    return None


# --- URI checks ------------------------------------------------------------------------------


def _inside_roots(path_text: str, roots: tuple[Path, ...]) -> Path:
    if "\x00" in path_text:
        raise UriRejected("path contains a NUL byte")
    path = Path(path_text)
    if not path.is_absolute():
        raise UriRejected("path must be absolute")
    try:
        resolved = path.resolve()  # follows every symlink and collapses '..'
    except (OSError, RuntimeError) as error:  # e.g. a symlink loop
        raise UriRejected("path cannot be resolved") from error
    if not any(resolved.is_relative_to(root) for root in roots):
        raise UriRejected("path is outside the allowed data root")
    return resolved


def _split_table(uri: str) -> tuple[str, str]:
    # Exactly one '#': the extract step splits on the first one, so a second could make it read
    # a different database or table than the one checked here.
    url, _, table = uri.partition("#")
    if uri.count("#") != 1 or not _TABLE.match(table):
        raise UriRejected("SQL URIs need a '#<table>' suffix naming one table")
    return url, table


def check_uri(uri: str, config: WebhookConfig) -> str:
    """Return the canonical form of an allowed data URI.

    Raises:
        UriRejected: the scheme, host, bucket or path is not allowed.
    """
    match = _SCHEME.match(uri)
    scheme = match.group(1).lower() if match else ""
    if not scheme:
        return str(_inside_roots(uri, config.data_roots))
    if scheme == "file":
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise UriRejected("file URIs must be file:///absolute/path")
        return str(_inside_roots(unquote(parts.path), config.data_roots))
    if scheme in SQLITE_SCHEMES:
        url, table = _split_table(uri)
        prefix = url[: len(scheme)] + ":///"
        if not url.startswith(prefix):
            raise UriRejected("SQLite URIs must be sqlite:////absolute/path.db#table")
        database = url[len(prefix) :]
        if "?" in database or "%" in database:
            raise UriRejected("SQLite URIs may not carry a query string or %-escapes")
        resolved = _inside_roots(database, config.data_roots)
        if "%" in str(resolved):
            raise UriRejected("SQLite database path may not contain '%'")
        return f"{scheme}:///{resolved}#{table}"
    if scheme in POSTGRES_SCHEMES:
        url, table = _split_table(uri)
        parts = urlsplit(url)
        if parts.password is not None:
            raise UriRejected("credentials are not accepted in URIs; use the worker's PGPASSFILE")
        if parts.query:
            raise UriRejected("PostgreSQL URIs may not carry a query string")
        if (parts.hostname or "").lower() not in config.allowed_sql_hosts:
            raise UriRejected("SQL host is not in TAGIFAI_WEBHOOK_ALLOW_SQL_HOSTS")
        return uri
    if scheme == "s3":
        parts = urlsplit(uri)
        if parts.netloc not in config.allowed_s3_buckets or not parts.path.strip("/"):
            raise UriRejected("S3 bucket is not in TAGIFAI_WEBHOOK_ALLOW_S3_BUCKETS")
        if parts.query or parts.fragment:
            raise UriRejected("S3 URIs may not carry a query string or fragment")
        return uri
    raise UriRejected(f"scheme '{scheme[:20]}' is not allowed")


# --- the event -------------------------------------------------------------------------------


def build_event(notice: DataArrived, projects_uri: str, tags_uri: str) -> dict[str, Any]:
    """The Prefect event for a checked notice (the shape ``POST /api/events`` accepts)."""
    digest = hashlib.sha256(f"{projects_uri}\n{tags_uri}".encode()).hexdigest()[:16]
    batch_id = notice.batch_id or digest
    payload: dict[str, Any] = {
        "projects_uri": projects_uri,
        "tags_uri": tags_uri,
        "batch_id": batch_id,
    }
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
    headers = {}
    if config.prefect_auth_string:
        token = base64.b64encode(config.prefect_auth_string.encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    url = f"{_prefect_api_url(config)}/events"
    try:
        async with httpx.AsyncClient(timeout=PREFECT_TIMEOUT_S) as client:
            response = await client.post(url, json=[event], headers=headers)
    except httpx.HTTPError as error:
        raise PrefectUnavailable(f"Prefect API unreachable ({type(error).__name__})") from error
    if response.status_code >= 300:
        raise PrefectUnavailable(f"Prefect API answered {response.status_code}")


# --- the app ---------------------------------------------------------------------------------


def _error(status_code: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status_code)


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past ``limit`` (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _validation_reason(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    if first["type"] == "extra_forbidden":
        return f"unknown field '{where[:40]}'"
    return f"{where}: {first['msg']}"


async def data_arrived(request: Request) -> JSONResponse:
    config: WebhookConfig = request.app.state.config
    timestamp = request.headers.get(TIMESTAMP_HEADER)
    signature = request.headers.get(SIGNATURE_HEADER)
    if not timestamp or not signature:
        return _error(401, f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    problem = _timestamp_problem(timestamp, time.time(), config.max_clock_skew_s)
    if problem:
        return _error(401, problem)

    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            return _error(400, "malformed Content-Length")
        if int(declared) > config.max_bytes:
            return _error(413, f"body larger than {config.max_bytes} bytes")
    try:
        body = await _read_capped(request, config.max_bytes)
    except ClientDisconnect:
        return _error(400, "client disconnected")
    if body is None:
        return _error(413, f"body larger than {config.max_bytes} bytes")

    expected = compute_signature(config.secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        logger.warning("Rejected webhook from %s: bad signature", _client(request))
        return _error(401, "bad signature")

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body is not valid JSON")
    try:
        notice = DataArrived.model_validate(data)
    except ValidationError as error:
        return _error(422, _validation_reason(error))
    try:
        projects_uri = check_uri(notice.projects_uri, config)
    except UriRejected as error:
        return _error(422, f"projects_uri: {error}")
    try:
        tags_uri = check_uri(notice.tags_uri, config)
    except UriRejected as error:
        return _error(422, f"tags_uri: {error}")

    event = build_event(notice, projects_uri, tags_uri)
    try:
        await emit_event(config, event)
    except PrefectUnavailable as error:
        logger.error("Could not emit %s: %s", EVENT_NAME, error)
        return _error(502, str(error))
    logger.info(
        "Emitted %s %s for %s", EVENT_NAME, event["id"], event["resource"]["prefect.resource.id"]
    )
    return JSONResponse({"event_id": event["id"]}, status_code=202)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(secret: str | None = None, **overrides: Any) -> Starlette:
    """Build the receiver; arguments override the environment (see :func:`load_config`).

    Raises:
        WebhookConfigError: no usable secret or setting.
    """
    config = load_config(secret, **overrides)
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    from tagifai.config import get_settings

    # Browsers refuse file:// links from an http page: serve the Data Docs the flows build.
    docs = get_settings().gx_state_dir / "data_docs" / "local_site"
    app = Starlette(
        routes=[
            Route(HOOK_PATH, data_arrived, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Mount("/data-docs", app=StaticFiles(directory=docs, html=True, check_dir=False)),
        ]
    )
    app.state.config = config
    return app


class _AppFromEnvironment:
    """``uvicorn deployments.webhook:app``: the app is built from the environment at start-up.

    Importing this module therefore reads nothing; a missing secret fails the ASGI lifespan
    start-up, which makes uvicorn print the reason and exit instead of serving.
    """

    def __init__(self) -> None:
        self._app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                self._app = create_app()
            except WebhookConfigError as error:
                if scope["type"] == "lifespan":
                    await receive()  # lifespan.startup
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                elif scope["type"] == "http":
                    response = _error(503, "webhook receiver is not configured")
                    await response(scope, receive, send)
                return
        await self._app(scope, receive, send)


app = _AppFromEnvironment()


# --- sender CLI ------------------------------------------------------------------------------


def send_data_arrived(
    url: str,
    secret: str,
    projects_uri: str,
    tags_uri: str,
    source: str | None = None,
    batch_id: str | None = None,
) -> httpx.Response:
    """POST a signed notice to a receiver (what an upstream system does)."""
    fields = {"projects_uri": projects_uri, "tags_uri": tags_uri, "source": source}
    fields["batch_id"] = batch_id
    body = json.dumps({k: v for k, v in fields.items() if v is not None}).encode()
    headers = {"Content-Type": "application/json", **sign(secret, body)}
    return httpx.post(url, content=body, headers=headers, timeout=30.0, trust_env=False)


def _local_defaults() -> tuple[str, str | None]:
    """The local platform's receiver URL and generated secret, when it wrote them."""
    from tagifai.config import get_settings

    platform = get_settings().stores_dir / "platform"
    url = "http://127.0.0.1:8787"
    with contextlib.suppress(OSError, ValueError, KeyError):
        url = json.loads((platform / "webhook.json").read_text())["url"]
    try:
        secret: str | None = (platform / "webhook-secret").read_text().strip()
    except OSError:
        secret = None
    return url + HOOK_PATH, secret


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deployments.webhook PROJECTS_URI TAGS_URI``: send a signed notice."""
    default_url, platform_secret = _local_defaults()
    parser = argparse.ArgumentParser(
        prog="python -m deployments.webhook",
        description="Send a signed data-arrived notice to the webhook receiver.",
        epilog="The secret is $TAGIFAI_WEBHOOK_SECRET, else the local platform's generated one.",
    )
    parser.add_argument("projects_uri")
    parser.add_argument("tags_uri")
    parser.add_argument("--url", default=default_url, help=f"default: {default_url}")
    parser.add_argument("--source")
    parser.add_argument("--batch-id")
    args = parser.parse_args(argv)
    secret = os.environ.get("TAGIFAI_WEBHOOK_SECRET") or platform_secret
    if not secret:
        print("error: TAGIFAI_WEBHOOK_SECRET is not set", file=sys.stderr)
        return 1
    # The receiver only takes absolute paths; relative ones mean "relative to where I am".
    projects_uri, tags_uri = (
        uri if _SCHEME.match(uri) else os.path.abspath(uri)
        for uri in (args.projects_uri, args.tags_uri)
    )
    try:
        response = send_data_arrived(
            args.url, secret, projects_uri, tags_uri, args.source, args.batch_id
        )
    except httpx.HTTPError as error:
        print(f"error: cannot reach {args.url}: {type(error).__name__}", file=sys.stderr)
        return 1
    print(f"{response.status_code} {response.text}")
    return 0 if response.status_code == 202 else 1


if __name__ == "__main__":
    sys.exit(main())
