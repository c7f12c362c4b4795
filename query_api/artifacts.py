"""Proxied artifacts: the SDK's S3 layout (`producers.artifacts.ArtifactStore`), per project.

Rules: an upload is spooled to a temporary file, stored content-addressed with a per-run
pointer exactly as the SDK stores it (so `list_artifacts()` of the SDK and this API agree),
and only then announced by an `ArtifactStored` event (claim check). S3 failures leave as
`WriteUnavailable` (503); a missing artifact is `NotFound` (404).

Presigned uploads (`presign`): the SDK in HTTP mode uploads blobs straight to S3 with
short-lived presigned PUT URLs (a multipart upload above `part_size`) and the API never sees
the bytes. Those blobs are content-addressed *inside the run's prefix*
(`<project>/runs/<run_id>/artifacts/.blobs/sha256/<sha256>`, `run_blob_name`): a URL is
signed for that one object name, so it can write nothing else, and the shared project blobs
(whose content other runs trust by name) are never writable with a URL. A pointer is written
by the API only (`write_run_pointer`) after checking that its blob is in the run's prefix
and has the stated size.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producers.artifacts import ArtifactInfo, ArtifactStore
from producers.config import ClientConfig
from producers.errors import ArtifactError, ArtifactNotFound
from query_api.errors import BadRequest, NotFound, WriteUnavailable

SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum (all parts but the last)
DEFAULT_PART_SIZE = 16 * 1024 * 1024
MAX_PARTS = 10_000  # S3's limit
MAX_UPLOAD_BYTES = 5 * 1024**4  # S3's largest object
RUN_BLOBS = ".blobs/sha256/"


def run_blob_name(store: ArtifactStore, run_id: str, sha256: str) -> str:
    """The object a presigned upload of `sha256` for `run_id` writes (inside its prefix)."""
    if not SHA256_HEX.match(sha256):
        raise BadRequest("sha256 must be 64 lowercase hex digits")
    return store.run_prefix(run_id) + RUN_BLOBS + sha256


@dataclass(frozen=True)
class S3Settings:
    """Where artifacts live (the same bucket the SDK writes)."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str = "runstream"
    #: lifetime of the presigned URLs handed out (an upload that takes longer asks again)
    presign_expiry_s: int = 900


