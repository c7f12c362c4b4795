"""MLflow request checks (pure): log-batch's limits, as MLflow's server enforces them."""

from __future__ import annotations

from typing import Any

import pytest

from query_api import mlflow_requests as rq
from query_api.errors import BadRequest


def _batch(metrics: int = 0, params: int = 0, tags: int = 0) -> rq.LogBatch:
    body: dict[str, Any] = {
        "run_id": "r",
        "metrics": [{"key": "m", "value": 1.0, "timestamp": 1, "step": i} for i in range(metrics)],
        "params": [{"key": f"p{i}", "value": "v"} for i in range(params)],
        "tags": [{"key": f"t{i}", "value": "v"} for i in range(tags)],
    }
    return rq.LogBatch.model_validate(body)


@pytest.mark.parametrize(
    ("metrics", "params", "tags", "error"),
    [
        (1000, 0, 0, None),
        (1001, 0, 0, "at most 1000 metrics"),
        (0, 101, 0, "at most 100 params"),
        (0, 0, 101, "at most 100 tags"),
        (900, 100, 0, None),
        (900, 100, 1, "1000 metrics, params, and tags in total"),
        (1000, 1, 0, "in total"),
    ],
)
def test_log_batch_limits(metrics: int, params: int, tags: int, error: str | None) -> None:
    batch = _batch(metrics, params, tags)
    if error is None:
        rq.check_batch(batch)
        return
    with pytest.raises(BadRequest, match=error):
        rq.check_batch(batch)


def test_log_batch_refuses_one_param_key_with_two_values() -> None:
    batch = rq.LogBatch.model_validate(
        {"run_id": "r", "params": [{"key": "lr", "value": "1"}, {"key": "lr", "value": "2"}]}
    )
    with pytest.raises(BadRequest, match="Duplicate parameter keys"):
        rq.check_batch(batch)
    same = rq.LogBatch.model_validate(
        {"run_id": "r", "params": [{"key": "lr", "value": "1"}, {"key": "lr", "value": "1"}]}
    )
    rq.check_batch(same)  # the same value twice is one param
