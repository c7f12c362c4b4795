"""Proxied artifacts: the SDK's S3 layout (`producers.artifacts.ArtifactStore`), per project.

Rules: an upload is spooled to a temporary file, stored content-addressed with a per-run
pointer exactly as the SDK stores it (so `list_artifacts()` of the SDK and this API agree),
and only then announced by an `ArtifactStored` event (claim check). S3 failures leave as
`WriteUnavailable` (503); a missing artifact is `NotFound` (404).
"""

from __future__ import annotations

import json
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from producers.artifacts import ArtifactInfo, ArtifactStore
from producers.config import ClientConfig
from producers.errors import ArtifactError, ArtifactNotFound
from query_api.errors import NotFound, WriteUnavailable


@dataclass(frozen=True)
class S3Settings:
    """Where artifacts live (the same bucket the SDK writes)."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str = "runstream"


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