class BlobStore:
    """One `ArtifactStore` per project, created on first use."""

    def __init__(self, s3: S3Settings) -> None:
        self.s3 = s3
        self._stores: dict[str, ArtifactStore] = {}
        self._lock = threading.Lock()

    def store(self, project: str) -> ArtifactStore:
        with self._lock:
            found = self._stores.get(project)
            if found is None:
                config = ClientConfig(
                    s3_endpoint=self.s3.endpoint,
                    s3_access_key=self.s3.access_key,
                    s3_secret_key=self.s3.secret_key,
                    s3_bucket=self.s3.bucket,
                    project=project,
                    mode="offline",
                )
                found = self._stores[project] = ArtifactStore(config, progress=False)
            return found

    def put(
        self, project: str, owner: str, key: str, path: Path, content_type: str, now: int
    ) -> ArtifactInfo:
        """Store the file at `path` as artifact `key` of `owner` (a run id); its pointer."""
        store = self.store(project)
        try:
            blob = store.put_file(path, content_type)
            info = ArtifactInfo(
                key=key,
                uri=blob.uri,
                size=blob.size,
                sha256=blob.sha256,
                kind="FILE",
                content_type=content_type,
                logged_at=now,
                producer_id="query-api",
            )
            store.write_pointer(owner, info)
        except ArtifactError as exc:
            raise WriteUnavailable(f"artifact store failed: {exc}") from exc
        return info

    # -- presigned uploads (SDK in HTTP mode) -------------------------------------------
    def presign(
        self,
        project: str,
        run_id: str,
        sha256: str,
        size: int,
        content_type: str,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> dict[str, Any]:
        """Where and how to upload the blob `sha256` of `size` bytes for `run_id`:
        `{"object", "uri", "exists", "expires_in"}` plus `"url"` (one PUT) or `"multipart"`
        (`upload_id`, `part_size`, `parts` [{part_number, url}], `complete_url`: POST the
        CompleteMultipartUpload XML there). `exists` = already stored with that size (no
        URL then)."""
        if not 0 <= size <= MAX_UPLOAD_BYTES:
            raise BadRequest(f"size must be between 0 and {MAX_UPLOAD_BYTES}")
        if part_size < MIN_PART_SIZE:
            raise BadRequest(f"part_size must be at least {MIN_PART_SIZE}")
        store = self.store(project)
        name = run_blob_name(store, run_id, sha256)
        out: dict[str, Any] = {
            "object": name,
            "uri": store.uri(name),
            "exists": False,
            "expires_in": self.s3.presign_expiry_s,
        }
        expires = dt.timedelta(seconds=self.s3.presign_expiry_s)
        client = store._client
        try:
            if store._exists(name, size):
                out["exists"] = True
                return out
            if size <= part_size:
                out["url"] = client.get_presigned_url("PUT", store.bucket, name, expires)
                return out
            parts = math.ceil(size / part_size)
            if parts > MAX_PARTS:
                part_size = math.ceil(size / MAX_PARTS)
                parts = math.ceil(size / part_size)
            upload_id = client._create_multipart_upload(
                store.bucket, name, {"Content-Type": content_type}
            )

            def signed(method: str, query: dict[str, Any]) -> str:
                url: str = client.get_presigned_url(
                    method, store.bucket, name, expires, extra_query_params=query
                )
                return url

            out["multipart"] = {
                "upload_id": upload_id,
                "part_size": part_size,
                "parts": [
                    {
                        "part_number": n,
                        "url": signed("PUT", {"partNumber": str(n), "uploadId": upload_id}),
                    }
                    for n in range(1, parts + 1)
                ],
                "complete_url": signed("POST", {"uploadId": upload_id}),
            }
        except (ArtifactError, BadRequest):
            raise
        except Exception as exc:  # noqa: BLE001 - minio/urllib3 errors, translated
            raise WriteUnavailable(f"artifact store failed: {exc}") from exc
        return out

    def read_run_pointer(self, project: str, run_id: str, key: str) -> ArtifactInfo | None:
        try:
            return self.store(project).read_pointer(run_id, key)
        except ArtifactError as exc:
            raise WriteUnavailable(f"artifact store failed: {exc}") from exc

    def write_run_pointer(self, project: str, run_id: str, info: ArtifactInfo) -> None:
        """Write the pointer of a presigned upload: its blob must be a run blob of this run
        (`run_blob_name` of its sha256) stored with its size; else BadRequest."""
        store = self.store(project)
        name = run_blob_name(store, run_id, info.sha256)
        if info.uri != store.uri(name):
            raise BadRequest(f"uri must be {store.uri(name)!r} (the run's blob of that sha256)")
        try:
            if not store._exists(name, info.size):
                raise BadRequest(f"no blob {name!r} of {info.size} bytes: upload it first")
            store.write_pointer(run_id, info)
        except ArtifactError as exc:
            raise WriteUnavailable(f"artifact store failed: {exc}") from exc

    def list(self, project: str, owner: str) -> list[ArtifactInfo]:
        try:
            return self.store(project).list(owner)
        except ArtifactError as exc:
            raise WriteUnavailable(f"artifact store failed: {exc}") from exc

    def fetch(self, project: str, owner: str, key: str, to: Path) -> Path:
        try:
            return self.store(project).download(owner, key, to)
        except ArtifactNotFound as exc:
            raise NotFound(f"Artifact {key!r} of {owner} not found") from exc
        except ArtifactError as exc:
            raise WriteUnavailable(f"artifact store failed: {exc}") from exc


class DocumentStore:
    """Small JSON documents (MLflow 3 logged models) kept as artifacts of a pseudo owner.

    Rule: a document is a content-addressed blob plus a pointer `<owner>/<key>`, like any
    artifact; replacing one rewrites the pointer. Reads go to S3 (no read model exists).
    """

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs

    def put(self, project: str, owner: str, key: str, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, sort_keys=True).encode()
        store = self.blobs.store(project)
        try:
            blob = store.put_bytes(data, "application/json")
            info = ArtifactInfo(
                key=key,
                uri=blob.uri,
                size=blob.size,
                sha256=blob.sha256,
                kind="FILE",
                content_type="application/json",
                producer_id="query-api",
            )
            store.write_pointer(owner, info)
        except ArtifactError as exc:
            raise WriteUnavailable(f"artifact store failed: {exc}") from exc

    def get(self, project: str, owner: str, key: str) -> dict[str, Any] | None:
        with tempfile.TemporaryDirectory(prefix="runstream-doc-") as tmp:
            try:
                path = self.blobs.fetch(project, owner, key, Path(tmp) / "doc.json")
            except NotFound:
                return None
            doc: dict[str, Any] = json.loads(path.read_bytes())
            return doc

    def list(self, project: str, owner: str) -> list[dict[str, Any]]:
        out = []
        for info in self.blobs.list(project, owner):
            doc = self.get(project, owner, info.key)
            if doc is not None:
                out.append(doc)
        return out

    def delete(self, project: str, owner: str, key: str) -> None:
        try:
            self.blobs.store(project).delete_pointer(owner, key)
        except ArtifactError as exc:
            raise WriteUnavailable(f"artifact store failed: {exc}") from exc
