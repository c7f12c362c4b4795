"""/api/v1/runs: search (POST, paged), detail, and multi-run comparison."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from query_api.errors import BadRequest
from query_api.models import CompareRequest, SearchRunsRequest
from query_api.repository import Series
from query_api.repository.summaries import require_runs, summaries
from query_api.responses import SafeJSONResponse
from query_api.run_search import search_runs
from query_api.services import Services, services

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])
Svc = Annotated[Services, Depends(services)]


@router.post("/search", response_model=None)
def search(svc: Svc, req: SearchRunsRequest) -> Response:
    """Runs matching `filter` in `experiment_ids` (all when empty), ordered and paged."""
    runs, token = search_runs(
        svc,
        experiment_ids=req.experiment_ids,
        filter_text=req.filter,
        order_by=req.order_by,
        view=req.run_view_type,
        max_results=req.max_results,
        page_token=req.page_token,
    )
    body: dict[str, Any] = {"runs": runs}
    if token is not None:
        body["next_page_token"] = token
    return SafeJSONResponse(body)


@router.post("/compare", response_model=None)
def compare_runs(svc: Svc, req: CompareRequest) -> Response:
    """Summaries of every (run, key) and, with `n`, buckets over one shared x range."""
    if req.n is not None and req.n > svc.settings.max_buckets:
        raise BadRequest(f"n must be at most {svc.settings.max_buckets}")
    run_ids = list(dict.fromkeys(req.run_ids))
    keys = list(dict.fromkeys(req.keys))
    require_runs(svc.metrics.store, run_ids, svc.settings.project)
    found = {
        (s["run_id"], s["key"]): s for s in summaries(svc.metrics.store, run_ids, keys, req.split)
    }
    buckets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    x_range = None
    if req.n is not None:
        series = [Series(r, k, req.split, req.x) for r in run_ids for k in keys]
        x_range = svc.metrics.x_range(series)
        if x_range is not None:
            buckets = svc.metrics.buckets(series, req.n, *x_range)
    out = []
    for run_id in run_ids:
        for key in keys:
            summary = found.get((run_id, key))
            item: dict[str, Any] = {"run_id": run_id, "key": key, "split": req.split}
            item["summary"] = (
                None
                if summary is None
                else {k: v for k, v in summary.items() if k not in ("run_id", "key", "split")}
            )
            if req.n is not None:
                item["buckets"] = buckets.get((run_id, key), [])
            out.append(item)
    body: dict[str, Any] = {"series": out}
    if req.n is not None:
        start, end = x_range if x_range is not None else (None, None)
        body.update(x=req.x, n=req.n, start=start, end=end)
    return SafeJSONResponse(body)


@router.get("/{run_id}", response_model=None)
def get_run(svc: Svc, run_id: str) -> Response:
    return SafeJSONResponse({"run": svc.runs.detail(run_id)})
