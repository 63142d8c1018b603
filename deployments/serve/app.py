"""The ASGI prediction service: ``POST /predict`` and ``GET /health``.

Every rejection is a 4xx with a one-line JSON ``{"error": "..."}`` and changes nothing (no
prediction is made or logged): a body over the cap (413, read incrementally), not JSON or not
an object (400), a body of the wrong shape, an empty text or a batch over the limit (422), an
unknown route (404) or method (405). Before a production model exists, ``/predict`` answers 503.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deployments.serve.model import ModelHolder
from tagifai.config import Settings, get_settings
from tagifai.data import clean_text
from tagifai.predict import predict_batch
from tagifai.predlog import PredictionLog

logger = logging.getLogger(__name__)

MAX_TITLE = 1_000
MAX_DESCRIPTION = 10_000
MAX_BODY_PER_PROJECT = 16 * 1024  # bytes of JSON per project of the batch limit


class Project(BaseModel):
    """One project: what the model reads (title, description) and an optional id echoed back."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: int | Annotated[str, StringConstraints(max_length=64)] | None = None
    title: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE)]
    description: Annotated[str, StringConstraints(max_length=MAX_DESCRIPTION)] = ""


class Batch(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    projects: list[Project] = Field(min_length=1)


def _error(status_code: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status_code)


def _validation_reason(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    if first["type"] == "extra_forbidden":
        return f"unknown field '{where[:60]}'"
    return f"{where}: {first['msg']}"


async def _read_capped(request: Request, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(data: Any, max_batch: int) -> tuple[list[Project], bool] | str:
    """The projects and whether it was a batch, or the reason the body is refused."""
    if not isinstance(data, dict):
        return "body must be a JSON object: {title, description} or {projects: [...]}"
    batch = "projects" in data
    if batch and isinstance(data["projects"], list) and len(data["projects"]) > max_batch:
        return f"projects: at most {max_batch} per request, got {len(data['projects'])}"
    try:
        projects = Batch.model_validate(data).projects if batch else [Project.model_validate(data)]
    except ValidationError as error:
        return _validation_reason(error)
    return projects, batch


async def predict(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    limit = settings.predict_max_batch * MAX_BODY_PER_PROJECT
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return _error(413, f"body larger than {limit} bytes")
    try:
        body = await _read_capped(request, limit)
    except ClientDisconnect:
        return _error(400, "client disconnected")
    if body is None:
        return _error(413, f"body larger than {limit} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body is not valid JSON")
    parsed = _parse(data, settings.predict_max_batch)
    if isinstance(parsed, str):
        return _error(422 if isinstance(data, dict) else 400, parsed)
    projects, batch = parsed
    texts = [clean_text(f"{p.title} {p.description}") for p in projects]
    empty = [i for i, text in enumerate(texts) if not text]
    if empty:
        where = f"projects.{empty[0]}" if batch else "title"
        return _error(422, f"{where}: title and description hold no words")
    served = request.app.state.holder.served
    if served is None:
        return _error(503, "no production model yet: train one (make run, or tagifai train)")
    log: PredictionLog | None = request.app.state.log
    result = await run_in_threadpool(predict_batch, served, texts, log is not None)
    if log is not None:
        log.append(result.log_batch("service"))
    rows = result.rows()
    if not batch:
        return JSONResponse({"model_version": result.version, **rows[0]})
    for project, row in zip(projects, rows, strict=True):
        if project.id is not None:
            row["id"] = project.id
    return JSONResponse({"model_version": result.version, "predictions": rows})


async def health(request: Request) -> JSONResponse:
    status = request.app.state.holder.status()
    log: PredictionLog | None = request.app.state.log
    return JSONResponse(
        {
            "status": "ok" if status.version is not None else "no production model",
            "model_version": status.version,
            "loaded_at": status.loaded_at,
            "last_check": status.last_check,
            "last_error": status.last_error,
            "prediction_log": None
            if log is None
            else {
                "directory": str(log.directory),
                "written_rows": log.stats.written_rows,
                "pending_rows": log.pending_rows,
                "files": log.stats.files,
                "dropped_rows": log.stats.dropped_rows,
            },
        }
    )


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    return _error(error.status_code, str(error.detail))


def create_app(settings: Settings | None = None, reload_seconds: float | None = None) -> Starlette:
    """The service; settings are read from the environment at start-up unless given."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        resolved = settings or get_settings()
        app.state.settings = resolved
        app.state.holder = ModelHolder(resolved, reload_seconds).start()
        app.state.log = (
            PredictionLog(
                resolved.predictions_dir,
                resolved.prediction_log_flush_rows,
                resolved.prediction_log_flush_seconds,
            ).start()
            if resolved.prediction_log
            else None
        )
        try:
            yield
        finally:
            app.state.holder.close()
            if app.state.log is not None:
                app.state.log.close()  # what is buffered is written before the process ends

    return Starlette(
        routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
