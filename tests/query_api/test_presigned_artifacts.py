"""Presigned artifact uploads: the SDK in HTTP mode (no S3 credentials) gets presigned URLs
from the API, uploads to the real SeaweedFS directly, then emits ArtifactStored."""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import producers
from producers.config import ClientConfig
from producers.errors import ArtifactError
from tests.query_api.live import Live, live_api

pytestmark = pytest.mark.stack

DEADLINE_S = 60.0


@pytest.fixture
def live(connection: Any, chdb_client: Any, ch_database: str, kafka_topic: str) -> Iterator[Live]:
    with live_api(connection, chdb_client, ch_database, kafka_topic) as api:
        yield api


def http_config(live: Live, tmp_path: Path, bucket: str) -> ClientConfig:
    """HTTP mode with no S3 settings at all: artifacts can only go through the API."""
    return ClientConfig(
        api_url=live.url, mode="http", spool_dir=str(tmp_path / "spool"), s3_bucket=bucket
    )


def start(cfg: ClientConfig, name: str) -> producers.Run:
    return producers.start_run(
        "presigned", name=name, config=cfg, capture_code=False, capture_environment=False
    )


def object_name(uri: str, bucket: str) -> str:
    prefix = f"s3://{bucket}/"
    assert uri.startswith(prefix), uri
    return uri[len(prefix) :]


def read_object(minio_client: Any, bucket: str, name: str) -> bytes:
    resp = minio_client.get_object(bucket, name)
    try:
        return bytes(resp.read())
    finally:
        resp.close()
        resp.release_conn()


def wait_artifacts(http: httpx.Client, run_id: str, keys: set[str]) -> dict[str, Any]:
    """The run's artifacts (read model) once every key in `keys` is there."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        r = http.get(f"/api/v1/runs/{run_id}")
        if r.status_code == 200:
            found = {a["key"]: a for a in r.json()["run"]["artifacts"]}
            if keys <= set(found):
                return found
        if time.monotonic() > deadline:
            pytest.fail(f"artifacts {sorted(keys)} of {run_id} not visible: {r.text[:300]}")
        time.sleep(0.2)


def put(url: str, data: bytes) -> int:
    req = urllib.request.Request(url, data=data, method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_upload_lands_under_the_run_prefix_then_the_event(
    live: Live, connection: Any, minio_client: Any, tmp_path: Path
) -> None:
    bucket = connection.s3_bucket
    cfg = http_config(live, tmp_path, bucket)
    run = start(cfg, "uploads")
    small = b"hello presigned\n" * 100
    big_path = tmp_path / "model.bin"
    big = os.urandom(17 * 1024 * 1024)  # > the 16 MiB part size: a multipart upload
    big_path.write_bytes(big)
    try:
        info_small = run.log_artifact(small, key="notes/readme.txt")
        info_big = run.log_artifact(big_path, key="model.bin")
        with pytest.raises(producers.ArtifactExists):
            run.log_artifact(b"other", key="notes/readme.txt")
        with pytest.raises(ArtifactError, match="directory"):
            run.log_artifact(tmp_path / "spool", key="spool")
    finally:
        run.end()
    prefix = f"default/runs/{run.id}/artifacts/"
    for info, data in ((info_small, small), (info_big, big)):
        name = object_name(info.uri, bucket)
        assert name.startswith(prefix), name
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        assert read_object(minio_client, bucket, name) == data
        assert info.size == len(data)
    with httpx.Client(base_url=live.url, timeout=30) as http:
        found = wait_artifacts(http, run.id, {"notes/readme.txt", "model.bin"})
        assert found["model.bin"]["uri"] == info_big.uri
        assert found["model.bin"]["sha256"] == info_big.sha256
        assert found["notes/readme.txt"]["size"] == len(small)
        # the pointer the API wrote is what the SDK reads back
        got = http.get(f"/api/v1/runs/{run.id}/artifacts/pointer", params={"key": "model.bin"})
        assert got.status_code == 200
        assert got.json()["pointer"]["uri"] == info_big.uri
        none = http.get(f"/api/v1/runs/{run.id}/artifacts/pointer", params={"key": "nope"})
        assert none.json() == {"pointer": None}
        # and the API serves the bytes back through the MLflow artifact route
        exp = http.get(f"/api/v1/runs/{run.id}").json()["run"]["experiment_id"]
        dl = http.get(f"/api/2.0/mlflow-artifacts/artifacts/{exp}/{run.id}/artifacts/model.bin")
        assert dl.status_code == 200
        assert dl.content == big


def test_a_url_for_run_a_cannot_write_into_run_b(
    live: Live, connection: Any, minio_client: Any, tmp_path: Path
) -> None:
    bucket = connection.s3_bucket
    cfg = http_config(live, tmp_path, bucket)
    run_a, run_b = start(cfg, "a"), start(cfg, "b")
    run_a.log_artifact(b"a", key="a.txt")  # both runs visible to the API from here on
    run_b.log_artifact(b"b", key="b.txt")
    data = b"payload for a"
    sha = hashlib.sha256(data).hexdigest()
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            plan = http.post(
                f"/api/v1/runs/{run_a.id}/artifacts/uploads", json={"sha256": sha, "size": 13}
            ).json()
            a_name = plan["object"]
            assert a_name == f"default/runs/{run_a.id}/artifacts/.blobs/sha256/{sha}"
            assert plan["expires_in"] <= 900
            # the same signature on run B's object name: S3 refuses it
            forged = plan["url"].replace(run_a.id, run_b.id)
            assert forged != plan["url"]
            assert put(forged, data) == 403
            b_name = a_name.replace(run_a.id, run_b.id)
            assert b_name not in {
                o.object_name
                for o in minio_client.list_objects(
                    bucket, prefix=f"default/runs/{run_b.id}/", recursive=True
                )
            }
            assert put(plan["url"], data) == 200  # the genuine URL writes run A's object
            assert read_object(minio_client, bucket, a_name) == data
            # run B cannot point at run A's blob
            pointer = {"key": "stolen", "uri": plan["uri"], "size": 13, "sha256": sha}
            r = http.put(f"/api/v1/runs/{run_b.id}/artifacts/pointer", json=pointer)
            assert r.status_code == 400, r.text
            # keys and hashes cannot climb out of the prefix
            bad_sha = ("../" * 22)[:64]
            r = http.post(
                f"/api/v1/runs/{run_a.id}/artifacts/uploads", json={"sha256": bad_sha, "size": 1}
            )
            assert r.status_code == 400
            for key in ("../b.txt", "/abs", "x/../../y", ".blobs/sha256/x", "a\\b"):
                r = http.get(f"/api/v1/runs/{run_a.id}/artifacts/pointer", params={"key": key})
                assert r.status_code == 400, key
            r = http.post(
                "/api/v1/runs/no-such-run/artifacts/uploads", json={"sha256": sha, "size": 13}
            )
            assert r.status_code == 404
    finally:
        run_a.end()
        run_b.end()
