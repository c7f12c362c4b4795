"""Artifact blobs in S3: content-addressed, multipart, resumable; the event comes after.

Rule (claim check): `ArtifactStored` is emitted only after the blob upload completed (S3
answered the PUT / CompleteMultipartUpload), so a consumer that sees the event can always
fetch the bytes.

Layout in the bucket::

    <project>/blobs/sha256/<ab>/<abcdef...>                 content, stored once
    <project>/runs/<run_id>/artifacts/<key>.artifact.json    pointer per run and key

- Files and bytes are hashed (SHA-256) first; a blob that already exists with the same size
  is not uploaded again (dedup across runs and retries).
- Large files (> `part_size`, default 16 MiB) go up as a multipart upload with a progress bar
  (rich, on a terminal). The upload id is kept in `$RUNSTREAM_HOME/uploads/<sha256>.json`;
  a retry after a crash or a network failure lists the parts already stored, skips those
  whose MD5 ETag matches, and uploads only the rest.
- Directories are uploaded as a tree: every file is its own content-addressed blob (a
  checkpoint folder where one file changed re-uploads one file), described by a JSON
  manifest `{"format": "runstream.dir.v1", "files": [{"path", "size", "sha256"}]}` that is
  itself a blob; the artifact's uri and sha256 are the manifest's, its size the files' total.
- Pointer objects make `list_artifacts()` work from S3 alone until the query API serves it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from producers.config import ClientConfig, runstream_home
from producers.errors import ArtifactError, ArtifactNotFound

DEFAULT_PART_SIZE = 16 * 1024 * 1024
POINTER_SUFFIX = ".artifact.json"
MANIFEST_FORMAT = "runstream.dir.v1"
MANIFEST_CONTENT_TYPE = "application/vnd.runstream.dir-manifest+json"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Blob:
    """A stored blob: where it is and what it is."""

    object_name: str
    uri: str
    size: int
    sha256: str
    uploaded: bool  # False when it already existed (dedup)


@dataclass
class ArtifactInfo:
    """What the pointer object records about one artifact of a run."""

    key: str
    uri: str
    size: int
    sha256: str
    kind: str
    content_type: str
    step: int | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    logged_at: int = 0
    producer_id: str = ""


def sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _progress_wanted(progress: bool | None) -> bool:
    return sys.stderr.isatty() if progress is None else progress


class ArtifactStore:
    """Uploads, lists and downloads a project's artifacts through the `minio` client."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        progress: bool | None = None,
    ) -> None:
        if part_size < 5 * 1024 * 1024:
            raise ArtifactError("part_size must be at least 5 MiB (S3 minimum)")
        endpoint, access, secret = config.require_s3()
        from minio import Minio

        scheme, _, host = endpoint.partition("://")
        self.bucket = config.s3_bucket
        self.project = config.project
        self.part_size = part_size
        self.progress = progress
        self._client = Minio(
            host or scheme, access_key=access, secret_key=secret, secure=scheme == "https"
        )
        self._state_dir = runstream_home() / "uploads"

    # ---- naming -------------------------------------------------------------------------
    def blob_name(self, sha256: str) -> str:
        return f"{self.project}/blobs/sha256/{sha256[:2]}/{sha256}"

    def uri(self, object_name: str) -> str:
        return f"s3://{self.bucket}/{object_name}"

    def run_prefix(self, run_id: str) -> str:
        return f"{self.project}/runs/{run_id}/artifacts/"

    def pointer_name(self, run_id: str, key: str) -> str:
        return self.run_prefix(run_id) + key + POINTER_SUFFIX

    # ---- uploads ------------------------------------------------------------------------
    def put_bytes(self, data: bytes, content_type: str) -> Blob:
        sha = hashlib.sha256(data).hexdigest()
        name = self.blob_name(sha)
        if self._exists(name, len(data)):
            return Blob(name, self.uri(name), len(data), sha, uploaded=False)
        with self._s3("upload", name):
            self._client.put_object(
                self.bucket, name, io.BytesIO(data), len(data), content_type=content_type
            )
        return Blob(name, self.uri(name), len(data), sha, uploaded=True)

    def put_file(self, path: Path, content_type: str, label: str | None = None) -> Blob:
        """Upload one file content-addressed; multipart and resumable above `part_size`."""
        sha, size = sha256_file(path)
        name = self.blob_name(sha)
        if self._exists(name, size):
            return Blob(name, self.uri(name), size, sha, uploaded=False)
        if size <= self.part_size:
            with self._s3("upload", name), open(path, "rb") as fh:
                self._client.put_object(self.bucket, name, fh, size, content_type=content_type)
        else:
            self._multipart(path, name, sha, size, content_type, label or path.name)
        return Blob(name, self.uri(name), size, sha, uploaded=True)

    def put_stream(self, fh: IO[bytes], content_type: str) -> Blob:
        """Upload a file object (spooled to a temporary file first to hash it)."""
        with tempfile.NamedTemporaryFile(prefix="runstream-artifact-") as tmp:
            while chunk := fh.read(_CHUNK):
                tmp.write(chunk)
            tmp.flush()
            return self.put_file(Path(tmp.name), content_type)

    def put_dir(self, root: Path) -> tuple[Blob, int, int]:
        """Upload a tree; return (manifest blob, total size of files, number of files)."""
        files = []
        total = 0
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            blob = self.put_file(path, "application/octet-stream", label=str(path))
            rel = path.relative_to(root).as_posix()
            files.append({"path": rel, "size": blob.size, "sha256": blob.sha256})
            total += blob.size
        manifest = json.dumps(
            {"format": MANIFEST_FORMAT, "files": files}, sort_keys=True, separators=(",", ":")
        ).encode()
        return self.put_bytes(manifest, MANIFEST_CONTENT_TYPE), total, len(files)

    def _exists(self, name: str, size: int) -> bool:
        from minio.error import S3Error

        try:
            st = self._client.stat_object(self.bucket, name)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return False
            raise ArtifactError(f"cannot stat {name}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - urllib3/network errors, translated
            raise ArtifactError(f"S3 unreachable while checking {name}: {exc}") from exc
        return bool(st.size == size)

    def _state_file(self, sha: str) -> Path:
        return self._state_dir / f"{sha}.json"

    def _multipart(
        self, path: Path, name: str, sha: str, size: int, content_type: str, label: str
    ) -> None:
        from minio.datatypes import Part
        from minio.error import S3Error

        state_file = self._state_file(sha)
        done: dict[int, str] = {}
        upload_id = None
        with contextlib.suppress(OSError, ValueError, KeyError):
            state = json.loads(state_file.read_text())
            if state["object"] == name and state["part_size"] == self.part_size:
                upload_id = str(state["upload_id"])
        with self._s3("multipart upload", name):
            if upload_id is not None:
                try:
                    listed = self._client._list_parts(self.bucket, name, upload_id, max_parts=10000)
                    done = {p.part_number: p.etag for p in listed.parts}
                except S3Error:
                    upload_id = None
            if upload_id is None:
                upload_id = self._client._create_multipart_upload(
                    self.bucket, name, {"Content-Type": content_type}
                )
                self._state_dir.mkdir(parents=True, exist_ok=True)
                state_file.write_text(
                    json.dumps(
                        {"object": name, "upload_id": upload_id, "part_size": self.part_size}
                    )
                )
            parts: list[Any] = []
            with self._bar(label, size) as advance, open(path, "rb") as fh:
                number = 0
                while data := fh.read(self.part_size):
                    number += 1
                    etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
                    if done.get(number) != etag:
                        etag = self._client._upload_part(
                            self.bucket, name, data, None, upload_id, number
                        )
                    parts.append(Part(number, etag))
                    advance(len(data))
            self._client._complete_multipart_upload(self.bucket, name, upload_id, parts)
        with contextlib.suppress(OSError):
            state_file.unlink()

    @contextlib.contextmanager
    def _bar(self, label: str, total: int) -> Iterator[Any]:
        if not _progress_wanted(self.progress):
            yield lambda n: None
            return
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task(f"upload {label}", total=total)
            yield lambda n: bar.advance(task, n)

    @contextlib.contextmanager
    def _s3(self, what: str, name: str) -> Iterator[None]:
        try:
            yield
        except ArtifactError:
            raise
        except Exception as exc:  # noqa: BLE001 - minio/urllib3 errors, translated here
            raise ArtifactError(f"{what} of {name} failed: {exc}") from exc

    # ---- pointers, listing, downloads ---------------------------------------------------
    def write_pointer(self, run_id: str, info: ArtifactInfo) -> None:
        data = json.dumps(asdict(info), sort_keys=True).encode()
        name = self.pointer_name(run_id, info.key)
        with self._s3("pointer write", name):
            self._client.put_object(
                self.bucket, name, io.BytesIO(data), len(data), content_type="application/json"
            )

    def delete_pointer(self, run_id: str, key: str) -> None:
        name = self.pointer_name(run_id, key)
        with self._s3("pointer delete", name):
            self._client.remove_object(self.bucket, name)

    def read_pointer(self, run_id: str, key: str) -> ArtifactInfo | None:
        from minio.error import S3Error

        name = self.pointer_name(run_id, key)
        try:
            resp = self._client.get_object(self.bucket, name)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound"):
                return None
            raise ArtifactError(f"cannot read {name}: {exc}") from exc
        except Exception as exc:  # noqa: BLE001
            raise ArtifactError(f"S3 unreachable while reading {name}: {exc}") from exc
        try:
            return ArtifactInfo(**json.loads(resp.read()))
        finally:
            resp.close()
            resp.release_conn()

    def list(self, run_id: str) -> list[ArtifactInfo]:
        prefix = self.run_prefix(run_id)
        with self._s3("listing", prefix):
            names = [
                o.object_name
                for o in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            ]
        out = []
        for name in sorted(n for n in names if n and n.endswith(POINTER_SUFFIX)):
            info = self.read_pointer(run_id, name[len(prefix) : -len(POINTER_SUFFIX)])
            if info is not None:
                out.append(info)
        return out

    def download(self, run_id: str, key: str, to: Path) -> Path:
        """Fetch an artifact to `to` (a file path, or a directory to put it in/extract to)."""
        info = self.read_pointer(run_id, key)
        if info is None:
            raise ArtifactNotFound(f"no artifact {key!r} in run {run_id}")
        name = info.uri.split(f"s3://{self.bucket}/", 1)[-1]
        if info.kind == "DIR":
            manifest = json.loads(self._get_verified(name, info.sha256))
            to.mkdir(parents=True, exist_ok=True)
            for f in manifest["files"]:
                dest = to / f["path"]
                if not dest.resolve().is_relative_to(to.resolve()):
                    raise ArtifactError(f"manifest path {f['path']!r} escapes {to}")
                self._fetch(self.blob_name(f["sha256"]), f["sha256"], dest)
            return to
        dest = to / Path(key).name if to.is_dir() else to
        self._fetch(name, info.sha256, dest)
        return dest

    def _get_verified(self, name: str, sha: str) -> bytes:
        with self._s3("download", name):
            resp = self._client.get_object(self.bucket, name)
            try:
                data: bytes = resp.read()
            finally:
                resp.close()
                resp.release_conn()
        if hashlib.sha256(data).hexdigest() != sha:
            raise ArtifactError(f"{name}: content does not match its sha256")
        return data

    def _fetch(self, name: str, sha: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(prefix=".runstream-", dir=dest.parent)
        try:
            with self._s3("download", name), os.fdopen(fd, "wb") as out:
                resp = self._client.get_object(self.bucket, name)
                try:
                    for chunk in resp.stream(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                finally:
                    resp.close()
                    resp.release_conn()
            if h.hexdigest() != sha:
                raise ArtifactError(f"{name}: downloaded content does not match its sha256")
            os.replace(tmp, dest)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
