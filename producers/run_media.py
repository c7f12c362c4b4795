"""Run methods for things bigger than a number: artifacts, images, tables, classification
metrics, lineage-adjacent capture (code, environment).

Rule: an artifact's event is enqueued only after its blob upload returned successfully
(claim check); these calls block for the upload itself, never for the event log.
"""

from __future__ import annotations

import io
import json
import mimetypes
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Callable

from producers import validation as v
from producers.artifacts import ArtifactInfo, ArtifactStore, Blob
from producers.capture import capture_code, capture_environment
from producers.emit import now_ms
from producers.engine import Engine
from producers.errors import ArtifactExists, ArtifactNotFound, InvalidArgument, InvalidType
from schemas import events as ev

KINDS = ("FILE", "DIR", "MODEL", "IMAGE", "TABLE")
ENV_ALLOWLIST = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "SLURM_JOB_ID",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "VIRTUAL_ENV",
    "CONDA_DEFAULT_ENV",
    "PYTHONHASHSEED",
    "RUNSTREAM_RUN_ID",
    "RUNSTREAM_PROJECT",
)
_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png", ".png"),
    (b"\xff\xd8\xff", "image/jpeg", ".jpg"),
    (b"GIF8", "image/gif", ".gif"),
    (b"RIFF", "image/webp", ".webp"),
    (b"BM", "image/bmp", ".bmp"),
)


def _image_type(data: bytes) -> str:
    for magic, ctype, _ext in _IMAGE_MAGIC:
        if data.startswith(magic):
            return ctype
    if data.lstrip()[:5] in (b"<svg ", b"<?xml"):
        return "image/svg+xml"
    raise InvalidArgument("image", "bytes are not a PNG/JPEG/GIF/WebP/BMP/SVG image")


