"""Real SeaweedFS: upload (single and multipart, resumable), dedup, download with matching
sha256, directory trees, and the claim-check order (no event without a stored blob)."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

import producers
from producers.artifacts import ArtifactStore
from producers.config import ClientConfig
from producers.errors import ArtifactError, ArtifactExists, ArtifactNotFound
from runstream.stack import Connection
from tests.producers.helpers import consume, kinds

pytestmark = pytest.mark.stack
MiB = 1024 * 1024
PNG_1X1 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU"
    "5ErkJggg=="
)


@pytest.fixture
def cfg(
    connection: Connection, kafka_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ClientConfig:
    monkeypatch.setenv("RUNSTREAM_HOME", str(tmp_path / "home"))
    return ClientConfig(
        kafka_bootstrap=connection.kafka_bootstrap,
        topic=kafka_topic,
        spool_dir=str(tmp_path / "spool"),
        mode="kafka",
        s3_endpoint=connection.s3_endpoint,
        s3_access_key=connection.s3_access_key,
        s3_secret_key=connection.s3_secret_key,
        s3_bucket=connection.s3_bucket,
        project=f"t-{uuid.uuid4().hex[:10]}",
    )


def _start(cfg: ClientConfig) -> producers.Run:
    return producers.start_run("art", config=cfg, capture_code=False, capture_environment=False)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_file_bytes_dir_roundtrip_and_events(
    cfg: ClientConfig, tmp_path: Path, minio_client: Any
) -> None:
    run = _start(cfg)
    small = tmp_path / "weights.bin"
    small.write_bytes(os.urandom(100_000))
    info = run.log_artifact(small)
    assert info.key == "weights.bin"
    assert info.sha256 == _sha(small.read_bytes())
    run.log_artifact(b"hello", key="notes/hello.txt")
    tree = tmp_path / "ckpt"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.bin").write_bytes(b"\x00" * 1000)
    dinfo = run.log_artifact(tree, key="ckpt")
    assert dinfo.kind == "DIR"
    assert dinfo.size == 1001
    run.log_table("table", [{"x": 1, "y": "a"}, {"x": 2, "y": "b"}])
    png = base64.b64decode(PNG_1X1)
    img = run.log_image("samples", png, step=3)
    assert (img.key, img.kind, img.content_type) == ("samples/3", "IMAGE", "image/png")
    with pytest.raises(producers.InvalidArgument, match="image"):
        run.log_image("samples", b"not an image")

    with pytest.raises(ArtifactExists):
        run.log_artifact(small)
    run.log_artifact(small, overwrite=True)

    keys = sorted(a.key for a in run.list_artifacts())
    assert keys == ["ckpt", "notes/hello.txt", "samples/3", "table", "weights.bin"]
    out = run.download_artifact("weights.bin", tmp_path / "dl.bin")
    assert _sha(out.read_bytes()) == info.sha256
    assert (tmp_path / "dl2").mkdir() is None
    assert run.download_artifact("notes/hello.txt", tmp_path / "dl2").read_bytes() == b"hello"
    got = run.download_artifact("ckpt", tmp_path / "restored")
    assert (got / "a.txt").read_text() == "a"
    assert (got / "sub" / "b.bin").read_bytes() == b"\x00" * 1000
    with pytest.raises(ArtifactNotFound):
        run.download_artifact("nope", tmp_path / "x")
    assert run.end(timeout=30)

    events = [
        e
        for e in consume(cfg.kafka_bootstrap or "", cfg.topic)
        if type(e).__name__ == "ArtifactStored"
    ]
    assert [e.key for e in events] == [
        "weights.bin",
        "notes/hello.txt",
        "ckpt",
        "table",
        "samples/3",
        "weights.bin",
    ]
    assert [e.overwrite for e in events] == [False] * 5 + [True]
    for e in events:  # claim check: every event points at an object that exists
        name = e.uri.split(f"s3://{cfg.s3_bucket}/", 1)[1]
        assert minio_client.stat_object(cfg.s3_bucket, name).size > 0
    assert events[0].sha256 == info.sha256
    assert events[0].size == 100_000


def test_large_file_multipart_resumes_and_dedups(
    cfg: ClientConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = tmp_path / "big.bin"
    data = os.urandom(12 * MiB + 123)
    big.write_bytes(data)
    store = ArtifactStore(cfg, part_size=5 * MiB, progress=False)
    uploaded: list[int] = []
    real_upload = store._client._upload_part

    def fail_on_part_3(
        bucket: str, name: str, chunk: bytes, headers: Any, upload_id: str, number: int
    ) -> str:
        if number == 3:
            raise ConnectionError("network went away")
        uploaded.append(number)
        return str(real_upload(bucket, name, chunk, headers, upload_id, number))

    monkeypatch.setattr(store._client, "_upload_part", fail_on_part_3)
    with pytest.raises(ArtifactError, match="network went away"):
        store.put_file(big, "application/octet-stream")
    assert uploaded == [1, 2]

    def count(
        bucket: str, name: str, chunk: bytes, headers: Any, upload_id: str, number: int
    ) -> str:
        uploaded.append(number)
        return str(real_upload(bucket, name, chunk, headers, upload_id, number))

    monkeypatch.setattr(store._client, "_upload_part", count)
    blob = store.put_file(big, "application/octet-stream")
    assert uploaded == [1, 2, 3], "the retry uploads only the missing part"
    assert blob.uploaded
    assert blob.size == len(data)
    assert blob.sha256 == _sha(data)
    again = store.put_file(big, "application/octet-stream")
    assert not again.uploaded, "same content is stored once"
    resp = store._client.get_object(cfg.s3_bucket, blob.object_name)
    try:
        assert _sha(resp.read()) == blob.sha256
    finally:
        resp.close()
        resp.release_conn()


def test_failed_upload_emits_no_event(cfg: ClientConfig, tmp_path: Path) -> None:
    bad = ClientConfig(**{**cfg.__dict__, "s3_secret_key": "wrong-secret"})
    run = _start(bad)
    f = tmp_path / "f.bin"
    f.write_bytes(b"x" * 10)
    with pytest.raises(ArtifactError):
        run.log_artifact(f)
    assert run.end(timeout=30)
    events = consume(cfg.kafka_bootstrap or "", cfg.topic)
    assert kinds(events)["ArtifactStored"] == 0
