"""MLflow's `metrics/get-history-bulk-interval` (the request its UI charts send): sampled
histories of one metric over several runs, real points only, MLflow's errors."""

from __future__ import annotations

from typing import Any

import pytest

from tests.query_api.readmodels import T0, ReadModels
from tests.query_api.testclient import TestClient

pytestmark = pytest.mark.stack

ROUTE = "/metrics/get-history-bulk-interval"


def bulk(api: TestClient, prefix: str = "/api/2.0/mlflow", **params: Any) -> Any:
    r = api.get(prefix + ROUTE, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def steps_of(body: dict[str, Any], run_id: str) -> list[int]:
    return [m["step"] for m in body.get("metrics", []) if m["run_id"] == run_id]


@pytest.fixture
def two_runs(models: ReadModels) -> ReadModels:
    models.run("a")
    models.run("b")
    models.points("a", "loss", [s / 2 for s in range(100)])
    models.points("b", "loss", [10.0 + s for s in range(10)])
    models.points("a", "loss", [7.0, 8.0], split="val")
    return models


def test_samples_each_run_with_real_points(api: TestClient, two_runs: ReadModels) -> None:
    # the UI's shape: run_ids repeated, ajax-api prefix
    body = bulk(
        api,
        "/ajax-api/2.0/mlflow",
        run_ids=["a", "b"],
        metric_key="loss",
        max_results=10,
    )
    # default range [0, 99] in 10 buckets of 10 steps: each bucket's last point + the first
    assert steps_of(body, "a") == [0, 9, 19, 29, 39, 49, 59, 69, 79, 89, 99]
    assert steps_of(body, "b") == [0, 9]
    first_a = body["metrics"][0]
    assert first_a == {"key": "loss", "value": 0.0, "timestamp": T0, "step": 0, "run_id": "a"}
    for m in body["metrics"]:
        expected = m["step"] / 2 if m["run_id"] == "a" else 10.0 + m["step"]
        assert m["value"] == expected
        assert m["timestamp"] == T0 + 1000 * m["step"]
        assert m["key"] == "loss"
    # runs come in the requested order
    assert [m["run_id"] for m in body["metrics"]] == ["a"] * 11 + ["b"] * 2
    swapped = bulk(api, run_ids=["b", "a"], metric_key="loss", max_results=10)
    assert [m["run_id"] for m in swapped["metrics"]] == ["b"] * 2 + ["a"] * 11


def test_step_window_and_full_history(api: TestClient, two_runs: ReadModels) -> None:
    window = bulk(
        api, run_ids=["a", "b"], metric_key="loss", start_step=20, end_step=29, max_results=5
    )
    assert steps_of(window, "a") == [20, 21, 23, 25, 27, 29]
    assert steps_of(window, "b") == []  # nothing of b in the window
    everything = bulk(api, run_ids=["a", "b"], metric_key="loss")  # default max_results 2500
    assert steps_of(everything, "a") == list(range(100))
    assert steps_of(everything, "b") == list(range(10))
    one = bulk(api, run_ids=["a"], metric_key="loss", max_results=1)
    assert steps_of(one, "a") == [0, 99]
    val = bulk(api, run_ids=["a"], metric_key="loss@val")
    assert [(m["step"], m["value"], m["key"]) for m in val["metrics"]] == [
        (0, 7.0, "loss@val"),
        (1, 8.0, "loss@val"),
    ]
    assert bulk(api, run_ids=["a", "b"], metric_key="nope") == {}


def test_ranks_logging_one_step_are_one_sample(api: TestClient, models: ReadModels) -> None:
    models.run("d")
    models.points("d", "loss", [1.0, 2.0, 3.0], producer="rank0")
    models.points("d", "loss", [1.5, 2.5, 3.5], producer="rank1")
    body = bulk(api, run_ids=["d"], metric_key="loss", max_results=100)
    assert steps_of(body, "d") == [0, 1, 2]
    for m in body["metrics"]:
        assert m["value"] in ({0: 1.0, 1: 2.0, 2: 3.0}[m["step"]], m["step"] + 1.5)


@pytest.mark.parametrize(
    "params",
    [
        {"metric_key": "loss"},
        {"run_ids": [f"r{i}" for i in range(101)], "metric_key": "loss"},
        {"run_ids": ["a"]},
        {"run_ids": ["a"], "metric_key": "loss", "max_results": 0},
        {"run_ids": ["a"], "metric_key": "loss", "max_results": 2501},
        {"run_ids": ["a"], "metric_key": "loss", "start_step": 3},
        {"run_ids": ["a"], "metric_key": "loss", "end_step": 3},
        {"run_ids": ["a"], "metric_key": "loss", "start_step": 5, "end_step": 4},
        {"run_ids": ["a"], "metric_key": "loss", "start_step": 0, "end_step": 2**63},
        {"run_ids": ["a"], "metric_key": "loss", "max_results": "many"},
    ],
)
def test_invalid_requests(api: TestClient, two_runs: ReadModels, params: dict[str, Any]) -> None:
    r = api.get("/api/2.0/mlflow" + ROUTE, params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_unknown_run_is_not_found(api: TestClient, two_runs: ReadModels) -> None:
    r = api.get("/api/2.0/mlflow" + ROUTE, params={"run_ids": ["a", "zz"], "metric_key": "loss"})
    assert r.status_code == 404
    assert r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
