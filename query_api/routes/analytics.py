"""/api/v1/analytics: grouped aggregates and parallel coordinates over many runs.

Bodies are the safe query model of `query_api.analytics`; results are JSON, or one Arrow IPC
stream with `Accept: application/vnd.apache.arrow.stream`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import pyarrow as pa
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from query_api.analytics import (
    AggregateRequest,
    ParallelCoordinatesRequest,
    check_param_names,
    parse_group_keys,
)
from query_api.errors import BadRequest
from query_api.repository.analytics import AnalyticsRepository, RunScope
from query_api.responses import SafeJSONResponse
from query_api.routes.metrics import ARROW_STREAM, wants_arrow
from query_api.search import parse_filter
from query_api.services import Services, services

router = APIRouter(prefix="/api/v1/analytics", tags=["analytics"])
Svc = Annotated[Services, Depends(services)]


def _arrow(columns: Sequence[tuple[str, pa.DataType]], rows: list[dict[str, Any]]) -> Response:
    schema = pa.schema([pa.field(name, kind, nullable=True) for name, kind in columns])
    table = pa.Table.from_pydict(
        {name: [row[name] for row in rows] for name, _ in columns}, schema=schema
    )
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table)
    return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)


def _repo(svc: Services) -> AnalyticsRepository:
    return AnalyticsRepository(svc.runs.store, svc.settings.project)


@router.post("/aggregate", response_model=None)
def aggregate(svc: Svc, request: Request, req: AggregateRequest) -> Response:
    """One value per run of `metric`@`split` (`at`: last/min/max from the summaries, or
    {"step": n} / {"epoch": n}: the mean of the points at that step, e.g. of several ranks),
    over the runs of `experiment_ids` matching `filter`, aggregated per `group_by` group
    (`params.<name>`, `tags.<name>`, `status`, `experiment_id`, `run_name`; runs lacking a
    key form the null group). NaN values are left out."""
    keys = parse_group_keys(req.group_by)
    scope = RunScope(tuple(req.experiment_ids), parse_filter(req.filter))
    aggs = list(dict.fromkeys(req.aggregates))
    rows = _repo(svc).aggregate(scope, req.metric, req.split, req.at, keys, aggs)
    if wants_arrow(request):
        flat = [{**r["group"], **{a: r[a] for a in aggs}} for r in rows]
        columns = [(k.text, pa.string()) for k in keys]
        columns += [(a, pa.int64() if a == "count" else pa.float64()) for a in aggs]
        return _arrow(columns, flat)
    at = req.at if isinstance(req.at, str) else req.at.model_dump()
    body = {
        "metric": req.metric,
        "split": req.split,
        "at": at,
        "group_by": [k.text for k in keys],
        "rows": rows,
    }
    return SafeJSONResponse(body)


@router.post("/parallel-coordinates", response_model=None)
def parallel_coordinates(svc: Svc, request: Request, req: ParallelCoordinatesRequest) -> Response:
    """One row per run (ordered by run id, at most `max_runs`): run_id, run_name,
    `params.<name>` (text, null when unset) and `metrics.<key>[@split].<agg>` (last/min/max
    from the summaries, null when never logged)."""
    params = check_param_names(req.params)
    if len({m.column for m in req.metrics}) != len(req.metrics):
        raise BadRequest("metrics: duplicate column")
    scope = RunScope(tuple(req.experiment_ids), parse_filter(req.filter))
    rows, truncated = _repo(svc).parallel_coordinates(scope, params, req.metrics, req.max_runs)
    columns = [("run_id", pa.string()), ("run_name", pa.string())]
    columns += [(f"params.{p}", pa.string()) for p in params]
    columns += [(m.column, pa.float64()) for m in req.metrics]
    if wants_arrow(request):
        response = _arrow(columns, rows)
        response.headers["X-Runstream-Truncated"] = "true" if truncated else "false"
        return response
    return SafeJSONResponse(
        {"columns": [name for name, _ in columns], "rows": rows, "truncated": truncated}
    )
