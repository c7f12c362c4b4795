"""S3 goes away in the middle of a large multipart artifact upload.

A SeaweedFS of the test's own (under .runstream/reliability/, torn down by the fixture) is
stopped while `log_artifact` uploads a 512 MiB random file in 16 MiB parts. The call fails
with ArtifactError; while S3 is down no ArtifactStored event exists (claim check). S3 comes
back on the same data and ports; the retried `log_artifact` resumes the multipart upload —
only the parts S3 does not hold yet are sent again — and the event appears once, referencing
an object of the right size and sha256.

Manual multi-GB variant (same test, bigger file; needs the free disk space twice over):

    RUNSTREAM_TEST_ARTIFACT_MIB=4096 .venv/bin/python -m pytest \
        tests/reliability/test_s3_faults.py -s
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import producers
from producers.config import ClientConfig
from producers.errors import ArtifactError
from runstream.stack import Connection, seaweed
from runstream.stack.ports import free_ports
from runstream.stack.procs import ProcessRecord, kill, stop
from tests.producers.helpers import consume, unique_events

pytestmark = [pytest.mark.stack, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
RUNSTREAM_DIR = Path(os.environ.get("RUNSTREAM_HOME", REPO / ".runstream"))
MiB = 1024 * 1024
SIZE_MIB = int(os.environ.get("RUNSTREAM_TEST_ARTIFACT_MIB", "512"))
PART = 16 * MiB
BUCKET = "runstream"


class OwnS3:
    """A SeaweedFS that this test may stop and start at will."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.ports = dict(
            zip(seaweed.PORT_NAMES, free_ports(len(seaweed.PORT_NAMES), with_grpc_twin=True))
        )
        self.access_key = "rs" + secrets.token_hex(8)
        self.secret_key = secrets.token_urlsafe(24)
        self.rec: ProcessRecord | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self) -> None:
        self.rec = seaweed.start(
            self.home / "data", self.home / "logs", self.ports, self.access_key, self.secret_key
        )
        seaweed.wait_ready(self.ports["s3"], self.rec, 90)
        seaweed.ensure_bucket(self.endpoint, self.access_key, self.secret_key, BUCKET)

    def stop(self) -> None:
        if self.rec is not None:
            stop(self.rec, timeout=20)

    def kill(self) -> None:
        if self.rec is not None:
            kill(self.rec)

    def client(self) -> Any:
        from minio import Minio

        return Minio(
            self.endpoint.split("://", 1)[1],
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
        )


@pytest.fixture
def own_s3() -> Iterator[OwnS3]:
    home = RUNSTREAM_DIR / "reliability" / f"s3-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    s3 = OwnS3(home)
    try:
        s3.start()
        yield s3
    finally:
        s3.kill()  # by pid, even when the test failed (its data is deleted next)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def sdk_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("RUNSTREAM_HOME", str(tmp_path / "home"))
    sigterm = signal.getsignal(signal.SIGTERM)
    yield
    producers.shutdown(timeout=2.0)
    signal.signal(signal.SIGTERM, sigterm)


def _random_file(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(8 * MiB, left))
            h.update(chunk)
            fh.write(chunk)
            left -= len(chunk)
    return h.hexdigest()


@pytest.mark.usefixtures("sdk_isolated")
def test_s3_outage_mid_upload_resumes_and_event_follows_the_blob(
    own_s3: OwnS3,
    connection: Connection,
    kafka_topic: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    size = SIZE_MIB * MiB
    parts_total = -(-size // PART)
    big = tmp_path / "big.bin"
    sha = _random_file(big, size)
    cfg = ClientConfig(
        kafka_bootstrap=connection.kafka_bootstrap,
        topic=kafka_topic,
        spool_dir=str(tmp_path / "spool"),
        mode="kafka",
        s3_endpoint=own_s3.endpoint,
        s3_access_key=own_s3.access_key,
        s3_secret_key=own_s3.secret_key,
        s3_bucket=BUCKET,
        project=f"t-{uuid.uuid4().hex[:10]}",
    )
    run = producers.start_run(
        "s3-faults", config=cfg, capture_code=False, capture_environment=False
    )
    store = run.artifacts
    assert store.part_size == PART
    uploaded: list[int] = []
    real_upload_part = store._client._upload_part

    def counting_upload_part(*args: Any, **kwargs: Any) -> Any:
        etag = real_upload_part(*args, **kwargs)
        uploaded.append(args[-1])  # the part number
        return etag

    monkeypatch.setattr(store._client, "_upload_part", counting_upload_part)

    failure: list[BaseException] = []

    def first_attempt() -> None:
        try:
            run.log_artifact(big, key="big.bin")
        except BaseException as exc:  # noqa: BLE001 - inspected by the test
            failure.append(exc)

    t = threading.Thread(target=first_attempt)
    t.start()
    deadline = time.monotonic() + 300
    while len(uploaded) < parts_total // 4:
        assert t.is_alive(), f"the upload ended before S3 went away: {failure}"
        assert time.monotonic() < deadline, f"only {len(uploaded)} parts in 300 s"
        time.sleep(0.05)
    t_stop = time.monotonic()
    own_s3.stop()
    print(f"S3 stopped in {time.monotonic() - t_stop:.1f} s")
    t.join(180)
    assert not t.is_alive(), "log_artifact returns (fails) while S3 is down"
    assert failure, "the upload cannot complete while S3 is down"
    assert isinstance(failure[0], ArtifactError), repr(failure[0])
    before = sorted(set(uploaded))
    assert 0 < len(before) < parts_total

    # S3 down: logging goes on, and no event claims an artifact that is not stored
    run.log_metric("loss", 1.0, step=0)
    assert run.flush(timeout=60)
    events = unique_events(consume(connection.kafka_bootstrap, kafka_topic))
    assert not [e for e in events if type(e).__name__ == "ArtifactStored"]

    own_s3.start()
    uploaded.clear()
    t0 = time.monotonic()
    info = run.log_artifact(big, key="big.bin")
    resumed_s = time.monotonic() - t0
    resent = sorted(set(uploaded))
    print(
        f"{SIZE_MIB} MiB in {parts_total} parts: {len(before)} stored before the outage, "
        f"{len(resent)} sent after it ({resumed_s:.1f} s)"
    )
    assert len(resent) < parts_total, "the upload resumed instead of starting from zero"
    assert set(before) | set(resent) == set(range(1, parts_total + 1))
    assert info.sha256 == sha
    assert info.size == size

    blob = info.uri.split(f"s3://{BUCKET}/", 1)[1]
    s3 = own_s3.client()
    assert s3.stat_object(BUCKET, blob).size == size
    h = hashlib.sha256()
    resp = s3.get_object(BUCKET, blob)
    try:
        for chunk in resp.stream(8 * MiB):
            h.update(chunk)
    finally:
        resp.close()
        resp.release_conn()
    assert h.hexdigest() == sha, "the stored object is the file, byte for byte"

    assert run.end(timeout=60)
    events = unique_events(consume(connection.kafka_bootstrap, kafka_topic))
    stored = [e for e in events if type(e).__name__ == "ArtifactStored"]
    assert len(stored) == 1
    (ev,) = stored
    assert (ev.key, ev.uri, ev.size, ev.sha256) == ("big.bin", info.uri, size, sha)
