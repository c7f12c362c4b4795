"""Health, ingest (the SDK's HttpTransport against a live API) and consistency tokens."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest

from processors.replay import end_offsets
from producers.errors import TransportRejected
from producers.spool import Position, Record
from producers.transport import HTTP_CONTENT_TYPE, HttpTransport
from query_api.app import create_app
from query_api.consistency import decode_token, encode_token
from query_api.settings import Settings
from schemas import (
    Envelope,
    ExperimentCreated,
    ParamsLogged,
    RunCreated,
    encode,
    new_event_id,
    partition_key,
)
from tests.query_api.live import live_api
from tests.query_api.readmodels import ReadModels
from tests.query_api.testclient import TestClient

pytestmark = pytest.mark.stack


def test_health_and_version(api: TestClient) -> None:
    assert api.get("/health").text == "OK"
    assert api.get("/version").text.count(".") == 2
    body = api.get("/api/v1/health").json()
    assert body["status"] == "ok"
    assert body["writes_enabled"] is False
    assert body["projection_position"] == {}


def test_writes_without_kafka_are_503(api: TestClient) -> None:
    r = api.post("/api/2.0/mlflow/experiments/create", json={"name": "x"})
    assert r.status_code == 503
    assert r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"


def test_consistency_tokens(chdb_client: Any, models: ReadModels) -> None:
    token = encode_token({0: 5, 3: 7})
    assert decode_token(token) == {0: 5, 3: 7}
    settings = Settings(database=models.db, consistency_timeout_s=0.2, max_ingest_bytes=10)
    app = create_app(settings, lambda: chdb_client)
    with TestClient(app) as api:
        r = api.get("/api/v1/experiments", params={"consistency": token})
        assert r.status_code == 504
        assert r.json()["error_code"] == "CONSISTENCY_TIMEOUT"
        r = api.get("/api/v1/experiments", headers={"X-Runstream-Consistency": "nope"})
        assert r.status_code == 400
        ok = api.get("/api/v1/experiments", params={"consistency": encode_token({})})
        assert ok.status_code == 200
        big = api.post(
            "/api/v1/ingest",
            content=b"RSB1" + b"x" * 20,
            headers={"Content-Type": HTTP_CONTENT_TYPE},
        )
        assert big.status_code == 413, big.text
        # open mode ignores credentials that are not Runstream tokens
        basic = api.get("/api/v1/experiments", headers={"Authorization": "Basic dTpw"})
        assert basic.status_code == 200


def _events(project: str = "default") -> tuple[str, list[Any]]:
    eid, rid = uuid.uuid4().hex, uuid.uuid4().hex

    def env(seq: int, run: str | None) -> Envelope:
        return Envelope(
            event_id=new_event_id(),
            experiment_id=eid,
            producer_id="ingest-test",
            seq=seq,
            occurred_at=1_767_225_600_000 + seq,
            project=project,
            run_id=run,
        )

    return rid, [
        ExperimentCreated(envelope=env(0, None), name=f"ingest-{eid[:6]}"),
        RunCreated(envelope=env(1, rid), name="via-http"),
        ParamsLogged(envelope=env(2, rid), params={"lr": "0.1"}),
    ]


def test_ingest_through_the_sdk_transport(
    connection: Any,
    chdb_client: Any,
    ch_database: str,
    kafka_topic: str,
    chdb_writers: tuple[Any, ...],
) -> None:
    rid, events = _events()
    records = [Record(partition_key(e), encode(e), Position(0, 0)) for e in events]
    with live_api(connection, chdb_client, ch_database, kafka_topic, chdb_writers) as live:
        asyncio.run(HttpTransport(live.url, None).send(records))
        # a batch with one undecodable event: 400 naming it, nothing produced
        before = asyncio.run(end_offsets(connection.kafka_bootstrap, kafka_topic))
        good = encode(events[2])
        body = b"RSB1" + _frame(good) + _frame(b"\xc3\x01garbage")
        bad = httpx.post(
            f"{live.url}/api/v1/ingest", content=body, headers={"Content-Type": HTTP_CONTENT_TYPE}
        )
        assert bad.status_code == 400
        assert bad.json()["message"].startswith("event 1:")
        assert asyncio.run(end_offsets(connection.kafka_bootstrap, kafka_topic)) == before
        with pytest.raises(TransportRejected):
            asyncio.run(HttpTransport(live.url, None).send([Record(b"k", b"nope", Position(0, 0))]))
        # read-your-writes with the token of a direct ingest call
        rid2, more = _events()
        body = b"RSB1" + b"".join(_frame(encode(e)) for e in more)
        ok = httpx.post(
            f"{live.url}/api/v1/ingest", content=body, headers={"Content-Type": HTTP_CONTENT_TYPE}
        )
        assert ok.status_code == 200
        assert ok.json()["accepted"] == 3
        token = ok.json()["consistency"]
        run = httpx.get(f"{live.url}/api/v1/runs/{rid2}", params={"consistency": token})
        assert run.status_code == 200
        assert run.json()["run"]["params"] == {"lr": "0.1"}
        # the in-process worker published what it projected into this database (the wait
        # needed no read of the position table)
        published = live.app.state.shared.projections.ticks.projected(ch_database)
        assert all(published.get(p, -1) >= o for p, o in decode_token(token).items())
        wrong_type = httpx.post(f"{live.url}/api/v1/ingest", content=b"RSB1")
        assert wrong_type.status_code == 415
        deadline = time.monotonic() + 60
        while True:  # every write of this process gets projected: its lag drops to 0
            health = httpx.get(f"{live.url}/api/v1/health").json()
            if set(health["write_lag"].values()) == {0} or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert health["writes_enabled"] is True
        assert set(health["write_lag"].values()) == {0}
    assert rid


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "little") + data
