"""Bad input at the query API: filter-language injection, path traversal in artifact keys
(SDK, REST, mlflow-artifacts; checked on the real S3 bucket), oversized and chunked bodies
(413 before parsing), and schemathesis over every operation with tokens required."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

import producers
from producers.config import ClientConfig
from producers.errors import InvalidKey
from producers.transport import HTTP_CONTENT_TYPE
from query_api import ui
from query_api.app import create_app
from query_api.settings import Settings
from tests.query_api.live import ServerThread
from tests.query_api.test_api_auth import MemoryLog
from tests.reliability._api import (
    ARTIFACTS,
    MLFLOW,
    Projects,
    assert_error,
    bucket_objects,
    s3_settings,
    secured_client,
    seed_projects,
)

pytestmark = pytest.mark.stack


@pytest.fixture
def projects(chdb_client: Any, ch_database: str) -> Projects:
    return seed_projects(chdb_client, ch_database)


# ---- filter-language injection -----------------------------------------------------------

#: (filter, must_fail): must_fail True -> 400 naming a position; False -> it may parse
#: (a quoted value is just a value) but then answers only the caller's runs.
INJECTIONS: list[tuple[str, bool]] = [
    ("params.lr = '0.1' OR 1=1", True),
    ("params.lr = '0.1'; DROP TABLE runs", True),
    ("params.lr = '0.1' -- comment", True),
    ("params.lr = '0.1' /* c */", True),
    ("params.lr = '0.1' UNION SELECT * FROM system.tables", True),
    ("params.lr = '' OR project != ''", True),
    ("params.lr = '0.1'' OR ''1''=''1'", False),  # a doubled quote stays inside the string
    ("params.lr = '\\' OR 1=1 --'", False),
    ("params.lr = '0.1\\'", False),
    ("params.`lr` = 'x` OR 1=1 --'", False),
    ("params.\"lr = 1 OR project\" = 'x'", False),
    ("params.lr = 'a\x00b'", False),
    ("params.lr\x00 = 'x'", True),
    ("params.lr = \uff070.1\uff07", True),  # fullwidth quotes are not quotes
    ("params.lr = '\u202e1.0\u202c'", False),  # bidi override inside a value
    ("metrics.\uff41cc > 0", True),
    ("tags.team IN ('a', 'b'", True),
    ("tags.team IN ()", True),
    ("tags.team LIKE '%' OR tags.team LIKE '%'", False),
    ("metrics.acc > 1e999999", True),
    ("metrics.acc > 99999999999999999999999999999999999999999", False),
    ("start_time > 99999999999999999999999999999999999999", True),
    ("start_time > -99999999999999999999999999999999999999", True),
    ("metrics.acc > 0x10", True),
    ("metrics.acc > 'NaN'", True),
    ("experiment_id = 'eb' OR experiment_id = 'ea'", False),
    ("run_id = 'rb'", False),
    ("attributes.project = 'x'", True),
    ("(" * 5000 + "metrics.acc > 0" + ")" * 5000, True),
    ("(" * 19_990, True),
    ("(" * 200_000, True),  # over the 20,000-character bound: refused by length
    ("metrics.acc > 0 " + "AND metrics.acc > 0 " * 990, False),
    ("NOT NOT NOT metrics.acc > 0", True),
    ("'", True),
    ("\\", True),
    ("`", True),
    ('"', True),
    (";", True),
    ("--", True),
    ("params.lr = 'x' AND", True),
]


def _search_routes(p: Projects, flt: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, method+path, kwargs) of every route that takes a filter string."""
    return [
        ("v1 search", "POST /api/v1/runs/search", {"json": {"filter": flt}}),
        (
            "mlflow search",
            f"POST {MLFLOW}/runs/search",
            {"json": {"experiment_ids": ["ea", "eb"], "filter": flt}},
        ),
        (
            "leaderboard",
            "GET /api/v1/experiments/ea/leaderboard",
            {"params": {"metric": "acc", "filter": flt}},
        ),
        (
            "aggregate",
            "POST /api/v1/analytics/aggregate",
            {
                "json": {
                    "experiment_ids": ["ea", "eb"],
                    "filter": flt,
                    "metric": "acc",
                    "group_by": ["run_name"],
                    "aggregates": ["count"],
                }
            },
        ),
        (
            "parallel coordinates",
            "POST /api/v1/analytics/parallel-coordinates",
            {
                "json": {
                    "experiment_ids": ["ea", "eb"],
                    "filter": flt,
                    "params": ["secret_of"],
                    "metrics": [{"key": "acc"}],
                }
            },
        ),
    ]


