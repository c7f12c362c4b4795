"""Property-based contract test: schemathesis generates requests from our OpenAPI (valid and
invalid ones) for every operation and calls the app in-process (ASGI) over the session chDB.

Asserted: no response is a 5xx, and every error body is `{error_code, message}`. Writes go
to an in-memory event log and artifacts to the session stack's S3, so a 503 is a finding,
not the expected "Kafka / S3 not configured". Bounded: a few examples per operation and
mode, no example database, so the whole run stays well under a minute.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from query_api.app import create_app
from query_api.artifacts import S3Settings
from query_api.settings import Settings
from tests.query_api.readmodels import ReadModels
from tests.query_api.test_api_auth import MemoryLog
from tests.query_api.testclient import TestClient  # noqa: F401 - imports starlette quietly

pytestmark = pytest.mark.stack

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402

EXAMPLES = 6  # per operation and generation mode


def _check(operation: str, response: Any) -> None:
    status = response.status_code
    assert status < 500, f"{operation}: {status} {response.text[:300]}"
    if status >= 400:
        body = response.json()
        assert isinstance(body, dict), f"{operation}: {status} {response.text[:300]}"
        assert {"error_code", "message"} <= set(body), f"{operation}: {status} {body}"
        assert isinstance(body["error_code"], str)
        assert isinstance(body["message"], str)


def _fuzz(operation: Any, mode: Any, statuses: Counter[int]) -> None:
    label = f"{operation.label} ({mode.value})"

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # a gate must not flake: same examples every run
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call()
        statuses[response.status_code // 100] += 1
        _check(label, response)

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise  # only an operation without inputs has no invalid request


def test_openapi_fuzz_never_5xx(chdb_client: Any, models: ReadModels, connection: Any) -> None:
    models.experiment("1", "exp")
    models.run("r1", "1")
    models.params("r1", {"lr": "0.1"})
    models.points("r1", "loss", [1.0, 0.5])
    s3 = S3Settings(
        connection.s3_endpoint,
        connection.s3_access_key,
        connection.s3_secret_key,
        connection.s3_bucket,
    )
    app = create_app(
        Settings(database=models.db, consistency_timeout_s=0.5),
        lambda: chdb_client,
        event_log=MemoryLog(),
        s3=s3,
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen = 0
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, statuses)
        seen += 1
    assert seen > 60
    assert statuses[2] > 20, statuses
    assert statuses[4] > 20, statuses
