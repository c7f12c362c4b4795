"""The UI router (built / not built) and the run-extras routes over rows inserted straight
into the read-model tables (no browser, no producers)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from query_api import ui
from query_api.app import create_app
from query_api.settings import Settings
from tests.query_api.readmodels import T0, ReadModels, ts
from tests.query_api.testclient import TestClient


def test_ui_not_built_answers_503_naming_the_build_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui, "STATIC_DIR", tmp_path / "static")
    app = FastAPI()
    app.include_router(ui.router)
    with TestClient(app) as client:
        for path in ("/", "/ui", "/ui/run/abc", "/ui/static/app.js"):
            r = client.get(path)
            assert r.status_code == 503, path
            body = r.json()
            assert body["error_code"] == "TEMPORARILY_UNAVAILABLE"
            assert ui.BUILD_COMMAND in body["message"]


def test_ui_serves_a_build_and_refuses_paths_outside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    static = tmp_path / "static"
    static.mkdir()
    for name in ui.REQUIRED:
        (static / name).write_text(f"/* {name} */")
    (tmp_path / "secret.txt").write_text("secret")
    monkeypatch.setattr(ui, "STATIC_DIR", static)
    app = FastAPI()
    app.include_router(ui.router)
    with TestClient(app) as client:
        index = client.get("/")
        assert index.status_code == 200
        assert index.headers["content-type"].startswith("text/html")
        assert client.get("/ui/compare").text == index.text
        js = client.get("/ui/static/app.js")
        assert js.headers["content-type"].startswith("text/javascript")
        assert js.text == "/* app.js */"
        assert client.get("/ui/static/missing.js").status_code == 404
        assert client.get("/ui/static/..%2Fsecret.txt").status_code == 404


def test_the_committed_lock_pins_uplot() -> None:
    web = ui.WEB_DIR
    lock = json.loads((web / "package-lock.json").read_text())
    manifest = json.loads((web / "package.json").read_text())
    assert lock["packages"]["node_modules/uplot"]["version"] == manifest["dependencies"]["uplot"]
    assert (web / "build.mjs").is_file()
    assert ".gitignore" in {p.name for p in ui.HERE.iterdir()}


@pytest.fixture
def models(chdb_client: Any, ch_database: str) -> ReadModels:
    return ReadModels(chdb_client, ch_database).migrate()


@pytest.fixture
def api(chdb_client: Any, models: ReadModels) -> Iterator[TestClient]:
    app = create_app(Settings(database=models.db), lambda: chdb_client)
    with TestClient(app) as client:
        yield client


def _insert(models: ReadModels, table: str, rows: list[dict[str, Any]]) -> None:
    models.client.insert(
        f"{models.db}.{table}", [list(r.values()) for r in rows], column_names=list(rows[0])
    )


def _producer(run_id: str, pid: str, rank: int, status: str, version: int) -> dict[str, Any]:
    return {
        "project": "default",
        "run_id": run_id,
        "producer_id": pid,
        "host": "h",
        "pid": 100 + rank,
        "rank": rank,
        "world_size": 2,
        "status": status,
        "reason": "boom" if status == "FAILED" else "",
        "joined_at": ts(T0),
        "exited_at": None if status == "ACTIVE" else ts(T0 + 5_000),
        "last_seq": 7,
        "last_seen_at": ts(T0 + 5_000),
        "event_id": f"p-{pid}-{version}",
        "version": version,
    }


def _console(run_id: str, offset: int, stream: str, text: str) -> dict[str, Any]:
    return {
        "project": "default",
        "experiment_id": "1",
        "run_id": run_id,
        "event_id": f"c-{offset}",
        "event_type": "ConsoleLogged",
        "producer_id": "p0",
        "seq": offset,
        "occurred_at": ts(T0 + offset),
        "log_partition": 0,
        "log_offset": offset,
        "log_time": ts(T0 + offset),
        "payload": json.dumps({"offset": offset, "stream": stream, "text": text}),
    }


def test_producers_latest_state_by_rank(api: TestClient, models: ReadModels) -> None:
    models.run("r1")
    _insert(
        models,
        "producer_versions",
        [
            _producer("r1", "p1", 1, "ACTIVE", 1),
            _producer("r1", "p0", 0, "ACTIVE", 2),
            _producer("r1", "p1", 1, "FAILED", 3),  # the later version wins
        ],
    )
    got = api.get("/api/v1/runs/r1/producers").json()["producers"]
    assert [(p["rank"], p["status"], p["reason"]) for p in got] == [
        (0, "ACTIVE", ""),
        (1, "FAILED", "boom"),
    ]
    assert got[0]["exited_at"] is None
    assert got[1]["exited_at"] == T0 + 5_000


def test_console_in_log_order_and_tailing(api: TestClient, models: ReadModels) -> None:
    models.run("r1")
    _insert(
        models,
        "events",
        [
            _console("r1", 12, "STDERR", "warn\n"),
            _console("r1", 10, "STDOUT", "hello "),
            _console("r1", 11, "STDOUT", "world\n"),
        ],
    )
    body = api.get("/api/v1/runs/r1/console", params={"max_results": 2}).json()
    assert [c["text"] for c in body["chunks"]] == ["hello ", "world\n"]
    assert body["next_after_offset"] == 11
    rest = api.get("/api/v1/runs/r1/console", params={"after_offset": 11}).json()
    assert [(c["stream"], c["text"]) for c in rest["chunks"]] == [("stderr", "warn\n")]
    empty = api.get("/api/v1/runs/r1/console", params={"after_offset": 12}).json()
    assert empty == {"run_id": "r1", "chunks": [], "next_after_offset": 12}
    assert api.get("/api/v1/runs/r1/console", params={"after_offset": -1}).status_code == 400


def test_alerts_and_lineage(api: TestClient, models: ReadModels) -> None:
    models.run("r1")
    alert = {
        "project": "default",
        "experiment_id": "1",
        "run_id": "r1",
        "event_id": "a1",
        "rule_id": "loss<0.5",
        "key": "loss",
        "op": "<",
        "threshold": 0.5,
        "value": float("nan"),
        "step": 3,
        "text": "low",
        "level": "WARN",
        "occurred_at": ts(T0),
    }
    _insert(models, "alerts", [alert])
    link = {
        "project": "default",
        "experiment_id": "1",
        "run_id": "r1",
        "direction": "INPUT",
        "kind": "DATASET",
        "name": "mnist",
        "version": "1",
        "digest": "d",
        "source_uri": "s3://x",
        "context": "train",
        "metadata": {"rows": "60000"},
        "occurred_at": ts(T0),
        "event_id": "l1",
        "row_version": 1,
    }
    _insert(models, "lineage", [link, {**link, "context": "eval", "row_version": 2}])
    alerts = api.get("/api/v1/runs/r1/alerts").json()["alerts"]
    assert [(a["key"], a["value"], a["step"]) for a in alerts] == [("loss", "NaN", 3)]
    lineage = api.get("/api/v1/runs/r1/lineage").json()
    assert lineage["outputs"] == []
    assert [(i["name"], i["context"], i["metadata"]) for i in lineage["inputs"]] == [
        ("mnist", "eval", {"rows": "60000"})
    ]


def test_artifact_download_without_a_store_is_503_unknown_key_404(
    api: TestClient, models: ReadModels
) -> None:
    models.run("r1")
    models.artifact("r1", "model.bin")
    r = api.get("/api/v1/runs/r1/artifacts/download", params={"key": "model.bin"})
    assert r.status_code == 503
    assert r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    r = api.get("/api/v1/runs/r1/artifacts/download", params={"key": "other.bin"})
    assert r.status_code == 404
    assert api.get("/api/v1/runs/r1/artifacts/download").status_code == 400
    assert api.get("/api/v1/runs/nope/artifacts/download", params={"key": "k"}).status_code == 404