def _image_bytes(image: Any) -> bytes:
    """PNG/JPEG/... bytes from bytes, a path, a PIL image or a matplotlib figure/pyplot."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    buf = io.BytesIO()
    if hasattr(image, "savefig"):  # matplotlib Figure, or the pyplot module itself
        image.savefig(buf, format="png")
    elif hasattr(image, "gcf"):
        image.gcf().savefig(buf, format="png")
    elif hasattr(image, "save") and hasattr(image, "mode"):  # PIL.Image.Image
        image.save(buf, format="PNG")
    else:
        raise InvalidType(
            "image",
            f"bytes, a path, a PIL image or a matplotlib figure, got {type(image).__name__}",
        )
    return buf.getvalue()


def _table_json(data: Any, columns: Sequence[str] | None) -> bytes:
    """{"columns": [...], "data": [[...], ...]} from a DataFrame, dict of columns, list of
    dicts or list of rows (with `columns`)."""
    if hasattr(data, "to_json") and hasattr(data, "columns"):  # pandas DataFrame
        return str(data.to_json(orient="split", index=False)).encode()
    if isinstance(data, Mapping):
        cols = [str(c) for c in data]
        series = [list(data[c]) for c in data]
        if len({len(s) for s in series}) > 1:
            raise InvalidArgument("data", "columns have different lengths")
        rows = [list(r) for r in zip(*series)]
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        if data and all(isinstance(r, Mapping) for r in data):
            cols = list(dict.fromkeys(str(k) for r in data for k in r))
            rows = [[r.get(c) for c in cols] for r in data]
        else:
            rows = [list(r) for r in data]
            cols = (
                [str(c) for c in columns]
                if columns
                else [f"c{i}" for i in range(len(rows[0]) if rows else 0)]
            )
    else:
        raise InvalidType(
            "data", f"a DataFrame, dict of columns or list of rows, got {type(data).__name__}"
        )
    try:
        return json.dumps({"columns": cols, "data": rows}, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgument("data", f"table cells must be JSON values: {exc}") from exc


def _gpu_names() -> list[str]:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        res = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


class MediaMixin:
    """Artifact, image, table, evaluation and capture methods of `Run`."""

    id: str
    _engine: Engine
    _artifacts_factory: Callable[[], ArtifactStore] | None
    _artifact_store: ArtifactStore | None = None
    _stored_keys: set[str]

    def _event(self, cls: Any, *, experiment_level: bool = False, **fields: Any) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    @property
    def artifacts(self) -> ArtifactStore:
        """The S3 artifact store of this run's configuration (created on first use)."""
        if self._artifact_store is None:
            if self._artifacts_factory is None:
                raise InvalidArgument("artifacts", "no S3 configuration for this run")
            self._artifact_store = self._artifacts_factory()
        return self._artifact_store

    # ---- artifacts ----------------------------------------------------------------------
    def log_artifact(
        self,
        artifact: str | os.PathLike[str] | bytes | IO[bytes],
        key: str | None = None,
        *,
        overwrite: bool = False,
        kind: str | None = None,
        content_type: str | None = None,
        step: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ArtifactInfo:
        """Upload a file, a directory (as a tree + manifest), bytes or a binary file object.

        The ArtifactStored event is emitted only after the upload completed. `key` defaults
        to the file/directory name. Re-using a key without `overwrite=True` raises
        ArtifactExists when this process or the run's S3 prefix already has it.
        """
        self._check_open()
        path = Path(artifact) if isinstance(artifact, (str, os.PathLike)) else None
        if path is not None and not path.exists():
            raise InvalidArgument("artifact", f"{path} does not exist")
        if key is None:
            if path is None:
                raise InvalidArgument("key", "required when logging bytes or a file object")
            key = path.resolve().name
        v.check_key(key, "key")
        if kind is not None and kind not in KINDS:
            raise InvalidArgument("kind", f"{kind!r} is not one of {KINDS}")
        if step is not None:
            step = v.check_int64(step, "step")
        meta = {str(k): v.tag_value(val, f"metadata[{k!r}]") for k, val in (metadata or {}).items()}
        store = self.artifacts
        if not overwrite and (key in self._stored_keys or store.read_pointer(self.id, key)):
            raise ArtifactExists("key", f"{key!r} is already stored; pass overwrite=True")
        ctype = content_type or mimetypes.guess_type(key)[0] or "application/octet-stream"
        blob: Blob
        if path is not None and path.is_dir():
            blob, size, files = store.put_dir(path)
            kind, ctype = kind or "DIR", "application/vnd.runstream.dir-manifest+json"
            meta.setdefault("files", str(files))
        elif path is not None:
            blob = store.put_file(path, ctype, label=key)
            size = blob.size
        elif isinstance(artifact, (bytes, bytearray, memoryview)):
            blob = store.put_bytes(bytes(artifact), ctype)
            size = blob.size
        elif hasattr(artifact, "read"):
            blob = store.put_stream(artifact, ctype)  # type: ignore[arg-type]
            size = blob.size
        else:
            raise InvalidType(
                "artifact", f"a path, bytes or a binary file object, got {type(artifact).__name__}"
            )
        info = ArtifactInfo(
            key=key,
            uri=blob.uri,
            size=size,
            sha256=blob.sha256,
            kind=kind or "FILE",
            content_type=ctype,
            step=step,
            metadata=meta,
            logged_at=now_ms(),
            producer_id=self._engine.producer_id,
        )
        store.write_pointer(self.id, info)
        self._stored_keys.add(key)
        self._event(
            ev.ArtifactStored,
            key=key,
            uri=info.uri,
            size=size,
            sha256=info.sha256,
            kind=ev.ArtifactKind(info.kind),
            content_type=ctype,
            overwrite=overwrite,
            step=step,
            metadata=meta,
        )
        return info

    def log_model(
        self,
        model: str | os.PathLike[str] | bytes,
        key: str = "model",
        *,
        overwrite: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> ArtifactInfo:
        """A model file or directory as an artifact of kind MODEL."""
        return self.log_artifact(model, key, overwrite=overwrite, kind="MODEL", metadata=metadata)

    def log_image(
        self, key: str, image: Any, *, step: int | None = None, overwrite: bool = False
    ) -> ArtifactInfo:
        """An image (bytes, path, PIL image, matplotlib figure) as an IMAGE artifact.

        With a step, the artifact key is `<key>/<step>` (one image per step).
        """
        data = _image_bytes(image)
        ctype = _image_type(data)
        full_key = key if step is None else f"{key}/{v.check_int64(step, 'step')}"
        return self.log_artifact(
            data, full_key, overwrite=overwrite, kind="IMAGE", content_type=ctype, step=step
        )

    def log_table(
        self,
        key: str,
        data: Any,
        *,
        columns: Sequence[str] | None = None,
        step: int | None = None,
        overwrite: bool = False,
    ) -> ArtifactInfo:
        """A table as a JSON artifact `{"columns": [...], "data": [[...]]}` of kind TABLE."""
        body = _table_json(data, columns)
        return self.log_artifact(
            body, key, overwrite=overwrite, kind="TABLE", content_type="application/json", step=step
        )

    def download_artifact(self, key: str, to: str | os.PathLike[str] = ".") -> Path:
        """Download artifact `key` to `to` (a file path or a directory); sha256 verified."""
        v.check_key(key, "key")
        return self.artifacts.download(self.id, key, Path(to))

    def list_artifacts(self) -> list[ArtifactInfo]:
        """Artifacts of this run, from its S3 prefix (every producer's, not just ours)."""
        return self.artifacts.list(self.id)

    get_artifact_keys = list_artifacts

    def delete_artifact(self, key: str) -> None:
        """Emit ArtifactDeleted and drop the run's pointer (the content blob stays)."""
        self._check_open()
        v.check_key(key, "key")
        store = self.artifacts
        if store.read_pointer(self.id, key) is None and key not in self._stored_keys:
            raise ArtifactNotFound(f"no artifact {key!r} in run {self.id}")
        store.delete_pointer(self.id, key)
        self._stored_keys.discard(key)
        self._event(ev.ArtifactDeleted, key=key)

    # ---- capture --------------------------------------------------------------------------
    def log_code(self, script: str | None = None) -> None:
        """Git commit/branch/dirty/remote and the entry script (best effort)."""
        self._check_open()
        info = capture_code(script)
        self._event(
            ev.CodeCaptured,
            git_commit=info.commit,
            git_branch=info.branch,
            git_remote=_strip_credentials(info.remote),
            git_dirty=bool(info.dirty),
            script_path=info.script,
            argv=[str(a) for a in sys.argv],
        )

    def log_environment(self, *, with_packages: bool = True) -> None:
        """Python version, platform, host, installed packages, GPUs, selected env vars."""
        self._check_open()
        env = capture_environment(with_packages)
        self._event(
            ev.EnvironmentCaptured,
            python_version=env.python_version,
            platform=env.platform,
            hostname=env.hostname,
            packages=env.packages,
            cpu_count=env.cpu_count or None,
            gpus=_gpu_names(),
            env={k: os.environ[k] for k in ENV_ALLOWLIST if k in os.environ},
        )


def _strip_credentials(url: str | None) -> str | None:
    """https://user:token@host/x -> https://host/x."""
    if url and "://" in url and "@" in url.split("://", 1)[1].split("/", 1)[0]:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://{rest.split('@', 1)[1]}"
    return url
