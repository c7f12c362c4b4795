"""Liveness and version: MLflow's `GET /health`, `GET /version`, `GET /api/v1/health`, and
`GET /metrics` (Prometheus text: the process, and in `runstream serve` the projection worker
and chDB; no project data, open like /health)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from query_api.errors import QueryApiError
from query_api.responses import SafeJSONResponse
from query_api.services import Shared

#: the MLflow server version whose REST API the /api/2.0/mlflow routes follow
MLFLOW_VERSION = "3.17.2"

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness (MLflow): always `OK`", response_class=PlainTextResponse)
def health() -> str:
    return "OK"


@router.get(
    "/version",
    summary="The MLflow server version this API is compatible with",
    response_class=PlainTextResponse,
)
def version() -> str:
    return MLFLOW_VERSION


@router.get(
    "/api/v1/health",
    summary="Health: read-model store reachable, projection position and lag of own writes",
    response_model=None,
)
def api_health(request: Request) -> Response:
    shared: Shared = request.app.state.shared
    body: dict[str, Any] = {"status": "ok", "database": shared.store.base}
    try:
        position = shared.projections.position()
    except QueryApiError as exc:
        body.update(status="degraded", read_models=exc.message)
        return SafeJSONResponse(body, status_code=503)
    body["projection_position"] = {str(p): o for p, o in sorted(position.items())}
    written = shared.marks.latest()
    body["write_lag"] = {
        str(p): max(0, o - position.get(p, -1)) for p, o in sorted(written.items())
    }
    body["writes_enabled"] = bool(shared.log.topic)
    body["artifacts_enabled"] = shared.blobs is not None
    return SafeJSONResponse(body)


@router.get(
    "/metrics",
    summary="Prometheus metrics: process, projection worker (lag, throughput), chDB memory",
    response_class=PlainTextResponse,
)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
