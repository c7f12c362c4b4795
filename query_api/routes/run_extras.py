"""/api/v1/runs/{run_id}/…: producers (ranks), alerts, console log, lineage, artifact download.

The artifact download streams the object named by the artifact's `s3://bucket/name` uri
through the S3 client the app builder put in `app.state.object_store` (a `minio.Minio`);
without one it answers 503 TEMPORARILY_UNAVAILABLE, never a 500.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Optional
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse

from query_api.errors import NotFound, QueryApiError
from query_api.repository.extras import RunExtrasRepository
from query_api.responses import SafeJSONResponse
from query_api.services import Services, services

router = APIRouter(prefix="/api/v1/runs/{run_id}", tags=["runs"])
Svc = Annotated[Services, Depends(services)]
MAX_ALERTS = 10_000
MAX_CONSOLE_CHUNKS = 10_000
CHUNK_BYTES = 256 * 1024


class ArtifactStoreUnavailable(QueryApiError):
    """No S3 client is configured, or S3 failed."""

    error_code = "TEMPORARILY_UNAVAILABLE"
    http_status = 503


class ArtifactNotFound(NotFound):
    """No live artifact with that key in the run."""


def _extras(svc: Services, run_id: str) -> RunExtrasRepository:
    svc.require_runs([run_id])
    return RunExtrasRepository(svc.metrics.store)


@router.get("/producers", response_model=None)
def run_producers(svc: Svc, run_id: str) -> Response:
    """Every producer (rank) of the run with its host, pid, status and last activity."""
    return SafeJSONResponse({"run_id": run_id, "producers": _extras(svc, run_id).producers(run_id)})


@router.get("/alerts", response_model=None)
def run_alerts(
    svc: Svc,
    run_id: str,
    max_results: Annotated[int, Query(ge=1, le=MAX_ALERTS)] = 1_000,
) -> Response:
    """Alerts the run triggered, oldest first."""
    rows = _extras(svc, run_id).alerts(run_id, max_results)
    return SafeJSONResponse({"run_id": run_id, "alerts": rows})


@router.get("/lineage", response_model=None)
def run_lineage(svc: Svc, run_id: str) -> Response:
    """Inputs and outputs (datasets, models) of the run."""
    rows = _extras(svc, run_id).lineage(run_id)
    return SafeJSONResponse(
        {
            "run_id": run_id,
            "inputs": [r for r in rows if r["direction"] == "INPUT"],
            "outputs": [r for r in rows if r["direction"] == "OUTPUT"],
        }
    )


@router.get("/console", response_model=None)
def run_console(
    svc: Svc,
    run_id: str,
    after_offset: Annotated[Optional[int], Query(ge=0, le=2**63 - 1)] = None,
    max_results: Annotated[int, Query(ge=1, le=MAX_CONSOLE_CHUNKS)] = 1_000,
) -> Response:
    """Console chunks (stdout/stderr of every producer) in log order. Poll with
    `after_offset=<next_after_offset>` to tail a running run."""
    chunks, last = _extras(svc, run_id).console(run_id, after_offset, max_results)
    body: dict[str, Any] = {"run_id": run_id, "chunks": chunks, "next_after_offset": last}
    return SafeJSONResponse(body)


@router.get("/artifacts/download", response_model=None)
def download_artifact(
    svc: Svc,
    request: Request,
    run_id: str,
    key: Annotated[str, Query(min_length=1, max_length=4_096)],
) -> Response:
    """The artifact's bytes (a directory artifact: its JSON manifest) as an attachment."""
    row = _extras(svc, run_id).artifact(run_id, key)
    if row is None:
        raise ArtifactNotFound(f"Artifact {key!r} of run {run_id} not found")
    uri = str(row["uri"])
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ArtifactStoreUnavailable(f"artifact {key!r} has no S3 location ({uri!r})")
    bucket, name = uri[5:].split("/", 1)
    if not _own_blob(svc, bucket, name, str(row["project"]), run_id):
        # an event may name any uri: never read, with the server's credentials, an object
        # outside the run's project (another project's blobs, the event archive)
        raise ArtifactNotFound(f"Artifact {key!r} of run {run_id} is not in its project's store")
    client = getattr(request.app.state, "object_store", None)
    if client is None:
        raise ArtifactStoreUnavailable("no artifact store is configured for this API")
    try:
        obj = client.get_object(bucket, name)
    except Exception as exc:
        raise ArtifactStoreUnavailable(f"artifact store failed: {type(exc).__name__}") from exc

    def body() -> Iterator[bytes]:
        try:
            yield from obj.stream(CHUNK_BYTES)
        finally:
            obj.close()
            obj.release_conn()

    filename = key.rstrip("/").rsplit("/", 1)[-1] or "artifact"
    if row["kind"] == "DIR":
        filename += ".manifest.json"
    media = str(row["content_type"] or "application/octet-stream")
    headers = {
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(filename, safe='')}",
        "X-Artifact-Sha256": str(row["sha256"]),
    }
    if row["kind"] != "DIR":
        headers["Content-Length"] = str(int(row["size"]))
    return StreamingResponse(body(), media_type=media, headers=headers)


def _own_blob(svc: Services, bucket: str, name: str, project: str, run_id: str) -> bool:
    """Whether object `name` of `bucket` can hold an artifact of `run_id` in `project`: a
    content-addressed blob of the project, or an object under the run's prefix (the layout
    of `producers.artifacts`), in the artifact bucket when the API knows it."""
    blobs = svc.shared.blobs
    if blobs is not None and bucket != blobs.s3.bucket:
        return False
    parts = name.split("/")
    if ".." in parts or "" in parts:
        return False
    return name.startswith((f"{project}/blobs/", f"{project}/runs/{run_id}/"))