def _leaks(text: str) -> bool:
    """Project B's run, run name, experiment or param value in a response."""
    return any(m in text for m in ('"rb"', "run-b", '"eb"', '"b"'))


def test_filter_injection_is_400_with_position_never_500_never_a_leak(
    chdb_client: Any, projects: Projects
) -> None:
    failures: list[str] = []
    with secured_client(chdb_client, projects) as (api, _):
        # control: the caller sees its own run through every route
        for label, route, kw in _search_routes(projects, "params.lr = '0.1'"):
            method, path = route.split(" ", 1)
            r = api.request(method, path, headers=projects.ha, **kw)
            assert r.status_code == 200, (label, r.text[:300])
            assert "run-a" in r.text or '"ra"' in r.text, (label, r.text[:300])
            assert not _leaks(r.text), (label, r.text[:300])
        for flt, must_fail in INJECTIONS:
            for label, route, kw in _search_routes(projects, flt):
                if route.startswith("GET") and len(flt) > 20_000:
                    continue  # over the query-string bound of the route (and of httpx)
                method, path = route.split(" ", 1)
                r = api.request(method, path, headers=projects.ha, **kw)
                where = f"{label} {flt[:60]!r}: {r.status_code} {r.text[:200]}"
                if r.status_code >= 500:
                    failures.append(where)
                    continue
                if r.status_code == 400:
                    body = assert_error(r, 400)
                    bounded = len(flt) > 20_000 and "20000 characters" in body["message"]
                    if "position" not in body["message"] and not bounded:
                        failures.append(f"no position: {where}")
                    continue
                if must_fail or r.status_code != 200:
                    failures.append(f"accepted: {where}")
                    continue
                # answered: never B's run, B's experiment or B's secret param
                if _leaks(r.text):
                    failures.append(f"leak: {where}")
    assert not failures, "\n".join(failures)


def test_order_by_injection_is_400(chdb_client: Any, projects: Projects) -> None:
    bad = [
        "metrics.acc DESC; DROP TABLE runs",
        "metrics.acc DESC -- x",
        "(SELECT 1)",
        "metrics.acc DESC, params.`x` ASC UNION",
        "params.lr ASCENDING",
        "1",
    ]
    with secured_client(chdb_client, projects) as (api, _):
        for order in bad:
            for path, extra in (
                ("/api/v1/runs/search", {}),
                (f"{MLFLOW}/runs/search", {"experiment_ids": ["ea"]}),
            ):
                r = api.post(path, json={"order_by": [order], **extra}, headers=projects.ha)
                body = assert_error(r, 400)
                assert "position" in body["message"], (path, order, body)


# ---- path traversal in artifact keys -----------------------------------------------------

#: keys as they appear in the URL after `<exp>/<run>/artifacts/`
TRAVERSAL_PATHS = [
    "../../../pb/runs/rb/artifacts/x.txt",
    "../x.txt",
    "..%2f..%2fx.txt",
    "%2e%2e/%2e%2e/x.txt",
    "a/../../x.txt",
    "..\\..\\x.txt",
    "a\\..\\..\\x.txt",
    "%00x.txt",
    "a%00/../x.txt",
    "x" * 5000,
    ("d/" * 600) + "x.txt",
    "%2fetc%2fpasswd",
]


def _allowed(name: str, project: str, run_id: str) -> bool:
    return name.startswith((f"{project}/runs/{run_id}/artifacts/", f"{project}/blobs/sha256/"))


