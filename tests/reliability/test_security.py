"""Security of the query API: project isolation on EVERY route (a new route without a case
fails here), S3 credentials never reach a browser or the logs, presigned S3 URLs expire.

Loopback: `tests/test_stack.py::test_stack_binds_loopback_only` proves every listener of the
local stack (Kafka, SeaweedFS) is on 127.0.0.1; `runstream serve`/`api` default to
`--host 127.0.0.1` (runstream/cli.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from producers.transport import HTTP_CONTENT_TYPE
from query_api import ui
from query_api.app import create_app
from query_api.artifacts import S3Settings
from query_api.auth import OPERATOR, issue_token
from query_api.settings import Settings
from runstream.replay import admin_router
from runstream.serve import minio_client as serve_minio_client
from runstream.settings import ServerSettings
from schemas import Envelope, ExperimentRenamed, RunRenamed, decode, encode, new_event_id
from tests.query_api.live import free_port
from tests.query_api.test_api_auth import MemoryLog
from tests.query_api.testclient import TestClient
from tests.reliability._api import (
    ARTIFACTS,
    MLFLOW,
    Projects,
    assert_error,
    s3_settings,
    seed_projects,
)

pytestmark = pytest.mark.stack

#: routes without project data, open by design (liveness, Prometheus metrics, OpenAPI, docs,
#: the static UI)
PROJECTLESS = {
    ("GET", "/health"),
    ("GET", "/version"),
    ("GET", "/api/v1/health"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("HEAD", "/openapi.json"),
    ("GET", "/docs"),
    ("HEAD", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("HEAD", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("HEAD", "/redoc"),
    ("GET", "/"),
    ("GET", "/ui"),
    ("GET", "/ui/static/{name:path}"),
    ("GET", "/ui/{rest:path}"),
}


def iter_routes(routes: Any) -> Iterator[tuple[str, str]]:
    """(method, path) of every route of the app, included routers flattened."""
    for r in routes:
        if hasattr(r, "effective_candidates"):  # FastAPI >= 0.16x: lazily included routers
            yield from iter_routes(r.effective_candidates())
            yield from iter_routes(r.effective_low_priority_routes())
        elif getattr(r, "methods", None):
            for m in sorted(r.methods):
                yield m, r.path
        elif hasattr(r, "routes"):
            yield from iter_routes(r.routes)
        else:
            raise AssertionError(f"unknown route type {type(r).__name__}: {r!r}")


def serve_app(
    chdb_client: Any,
    projects: Projects,
    connection: Any,
    log: MemoryLog,
    presign_expiry_s: int = 900,
) -> Any:
    """The app `runstream serve` builds (query API + UI + object store + admin routes), with
    tokens required and writes into `log`."""
    server = ServerSettings(
        kafka_bootstrap=connection.kafka_bootstrap,
        clickhouse_url="chdb://unused",
        s3_endpoint=connection.s3_endpoint,
        s3_access_key=connection.s3_access_key,
        s3_secret_key=connection.s3_secret_key,
        s3_bucket=connection.s3_bucket,
    )
    app = create_app(
        Settings(database=projects.db, consistency_timeout_s=0.5),
        lambda: chdb_client,
        event_log=log,
        s3=dataclasses.replace(s3_settings(connection), presign_expiry_s=presign_expiry_s),
        require_tokens=True,
    )
    app.state.object_store = serve_minio_client(server)
    app.include_router(admin_router(chdb_client, server, projects.db, lambda: None))
    app.state.shared.auth.ttl_s = 0.0
    return app


@pytest.fixture
def projects(chdb_client: Any, ch_database: str) -> Projects:
    return seed_projects(chdb_client, ch_database)


# ---- project isolation -------------------------------------------------------------------

B_MARKERS = ('"rb"', "run-b", '"eb"', "exp-b", '"b"')
Case = Callable[[TestClient, Projects, str, dict[str, Any]], None]


def _denied(r: Any) -> None:
    """Refused as if B's resource did not exist (404), or as forbidden; nothing of B leaks."""
    assert_error(r, 403, 404)
    assert not any(m in r.text for m in B_MARKERS[1:2]), r.text[:300]


