"""/api/v1/runs: search (POST, paged), detail, multi-run comparison, and presigned
artifact uploads for the SDK in HTTP mode (`query_api.artifacts` states the layout):

- `POST /{run_id}/artifacts/uploads` {sha256, size, content_type[, part_size]} -> where to
  PUT the blob (one presigned URL, or presigned parts + a complete URL), valid 15 min;
- `GET /{run_id}/artifacts/pointer?key=` -> `{"pointer": {…} | null}`;
- `PUT /{run_id}/artifacts/pointer` {pointer fields} -> written once its blob is in S3.

Rule: all three need a live run of the caller's project (404 otherwise) and S3 settings
(503 otherwise); keys follow the artifact key rules (400).
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from producers.artifacts import ArtifactInfo
from query_api.artifacts import DEFAULT_PART_SIZE, RUN_BLOBS
from query_api.errors import BadRequest, WriteUnavailable
from query_api.mlflow_writes import run_experiment
from query_api.models import CompareRequest, SearchRunsRequest
from query_api.repository import Grid, Series
from query_api.repository.summaries import summaries
from query_api.responses import SafeJSONResponse
from query_api.run_search import search_runs
from query_api.services import Services, services
from schemas import ArtifactKind

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])
Svc = Annotated[Services, Depends(services)]
#: the artifact key rules (as the SDK's `check_key`), within S3's 1,024-byte object names
MAX_KEY_BYTES = 768
_KEY_CHARS = re.compile(r"[A-Za-z0-9_\-. /]+\Z")
_KINDS = tuple(k.value for k in ArtifactKind)


class UploadRequest(BaseModel):
    """A blob the SDK is about to upload for a run."""

    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(min_length=64, max_length=64)
    size: int = Field(ge=0)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    part_size: int = Field(default=DEFAULT_PART_SIZE, ge=1)


class PointerBody(BaseModel):
    """The pointer of an artifact uploaded through presigned URLs."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=MAX_KEY_BYTES)
    uri: str = Field(max_length=2_048)
    size: int = Field(ge=0)
    sha256: str = Field(min_length=64, max_length=64)
    kind: str = "FILE"
    content_type: str = Field(default="application/octet-stream", max_length=255)
    step: Optional[int] = None
    metadata: dict[str, str] = Field(default_factory=dict)
    logged_at: int = 0
    producer_id: str = Field(default="", max_length=255)


def check_artifact_key(key: str) -> str:
    """`key` if it follows the artifact key rules (no traversal), else BadRequest."""
    if not key or len(key.encode()) > MAX_KEY_BYTES or not _KEY_CHARS.match(key):
        raise BadRequest(
            f"Invalid artifact key {key!r}: 1..{MAX_KEY_BYTES} bytes of letters, digits, "
            "'_', '-', '.', ' ', '/'"
        )
    segments = key.split("/")
    if key.startswith("/") or any(p in ("", ".", "..") for p in segments):
        raise BadRequest(f"Invalid artifact key {key!r}: empty, '.' or '..' path segment")
    if (key + "/").startswith(RUN_BLOBS.split("/", 1)[0] + "/"):
        raise BadRequest(f"Invalid artifact key {key!r}: {RUN_BLOBS.split('/')[0]} is reserved")
    return key


async def _artifact_run(svc: Services, run_id: str) -> Any:
    """The BlobStore, once `run_id` is a live run of the caller's project."""
    await run_experiment(svc, run_id, svc.shared.runs)  # 404 outside the caller's project
    if svc.shared.blobs is None:
        raise WriteUnavailable("artifacts are disabled: the API was started without S3 settings")
    return svc.shared.blobs


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
    svc.require_runs(run_ids)
    found = {
        (s["run_id"], s["key"]): s for s in summaries(svc.metrics.store, run_ids, keys, req.split)
    }
    buckets: dict[tuple[str, str], list[dict[str, Any]]] = {}
    x_range = None
    if req.n is not None:
        series = [Series(r, k, req.split, req.x) for r in run_ids for k in keys]
        x_range = svc.metrics.x_range(series)
        if x_range is not None:
            # [lo, hi] is the series' step range: no point beyond either end
            grid = Grid.of(req.x, *x_range, req.n, cut=(False, False))
            buckets = svc.metrics.buckets(series, grid)
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


@router.post("/{run_id}/artifacts/uploads", response_model=None)
async def presign_upload(svc: Svc, run_id: str, req: UploadRequest) -> Response:
    """Presigned URL(s) to upload one blob of the run straight to S3 (see the module doc)."""
    blobs = await _artifact_run(svc, run_id)
    body = await run_in_threadpool(
        blobs.presign,
        svc.write_project,
        run_id,
        req.sha256,
        req.size,
        req.content_type,
        req.part_size,
    )
    return SafeJSONResponse(body)


@router.get("/{run_id}/artifacts/pointer", response_model=None)
async def read_pointer(
    svc: Svc, run_id: str, key: Annotated[str, Query(max_length=MAX_KEY_BYTES * 4)]
) -> Response:
    """The stored pointer of artifact `key` of the run (null when there is none; 404 is
    kept for a run that is not, or not yet, visible)."""
    blobs = await _artifact_run(svc, run_id)
    info = await run_in_threadpool(
        blobs.read_run_pointer, svc.write_project, run_id, check_artifact_key(key)
    )
    return SafeJSONResponse({"pointer": None if info is None else asdict(info)})


@router.put("/{run_id}/artifacts/pointer", response_model=None)
async def write_pointer(svc: Svc, run_id: str, body: PointerBody) -> Response:
    """Record an artifact whose blob was uploaded with presigned URLs (the SDK then emits
    its ArtifactStored event)."""
    if body.kind not in _KINDS:
        raise BadRequest(f"kind must be one of {_KINDS}")
    blobs = await _artifact_run(svc, run_id)
    info = ArtifactInfo(**body.model_dump())
    check_artifact_key(info.key)
    await run_in_threadpool(blobs.write_run_pointer, svc.write_project, run_id, info)
    return SafeJSONResponse({})