def test_artifact_path_traversal_never_leaves_the_run_prefix(
    chdb_client: Any, projects: Projects, connection: Any, minio_client: Any
) -> None:
    bucket = connection.s3_bucket
    before = bucket_objects(minio_client, bucket)
    outcomes: Counter[int] = Counter()
    with secured_client(chdb_client, projects, connection) as (api, log):
        ok = api.put(f"{ARTIFACTS}/ea/ra/artifacts/ok/a.txt", content=b"ok", headers=projects.ha)
        assert ok.status_code == 200, ok.text
        for key in TRAVERSAL_PATHS:
            for url in (
                f"{ARTIFACTS}/ea/ra/artifacts/{key}",
                f"{ARTIFACTS}/ea/../eb/rb/artifacts/{key}",
                f"{ARTIFACTS}/ea/ra/artifacts/ok/{key}",
            ):
                put = api.put(url, content=b"evil", headers=projects.ha)
                outcomes[put.status_code] += 1
                if put.status_code != 200:
                    assert_error(put, 400, 404)
                get = api.get(url, headers=projects.ha)
                if get.status_code != 200:
                    assert_error(get, 400, 404)
                else:
                    assert get.content == b"evil"  # only what was stored in the run
            listing = api.get(
                ARTIFACTS, params={"path": f"ea/ra/artifacts/{key}"}, headers=projects.ha
            )
            if listing.status_code != 200:
                assert_error(listing, 400, 404)
            dl = api.get(
                "/api/v1/runs/ra/artifacts/download", params={"key": key}, headers=projects.ha
            )
            assert_error(dl, 400, 404, 503)  # unknown key (503: no S3 client for downloads)
            pointer = api.get(
                "/api/v1/runs/ra/artifacts/pointer", params={"key": key}, headers=projects.ha
            )
            if pointer.status_code != 200 or pointer.json().get("pointer") is not None:
                assert_error(pointer, 400, 404)
            body = {"key": key, "uri": "s3://x/y", "size": 1, "sha256": "0" * 64}
            put_pointer = api.put(
                "/api/v1/runs/ra/artifacts/pointer", json=body, headers=projects.ha
            )
            assert_error(put_pointer, 400, 404)
            lst = api.get(
                f"{MLFLOW}/artifacts/list",
                params={"run_id": "ra", "path": key},
                headers=projects.ha,
            )
            assert lst.status_code in (200, 400), lst.text[:300]
            assert "evil" not in lst.text
        mine = api.get(ARTIFACTS, params={"path": "ea/ra/artifacts"}, headers=projects.ha)
        assert mine.status_code == 200
        theirs = api.get(ARTIFACTS, params={"path": "eb/rb/artifacts"}, headers=projects.ha)
        assert_error(theirs, 404)
    assert outcomes[400] > 0, outcomes
    new = bucket_objects(minio_client, bucket) - before
    assert new, "the control upload reached S3"
    outside = sorted(n for n in new if not _allowed(n, projects.a, "ra"))
    assert not outside, f"objects outside the run's prefix: {outside[:5]}"
    # every ArtifactStored event names run ra of project A
    for _, data in log.sent:
        from schemas import decode

        event = decode(data)
        assert (event.envelope.project, event.envelope.run_id) == (projects.a, "ra")


