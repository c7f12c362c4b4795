"""MLflow's proxied artifact routes, stored in S3 with the SDK's layout.

- `PUT|GET /api/2.0/mlflow-artifacts/artifacts/<experiment_id>/<run_id>/artifacts/<key>`:
  upload (then an `ArtifactStored` event, claim check) / download of a run's artifact;
- `GET /api/2.0/mlflow-artifacts/artifacts?path=<experiment_id>/<run_id>/artifacts[/dir]`
  and `GET /api/2.0/mlflow/artifacts/list?run_id=&path=`: one directory level;
- `<experiment_id>/models/<model_id>/artifacts/<key>`: artifacts of an MLflow 3 logged
  model, stored under the owner `models/<model_id>` (no event: the model is not a run).
Rules: a run artifact is readable and writable only through a token of the run's project
(404 otherwise); keys follow the artifact key rules (no leading `/`, no `.`/`..` segment, no
backslash or control character, at most `MAX_PATH_BYTES`; else 400).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from producers.artifacts import ArtifactInfo
from query_api import mlflow_shapes as shapes
from query_api.artifacts import BlobStore
from query_api.errors import BadRequest, PayloadTooLarge, WriteUnavailable
from query_api.eventlog import now_ms
from query_api.mlflow_writes import run_experiment
from query_api.responses import SafeJSONResponse
from query_api.services import Services, services
from schemas import ArtifactKind, ArtifactStored

Svc = Annotated[Services, Depends(services)]
OptStr = Annotated[Optional[str], Query(max_length=4_096)]
_CHUNK = 1024 * 1024
#: keeps `<project>/runs/<run_id>/artifacts/<key>.artifact.json` within S3's 1,024-byte names
MAX_PATH_BYTES = 768


def _blobs(svc: Services) -> BlobStore:
    if svc.shared.blobs is None:
        raise WriteUnavailable("artifacts are disabled: the API was started without S3 settings")
    return svc.shared.blobs


def _split(path: str) -> tuple[str, str, str]:
    """(kind 'run'|'model', owner id, key-or-dir) of an mlflow-artifacts path."""
    parts = [p for p in path.strip("/").split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise BadRequest(f"Invalid artifact path {path!r}")
    if "\\" in path or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise BadRequest(f"Invalid artifact path {path!r}: backslash or control character")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise BadRequest(f"Invalid artifact path: longer than {MAX_PATH_BYTES} bytes")
    if len(parts) >= 3 and parts[2] == "artifacts":
        return "run", parts[1], "/".join(parts[3:])
    if len(parts) >= 4 and parts[1] == "models" and parts[3] == "artifacts":
        return "model", parts[2], "/".join(parts[4:])
    raise BadRequest(
        f"Invalid artifact path {path!r}: expected <experiment_id>/<run_id>/artifacts/<path>"
    )


async def _owner(svc: Services, kind: str, owner: str) -> str:
    if kind == "run":
        await run_experiment(svc, owner, svc.shared.runs)  # 404 outside the caller's project
        return owner
    return f"models/{owner}"


async def _spool(request: Request, limit: int) -> Path:
    fd, name = tempfile.mkstemp(prefix="runstream-upload-")
    size = 0
    try:
        with open(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"artifact exceeds {limit} bytes")
                out.write(chunk)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def _listing(infos: list[ArtifactInfo], directory: str) -> list[dict[str, Any]]:
    """Immediate children of `directory` ('' = root): files with sizes, then sub-directories."""
    prefix = directory.strip("/") + "/" if directory.strip("/") else ""
    files: dict[str, dict[str, Any]] = {}
    for info in infos:
        if not info.key.startswith(prefix):
            continue
        head, sep, _ = info.key[len(prefix) :].partition("/")
        if sep:
            files.setdefault(head, {"path": head, "is_dir": True})
        else:
            files[head] = {"path": head, "is_dir": False, "file_size": info.size}
    return [files[k] for k in sorted(files)]


def build_router() -> APIRouter:
    r = APIRouter(tags=["mlflow-artifacts"])
    base = "/api/2.0/mlflow-artifacts/artifacts"

    @r.put(base + "/{path:path}", summary="Upload an artifact (proxied to S3)", response_model=None)
    async def upload(svc: Svc, request: Request, path: str) -> Response:
        kind, owner_id, key = _split(path)
        if not key:
            raise BadRequest("Missing artifact key after 'artifacts/'")
        owner = await _owner(svc, kind, owner_id)
        blobs = _blobs(svc)
        tmp = await _spool(request, svc.settings.max_artifact_bytes)
        ctype = request.headers.get("content-type") or "application/octet-stream"
        try:
            info = await run_in_threadpool(
                blobs.put, svc.write_project, owner, key, tmp, ctype, now_ms()
            )
        finally:
            tmp.unlink(missing_ok=True)
        if kind == "run":
            eid = await run_experiment(svc, owner_id, svc.shared.runs)
            event = ArtifactStored(
                envelope=svc.writer.envelope(eid, owner_id),
                key=key,
                uri=info.uri,
                size=info.size,
                sha256=info.sha256,
                kind=ArtifactKind.FILE,
                content_type=ctype,
                overwrite=True,
            )
            await svc.writer.emit([event])
        return SafeJSONResponse({})

    @r.get(base + "/{path:path}", summary="Download an artifact", response_model=None)
    async def download(svc: Svc, path: str) -> Response:
        kind, owner_id, key = _split(path)
        if not key:
            raise BadRequest("Missing artifact key after 'artifacts/'")
        owner = await _owner(svc, kind, owner_id)
        blobs = _blobs(svc)
        tmpdir = Path(tempfile.mkdtemp(prefix="runstream-download-"))
        try:
            dest = await run_in_threadpool(
                blobs.fetch, svc.write_project, owner, key, tmpdir / "blob"
            )
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        return FileResponse(
            dest,
            media_type="application/octet-stream",
            background=BackgroundTask(shutil.rmtree, tmpdir, ignore_errors=True),
        )

    @r.get(base, summary="List one directory level of artifacts", response_model=None)
    async def list_artifacts(svc: Svc, path: OptStr = None) -> Response:
        kind, owner_id, directory = _split(path or "")
        owner = await _owner(svc, kind, owner_id)
        blobs = _blobs(svc)
        infos = await run_in_threadpool(blobs.list, svc.write_project, owner)
        files = _listing(infos, directory)
        return SafeJSONResponse({"files": files} if files else {})

    for prefix in ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow"):

        @r.get(
            prefix + "/artifacts/list",
            summary="List a run's artifacts (MLflow ListArtifacts)",
            response_model=None,
        )
        async def list_run_artifacts(
            svc: Svc, run_id: OptStr = None, run_uuid: OptStr = None, path: OptStr = None
        ) -> Response:
            rid = run_id or run_uuid
            if not rid:
                raise BadRequest("Missing value for required parameter 'run_id'")
            eid = await run_experiment(svc, rid, svc.shared.runs)
            blobs = _blobs(svc)
            infos = await run_in_threadpool(blobs.list, svc.write_project, rid)
            directory = (path or "").strip("/")
            files = _listing(infos, directory)
            for f in files:
                f["path"] = f"{directory}/{f['path']}" if directory else f["path"]
            body: dict[str, Any] = {"root_uri": shapes.artifact_uri(eid, rid)}
            if files:
                body["files"] = files
            return SafeJSONResponse(body)

    return r


router = build_router()