def _clean(r: Any) -> None:
    """Served (200) or refused, but nothing of project B in the answer."""
    if r.status_code != 200:
        assert_error(r, 400, 403, 404)
    leaked = [m for m in B_MARKERS if m in r.text]
    assert not leaked, (leaked, r.text[:300])


def _ingest_b(api: TestClient, p: Projects, h: dict[str, str]) -> Any:
    return _ingest_one(api, h, p.b, "eb", "rb")


def _ingest_one(
    api: TestClient, h: dict[str, str], project: str, experiment_id: str, run_id: str | None
) -> Any:
    """POST /api/v1/ingest of one event: a run's rename, or an experiment's (no run)."""
    env = Envelope(
        event_id=new_event_id(),
        experiment_id=experiment_id,
        producer_id="p",
        seq=0,
        occurred_at=1,
        project=project,
        run_id=run_id,
    )
    event = ExperimentRenamed(envelope=env, name="x") if run_id is None else None
    data = encode(event or RunRenamed(envelope=env, name="x"))
    body = b"RSB1" + len(data).to_bytes(4, "little") + data
    return api.post(
        "/api/v1/ingest", content=body, headers={**h, "Content-Type": HTTP_CONTENT_TYPE}
    )


def _run_write(path: str, **extra: Any) -> Case:
    def case(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
        body = {"run_id": "rb", "run_uuid": "rb", **extra}
        _denied(api.post(f"{pre}{path}", json=body, headers=p.ha))

    return case


def _exp_write(path: str, **extra: Any) -> Case:
    def case(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
        _denied(api.post(f"{pre}{path}", json={"experiment_id": "eb", **extra}, headers=p.ha))

    return case


def _v1_run_get(suffix: str, **params: Any) -> Case:
    def case(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
        _denied(api.get(f"/api/v1/runs/rb{suffix}", params=params, headers=p.ha))

    return case


def _model_case(method: str, suffix: str, **kw: Any) -> Case:
    def case(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
        url = f"{pre}/logged-models/{s['model_b']}{suffix}"
        _denied(api.request(method, url, headers=p.ha, **kw))

    return case


def _get(url: str, check: Callable[[Any], None] = _clean, **params: Any) -> Case:
    def case(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
        check(api.get(url.replace("{pre}", pre), params=params, headers=p.ha))

    return case


def _post(url: str, body: dict[str, Any], check: Callable[[Any], None] = _clean) -> Case:
    def case(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
        check(api.post(url.replace("{pre}", pre), json=body, headers=p.ha))

    return case


def _create_experiment(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
    r = api.post(f"{pre}/experiments/create", json={"name": "exp-b"}, headers=p.ha)
    assert r.status_code == 200, r.text  # a new experiment of A (ids are uuid5(project, name))
    assert r.json()["experiment_id"] != "eb"


def _create_run(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
    _denied(api.post(f"{pre}/runs/create", json={"experiment_id": "eb"}, headers=p.ha))


def _create_model(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
    r = api.post(f"{pre}/logged-models", json={"experiment_id": "ea", "name": "m"}, headers=p.ha)
    assert r.status_code == 200, r.text
    assert s["model_b"] not in r.text
    # not into B's experiment
    _denied(api.post(f"{pre}/logged-models", json={"experiment_id": "eb"}, headers=p.ha))


def _search_models(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
    r = api.post(f"{pre}/logged-models/search", json={"experiment_ids": ["eb"]}, headers=p.ha)
    assert r.status_code in (200, 404), r.text
    assert s["model_b"] not in r.text


def _artifact_put(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
    _denied(api.put(f"{ARTIFACTS}/eb/rb/artifacts/x.txt", content=b"x", headers=p.ha))


def _artifact_get(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
    _denied(api.get(f"{ARTIFACTS}/eb/rb/artifacts/b.txt", headers=p.ha))
    model = api.get(f"{ARTIFACTS}/eb/models/{s['model_b']}/artifacts/m.txt", headers=p.ha)
    _denied(model)


def _artifact_list(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
    _denied(api.get(ARTIFACTS, params={"path": "eb/rb/artifacts"}, headers=p.ha))
    r = api.get(ARTIFACTS, params={"path": f"eb/models/{s['model_b']}/artifacts"}, headers=p.ha)
    assert "m.txt" not in r.text


def _ingest(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
    assert_error(_ingest_b(api, p, p.ha), 403)
    # events of A's project that name B's run or B's experiment (ids are all they carry)
    for experiment_id, run_id in (("eb", "rb"), ("ea", "rb"), ("eb", None)):
        r = _ingest_one(api, p.ha, p.a, experiment_id, run_id)
        body = assert_error(r, 403)
        assert "belongs to another project" in body["message"], body
    # A's own run and experiment go through
    for run_id in ("ra", None):
        r = _ingest_one(api, p.ha, p.a, "ea", run_id)
        assert r.status_code == 200, r.text


def _admin(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
    """A replay rebuilds every project's read models: no token 401, a project's token 403."""
    for method in ("GET", "DELETE", "POST"):
        assert_error(api.request(method, "/admin/replay", params={"source": "x"}), 401)
        r = api.request(method, "/admin/replay", params={"source": "x"}, headers=p.ha)
        assert_error(r, 403)


SHA = "0" * 64


def _put_pointer(api: TestClient, p: Projects, pre: str, s: dict[str, Any]) -> None:
    body = {"key": "b.txt", "uri": "s3://x/y", "size": 1, "sha256": SHA}
    _denied(api.put("/api/v1/runs/rb/artifacts/pointer", json=body, headers=p.ha))


#: (method, path without the /ajax-api alias) -> the isolation case with A's token on B
CASES: dict[tuple[str, str], Case] = {
    ("GET", "/api/v1/experiments"): _get("/api/v1/experiments"),
    ("GET", "/api/v1/experiments/{experiment_id}"): _get("/api/v1/experiments/eb", _denied),
    ("GET", "/api/v1/experiments/{experiment_id}/leaderboard"): _get(
        "/api/v1/experiments/eb/leaderboard", metric="acc"
    ),
    ("GET", "/api/v1/runs/{run_id}"): _v1_run_get(""),
    ("GET", "/api/v1/runs/{run_id}/alerts"): _v1_run_get("/alerts"),
    ("GET", "/api/v1/runs/{run_id}/artifacts/download"): _v1_run_get(
        "/artifacts/download", key="model.txt"
    ),
    ("GET", "/api/v1/runs/{run_id}/as-of"): _v1_run_get("/as-of", time=2_000_000_000_000),
    ("GET", "/api/v1/runs/{run_id}/console"): _v1_run_get("/console"),
    ("GET", "/api/v1/runs/{run_id}/lineage"): _v1_run_get("/lineage"),
    ("GET", "/api/v1/runs/{run_id}/producers"): _v1_run_get("/producers"),
    ("GET", "/api/v1/runs/{run_id}/metrics/{key:path}/buckets"): _v1_run_get(
        "/metrics/acc/buckets"
    ),
    ("GET", "/api/v1/runs/{run_id}/metrics/{key:path}/history"): _v1_run_get(
        "/metrics/acc/history"
    ),
    ("POST", "/api/v1/runs/{run_id}/artifacts/uploads"): _post(
        "/api/v1/runs/rb/artifacts/uploads", {"sha256": SHA, "size": 1}, _denied
    ),
    ("GET", "/api/v1/runs/{run_id}/artifacts/pointer"): _v1_run_get(
        "/artifacts/pointer", key="b.txt"
    ),
    ("PUT", "/api/v1/runs/{run_id}/artifacts/pointer"): _put_pointer,
    ("POST", "/api/v1/runs/search"): _post("/api/v1/runs/search", {"experiment_ids": ["eb"]}),
    ("POST", "/api/v1/runs/compare"): _post(
        "/api/v1/runs/compare", {"run_ids": ["rb"], "keys": ["acc"]}, _denied
    ),
    ("POST", "/api/v1/analytics/aggregate"): _post(
        "/api/v1/analytics/aggregate",
        {"experiment_ids": ["eb"], "metric": "acc", "group_by": ["run_name"]},
    ),
    ("POST", "/api/v1/analytics/parallel-coordinates"): _post(
        "/api/v1/analytics/parallel-coordinates",
        {"experiment_ids": ["eb"], "params": ["secret_of"], "metrics": [{"key": "acc"}]},
    ),
    ("POST", "/api/v1/ingest"): _ingest,
    # MLflow reads
    ("GET", f"{MLFLOW}/experiments/get"): _get(
        "{pre}/experiments/get", _denied, experiment_id="eb"
    ),
    ("GET", f"{MLFLOW}/experiments/get-by-name"): _get(
        "{pre}/experiments/get-by-name", _denied, experiment_name="exp-b"
    ),
    ("GET", f"{MLFLOW}/experiments/search"): _get("{pre}/experiments/search"),
    ("POST", f"{MLFLOW}/experiments/search"): _post("{pre}/experiments/search", {}),
    ("GET", f"{MLFLOW}/runs/get"): _get("{pre}/runs/get", _denied, run_id="rb"),
    ("POST", f"{MLFLOW}/runs/search"): _post("{pre}/runs/search", {"experiment_ids": ["eb"]}),
    ("GET", f"{MLFLOW}/metrics/get-history"): _get(
        "{pre}/metrics/get-history", _denied, run_id="rb", metric_key="acc"
    ),
    ("GET", f"{MLFLOW}/metrics/get-history-bulk-interval"): _get(
        "{pre}/metrics/get-history-bulk-interval", run_ids="rb", metric_key="acc"
    ),
    ("GET", f"{MLFLOW}/artifacts/list"): _get("{pre}/artifacts/list", _denied, run_id="rb"),
    # MLflow experiment writes
    ("POST", f"{MLFLOW}/experiments/create"): _create_experiment,
    ("POST", f"{MLFLOW}/experiments/delete"): _exp_write("/experiments/delete"),
    ("POST", f"{MLFLOW}/experiments/restore"): _exp_write("/experiments/restore"),
    ("POST", f"{MLFLOW}/experiments/update"): _exp_write("/experiments/update", new_name="z"),
    ("POST", f"{MLFLOW}/experiments/set-experiment-tag"): _exp_write(
        "/experiments/set-experiment-tag", key="k", value="v"
    ),
    ("POST", f"{MLFLOW}/experiments/delete-experiment-tag"): _exp_write(
        "/experiments/delete-experiment-tag", key="k"
    ),
    # MLflow run writes
    ("POST", f"{MLFLOW}/runs/create"): _create_run,
    ("POST", f"{MLFLOW}/runs/update"): _run_write("/runs/update", status="FAILED"),
    ("POST", f"{MLFLOW}/runs/delete"): _run_write("/runs/delete"),
    ("POST", f"{MLFLOW}/runs/restore"): _run_write("/runs/restore"),
    ("POST", f"{MLFLOW}/runs/log-metric"): _run_write(
        "/runs/log-metric", key="acc", value=1.0, timestamp=1, step=0
    ),
    ("POST", f"{MLFLOW}/runs/log-batch"): _run_write(
        "/runs/log-batch", metrics=[{"key": "acc", "value": 1, "timestamp": 1, "step": 0}]
    ),
    ("POST", f"{MLFLOW}/runs/log-parameter"): _run_write(
        "/runs/log-parameter", key="new", value="1"
    ),
    ("POST", f"{MLFLOW}/runs/set-tag"): _run_write("/runs/set-tag", key="k", value="v"),
    ("POST", f"{MLFLOW}/runs/delete-tag"): _run_write("/runs/delete-tag", key="team"),
    ("POST", f"{MLFLOW}/runs/log-inputs"): _run_write(
        "/runs/log-inputs",
        datasets=[{"dataset": {"name": "d", "digest": "x", "source_type": "s", "source": "s"}}],
    ),
    ("POST", f"{MLFLOW}/runs/outputs"): _run_write(
        "/runs/outputs", models=[{"model_id": "m-x", "step": 0}]
    ),
    ("POST", f"{MLFLOW}/runs/log-model"): _run_write("/runs/log-model", model_json="{}"),
    # MLflow 3 logged models (B's model, addressed with A's token)
    ("POST", f"{MLFLOW}/logged-models"): _create_model,
    ("POST", f"{MLFLOW}/logged-models/search"): _search_models,
    ("GET", f"{MLFLOW}/logged-models/{{model_id}}"): _model_case("GET", ""),
    ("PATCH", f"{MLFLOW}/logged-models/{{model_id}}"): _model_case(
        "PATCH", "", json={"status": "LOGGED_MODEL_READY"}
    ),
    ("DELETE", f"{MLFLOW}/logged-models/{{model_id}}"): _model_case("DELETE", ""),
    ("PATCH", f"{MLFLOW}/logged-models/{{model_id}}/tags"): _model_case(
        "PATCH", "/tags", json={"tags": [{"key": "k", "value": "v"}]}
    ),
    ("DELETE", f"{MLFLOW}/logged-models/{{model_id}}/tags/{{tag_key}}"): _model_case(
        "DELETE", "/tags/k"
    ),
    ("POST", f"{MLFLOW}/logged-models/{{model_id}}/params"): _model_case(
        "POST", "/params", json={"params": [{"key": "k", "value": "v"}]}
    ),
    # proxied artifacts
    ("PUT", f"{ARTIFACTS}/{{path:path}}"): _artifact_put,
    ("GET", f"{ARTIFACTS}/{{path:path}}"): _artifact_get,
    ("GET", ARTIFACTS): _artifact_list,
    # the serve process's admin routes: an operator token only
    ("GET", "/admin/replay"): _admin,
    ("POST", "/admin/replay"): _admin,
    ("DELETE", "/admin/replay"): _admin,
}


def _seed_b(api: TestClient, p: Projects) -> dict[str, Any]:
    """B's own artifact and logged model (with an artifact), written through B's token."""
    put = api.put(f"{ARTIFACTS}/eb/rb/artifacts/b.txt", content=b"secret of b", headers=p.hb)
    assert put.status_code == 200, put.text
    made = api.post(f"{MLFLOW}/logged-models", json={"experiment_id": "eb"}, headers=p.hb)
    assert made.status_code == 200, made.text
    model_b = made.json()["model"]["info"]["model_id"]
    url = f"{ARTIFACTS}/eb/models/{model_b}/artifacts/m.txt"
    assert api.put(url, content=b"m", headers=p.hb).status_code == 200
    # B itself can read what A must not
    assert api.get(f"{ARTIFACTS}/eb/rb/artifacts/b.txt", headers=p.hb).content == b"secret of b"
    assert api.get(f"{MLFLOW}/logged-models/{model_b}", headers=p.hb).status_code == 200
    assert api.get("/api/v1/runs/rb", headers=p.hb).status_code == 200
    return {"model_b": model_b}


def test_every_route_is_project_isolated(
    chdb_client: Any, projects: Projects, connection: Any
) -> None:
    log = MemoryLog()
    app = serve_app(chdb_client, projects, connection, log)
    routes = set(iter_routes(app.routes))
    assert len(routes) > 60, routes
    uncovered = sorted(
        (m, p)
        for m, p in routes
        if (m, p) not in PROJECTLESS and (m, p.replace("/ajax-api/", "/api/", 1)) not in CASES
    )
    assert not uncovered, f"routes without an isolation case (add one to CASES): {uncovered}"
    stale = sorted(set(CASES) - routes)
    assert not stale, f"cases for routes that no longer exist: {stale}"
    with TestClient(app, raise_server_exceptions=False) as api:
        state = _seed_b(api, projects)
        before = len(log.sent)
        failures: list[str] = []
        for method, path in sorted(routes - PROJECTLESS):
            key = (method, path.replace("/ajax-api/", "/api/", 1))
            pre = "/ajax-api/2.0/mlflow" if path.startswith("/ajax-api/") else MLFLOW
            try:
                CASES[key](api, projects, pre, state)
            except AssertionError as exc:
                failures.append(f"{method} {path}: {str(exc)[:300]}")
            # every route (but the public ones) refuses a request without a token
            if not path.startswith("/admin"):
                url = re.sub(r"\{[^}]+\}", "x", path)
                anon = api.request(method, url)
                if anon.status_code not in (400, 401):
                    failures.append(f"{method} {path}: {anon.status_code} without a token")
        assert not failures, "\n".join(failures)
        # nothing A wrote names B's project, run or experiment
        for _, data in log.sent[before:]:
            env = decode(data).envelope
            assert env.project == projects.a, env
            assert env.run_id != "rb", env
            assert env.experiment_id != "eb", env
        # and B's data is intact for B
        assert api.get("/api/v1/runs/rb", headers=projects.hb).status_code == 200
        got = api.get(f"{MLFLOW}/logged-models/{state['model_b']}", headers=projects.hb)
        assert got.status_code == 200


def test_an_artifact_uri_outside_its_run_project_is_never_read(
    chdb_client: Any, projects: Projects, connection: Any
) -> None:
    """An artifact's uri comes from its event, which any writer of a project can make name
    any object. The download reads only objects of the run's own project (its blobs, its
    run's prefix) in the artifact bucket: never, with the server's credentials, project B's
    blobs or the event archive for a run of project A."""
    app = serve_app(chdb_client, projects, connection, MemoryLog())
    with TestClient(app, raise_server_exceptions=False) as api:
        up = api.put(f"{ARTIFACTS}/eb/rb/artifacts/secret.txt", content=b"B's", headers=projects.hb)
        assert up.status_code == 200, up.text
        digest = hashlib.sha256(b"B's").hexdigest()
        bucket = connection.s3_bucket
        theirs = f"s3://{bucket}/{projects.b}/blobs/sha256/{digest[:2]}/{digest}"
        mine = f"s3://{bucket}/{projects.a}/blobs/sha256/{digest[:2]}/{digest}"
        api.put(f"{ARTIFACTS}/ea/ra/artifacts/same.txt", content=b"B's", headers=projects.ha)
        for key, uri in (
            ("loot", theirs),
            ("dots", f"s3://{bucket}/{projects.a}/blobs/../{projects.b}/blobs/sha256/x/{digest}"),
            ("other-bucket", f"s3://elsewhere/{projects.a}/blobs/sha256/{digest[:2]}/{digest}"),
            ("archive", f"s3://{bucket}/archive/runstream.events.v1/0/x.avro"),
            ("own", mine),
        ):
            projects.models_a.artifact_at("ra", key, uri, size=3, experiment_id="ea")
        for key in ("loot", "dots", "other-bucket", "archive"):
            r = api.get(
                "/api/v1/runs/ra/artifacts/download", params={"key": key}, headers=projects.ha
            )
            assert_error(r, 404)
            assert b"B's" not in r.content
        own = api.get(
            "/api/v1/runs/ra/artifacts/download", params={"key": "own"}, headers=projects.ha
        )
        assert own.status_code == 200, own.text
        assert own.content == b"B's"  # A's own blob of the same bytes is served


def test_an_operator_token_runs_the_admin_routes(
    chdb_client: Any, projects: Projects, connection: Any
) -> None:
    """`runstream token issue --operator`: the admin routes (a project's token gets 403 in
    the case above), and every project's runs."""
    app = serve_app(chdb_client, projects, connection, MemoryLog())
    operator = projects.auth(issue_token(chdb_client, projects.db, OPERATOR).token)
    with TestClient(app, raise_server_exceptions=False) as api:
        r = api.get("/admin/replay", headers=operator)
        assert r.status_code == 404, r.text  # past auth: no replay has run in this process
        assert "no replay" in r.text
        assert api.get("/api/v1/runs/rb", headers=operator).status_code == 200
        assert api.get("/api/v1/runs/ra", headers=operator).status_code == 200


# ---- secrets -----------------------------------------------------------------------------


def _assert_no_secret(where: str, text: str, secrets: list[str]) -> None:
    """Neither credential in `text`, but for the access key id that SigV4 puts in the
    `X-Amz-Credential` of a presigned URL (the secret key never leaves the server)."""
    text = re.sub(r"X-Amz-Credential=[^&\"\s]+", "X-Amz-Credential=...", text)
    found = [s[:4] + "..." for s in secrets if s in text]
    assert not found, f"{where} contains S3 credentials {found}"


def test_s3_credentials_never_reach_responses_or_logs(
    chdb_client: Any,
    projects: Projects,
    connection: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secrets = [connection.s3_access_key, connection.s3_secret_key]
    assert all(len(s) >= 8 for s in secrets)
    caplog.set_level(logging.DEBUG)  # every logger, DEBUG: what `serve --log-level debug` shows
    bodies: list[tuple[str, str]] = []

    def grab(where: str, r: Any) -> Any:
        bodies.append((where, f"{dict(r.headers)}\n{r.text}"))
        return r

    log = MemoryLog()
    app = serve_app(chdb_client, projects, connection, log)
    with TestClient(app, raise_server_exceptions=False) as api:
        h = projects.ha
        # the browser's pages and the whole static bundle
        for path in ("/", "/ui", "/ui/run/ra", "/openapi.json", "/docs", "/redoc"):
            grab(path, api.get(path))
        if ui.is_built():
            for f in sorted(ui.STATIC_DIR.rglob("*")):
                if f.is_file():
                    rel = f.relative_to(ui.STATIC_DIR).as_posix()
                    assert grab(rel, api.get(f"/ui/static/{rel}")).status_code == 200
        # API answers and errors of every kind
        grab("upload", api.put(f"{ARTIFACTS}/ea/ra/artifacts/a.txt", content=b"a", headers=h))
        for path in (
            "/api/v1/experiments",
            "/api/v1/runs/ra",
            "/api/v1/runs/nope",
            "/api/v1/runs/ra/artifacts/download?key=model.txt",  # the seeded uri: no object
            "/api/v1/runs/ra/artifacts/download?key=nope",
            f"{ARTIFACTS}/ea/ra/artifacts/a.txt",
            f"{ARTIFACTS}/ea/ra/artifacts/missing.txt",
            f"{ARTIFACTS}?path=ea/ra/artifacts",
            f"{MLFLOW}/artifacts/list?run_id=ra",
            "/api/v1/health",
        ):
            grab(path, api.get(path, headers=h))
        presigned = api.post(
            "/api/v1/runs/ra/artifacts/uploads", json={"sha256": "1" * 64, "size": 1}, headers=h
        )
        assert connection.s3_secret_key not in grab("presign", presigned).text
        grab("401", api.get("/api/v1/experiments"))
        grab("400", api.post("/api/v1/runs/search", json={"filter": "'"}, headers=h))
        grab("413", api.post("/api/v1/runs/search", content=b"x" * (17 << 20), headers=h))
    # S3 failures: a store that is down, and one that refuses the credentials
    down = S3Settings(
        f"http://127.0.0.1:{free_port()}",
        connection.s3_access_key,
        connection.s3_secret_key,
        connection.s3_bucket,
    )
    refused = S3Settings(
        connection.s3_endpoint,
        connection.s3_access_key,
        connection.s3_secret_key + "x",
        connection.s3_bucket,
    )
    for label, s3 in (("s3 down", down), ("s3 refuses", refused)):
        broken = create_app(
            Settings(database=projects.db),
            lambda: chdb_client,
            event_log=MemoryLog(),
            s3=s3,
            require_tokens=True,
        )
        broken.state.object_store = serve_minio_client(
            ServerSettings(
                kafka_bootstrap="127.0.0.1:1",
                clickhouse_url="chdb://unused",
                s3_endpoint=s3.endpoint,
                s3_access_key=s3.access_key,
                s3_secret_key=s3.secret_key,
                s3_bucket=s3.bucket,
            )
        )
        with TestClient(broken, raise_server_exceptions=False) as api:
            up = api.put(f"{ARTIFACTS}/ea/ra/artifacts/b.txt", content=b"b", headers=projects.ha)
            assert_error(grab(label, up), 503)
            paths = ["/api/v1/runs/ra/artifacts/download?key=model.txt"]
            if s3 is refused:  # an unreachable S3 costs the client's retries: fewer calls
                paths += [f"{ARTIFACTS}/ea/ra/artifacts/a.txt", f"{ARTIFACTS}?path=ea/ra/artifacts"]
                made = api.post(f"{MLFLOW}/logged-models", json={"experiment_id": "ea"}, headers=h)
                assert_error(grab(f"{label} model", made), 503)
            for path in paths:
                assert_error(grab(f"{label} {path}", api.get(path, headers=projects.ha)), 503)
    for where, text in bodies:
        _assert_no_secret(f"response of {where}", text, secrets)
    logged = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}" for r in caplog.records
    )
    assert "artifact store failed" in logged  # the S3 failures were logged…
    _assert_no_secret("the logs", logged, secrets)  # …without the credentials


# ---- presigned URLs ----------------------------------------------------------------------


def _put(url: str, data: bytes) -> int:
    req = urllib.request.Request(url, data=data, method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback S3
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


EXPIRY_S = 4


def test_presigned_upload_url_works_then_expires(
    chdb_client: Any,
    projects: Projects,
    connection: Any,
    minio_client: Any,
) -> None:
    """`POST /api/v1/runs/{id}/artifacts/uploads` presigns a PUT of one object in the run's
    prefix; with a short expiry the real S3 accepts it at once and refuses it (403) later."""
    data = b"presigned upload"
    sha = hashlib.sha256(data).hexdigest()
    app = serve_app(chdb_client, projects, connection, MemoryLog(), presign_expiry_s=EXPIRY_S)
    with TestClient(app, raise_server_exceptions=False) as api:
        signed_at = time.time()
        r = api.post(
            "/api/v1/runs/ra/artifacts/uploads",
            json={"sha256": sha, "size": len(data)},
            headers=projects.ha,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["expires_in"] == EXPIRY_S
        url = body["url"]
        assert body["object"].startswith(f"{projects.a}/runs/ra/artifacts/")
    assert _put(url, data) == 200
    assert time.time() - signed_at < EXPIRY_S - 1.5, "too slow to use the URL before it expired"
    got = minio_client.get_object(connection.s3_bucket, body["object"])
    assert got.read() == data
    # signed for that one object: another name with the same signature is refused
    other = url.replace(sha, "f" * 64, 1)
    assert _put(other, data) == 403
    status = 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(0.5)
        status = _put(url, data)
        if status != 200:
            break
    assert status == 403, f"the presigned URL is still honoured {time.time() - signed_at:.1f} s on"
    # X-Amz-Date has whole seconds: the URL lives between EXPIRY_S - 1 and EXPIRY_S seconds
    assert time.time() - signed_at >= EXPIRY_S - 1