@pytest.fixture
def sdk_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("RUNSTREAM_HOME", str(tmp_path / "home"))
    for name in ("RUNSTREAM_RUN_ID", "RUNSTREAM_PROJECT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path
    producers.shutdown(timeout=2.0)


SDK_BAD_KEYS = [
    "../x.txt",
    "a/../../x.txt",
    "/etc/passwd",
    "..",
    "a/..",
    "..\\x.txt",
    "a\x00b",
    "x" * 251,
    "%2e%2e/x",
    "a\nb",
    "\u2024\u2024/x",
    "./x",
    "a/./b",
    ".",
]


def test_sdk_refuses_traversal_keys_and_stays_in_its_prefix(
    connection: Any, minio_client: Any, sdk_home: Path
) -> None:
    project = f"sdk-trav-{sdk_home.name[-8:].lower().replace('_', '-')}"
    config = ClientConfig(
        s3_endpoint=connection.s3_endpoint,
        s3_access_key=connection.s3_access_key,
        s3_secret_key=connection.s3_secret_key,
        s3_bucket=connection.s3_bucket,
        project=project,
        mode="offline",
        spool_dir=str(sdk_home / "spool"),
    )
    before = bucket_objects(minio_client, connection.s3_bucket)
    run = producers.start_run("trav", config=config, capture_code=False, capture_environment=False)
    try:
        for key in SDK_BAD_KEYS:
            with pytest.raises(InvalidKey):
                run.log_artifact(b"evil", key=key)
            with pytest.raises(InvalidKey):
                run.download_artifact(key, sdk_home / "dl")
            with pytest.raises(InvalidKey):
                run.delete_artifact(key)
        info = run.log_artifact(io.BytesIO(b"fine"), key="dir/ok.txt")
        assert info.key == "dir/ok.txt"
    finally:
        run.end()
    new = bucket_objects(minio_client, connection.s3_bucket) - before
    assert new, "the control upload reached S3"
    assert all(_allowed(n, project, run.id) for n in new), sorted(new)


# ---- oversized bodies --------------------------------------------------------------------


def _chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        sent += n
        yield b"x" * n


def test_oversized_bodies_are_413_json_before_parsing(
    chdb_client: Any, projects: Projects, connection: Any, minio_client: Any
) -> None:
    limits: dict[str, Any] = {
        "max_request_bytes": 2_000,
        "max_ingest_bytes": 3_000,
        "max_artifact_bytes": 5_000,
    }
    before = bucket_objects(minio_client, connection.s3_bucket, projects.a + "/")
    with secured_client(chdb_client, projects, connection, **limits) as (api, log):
        h = projects.ha
        big = {"filter": "params.lr = '" + "x" * 3_000 + "'"}
        # Content-Length over the limit
        body = assert_error(api.post("/api/v1/runs/search", json=big, headers=h), 413)
        assert body["error_code"] == "REQUEST_TOO_LARGE"
        # chunked (no Content-Length): refused once the bytes pass the limit
        import json as _json

        raw = _json.dumps(big).encode()
        chunked = api.post(
            "/api/v1/runs/search",
            content=iter([raw[i : i + 500] for i in range(0, len(raw), 500)]),
            headers={**h, "Content-Type": "application/json"},
        )
        assert "content-length" not in {k.lower() for k in chunked.request.headers}
        assert_error(chunked, 413)
        # under the limit: served
        assert api.post("/api/v1/runs/search", json={}, headers=h).status_code == 200
        # MLflow JSON write route, garbage JSON over the limit: 413, not 400
        assert_error(api.post(f"{MLFLOW}/runs/log-batch", content=b"{" * 2_500, headers=h), 413)
        # ingest: its own limit, both ways, and nothing produced
        ih = {**h, "Content-Type": HTTP_CONTENT_TYPE}
        assert_error(api.post("/api/v1/ingest", content=b"RSB1" + b"\0" * 3_100, headers=ih), 413)
        assert_error(api.post("/api/v1/ingest", content=_chunks(3_100, 1000), headers=ih), 413)
        # an ingest body between the JSON limit and its own limit is parsed (400: garbage)
        assert_error(api.post("/api/v1/ingest", content=b"RSB1" + b"\0" * 2_500, headers=ih), 400)
        # artifact upload: its own limit, chunked, and nothing reaches S3
        url = f"{ARTIFACTS}/ea/ra/artifacts/big.bin"
        assert_error(api.put(url, content=_chunks(6_000, 1000), headers=h), 413)
        assert_error(api.put(url, content=b"y" * 6_000, headers=h), 413)
        assert api.put(url, content=b"y" * 4_000, headers=h).status_code == 200
        assert len(log.sent) == 1  # only the accepted upload's ArtifactStored
    new = bucket_objects(minio_client, connection.s3_bucket, projects.a + "/") - before
    assert len(new) == 2, sorted(new)  # one blob + one pointer: the 4,000-byte upload


def test_declared_oversize_is_refused_without_reading_the_body(
    chdb_client: Any, projects: Projects
) -> None:
    """Over real HTTP: a huge Content-Length is answered 413 while the body is never sent."""
    app = create_app(
        Settings(database=projects.db, max_request_bytes=1_000),
        lambda: chdb_client,
        event_log=MemoryLog(),
        require_tokens=True,
    )
    server = ServerThread(app).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(
                (
                    "POST /api/v1/runs/search HTTP/1.1\r\nHost: x\r\n"
                    f"Authorization: Bearer {projects.token_a}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
                ).encode()
            )
            data = b""
            deadline = time.monotonic() + 10
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                if time.monotonic() > deadline:
                    break
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413"), data[:300]
        assert b"REQUEST_TOO_LARGE" in rest
    finally:
        server.stop()


# ---- schemathesis with tokens required ---------------------------------------------------

EXAMPLES = 3
#: liveness / version / Prometheus routes: open by design (no project data)
PUBLIC = {"/health", "/version", "/api/v1/health", "/metrics"}


def _fuzz(
    operation: Any,
    mode: Any,
    auth: dict[str, str],
    statuses: Counter[int],
    problems: list[str],
) -> None:
    label = f"{operation.label} ({mode.value})"
    documented = set(operation.definition.raw.get("responses", {}))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,  # a gate must not flake: the same examples every run
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        headers = dict(case.headers or {})
        case.headers = {**headers, **auth}
        response = case.call()
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            problems.append(f"{label}: {response.status_code} {response.text[:200]}")
            return
        if response.status_code >= 400:
            if str(response.status_code) not in documented:
                problems.append(f"{label}: undocumented {response.status_code}")
            assert_error(response, response.status_code)
        if operation.path in PUBLIC:
            return
        case.headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        anonymous = case.call()
        if anonymous.status_code != 401 and not (
            anonymous.status_code == 400 and response.status_code == 400
        ):
            problems.append(f"{label}: {anonymous.status_code} without a token")

    run()


def test_every_openapi_operation_fuzzed_with_auth_never_5xx(
    chdb_client: Any, projects: Projects, connection: Any
) -> None:
    """Every operation of the OpenAPI, with project A's token: only documented 4xx, no 5xx;
    and the same requests without a token are all 401."""
    schemathesis = pytest.importorskip("schemathesis")
    from schemathesis import GenerationMode

    app = create_app(
        Settings(database=projects.db, consistency_timeout_s=0.5),
        lambda: chdb_client,
        event_log=MemoryLog(),
        s3=s3_settings(connection),
        require_tokens=True,
    )
    app.state.shared.auth.ttl_s = 0.0
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    documented = {
        (m.upper(), path)
        for path, ops in app.openapi()["paths"].items()
        for m in ops
        if m in ("get", "post", "put", "delete", "patch")
    }
    statuses: Counter[int] = Counter()
    seen: set[tuple[str, str]] = set()
    problems: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        seen.add((operation.method.upper(), operation.path))
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, projects.ha, statuses, problems)
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise
    assert seen == documented, documented ^ seen
    assert any(p.startswith("/api/2.0/mlflow-artifacts") for _, p in seen)
    assert ("POST", "/api/v1/ingest") in seen
    assert any("analytics" in p for _, p in seen)
    assert not problems, "\n".join(sorted(set(problems))[:40])
    assert statuses[200] > 20, statuses


