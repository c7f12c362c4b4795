"""Tokens: issue/list/revoke, hashed storage, project scope per route family, open mode."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from producers.transport import HTTP_CONTENT_TYPE
from query_api.app import create_app
from query_api.auth import digest, issue_token, list_tokens, revoke_token
from query_api.eventlog import Position, Record
from query_api.settings import Settings
from schemas import Envelope, RunRenamed, encode, new_event_id
from tests.query_api.readmodels import ReadModels
from tests.query_api.testclient import TestClient

pytestmark = pytest.mark.stack
MLFLOW = "/api/2.0/mlflow"


class MemoryLog:
    """An EventLog that keeps what it is sent (offset -1: nothing to wait for)."""

    topic = "memory"

    def __init__(self) -> None:
        self.sent: list[Record] = []

    async def send(self, records: Sequence[Record]) -> list[Position]:
        self.sent.extend(records)
        return [(0, -1) for _ in records]

    async def close(self) -> None:
        return None


@pytest.fixture
def two_projects(chdb_client: Any, models: ReadModels) -> ReadModels:
    a = ReadModels(chdb_client, models.db, project="a")
    b = ReadModels(chdb_client, models.db, project="b")
    a.experiment("ea", "exp-a")
    b.experiment("eb", "exp-b")
    a.run("ra", "ea")
    b.run("rb", "eb")
    a.params("ra", {"lr": "1"}, experiment_id="ea")
    b.params("rb", {"lr": "2"}, experiment_id="eb")
    a.points("ra", "loss", [0.5])
    b.points("rb", "loss", [0.7])
    return a


@pytest.fixture
def secured(chdb_client: Any, two_projects: ReadModels) -> Iterator[tuple[TestClient, MemoryLog]]:
    log = MemoryLog()
    app = create_app(Settings(database=two_projects.db), lambda: chdb_client, event_log=log)
    app.state.shared.auth.ttl_s = 0.0
    with TestClient(app) as client:
        yield client, log


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_are_stored_hashed_listed_and_revoked(chdb_client: Any, models: ReadModels) -> None:
    issued = issue_token(chdb_client, models.db, "a", name="ci")
    assert issued.token.startswith(f"rst_{issued.info.token_id}_")
    stored = chdb_client.query(f"SELECT token_sha256 FROM {models.db}.api_tokens").result_rows
    assert stored == [(digest(issued.token),)]
    assert issued.token not in repr(stored)
    [info] = list_tokens(chdb_client, models.db)
    assert (info.token_id, info.project, info.name, info.revoked) == (
        issued.info.token_id,
        "a",
        "ci",
        False,
    )
    assert revoke_token(chdb_client, models.db, issued.info.token_id) is True
    assert revoke_token(chdb_client, models.db, issued.info.token_id) is False
    assert list_tokens(chdb_client, models.db)[0].revoked is True


def test_token_scopes_every_route_family(
    chdb_client: Any, secured: tuple[TestClient, MemoryLog], two_projects: ReadModels
) -> None:
    api, log = secured
    db = two_projects.db
    token = issue_token(chdb_client, db, "a").token
    h = _bearer(token)
    # no token / a wrong token once tokens exist
    assert api.get("/api/v1/experiments").status_code == 401
    bad = api.get("/api/v1/experiments", headers=_bearer("rst_x_y"))
    assert bad.status_code == 401
    assert bad.json()["error_code"] == "UNAUTHENTICATED"
    # liveness stays open
    assert api.get("/health").text == "OK"
    # /api/v1 reads
    exps = api.get("/api/v1/experiments", headers=h).json()["experiments"]
    assert [e["experiment_id"] for e in exps] == ["ea"]
    assert api.get("/api/v1/runs/ra", headers=h).status_code == 200
    assert api.get("/api/v1/runs/rb", headers=h).status_code == 404
    found = api.post("/api/v1/runs/search", json={}, headers=h).json()["runs"]
    assert [r["run_id"] for r in found] == ["ra"]
    assert api.get("/api/v1/runs/rb/metrics/loss/history", headers=h).status_code == 404
    for x in ("step", "time"):
        other = api.get("/api/v1/runs/rb/metrics/loss/buckets", params={"x": x}, headers=h)
        assert other.status_code == 404, (x, other.text)
        own = api.get("/api/v1/runs/ra/metrics/loss/buckets", params={"x": x}, headers=h)
        assert [b["count"] for b in own.json()["buckets"]] == [1], (x, own.text)
    # MLflow reads
    assert api.get(f"{MLFLOW}/runs/get", params={"run_id": "rb"}, headers=h).status_code == 404
    hist = api.get(
        f"{MLFLOW}/metrics/get-history", params={"run_id": "rb", "metric_key": "loss"}, headers=h
    )
    assert hist.status_code == 404
    mine = api.post(f"{MLFLOW}/runs/search", json={"experiment_ids": ["ea", "eb"]}, headers=h)
    assert [r["info"]["run_id"] for r in mine.json()["runs"]] == ["ra"]
    exp = api.get(f"{MLFLOW}/experiments/get", params={"experiment_id": "eb"}, headers=h)
    assert exp.status_code == 404
    # MLflow writes: nothing produced for another project's run or experiment
    write = api.post(
        f"{MLFLOW}/runs/log-batch", json={"run_id": "rb", "params": [], "tags": []}, headers=h
    )
    assert write.status_code == 404
    tag = {"experiment_id": "eb", "key": "k", "value": "v"}
    assert (
        api.post(f"{MLFLOW}/experiments/set-experiment-tag", json=tag, headers=h).status_code == 404
    )
    ok = api.post(
        f"{MLFLOW}/runs/set-tag", json={"run_id": "ra", "key": "k", "value": "v"}, headers=h
    )
    assert ok.status_code == 200
    # artifacts
    put = api.put(
        "/api/2.0/mlflow-artifacts/artifacts/eb/rb/artifacts/x.txt", content=b"x", headers=h
    )
    assert put.status_code == 404
    # ingest: an event of another project is refused, naming its index
    env = Envelope(
        event_id=new_event_id(),
        experiment_id="eb",
        producer_id="p",
        seq=0,
        occurred_at=1,
        project="b",
        run_id="rb",
    )
    body = b"RSB1" + _frame(encode(RunRenamed(envelope=env, name="x")))
    refused = api.post(
        "/api/v1/ingest", content=body, headers={**h, "Content-Type": HTTP_CONTENT_TYPE}
    )
    assert refused.status_code == 403
    assert "event 0" in refused.json()["message"]
    # exactly one event left: the allowed set-tag, stamped with the token's project
    assert len(log.sent) == 1
    # a revoked token stops working
    token_id = token.split("_")[1]
    assert revoke_token(chdb_client, db, token_id)
    assert api.get("/api/v1/experiments", headers=h).status_code == 401


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "little") + data


def test_open_mode_warns_and_serves(
    chdb_client: Any, two_projects: ReadModels, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="query_api.app"):
        app = create_app(Settings(database=two_projects.db), lambda: chdb_client)
    assert any("OPEN ACCESS" in r.getMessage() for r in caplog.records)
    with TestClient(app) as api:
        exps = api.get("/api/v1/experiments").json()["experiments"]
        assert sorted(e["experiment_id"] for e in exps) == ["ea", "eb"]


def test_required_tokens_without_any_issued(chdb_client: Any, two_projects: ReadModels) -> None:
    app = create_app(Settings(database=two_projects.db), lambda: chdb_client, require_tokens=True)
    with TestClient(app) as api:
        assert api.get("/api/v1/experiments").status_code == 401
