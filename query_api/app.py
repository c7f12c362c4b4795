"""The FastAPI application factory.

Rule: no module-level app or client; `create_app(settings, clickhouse_client_factory)` builds
everything, so tests and `runstream serve` each get their own. Every error leaves as
`{"error_code", "message"}`: bad input is always a 4xx (request validation included),
a failing store a 503, and only a bug can produce a 500.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry, ProcessCollector
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from query_api import ui
from query_api.artifacts import BlobStore, S3Settings
from query_api.auth import ensure_table
from query_api.errors import PayloadTooLarge, QueryApiError
from query_api.eventlog import EventLog, KafkaEventLog
from query_api.models import ErrorBody
from query_api.repository import ClientFactory
from query_api.responses import SafeJSONResponse, error_response
from query_api.routes import (
    analytics,
    asof,
    experiments,
    health,
    ingest,
    metrics,
    mlflow,
    mlflow_artifacts,
    mlflow_models,
    mlflow_write,
    run_extras,
    runs,
)
from query_api.services import Shared
from query_api.settings import Settings
from schemas import EVENTS_TOPIC

log = logging.getLogger(__name__)
#: PUTs under this path are artifact uploads (`Settings.max_artifact_bytes`)
ARTIFACT_UPLOAD_PREFIX = "/api/2.0/mlflow-artifacts/artifacts/"

#: documented on every route (OpenAPI): the error body and the statuses it comes with
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "bad request: INVALID_PARAMETER_VALUE / RESOURCE_ALREADY_EXISTS"),
        (401, "UNAUTHENTICATED: missing, unknown or revoked token"),
        (404, "RESOURCE_DOES_NOT_EXIST (also for another project's resources)"),
        (413, "REQUEST_TOO_LARGE: body over Settings.max_request_bytes (or its route's limit)"),
        (503, "TEMPORARILY_UNAVAILABLE: read-model store, Kafka or S3 unavailable"),
        (504, "CONSISTENCY_TIMEOUT: projections did not reach the requested position"),
    )
}

_HTTP_CODES = {
    404: "ENDPOINT_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "REQUEST_TOO_LARGE",
}


def create_app(
    settings: Settings,
    clickhouse_client_factory: ClientFactory,
    *,
    kafka_bootstrap: str | None = None,
    topic: str = EVENTS_TOPIC,
    s3: S3Settings | None = None,
    require_tokens: bool | None = None,
    event_log: EventLog | None = None,
) -> FastAPI:
    """Build the query API over the read models in `settings.database`.

    Args:
        settings: what to read and the request limits.
        clickhouse_client_factory: returns a clickhouse-connect client (`chdb://DIR` or
            HTTP); called once per worker thread.
        kafka_bootstrap: brokers the write routes (ingest, MLflow writes) produce to; None
            disables writes (503).
        topic: the events topic (the projection worker's topic: read-your-writes compares
            offsets of it with `projection_position`).
        s3: where artifacts are stored; None disables the artifact routes (503).
        require_tokens: True: every request needs a token; False: open mode; None (auto):
            tokens are required once one was issued (`query_api.auth.issue_token`).
        event_log: a ready EventLog instead of `kafka_bootstrap` (tests).
    """
    log_ = event_log or (KafkaEventLog(kafka_bootstrap, topic) if kafka_bootstrap else None)
    shared = Shared.build(
        settings,
        clickhouse_client_factory,
        log=log_,
        blobs=BlobStore(s3) if s3 is not None else None,
        require_tokens=require_tokens,
    )
    try:
        ensure_table(clickhouse_client_factory(), settings.database)
    except Exception as exc:  # noqa: BLE001 - the API still serves reads; auth reports it
        log.warning("cannot create %s.api_tokens: %s", settings.database, exc)
    _announce_mode(shared)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await shared.log.close()

    app = FastAPI(
        title="Runstream query API",
        description="Reads over the read models, MLflow-compatible REST, event ingest. "
        "Errors are JSON `{error_code, message}`.",
        default_response_class=SafeJSONResponse,
        lifespan=lifespan,
    )
    app.state.shared = shared
    #: `/metrics`; `runstream serve` binds the worker's and chDB's metrics to it as well
    app.state.registry = CollectorRegistry()
    ProcessCollector(registry=app.state.registry)
    app.include_router(health.router)
    for router in (
        ingest.router,
        experiments.router,
        run_extras.router,  # before any catch-all run route (artifacts/{key:path})
        runs.router,
        asof.router,
        analytics.router,
        metrics.router,
        *mlflow.routers,
        *mlflow_write.routers,
        *mlflow_models.routers,
        mlflow_artifacts.router,
    ):
        app.include_router(router, responses=ERROR_RESPONSES)
    app.include_router(ui.router)  # `/` and `/ui/...`: the web UI (static build)
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, limit_for=partial(body_limit, settings))
    return app


def body_limit(settings: Settings, scope: Scope) -> int:
    """The largest request body accepted for this request (bytes)."""
    path = str(scope.get("path", ""))
    if path == "/api/v1/ingest":
        return settings.max_ingest_bytes
    if scope.get("method") == "PUT" and path.startswith(ARTIFACT_UPLOAD_PREFIX):
        return settings.max_artifact_bytes
    return settings.max_request_bytes


class BodyLimit:
    """Refuses request bodies over `limit_for(scope)` bytes with 413 `REQUEST_TOO_LARGE`
    before any route parses them: at once when Content-Length says so, else (chunked bodies)
    as soon as the bytes received pass the limit; whatever the route would have answered
    after that is discarded."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise PayloadTooLarge(f"request body exceeds {limit} bytes")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise PayloadTooLarge(f"request body exceeds {limit} bytes")
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the route's answer to a truncated body is replaced by the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await _too_large(limit)(scope, receive, send)


def _too_large(limit: int) -> Response:
    return error_response(413, "REQUEST_TOO_LARGE", f"request body exceeds {limit} bytes")


def _announce_mode(shared: Shared) -> None:
    try:
        required = shared.auth.tokens_required()
    except QueryApiError:
        required = bool(shared.auth.require_tokens)
    if not required:
        log.warning(
            "OPEN ACCESS: no API token has been issued, so the query API accepts every request "
            "(reads of %s and writes as project %r). Issue one with `runstream token issue "
            "PROJECT` to require tokens.",
            "every project" if shared.settings.project is None else repr(shared.settings.project),
            shared.settings.project or "default",
        )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QueryApiError)
    async def _api_error(request: Request, exc: QueryApiError) -> Response:
        if exc.http_status >= 500:
            log.warning("%s %s failed: %s", request.method, request.url.path, exc.message)
        return error_response(exc.http_status, exc.error_code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(400, "INVALID_PARAMETER_VALUE", _describe(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(
            exc.status_code, "BAD_REQUEST" if exc.status_code < 500 else "INTERNAL_ERROR"
        )
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return error_response(500, "INTERNAL_ERROR", "internal error")


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"
