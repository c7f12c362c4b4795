"""/api/v1/runs/{run_id}/metrics/{key}: raw history (JSON pages or Arrow IPC) and buckets."""

from __future__ import annotations

from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from query_api import paging
from query_api.errors import BadRequest
from query_api.repository import Axis, Grid, Series
from query_api.responses import SafeJSONResponse
from query_api.services import Services, services

router = APIRouter(prefix="/api/v1/runs/{run_id}/metrics", tags=["metrics"])
Svc = Annotated[Services, Depends(services)]
ARROW_STREAM = "application/vnd.apache.arrow.stream"
Int64 = Annotated[Optional[int], Query(ge=-(2**63), le=2**63 - 1)]
Split = Annotated[str, Query(max_length=250)]


def wants_arrow(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip() == ARROW_STREAM for part in accept.split(","))


@router.get("/{key:path}/history", response_model=None)
def metric_history(
    svc: Svc,
    request: Request,
    run_id: str,
    key: str,
    split: Split = "",
    start: Int64 = None,
    end: Int64 = None,
    max_results: Annotated[Optional[int], Query(ge=1)] = None,
    page_token: Annotated[Optional[str], Query(max_length=4_096)] = None,
) -> Response:
    """Points in step order. JSON is paged; `Accept: application/vnd.apache.arrow.stream`
    returns the whole series (step, epoch, timestamp, value) as one Arrow IPC stream."""
    svc.require_runs([run_id])
    series = Series(run_id, key, split, "step", start, end)
    if wants_arrow(request):
        if page_token is not None or max_results is not None:
            raise BadRequest("the Arrow stream is the whole series: drop max_results/page_token")
        return Response(svc.metrics.arrow_stream(series), media_type=ARROW_STREAM)
    limit = max_results or svc.settings.max_history_results
    if limit > svc.settings.max_history_results:
        raise BadRequest(f"max_results must be at most {svc.settings.max_history_results}")
    fp = paging.fingerprint("history", run_id, key, split, start, end)
    points, cursor = svc.metrics.history(series, limit, paging.cursor_of(page_token, fp))
    body: dict[str, Any] = {"run_id": run_id, "key": key, "split": split, "points": points}
    if cursor is not None:
        body["next_page_token"] = paging.encode(fp, after=list(cursor))
    return SafeJSONResponse(body)


@router.get("/{key:path}/buckets", response_model=None)
def metric_buckets(
    svc: Svc,
    run_id: str,
    key: str,
    n: Annotated[int, Query(ge=1)] = 1000,
    split: Split = "",
    x: Axis = "step",
    start: Int64 = None,
    end: Int64 = None,
) -> Response:
    """`n` buckets over [start, end] (default: the series' range), widths differing by at
    most 1; each has min/max/avg/last/count and its x bounds; empty buckets are omitted. On
    the step axis, from 512 steps per bucket, bucket edges fall on the boundaries of
    32-, 512- or 8,192-step blocks (widths then differ by at most one block, 1/16 of a
    bucket), so long series are read from per-block aggregates."""
    if n > svc.settings.max_buckets:
        raise BadRequest(f"n must be at most {svc.settings.max_buckets}")
    if start is not None and end is not None and start > end:
        raise BadRequest("start must not be greater than end")
    svc.require_runs([run_id])
    series = Series(run_id, key, split, x, start, end)
    if start is not None and end is not None:
        x_range: tuple[int, int] | None = (start, end)  # the window given whole: no lookup
    else:
        x_range = svc.metrics.x_range([series])
    cut = (start is not None, end is not None)  # else: the series' own first/last step
    grid = None if x_range is None else Grid.of(x, *x_range, n, cut)
    buckets = [] if grid is None else svc.metrics.buckets([series], grid).get((run_id, key), [])
    lo, hi = x_range if x_range is not None else (start, end)
    body = {
        "run_id": run_id,
        "key": key,
        "split": split,
        "x": x,
        "n": n,
        "start": lo,
        "end": hi,
        "buckets": buckets,
    }
    return SafeJSONResponse(body)
