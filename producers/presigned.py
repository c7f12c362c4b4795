"""Artifacts in HTTP mode: blobs go straight to S3 through presigned URLs from the query API.

The SDK holds no S3 credentials then. For each blob it asks the API
(`POST {api_url}/api/v1/runs/<run_id>/artifacts/uploads` with the SHA-256 and size) for
short-lived presigned URLs scoped to one object inside the run's prefix, PUTs the bytes
there (one PUT, or a multipart upload in parts of `part_size` the API chose, completed with
the presigned complete URL), then has the API write the pointer
(`PUT …/artifacts/pointer`, checked against the stored blob). `Run.log_artifact` emits
`ArtifactStored` only after all of that returned (claim check, as with direct S3).

Rules: a blob already stored in the run's prefix with that size is not sent again; any
failure raises `ArtifactError` (nothing is emitted). The API answers 404 while the run's
creation is still on its way through the log: such calls are retried for
`visible_timeout_s`. Directories are not supported here yet (their manifest names files by
hash in the project's shared blobs, which presigned URLs never write): `put_dir` raises
`ArtifactError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from producers.artifacts import ArtifactInfo, ArtifactStore, Blob, sha256_file
from producers.config import ClientConfig, runstream_home
from producers.errors import ArtifactError, ConfigError


class _NotVisible(Exception):
    """The API answered 404 (the run is unknown to it, or not projected yet)."""


class PresignedArtifactStore(ArtifactStore):
    """The `ArtifactStore` interface `Run.log_artifact` uses, through the query API."""

    def __init__(
        self,
        config: ClientConfig,
        run_id: str,
        timeout_s: float = 60.0,
        visible_timeout_s: float = 60.0,
    ) -> None:
        if not config.api_url:
            raise ConfigError("presigned artifact uploads need RUNSTREAM_API_URL")
        self.api_url = config.api_url.rstrip("/")
        self.token = config.token
        self.run_id = run_id
        self.project = config.project
        self.bucket = config.s3_bucket
        self.part_size = 0  # chosen by the API per upload
        self.progress = False
        self.timeout_s = timeout_s
        self.visible_timeout_s = visible_timeout_s
        self._state_dir = runstream_home() / "uploads"

    # ---- the API ------------------------------------------------------------------------
    def _api(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer; 404 (run not visible yet) retried until `visible_timeout_s`."""
        deadline = time.monotonic() + self.visible_timeout_s
        pause = 0.1
        while True:
            try:
                return self._api_once(method, path, body)
            except _NotVisible as exc:
                if time.monotonic() + pause > deadline:
                    raise ArtifactError(f"run {self.run_id} not found by the API: {exc}") from exc
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def _api_once(self, method: str, path: str, body: Any) -> Any:
        run = urllib.parse.quote(self.run_id, safe="")
        url = f"{self.api_url}/api/v1/runs/{run}/artifacts/{path}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise _NotVisible(exc.read()[:300].decode("utf-8", "replace")) from exc
            detail = exc.read()[:500].decode("utf-8", "replace")
            raise ArtifactError(f"{method} {url}: HTTP {exc.code} {detail}") from exc
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"{method} {url} failed: {exc}") from exc

    def _send(self, method: str, url: str, data: bytes, content_type: str | None) -> str:
        """Send `data` to a presigned S3 URL; the ETag of the answer."""
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Length", str(len(data)))
        if content_type:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
                return str(resp.headers.get("ETag", "")).strip('"')
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:300].decode("utf-8", "replace")
            raise ArtifactError(f"S3 refused the presigned {method}: {exc.code} {detail}") from exc
        except OSError as exc:
            raise ArtifactError(f"presigned {method} to S3 failed: {exc}") from exc

    # ---- uploads ------------------------------------------------------------------------
    def _upload(self, sha: str, size: int, content_type: str, open_data: Any) -> Blob:
        plan = self._api(
            "POST",
            "uploads",
            {"sha256": sha, "size": size, "content_type": content_type},
        )
        name, uri = str(plan["object"]), str(plan["uri"])
        if plan.get("exists"):
            return Blob(name, uri, size, sha, uploaded=False)
        with open_data() as fh:
            if "url" in plan:
                self._send("PUT", str(plan["url"]), fh.read(), content_type)
            else:
                mp = plan["multipart"]
                done = []
                for part in mp["parts"]:
                    data = fh.read(int(mp["part_size"]))
                    etag = self._send("PUT", str(part["url"]), data, None)
                    done.append((int(part["part_number"]), etag))
                xml = "".join(
                    f"<Part><PartNumber>{n}</PartNumber><ETag>&quot;{escape(e)}&quot;</ETag></Part>"
                    for n, e in done
                )
                body = f"<CompleteMultipartUpload>{xml}</CompleteMultipartUpload>".encode()
                self._send("POST", str(mp["complete_url"]), body, "application/xml")
        return Blob(name, uri, size, sha, uploaded=True)

    def put_bytes(self, data: bytes, content_type: str) -> Blob:
        sha = hashlib.sha256(data).hexdigest()
        return self._upload(sha, len(data), content_type, lambda: io.BytesIO(data))

    def put_file(self, path: Path, content_type: str, label: str | None = None) -> Blob:
        sha, size = sha256_file(path)
        return self._upload(sha, size, content_type, lambda: open(path, "rb"))

    def put_dir(self, root: Path) -> tuple[Blob, int, int]:
        raise ArtifactError(
            f"{root}: directory artifacts need S3 credentials (RUNSTREAM_S3_*); in HTTP mode "
            "log the files one by one"
        )

    # ---- pointers -----------------------------------------------------------------------
    def write_pointer(self, run_id: str, info: ArtifactInfo) -> None:
        self._check_run(run_id)
        self._api("PUT", "pointer", asdict(info))

    def read_pointer(self, run_id: str, key: str) -> ArtifactInfo | None:
        self._check_run(run_id)
        body = self._api("GET", "pointer?" + urllib.parse.urlencode({"key": key}))
        if not isinstance(body, dict) or body.get("pointer") is None:
            return None
        try:
            return ArtifactInfo(**body["pointer"])
        except TypeError as exc:
            raise ArtifactError(f"unreadable pointer of {key!r}: {exc}") from exc

    def _check_run(self, run_id: str) -> None:
        if run_id != self.run_id:
            raise ArtifactError(f"this store uploads for run {self.run_id}, not {run_id}")

    def list(self, run_id: str) -> list[ArtifactInfo]:
        raise ArtifactError("listing artifacts in HTTP mode: use the query API")

    def download(self, run_id: str, key: str, to: Path) -> Path:
        raise ArtifactError("downloading artifacts in HTTP mode: use the query API")
