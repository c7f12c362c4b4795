"""MLflow-compatible read routes under /api/2.0/mlflow (and the UI's /ajax-api twin).

`runs/get`, `runs/search`, `metrics/get-history` and `metrics/get-history-bulk-interval`
with MLflow's request parameters, response shapes and error codes (INVALID_PARAMETER_VALUE
400, RESOURCE_DOES_NOT_EXIST 404).
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
from query_api.responses import SafeJSONResponse
from query_api.run_search import search_runs
from query_api.search import metric_key_split
from query_api.services import Services, services
from query_api.writer import experiment_runs_key, run_key

Svc = Annotated[Services, Depends(services)]
OptStr = Annotated[Optional[str], Query(max_length=4_096)]
MAX_SEARCH = 50_000
MAX_BULK_RUNS = 100  # MLflow's MAX_RUNS_GET_METRIC_HISTORY_BULK
MAX_BULK_RESULTS = 2_500  # MLflow's MAX_RESULTS_PER_RUN (and its default)


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
    svc.require_runs([rid])
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


def _history_bulk_interval(
    svc: Services,
    run_ids: list[str],
    metric_key: Optional[str],
    start_step: Optional[int],
    end_step: Optional[int],
    max_results: Optional[int],
) -> Response:
    """Sampled histories of one metric over several runs (MLflow's chart request): per run,
    `max_results` equal-width step buckets over [start_step, end_step] (default: 0 to the
    largest step of these runs) and the last point of each, plus the run's first point in
    the range — real logged points, at most max_results + 1 per run."""
    if not run_ids:
        raise BadRequest("Missing value for required parameter 'run_ids'")
    if len(run_ids) > MAX_BULK_RUNS:
        raise BadRequest(
            f"GetMetricHistoryBulkInterval request must specify at most {MAX_BULK_RUNS} "
            f"run_ids. Received {len(run_ids)} run_ids."
        )
    if not metric_key:
        raise BadRequest("Missing value for required parameter 'metric_key'")
    n = MAX_BULK_RESULTS if max_results is None else max_results
    if not 1 <= n <= MAX_BULK_RESULTS:
        raise BadRequest(f"max_results must be between 1 and {MAX_BULK_RESULTS}.")
    for name, step in (("start_step", start_step), ("end_step", end_step)):
        if step is not None and not -(2**63) <= step < 2**63:
            raise BadRequest(f"Invalid value {step} for parameter '{name}' supplied")
    if (start_step is None) != (end_step is None):
        raise BadRequest("If either start step or end step are specified, both must be specified.")
    if start_step is not None and end_step is not None and start_step > end_step:
        raise BadRequest(
            "end_step must be greater than start_step. "
            f"Found start_step={start_step} and end_step={end_step}."
        )
    ids = list(dict.fromkeys(run_ids))
    svc.wait_for([run_key(rid) for rid in ids])
    svc.require_runs(ids)
    key, split = metric_key_split(metric_key)
    series = [Series(rid, key, split, "step", start_step, end_step) for rid in ids]
    x_range = svc.metrics.x_range(series)
    body: dict[str, Any] = {}
    if x_range is None:
        return SafeJSONResponse(body)
    lo, hi = x_range if start_step is not None else (min(0, x_range[0]), x_range[1])
    sampled = svc.metrics.sampled(series, n, lo, hi)
    metrics = [
        {**mlflow_shapes.history_point(metric_key, p), "run_id": rid}
        for rid in ids
        for p in sampled.get(rid, [])
    ]
    if metrics:
        body["metrics"] = metrics
    return SafeJSONResponse(body)


def build_router(prefix: str) -> APIRouter:
    """The four routes under `prefix` (`/api/2.0/mlflow` or `/ajax-api/2.0/mlflow`)."""
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

    @router.get(
        "/metrics/get-history-bulk-interval",
        summary="Sampled histories of one metric over several runs",
        response_model=None,
    )
    def get_history_bulk_interval(
        svc: Svc,
        run_ids: Annotated[Optional[list[str]], Query()] = None,
        metric_key: OptStr = None,
        start_step: Optional[int] = None,
        end_step: Optional[int] = None,
        max_results: Optional[int] = None,
    ) -> Response:
        return _history_bulk_interval(
            svc, run_ids or [], metric_key, start_step, end_step, max_results
        )

    return router


routers = [build_router("/api/2.0/mlflow"), build_router("/ajax-api/2.0/mlflow")]
