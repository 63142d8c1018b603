"""The ASGI receiver: ``POST /hooks/data-arrived`` checks a signed notice and emits its event.

Every rejection is a 4xx (502 if Prefect is down, 503 if a source cannot be reached) with a
short JSON ``{"error": "..."}``: a missing or bad signature or stale timestamp (401), a body
over the size cap (413, read incrementally, never buffered whole), malformed JSON (400), a
body of the wrong shape, a URI that is not allowed or tables that cannot be read (422), a
signed request already accepted (409: replay protection, see ``replay``).

An accepted notice is fingerprinted: its two tables are read and hashed into the snapshot id
dataops will compute. The batch is claimed in the ledger the data-arrival sensor shares
(``tagifai.sensor.claim_batch``), so data already received, by webhook or sensor, answers 200
``{"duplicate": true, ...}`` and starts nothing. Only then is ``tagifai.data.arrived`` emitted
(202). A failed emit releases both claims, so the sender's retry goes through.
``/data-docs`` serves the Great Expectations Data Docs read-only.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from anyio.to_thread import run_sync
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from deployments.webhook.config import WebhookConfig, WebhookConfigError, load_config
from deployments.webhook.events import (
    EVENT_NAME,
    DataArrived,
    PrefectUnavailable,
    build_event,
    emit_event,
)
from deployments.webhook.replay import claim_signature, release_signature
from deployments.webhook.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature_matches,
    timestamp_problem,
)
from deployments.webhook.uris import UriRejected, check_uri
from tagifai.errors import DataSourceError, DataSourceUnavailable
from tagifai.sensor import claim_batch, find_batch, fingerprint_batch, release_batch

logger = logging.getLogger(__name__)

HOOK_PATH = "/hooks/data-arrived"


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


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def data_arrived(request: Request) -> JSONResponse:
    config: WebhookConfig = request.app.state.config
    timestamp = request.headers.get(TIMESTAMP_HEADER)
    signature = request.headers.get(SIGNATURE_HEADER)
    if not timestamp or not signature:
        return _error(401, f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    problem = timestamp_problem(timestamp, time.time(), config.max_clock_skew_s)
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

    if not signature_matches(config.secret, timestamp, body, signature):
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

    settings = config.settings
    assert settings is not None  # load_config always resolves it
    if not await run_sync(claim_signature, settings, signature, timestamp, config.max_clock_skew_s):
        return _error(409, "this signed request was already accepted: a replay")
    try:
        return await _announce(config, notice, projects_uri, tags_uri)
    except BaseException:
        await run_sync(release_signature, settings, signature)
        raise


async def _announce(
    config: WebhookConfig, notice: DataArrived, projects_uri: str, tags_uri: str
) -> JSONResponse:
    """Fingerprint the batch, claim it, emit its event. Anything but a 202 or a duplicate
    raises or returns an error after releasing what it claimed, so the sender can retry."""
    settings = config.settings
    assert settings is not None
    try:
        batch_id = await run_sync(fingerprint_batch, projects_uri, tags_uri)
    except DataSourceError as error:
        raise _Refused(422, _first_line(error)) from None
    except DataSourceUnavailable as error:
        raise _Refused(503, _first_line(error)) from None
    origin = f"webhook:{notice.source}" if notice.source else "webhook"
    if not await run_sync(claim_batch, settings, batch_id, origin, (projects_uri, tags_uri)):
        first = await run_sync(find_batch, settings, batch_id)
        seen = f" from {first.source} at {first.claimed_at}" if first else ""
        reason = f"same content as batch {batch_id}, already received{seen}: no new run"
        return JSONResponse({"duplicate": True, "batch_id": batch_id, "reason": reason})
    event = build_event(notice, projects_uri, tags_uri, batch_id)
    try:
        await emit_event(config, event)
    except PrefectUnavailable as error:
        await run_sync(release_batch, settings, batch_id)
        logger.error("Could not emit %s: %s", EVENT_NAME, error)
        raise _Refused(502, str(error)) from None
    logger.info(
        "Emitted %s %s for %s", EVENT_NAME, event["id"], event["resource"]["prefect.resource.id"]
    )
    return JSONResponse({"event_id": event["id"], "batch_id": batch_id}, status_code=202)


class _Refused(Exception):
    """A notice that was not carried out: its status and one-line reason."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


async def _refused(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, _Refused)
    return _error(error.status_code, error.reason)


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(secret: str | None = None, **overrides: Any) -> Starlette:
    """Build the receiver; arguments override the environment (see :func:`load_config`).

    Raises:
        WebhookConfigError: no usable secret or setting.
    """
    config = load_config(secret, **overrides)
    # Browsers refuse file:// links from an http page: serve the Data Docs the flows build.
    docs = StaticFiles(directory=config.docs_dir, html=True, check_dir=False)
    app = Starlette(
        routes=[
            Route(HOOK_PATH, data_arrived, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Mount("/data-docs", app=docs),
        ],
        exception_handlers={_Refused: _refused},
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
