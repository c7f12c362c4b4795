"""`POST /api/v1/ingest`: event batches for clients that cannot reach Kafka.

Body (`Content-Type: application/vnd.runstream.avro-batch`, the SDK's `HttpTransport`):
`b"RSB1"`, then per event `u32 LE length | event bytes` (Avro single-object encoding).
Rules: every event must decode with `schemas` and carry the caller's project; the first bad
event rejects the whole batch (400 naming its index) and nothing is produced. 200 means every
event is durable in Kafka; the answer carries the consistency token of the write.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from producers.transport import HTTP_CONTENT_TYPE, decode_http_batch
from query_api.consistency import HEADER
from query_api.errors import BadRequest, PayloadTooLarge, PermissionDenied, UnsupportedMediaType
from query_api.eventlog import Record
from query_api.repository.summaries import foreign_owned
from query_api.responses import SafeJSONResponse
from query_api.services import Services, services
from query_api.writer import event_keys
from schemas import UndecodableEvent, decode, partition_key

router = APIRouter(prefix="/api/v1", tags=["ingest"])
Svc = Annotated[Services, Depends(services)]


@router.post(
    "/ingest",
    summary="Produce a batch of Avro-encoded events to Kafka (all or nothing)",
    response_model=None,
    responses={
        400: {"description": "an event does not decode"},
        403: {
            "description": "an event belongs to another project, or names a run or an"
            " experiment of another project"
        },
        413: {"description": "body larger than max_ingest_bytes"},
        415: {"description": "not application/vnd.runstream.avro-batch"},
    },
)
async def ingest(svc: Svc, request: Request) -> Response:
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype != HTTP_CONTENT_TYPE:
        raise UnsupportedMediaType(f"Content-Type must be {HTTP_CONTENT_TYPE}")
    body = await _read_limited(request, svc.settings.max_ingest_bytes)
    try:
        frames = decode_http_batch(body)
    except ValueError as exc:
        raise BadRequest(f"body: {exc}") from exc
    records: list[Record] = []
    keys: set[str] = set()
    scope = svc.principal.project
    runs: dict[str, int] = {}  # id -> the first event naming it
    experiments: dict[str, int] = {}
    for i, data in enumerate(frames):
        try:
            event = decode(data)
        except UndecodableEvent as exc:
            raise BadRequest(f"event {i}: undecodable: {exc}") from exc
        env = event.envelope
        if scope is not None and env.project != scope:
            raise PermissionDenied(
                f"event {i}: project {env.project!r} is not the token's project {scope!r}"
            )
        if env.run_id:
            runs.setdefault(env.run_id, i)
        experiments.setdefault(env.experiment_id, i)
        records.append((partition_key(event), data))
        keys.update(event_keys(env.experiment_id, env.run_id))
    if scope is not None:
        # an event names its run and experiment by id alone: one of another project's would
        # be written into that project's run (the processors key state by id)
        theirs, their_exps = await run_in_threadpool(
            foreign_owned, svc.shared.store, sorted(runs), sorted(experiments), scope
        )
        for what, ids, owned in (("run", runs, theirs), ("experiment", experiments, their_exps)):
            if owned:
                first = min(owned, key=ids.__getitem__)
                raise PermissionDenied(
                    f"event {ids[first]}: {what} {first!r} belongs to another project"
                )
    token = await svc.writer.produce(records, keys)
    return SafeJSONResponse(
        {"accepted": len(records), "consistency": token}, headers={HEADER: token}
    )


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
