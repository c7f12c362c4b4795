"""Experiments and run detail routes, and the error contract of the app."""

from __future__ import annotations

from typing import Any

import pytest

from query_api.app import create_app
from query_api.settings import Settings
from tests.query_api.readmodels import T0, ReadModels, ts
from tests.query_api.testclient import TestClient

pytestmark = pytest.mark.stack


def test_experiments_list_pages_and_get(api: TestClient, models: ReadModels) -> None:
    for i in range(5):
        models.experiment(str(i), f"exp-{i}", created=T0 + i, tags={"team": "ml"})
    models.experiment("9", "gone", deleted=1)
    seen: list[str] = []
    params: dict[str, Any] = {"max_results": 2}
    while True:
        body = api.get("/api/v1/experiments", params=params).json()
        seen += [e["experiment_id"] for e in body["experiments"]]
        if "next_page_token" not in body:
            break
        params["page_token"] = body["next_page_token"]
    assert seen == ["4", "3", "2", "1", "0"]
    everything = api.get("/api/v1/experiments", params={"include_deleted": "true"}).json()
    assert len(everything["experiments"]) == 6
    exp = api.get("/api/v1/experiments/3").json()["experiment"]
    assert exp == {
        "experiment_id": "3",
        "project": "default",
        "name": "exp-3",
        "description": "",
        "tags": {"team": "ml"},
        "lifecycle_stage": "active",
        "creation_time": T0 + 3,
        "last_update_time": T0 + 3,
    }
    missing = api.get("/api/v1/experiments/404")
    assert missing.status_code == 404
    assert missing.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": "Experiment with id=404 not found",
    }


def test_run_detail_has_everything_but_points(api: TestClient, models: ReadModels) -> None:
    models.run("p", name="parent", status="FINISHED", end=T0 + 5000, notes="# notes")
    models.run("c1", parent="p", fork_step=10, start=T0 + 1)
    models.run("c2", parent="p", start=T0 + 2)
    models.params("p", {"lr": "0.01", "bs": "64"})
    models.tags("p", {"team": "x", "old": "y"})
    models.tags("p", {"old": ""}, deleted=1)
    models.attributes("p", {"gpu": '"a100"', "layers": "[1, 2]", "raw": "not json"})
    models.artifact("p", "model/weights.pt", size=123)
    models.points("p", "loss", [1.0, 0.5, 0.25])
    models.points("p", "loss", [0.7, 0.6], split="val")
    models.points("p", "diverged", [1.0, float("nan")])
    run = api.get("/api/v1/runs/p").json()["run"]
    assert run["name"] == "parent"
    assert run["status"] == "FINISHED"
    assert (run["start_time"], run["end_time"]) == (T0, T0 + 5000)
    assert run["notes"] == "# notes"
    assert run["params"] == {"bs": "64", "lr": "0.01"}
    assert run["tags"] == {"team": "x"}
    assert run["attributes"] == {"gpu": "a100", "layers": [1, 2], "raw": "not json"}
    assert run["parent_run_id"] is None
    assert [(c["run_id"], c["fork_step"]) for c in run["children"]] == [("c1", 10), ("c2", None)]
    assert [a["key"] for a in run["artifacts"]] == ["model/weights.pt"]
    assert run["artifacts"][0]["size"] == 123
    loss = {m["split"]: m for m in run["metrics"] if m["key"] == "loss"}
    assert loss[""]["last"] == 0.25
    assert loss[""]["count"] == 3
    assert loss[""]["min"] == 0.25
    assert loss[""]["max"] == 1.0
    assert loss[""]["avg"] == pytest.approx(1.75 / 3)
    assert loss["val"]["last"] == 0.6
    nan = next(m for m in run["metrics"] if m["key"] == "diverged")
    assert (nan["last"], nan["avg"], nan["max"]) == ("NaN", "NaN", 1.0)
    child = api.get("/api/v1/runs/c1").json()["run"]
    assert child["parent_run_id"] == "p"
    assert child["fork_step"] == 10


def test_unknown_run_is_404(api: TestClient, models: ReadModels) -> None:
    r = api.get("/api/v1/runs/nope")
    assert r.status_code == 404
    assert r.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": "Run with id=nope not found",
    }


def test_router_errors_are_json(api: TestClient, models: ReadModels) -> None:
    r = api.get("/api/v1/no-such-route")
    assert r.status_code == 404
    assert r.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    r = api.delete("/api/v1/runs/x")
    assert r.status_code == 405
    assert r.json()["error_code"] == "METHOD_NOT_ALLOWED"
    r = api.post(
        "/api/v1/runs/search", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = api.get("/api/v1/experiments", params={"max_results": "-1"})
    assert r.status_code == 400
    assert "max_results" in r.json()["message"]


def test_a_failing_store_is_503_not_500(models: ReadModels) -> None:
    def broken() -> Any:
        raise ConnectionError("ClickHouse is down")

    app = create_app(Settings(database=models.db), broken)
    with TestClient(app) as client:
        r = client.get("/api/v1/runs/x")
    assert r.status_code == 503
    assert r.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "ClickHouse is down" in r.json()["message"]


def test_missing_tables_are_503(chdb_client: Any, ch_database: str) -> None:
    app = create_app(Settings(database=ch_database), lambda: chdb_client)
    with TestClient(app) as client:
        r = client.post("/api/v1/runs/search", json={})
    assert r.status_code == 503


def test_project_scoping_hides_other_projects(chdb_client: Any, models: ReadModels) -> None:
    models.experiment("1", "mine")
    models.run("r-mine")
    other = ReadModels(models.client, models.db, project="other")
    other.experiment("2", "theirs")
    other.run("r-theirs", "2")
    app = create_app(Settings(database=models.db, project="default"), lambda: chdb_client)
    with TestClient(app) as client:
        assert [e["name"] for e in client.get("/api/v1/experiments").json()["experiments"]] == [
            "mine"
        ]
        runs = client.post("/api/v1/runs/search", json={}).json()["runs"]
        assert [r["run_id"] for r in runs] == ["r-mine"]
        assert client.get("/api/v1/runs/r-theirs").status_code == 404
        assert client.get("/api/v1/experiments/2").status_code == 404


def test_settings_reject_a_database_that_is_not_an_identifier() -> None:
    from query_api.errors import QueryApiError

    with pytest.raises(QueryApiError):
        Settings(database="x; DROP DATABASE y")


def test_reads_follow_the_blue_green_pointer(chdb_client: Any, models: ReadModels) -> None:
    models.run("from-base")
    rebuilt = ReadModels(chdb_client, f"{models.db}_v2")
    chdb_client.command(f"CREATE DATABASE {rebuilt.db}")
    try:
        rebuilt.migrate()
        rebuilt.run("from-replay")
        settings = Settings(database=models.db, pointer_check_interval_s=0)
        with TestClient(create_app(settings, lambda: chdb_client)) as client:

            def run_ids() -> list[str]:
                runs = client.post("/api/v1/runs/search", json={}).json()["runs"]
                return [r["run_id"] for r in runs]

            assert run_ids() == ["from-base"]
            chdb_client.insert(
                f"{models.db}.read_models_pointer",
                [["current", rebuilt.db, ts(T0)]],
                column_names=["name", "database", "switched_at"],
            )
            assert run_ids() == ["from-replay"]
            assert client.get("/api/v1/runs/from-replay").status_code == 200
    finally:
        chdb_client.command(f"DROP DATABASE IF EXISTS {rebuilt.db} SYNC")