def _token(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def test_odd_tokens_patterns_and_paths_are_4xx_never_5xx(
    chdb_client: Any, projects: Projects
) -> None:
    """Valid-looking input that once reached a 5xx: page and consistency tokens nested too
    deep for the JSON decoder, a history cursor out of its columns' range, LIKE patterns
    ending with an escaping backslash (ClickHouse refuses them), a NUL byte in a UI path."""
    nested = base64.urlsafe_b64encode(b"[" * 3000).decode()
    h = projects.ha
    with secured_client(chdb_client, projects) as (api, _):
        bad = [
            api.get("/api/v1/experiments", params={"page_token": nested}, headers=h),
            api.post(
                f"{MLFLOW}/runs/search",
                json={"experiment_ids": ["ea"], "page_token": nested},
                headers=h,
            ),
            api.get(
                f"{MLFLOW}/metrics/get-history",
                params={"run_id": "ra", "metric_key": "acc", "page_token": nested},
                headers=h,
            ),
            api.get("/api/v1/runs/ra", params={"consistency": "c1." + nested}, headers=h),
            api.get("/api/v1/runs/ra", headers={**h, "X-Runstream-Consistency": "c1." + nested}),
        ]
        history = "/api/v1/runs/ra/metrics/acc/history"
        page = api.get(history, params={"max_results": 1}, headers=h)
        assert page.status_code == 200, page.text
        state = json.loads(base64.urlsafe_b64decode(page.json()["next_page_token"] + "=="))
        step, producer, _, idx = state["after"]
        for after in (
            [step, producer, -5, idx],
            [step, producer, 2**64, idx],
            [2**63, producer, 0, idx],
        ):
            token = _token({**state, "after": after})
            bad.append(api.get(history, params={"max_results": 1, "page_token": token}, headers=h))
        for flt in ("params.lr LIKE '%\\'", "tags.team ILIKE 'a\\\\\\'"):
            bad.append(api.post("/api/v1/runs/search", json={"filter": flt}, headers=h))
            body = {"experiment_ids": ["ea"], "filter": flt}
            bad.append(api.post(f"{MLFLOW}/runs/search", json=body, headers=h))
        bad.append(
            api.get(f"{MLFLOW}/experiments/search", params={"filter": "name LIKE 'a\\'"}, headers=h)
        )
        for r in bad:
            assert_error(r, 400)
        # an even run of backslashes is a literal one: the search runs
        ok = api.post("/api/v1/runs/search", json={"filter": "params.lr LIKE '%\\\\'"}, headers=h)
        assert ok.status_code == 200, ok.text
        nul = api.get("/ui/static/a%00b")
        assert nul.status_code < 500, nul.text
        if ui.is_built():
            assert_error(nul, 404)
