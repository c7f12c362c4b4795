"""MLflow-compatible read routes under /api/2.0/mlflow (and the UI's /ajax-api twin).

`runs/get`, `runs/search` and `metrics/get-history` with MLflow's request parameters,
response shapes and error codes (INVALID_PARAMETER_VALUE 400, RESOURCE_DOES_NOT_EXIST 404).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from producers.emit import experiment_id_for
from query_api import mlflow_shapes, paging
from query_api.errors import BadRequest
from query_api.repository import Series
from query_api.repository.summaries import require_runs
from query_api.responses import SafeJSONResponse
from query_api.run_search import search_runs
from query_api.search import metric_key_split
from query_api.services import Services, services
from query_api.writer import experiment_runs_key, run_key

Svc = Annotated[Services, Depends(services)]
OptStr = Annotated[Optional[str], Query(max_length=4_096)]
MAX_SEARCH = 50_000


class MlflowSearchRuns(BaseModel):
    """MLflow's SearchRuns request (unknown fields are ignored, as MLflow does)."""

    model_config = ConfigDict(extra="ignore")

    experiment_ids: list[str] = Field(default_factory=list, max_length=1_000)
    filter: str = Field(default="", max_length=20_000)
    run_view_type: Literal["ACTIVE_ONLY", "DELETED_ONLY", "ALL"] = "ACTIVE_ONLY"
    max_results: int = 1000
    order_by: list[str] = Field(default_factory=list, max_length=16)
    page_token: Optional[str] = Field(default=None, max_length=4_096)


def _run_id(run_id: Optional[str], run_uuid: Optional[str]) -> str:
    value = run_id or run_uuid
    if not value:
        raise BadRequest("Missing value for required parameter 'run_id'")
    return value


def _get_run(svc: Services, run_id: Optional[str], run_uuid: Optional[str]) -> Response:
    rid = _run_id(run_id, run_uuid)
    svc.wait_for([run_key(rid)])
    run = svc.runs.info(rid)
    run["params"] = svc.runs.key_values("params", [rid]).get(rid, {})
    run["tags"] = svc.runs.key_values("tags", [rid]).get(rid, {})
    run["metrics"] = svc.runs.metrics_of([rid]).get(rid, [])
    return SafeJSONResponse({"run": mlflow_shapes.run(run)})


def _search(svc: Services, req: MlflowSearchRuns) -> Response:
    if not 1 <= req.max_results <= MAX_SEARCH:
        raise BadRequest(f"Invalid value {req.max_results} for parameter 'max_results' supplied")
    default = experiment_id_for(svc.write_project, "Default")
    experiment_ids = [default if e == "0" else e for e in req.experiment_ids]
    svc.wait_for([experiment_runs_key(e) for e in experiment_ids])
    runs, token = search_runs(
        svc,
        experiment_ids=experiment_ids,
        filter_text=req.filter,
        order_by=req.order_by,
        view=req.run_view_type,
        max_results=min(req.max_results, svc.settings.max_search_results),
        page_token=req.page_token,
    )
    body: dict[str, Any] = {}
    if runs:
        body["runs"] = [mlflow_shapes.run(r) for r in runs]
    if token is not None:
        body["next_page_token"] = token
    return SafeJSONResponse(body)


def _history(
    svc: Services,
    run_id: Optional[str],
    run_uuid: Optional[str],
    metric_key: Optional[str],
    max_results: Optional[int],
    page_token: Optional[str],
) -> Response:
    rid = _run_id(run_id, run_uuid)
    if not metric_key:
        raise BadRequest("Missing value for required parameter 'metric_key'")
    cap = svc.settings.max_history_results
    if max_results is not None and not 1 <= max_results <= cap:
        raise BadRequest(f"Invalid value {max_results} for parameter 'max_results' supplied")
    svc.wait_for([run_key(rid)])
    require_runs(svc.metrics.store, [rid], svc.settings.project)
    key, split = metric_key_split(metric_key)
    fp = paging.fingerprint("mlflow-history", rid, metric_key)
    points, cursor = svc.metrics.history(
        Series(rid, key, split), max_results or cap, paging.cursor_of(page_token, fp)
    )
    body: dict[str, Any] = {}
    if points:
        body["metrics"] = [mlflow_shapes.history_point(metric_key, p) for p in points]
    if cursor is not None:
        body["next_page_token"] = paging.encode(fp, after=list(cursor))
    return SafeJSONResponse(body)


def build_router(prefix: str) -> APIRouter:
    """The three routes under `prefix` (`/api/2.0/mlflow` or `/ajax-api/2.0/mlflow`)."""
    router = APIRouter(prefix=prefix, tags=["mlflow"])

    @router.get("/runs/get", summary="Get a run (MLflow shape)", response_model=None)
    def get_run(svc: Svc, run_id: OptStr = None, run_uuid: OptStr = None) -> Response:
        return _get_run(svc, run_id, run_uuid)

    @router.post(
        "/runs/search", summary="Search runs (MLflow filter language)", response_model=None
    )
    def search(svc: Svc, req: MlflowSearchRuns) -> Response:
        return _search(svc, req)

    @router.get(
        "/metrics/get-history", summary="A metric's full history (pages)", response_model=None
    )
    def get_history(
        svc: Svc,
        run_id: OptStr = None,
        run_uuid: OptStr = None,
        metric_key: OptStr = None,
        max_results: Optional[int] = None,
        page_token: OptStr = None,
    ) -> Response:
        return _history(svc, run_id, run_uuid, metric_key, max_results, page_token)

    return router


routers = [build_router("/api/2.0/mlflow"), build_router("/ajax-api/2.0/mlflow")]
