"""The HTTP contract of every route: documented in OpenAPI, and bad requests are always 4xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from query_api.app import create_app
from query_api.artifacts import S3Settings
from query_api.settings import Settings
from tests.query_api.readmodels import ReadModels
from tests.query_api.test_api_auth import MemoryLog
from tests.query_api.testclient import TestClient

pytestmark = pytest.mark.stack

BAD_BODIES: list[Any] = [
    None,
    b"{",
    [],
    {"run_id": "nope", "experiment_id": "nope", "key": "k", "value": "v", "name": ""},
    {"run_id": 5, "metrics": [{"key": "a/../b", "value": "x", "step": 2**70}]},
    {"run_id": "r1", "metrics": [{"key": "ok", "value": 1.0, "timestamp": 1, "step": 2**70}]},
    {"run_id": "r1", "params": [{"key": "p", "value": "v"}] * 101},
    {"name": "x" * 300, "experiment_ids": ["1"], "filter": "metrics.a >", "max_results": 0},
]


@pytest.fixture
def full_api(chdb_client: Any, models: ReadModels, connection: Any) -> Iterator[TestClient]:
    s3 = S3Settings(
        connection.s3_endpoint,
        connection.s3_access_key,
        connection.s3_secret_key,
        connection.s3_bucket,
    )
    app = create_app(
        Settings(database=models.db), lambda: chdb_client, event_log=MemoryLog(), s3=s3
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def _operations(api: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    spec = api.get("/openapi.json").json()
    return [
        (method.upper(), path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
    ]


def test_every_route_is_documented(full_api: TestClient) -> None:
    ops = _operations(full_api)
    assert len(ops) > 60
    for method, path, op in ops:
        assert op.get("summary"), f"{method} {path} has no summary"
        if path not in ("/health", "/version", "/api/v1/health", "/metrics"):
            assert "400" in op["responses"], f"{method} {path} does not document its errors"


def test_bad_requests_are_never_5xx(full_api: TestClient, models: ReadModels) -> None:
    models.experiment("1", "exp")
    models.run("r1", "1")
    for method, path, _ in _operations(full_api):
        url = path.replace("{path}", "x").replace("{run_id}", "r1").replace("{key}", "loss")
        url = url.replace("{model_id}", "m-x").replace("{tag_key}", "t").replace("{id}", "9")
        url = url.replace("{experiment_id}", "1")
        for body in BAD_BODIES:
            if isinstance(body, bytes):
                r = full_api.request(
                    method, url, content=body, headers={"Content-Type": "application/json"}
                )
            else:
                r = full_api.request(method, url, json=body)
            assert r.status_code < 500, f"{method} {url} {body!r:.80}: {r.status_code} {r.text}"
            if r.status_code >= 400:
                assert set(r.json()) >= {"error_code", "message"}, f"{method} {url}"
