"""GET /api/v1/runs/{run_id}/as-of: a run's state at an event time or a log position."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Optional

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from query_api.errors import BadRequest
from query_api.repository.asof import AsOf, AsOfRepository
from query_api.responses import SafeJSONResponse
from query_api.services import Services, services

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])
Svc = Annotated[Services, Depends(services)]

_INT = re.compile(r"[+-]?[0-9]{1,19}\Z")
_OFFSET = re.compile(r"(?:([0-9]{1,10}):)?([0-9]{1,19})\Z")
_I64 = 2**63 - 1


def parse_time(text: str) -> int:
    """Epoch milliseconds, or ISO-8601 (a time without offset is UTC) -> epoch ms."""
    text = text.strip()
    if _INT.match(text):
        ms = int(text)
    else:
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise BadRequest(
                f"time: expected epoch milliseconds or ISO-8601, got {text[:64]!r}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.timezone.utc)
        ms = round(moment.timestamp() * 1000)
    if not -_I64 <= ms <= _I64:
        raise BadRequest("time: out of range")
    return ms


def parse_offset(text: str) -> AsOf:
    """`partition:offset` or a bare log offset (a run's events are all in one partition)."""
    m = _OFFSET.match(text.strip())
    if m is None:
        raise BadRequest(f"offset: expected 'partition:offset' or an offset, got {text[:64]!r}")
    partition, offset = m.group(1), int(m.group(2))
    if offset > _I64 or (partition is not None and int(partition) > 2**32 - 1):
        raise BadRequest("offset: out of range")
    return AsOf(offset=offset, partition=None if partition is None else int(partition))


@router.get("/{run_id}/as-of", response_model=None)
def run_as_of(
    svc: Svc,
    run_id: str,
    time: Annotated[Optional[str], Query(max_length=64)] = None,
    offset: Annotated[Optional[str], Query(max_length=64)] = None,
) -> Response:
    """The run as it was at `time` (event time: epoch ms or ISO-8601) or at log `offset`
    (`partition:offset` or an offset): name, status, notes, deleted, params, tags,
    attributes and metric summaries over the points logged by then. 404 when the run did not
    exist yet."""
    if (time is None) == (offset is None):
        raise BadRequest("give exactly one of time or offset")
    at = AsOf(time_ms=parse_time(time)) if time is not None else parse_offset(offset or "")
    run = AsOfRepository(svc.runs.store, svc.settings.project).run_as_of(run_id, at)
    return SafeJSONResponse({"run": run})
