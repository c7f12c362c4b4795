"""Run search as both APIs serve it: parse, check limits, page, query (no HTTP here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

from query_api import paging
from query_api.errors import BadRequest, FilterSyntaxError
from query_api.repository import SearchQuery, ViewType
from query_api.search import OrderKey, parse_filter, parse_order_by
from query_api.services import Services

MAX_ORDER_TERMS = 16


def parse_order_list(order_by: Union[Sequence[str], str]) -> tuple[OrderKey, ...]:
    """Each order_by entry parsed alone, so error positions point into that entry."""
    items = [order_by] if isinstance(order_by, str) else list(order_by)
    keys: list[OrderKey] = []
    for i, item in enumerate(items):
        try:
            keys.extend(parse_order_by(item))
        except FilterSyntaxError as exc:
            raise FilterSyntaxError(f"order_by[{i}]: {exc.reason}", exc.position) from None
    if len(keys) > MAX_ORDER_TERMS:
        raise BadRequest(f"order_by: at most {MAX_ORDER_TERMS} terms")
    return tuple(keys)


def search_runs(
    svc: Services,
    *,
    experiment_ids: Sequence[str],
    filter_text: str,
    order_by: Union[Sequence[str], str],
    view: ViewType,
    max_results: int,
    page_token: Optional[str],
) -> tuple[list[dict[str, Any]], Optional[str]]:
    """One page of runs and the token of the next page (None on the last page)."""
    limit = svc.settings.max_search_results
    if not 1 <= max_results <= limit:
        raise BadRequest(f"max_results must be between 1 and {limit}")
    expr = parse_filter(filter_text)
    order = parse_order_list(order_by)
    fp = paging.fingerprint("runs", sorted(experiment_ids), filter_text, order_by, view)
    offset = paging.offset_of(page_token, fp)
    q = SearchQuery(
        experiment_ids=tuple(experiment_ids),
        filter=expr,
        order_by=order,
        view=view,
        limit=max_results,
        offset=offset,
    )
    runs, more = svc.runs.search(q)
    return runs, paging.encode(fp, offset=offset + max_results) if more else None
