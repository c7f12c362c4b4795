"""Leaderboard and the MLflow-compatible read routes (shapes and error codes)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.query_api.readmodels import T0, ReadModels
from tests.query_api.test_api_search import seed
from tests.query_api.testclient import TestClient

pytestmark = pytest.mark.stack

MLFLOW = "/api/2.0/mlflow"


def board(api: TestClient, **params: Any) -> list[tuple[str, Any]]:
    r = api.get("/api/v1/experiments/1/leaderboard", params=params)
    assert r.status_code == 200, r.text
    return [(row["run_id"], row["value"]) for row in r.json()["runs"]]


def test_leaderboard_ranks_by_last_min_max_avg(api: TestClient, models: ReadModels) -> None:
    models.experiment("1", "exp")
    for run_id, values in {"a": [0.1, 0.9, 0.5], "b": [0.8, 0.7], "c": [0.2, 0.6]}.items():
        models.run(run_id, status="FINISHED" if run_id != "c" else "FAILED")
        models.points(run_id, "acc", values)
    models.run("d")  # no metric: not ranked
    models.run("gone", deleted=1)
    models.points("gone", "acc", [1.0])
    assert board(api, metric="acc") == [("b", 0.7), ("c", 0.6), ("a", 0.5)]
    assert board(api, metric="acc", agg="max", limit=1) == [("a", 0.9)]
    assert board(api, metric="acc", agg="min", order="asc") == [("a", 0.1), ("c", 0.2), ("b", 0.7)]
    assert [r for r, _ in board(api, metric="acc", agg="avg")] == ["b", "a", "c"]
    assert board(api, metric="acc", filter="status = 'FINISHED'") == [("b", 0.7), ("a", 0.5)]
    first = api.get("/api/v1/experiments/1/leaderboard", params={"metric": "acc"}).json()
    assert first["runs"][0]["rank"] == 1
    assert api.get("/api/v1/experiments/9/leaderboard", params={"metric": "acc"}).status_code == 404
    bad = api.get("/api/v1/experiments/1/leaderboard", params={"metric": "acc", "agg": "median"})
    assert bad.status_code == 400
    bad = api.get("/api/v1/experiments/1/leaderboard", params={"metric": "acc", "filter": "x ="})
    assert bad.status_code == 400


def test_mlflow_get_run_shape(api: TestClient, models: ReadModels) -> None:
    models.run("r1", name="first", status="FINISHED", end=T0 + 10)
    models.params("r1", {"lr": "0.01"})
    models.tags("r1", {"mlflow.user": "ana"})
    models.points("r1", "loss", [0.5, 0.25])
    models.points("r1", "loss", [0.9], split="val")
    r = api.get(f"{MLFLOW}/runs/get", params={"run_id": "r1"})
    assert r.status_code == 200
    run = r.json()["run"]
    assert run["info"] == {
        "run_id": "r1",
        "run_uuid": "r1",
        "run_name": "first",
        "artifact_uri": "mlflow-artifacts:/1/r1/artifacts",
        "experiment_id": "1",
        "user_id": "ana",
        "status": "FINISHED",
        "start_time": T0,
        "end_time": T0 + 10,
        "lifecycle_stage": "active",
    }
    assert run["data"]["params"] == [{"key": "lr", "value": "0.01"}]
    assert run["data"]["tags"] == [{"key": "mlflow.user", "value": "ana"}]
    assert run["data"]["metrics"] == [
        {"key": "loss", "value": 0.25, "timestamp": T0 + 1000, "step": 1},
        {"key": "loss@val", "value": 0.9, "timestamp": T0, "step": 0},
    ]
    assert api.get("/ajax-api/2.0/mlflow/runs/get", params={"run_uuid": "r1"}).json() == r.json()
    missing = api.get(f"{MLFLOW}/runs/get", params={"run_id": "nope"})
    assert missing.status_code == 404
    assert missing.json() == {
        "error_code": "RESOURCE_DOES_NOT_EXIST",
        "message": "Run with id=nope not found",
    }
    no_id = api.get(f"{MLFLOW}/runs/get")
    assert no_id.status_code == 400
    assert no_id.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_mlflow_search_runs(api: TestClient, models: ReadModels) -> None:
    seed(models)
    body = {
        "experiment_ids": ["1"],
        "filter": "metrics.acc > 0.9 and params.lr = '0.01'",
        "order_by": ["metrics.acc ASC"],
        "run_view_type": "ACTIVE_ONLY",
        "some_new_field": True,
    }
    r = api.post(f"{MLFLOW}/runs/search", json=body)
    assert r.status_code == 200, r.text
    runs = r.json()["runs"]
    assert [x["info"]["run_id"] for x in runs] == ["a", "c"]
    assert {"key": "lr", "value": "0.01"} in runs[0]["data"]["params"]
    empty = api.post(
        f"{MLFLOW}/runs/search", json={"experiment_ids": ["1"], "filter": "status = 'X'"}
    )
    assert empty.json() == {}
    page = api.post(
        f"{MLFLOW}/runs/search", json={"experiment_ids": ["1"], "max_results": 2}
    ).json()
    assert len(page["runs"]) == 2
    assert "next_page_token" in page
    for bad in ({"max_results": 50_001}, {"filter": "metrics.acc >"}, {"order_by": "x"}):
        r = api.post(f"{MLFLOW}/runs/search", json=bad)
        assert r.status_code == 400, bad
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_mlflow_get_history_pages(api: TestClient, models: ReadModels) -> None:
    models.run("r")
    models.points("r", "loss", [float(i) for i in range(7)])
    got: list[dict[str, Any]] = []
    params: dict[str, Any] = {"run_id": "r", "metric_key": "loss", "max_results": 3}
    while True:
        body = api.get(f"{MLFLOW}/metrics/get-history", params=params).json()
        got += body.get("metrics", [])
        if "next_page_token" not in body:
            break
        params["page_token"] = body["next_page_token"]
    assert [m["step"] for m in got] == list(range(7))
    assert got[2] == {"key": "loss", "value": 2.0, "timestamp": T0 + 2000, "step": 2}
    whole = api.get(f"{MLFLOW}/metrics/get-history", params={"run_uuid": "r", "metric_key": "loss"})
    assert len(whole.json()["metrics"]) == 7
    none = api.get(f"{MLFLOW}/metrics/get-history", params={"run_id": "r", "metric_key": "x"})
    assert none.json() == {}
    assert api.get(f"{MLFLOW}/metrics/get-history", params={"run_id": "r"}).status_code == 400
    unknown = api.get(f"{MLFLOW}/metrics/get-history", params={"run_id": "zz", "metric_key": "x"})
    assert unknown.status_code == 404


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    filter_text=st.text(max_size=40)
    | st.lists(
        st.sampled_from(
            [
                "metrics.a",
                "params.p",
                "status",
                "=",
                ">",
                "'x'",
                "1",
                "and",
                "or",
                "(",
                ")",
                "in",
                "is",
                "null",
                "not",
                "`",
                "'",
                ";",
            ]
        ),
        max_size=8,
    ).map(" ".join),
    order=st.text(max_size=20),
)
def test_no_input_makes_a_5xx(
    api: TestClient, models: ReadModels, filter_text: str, order: str
) -> None:
    r = api.post("/api/v1/runs/search", json={"filter": filter_text, "order_by": [order]})
    assert r.status_code in (200, 400), r.text
    assert "error_code" in r.json() or "runs" in r.json()
