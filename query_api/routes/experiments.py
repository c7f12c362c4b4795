"""/api/v1/experiments: list (paged) and get."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from query_api import paging
from query_api.responses import SafeJSONResponse
from query_api.search import parse_filter
from query_api.services import Services, services

router = APIRouter(prefix="/api/v1/experiments", tags=["experiments"])
Svc = Annotated[Services, Depends(services)]


@router.get("", response_model=None)
def list_experiments(
    svc: Svc,
    max_results: Annotated[int, Query(ge=1, le=10_000)] = 100,
    page_token: Annotated[Optional[str], Query(max_length=4_096)] = None,
    include_deleted: bool = False,
) -> Response:
    fp = paging.fingerprint("experiments", include_deleted)
    offset = paging.offset_of(page_token, fp)
    rows = svc.experiments.list(
        include_deleted=include_deleted, limit=max_results + 1, offset=offset
    )
    body: dict[str, Any] = {"experiments": rows[:max_results]}
    if len(rows) > max_results:
        body["next_page_token"] = paging.encode(fp, offset=offset + max_results)
    return SafeJSONResponse(body)


@router.get("/{experiment_id}", response_model=None)
def get_experiment(svc: Svc, experiment_id: str) -> Response:
    return SafeJSONResponse({"experiment": svc.experiments.get(experiment_id)})


@router.get("/{experiment_id}/leaderboard", response_model=None)
def leaderboard(
    svc: Svc,
    experiment_id: str,
    metric: Annotated[str, Query(min_length=1, max_length=300)],
    agg: Literal["last", "min", "max", "avg"] = "last",
    order: Literal["asc", "desc"] = "desc",
    limit: Annotated[int, Query(ge=1, le=1_000)] = 10,
    filter: Annotated[str, Query(max_length=20_000)] = "",
) -> Response:
    """The best `limit` runs by `metric` (`key` or `key@split`) aggregated by `agg`;
    `filter` is the run search language."""
    svc.experiments.get(experiment_id)  # 404 for an unknown experiment
    rows = svc.leaderboard.top(
        experiment_id, metric, agg, order == "desc", limit, parse_filter(filter)
    )
    body = {"experiment_id": experiment_id, "metric": metric, "agg": agg, "order": order}
    return SafeJSONResponse({**body, "runs": rows})
