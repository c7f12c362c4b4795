"""Metric history (JSON pages, Arrow IPC), SQL-side buckets and the multi-run comparison."""

from __future__ import annotations

import json
import math
import uuid
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from query_api.repository import Grid
from tests.query_api.readmodels import T0, ReadModels
from tests.query_api.testclient import TestClient

pytestmark = pytest.mark.stack

ARROW = "application/vnd.apache.arrow.stream"


def series(n: int) -> list[float]:
    return [math.sin(i / 10) for i in range(n)]


def test_history_pages_cover_the_series_exactly_once(api: TestClient, models: ReadModels) -> None:
    models.run("r")
    values = series(1000)
    models.points("r", "train/loss", values[:600])
    models.points("r", "train/loss", values[600:], steps=list(range(600, 1000)), producer="p2")
    models.points("r", "train/loss", values[:10], summary=False)  # a redelivered batch
    got: list[dict[str, Any]] = []
    params: dict[str, Any] = {"max_results": 300}
    pages = 0
    while True:
        r = api.get("/api/v1/runs/r/metrics/train/loss/history", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        got += body["points"]
        pages += 1
        if "next_page_token" not in body:
            break
        params["page_token"] = body["next_page_token"]
    assert pages == 4
    assert [p["step"] for p in got] == list(range(1000))
    assert [p["value"] for p in got] == values
    assert got[5]["timestamp"] == T0 + 5000


def test_history_range_split_and_errors(api: TestClient, models: ReadModels) -> None:
    models.run("r")
    models.points("r", "acc", [0.1, 0.2, 0.3, 0.4])
    models.points("r", "acc", [9.0], split="val")
    r = api.get("/api/v1/runs/r/metrics/acc/history", params={"start": 1, "end": 2}).json()
    assert [p["value"] for p in r["points"]] == [0.2, 0.3]
    r = api.get("/api/v1/runs/r/metrics/acc/history", params={"split": "val"}).json()
    assert [p["value"] for p in r["points"]] == [9.0]
    assert api.get("/api/v1/runs/r/metrics/none/history").json()["points"] == []
    assert api.get("/api/v1/runs/zz/metrics/acc/history").status_code == 404
    bad = api.get("/api/v1/runs/r/metrics/acc/history", params={"page_token": "eyJxIjoxfQ"})
    assert bad.status_code == 400
    assert api.get("/api/v1/runs/r/metrics/acc/history", params={"start": "x"}).status_code == 400
    huge = api.get("/api/v1/runs/r/metrics/acc/history", params={"max_results": 10**7})
    assert huge.status_code == 400


def test_non_finite_values_stay_valid_json(api: TestClient, models: ReadModels) -> None:
    models.run("r")
    models.points("r", "x", [1.0, float("inf"), float("-inf"), float("nan")])
    r = api.get("/api/v1/runs/r/metrics/x/history")
    assert r.status_code == 200
    assert [p["value"] for p in r.json()["points"]] == [1.0, "Infinity", "-Infinity", "NaN"]


def test_arrow_stream_is_the_whole_series(api: TestClient, models: ReadModels) -> None:
    models.run("r")
    values = series(5000)
    models.points("r", "loss", values)
    r = api.get("/api/v1/runs/r/metrics/loss/history", headers={"Accept": ARROW})
    assert r.status_code == 200
    assert r.headers["content-type"] == ARROW
    table = pa.ipc.open_stream(r.content).read_all()
    assert table.column_names == ["step", "epoch", "timestamp", "value"]
    assert table.column("step").to_pylist() == list(range(5000))
    assert table.column("value").to_pylist() == values
    assert pa.types.is_timestamp(table.schema.field("timestamp").type)
    paged = api.get(
        "/api/v1/runs/r/metrics/loss/history", params={"max_results": 5}, headers={"Accept": ARROW}
    )
    assert paged.status_code == 400


def test_buckets_keep_spikes_and_count_every_point(api: TestClient, models: ReadModels) -> None:
    models.run("r")
    values = [1.0] * 10_000
    values[4321] = 1000.0  # one spike
    values[9999] = 2.0
    models.points("r", "loss", values)
    body = api.get("/api/v1/runs/r/metrics/loss/buckets", params={"n": 100}).json()
    assert (body["start"], body["end"], body["n"], body["x"]) == (0, 9999, 100, "step")
    buckets = body["buckets"]
    assert len(buckets) == 100
    assert sum(b["count"] for b in buckets) == 10_000
    assert all(b["count"] == 100 for b in buckets)
    spike = buckets[43]
    assert (spike["max"], spike["min"], spike["x_start"], spike["x_end"]) == (
        1000.0,
        1.0,
        4300,
        4399,
    )
    assert spike["avg"] == pytest.approx((99 + 1000) / 100)
    assert max(b["max"] for b in buckets) == 1000.0
    assert buckets[-1]["last"] == 2.0
    assert buckets[-1]["x_max"] == 9999


def test_buckets_over_a_window_and_by_time(api: TestClient, models: ReadModels) -> None:
    models.run("r")
    models.points("r", "loss", [float(i) for i in range(100)])
    body = api.get(
        "/api/v1/runs/r/metrics/loss/buckets", params={"n": 3, "start": 10, "end": 18}
    ).json()
    assert [
        (b["x_start"], b["x_end"], b["min"], b["max"], b["count"]) for b in body["buckets"]
    ] == [
        (10, 12, 10.0, 12.0, 3),
        (13, 15, 13.0, 15.0, 3),
        (16, 18, 16.0, 18.0, 3),
    ]
    by_time = api.get("/api/v1/runs/r/metrics/loss/buckets", params={"n": 10, "x": "time"}).json()
    assert (by_time["start"], by_time["end"]) == (T0, T0 + 99_000)
    assert sum(b["count"] for b in by_time["buckets"]) == 100
    empty = api.get("/api/v1/runs/r/metrics/nothing/buckets").json()
    assert empty["buckets"] == []
    for x in ("step", "time"):
        missing = api.get("/api/v1/runs/no-such-run/metrics/loss/buckets", params={"x": x})
        assert missing.status_code == 404, x


def _expected_buckets(points: list[tuple[int, int, float]], grid: Grid) -> list[dict[str, Any]]:
    """The buckets of `grid` computed point by point from (step, seq, value) (idx 0)."""
    bounds = [grid.bounds(b) for b in range(grid.n)]
    out = []
    for b, (start, end) in enumerate(bounds):
        inside = [p for p in points if start <= p[0] <= end]
        if not inside:
            continue
        real = [p[2] for p in inside if not math.isnan(p[2])]
        top = max((p[0], p[1]) for p in inside)
        out.append(
            {
                "bucket": b,
                "x_start": start,
                "x_end": end,
                "x_min": min(p[0] for p in inside),
                "x_max": max(p[0] for p in inside),
                "min": min(real) if real else math.nan,
                "max": max(real) if real else math.nan,
                "avg": math.fsum(p[2] for p in inside) / len(inside),
                "count": len(inside),
                "last": {p[2] for p in inside if (p[0], p[1]) == top},  # ranks may tie
            }
        )
    return out


def _num(v: Any) -> float:
    return math.nan if v == "NaN" else float(v)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_bucket_views_equal_the_points_bucketed_one_by_one(
    api: TestClient, models: ReadModels, data: st.DataObject
) -> None:
    """Whatever the range, n, window and ranks, the view (points, or the rollup of 32-,
    512- or 8,192-step blocks plus the points of cut blocks) equals the buckets computed
    point by point: counts, min/max (NaN ignored), avg, x bounds and last."""
    run = "r-" + uuid.uuid4().hex[:8]
    models.run(run)
    spread = data.draw(st.sampled_from([300, 60_000, 5_000_000]), "spread")
    points: list[tuple[int, int, float]] = []
    # dense runs of steps (around the window's edges below) and scattered ones
    centers = data.draw(st.lists(st.integers(-spread // 8, spread), min_size=1, max_size=3), "c")
    for rank in range(data.draw(st.integers(1, 2), "ranks")):
        steps = [c + d for c in centers for d in range(-40, 40, rank + 1)]
        steps += data.draw(st.lists(st.integers(-spread // 8, spread), max_size=100), "steps")
        pool = [0.5, -2.0, 7.25, math.nan, 3.0, 1e6]
        values = [pool[(i * 7 + rank) % len(pool)] for i in range(len(steps))]
        seq = 1000 * (1 - rank)  # the second rank's seqs are lower: log order is not last
        models.points(run, "loss", values, steps=steps, producer=f"p{rank}", seq=seq)
        points += [(st_, seq + i, v) for i, (st_, v) in enumerate(zip(steps, values))]
    lo, hi = min(p[0] for p in points), max(p[0] for p in points)
    params: dict[str, Any] = {"n": data.draw(st.integers(1, 40), "n")}
    if data.draw(st.booleans(), "window"):
        # edges near dense runs: partial blocks at either end hold points on both sides
        edge = st.one_of(
            st.integers(lo - 50, hi + 50),
            st.builds(lambda c, d: c + d, st.sampled_from(centers), st.integers(-30, 30)),
        )
        a, b = sorted(data.draw(edge, f"edge{i}") for i in range(2))
        params.update(start=a, end=b)
        lo, hi = a, b
    body = api.get(f"/api/v1/runs/{run}/metrics/loss/buckets", params=params).json()
    assert (body["start"], body["end"]) == (lo, hi)
    cut = ("start" in params, "end" in params)
    grid = Grid.of("step", lo, hi, params["n"], cut)
    want = _expected_buckets([p for p in points if lo <= p[0] <= hi], grid)
    got = body["buckets"]
    assert [g["bucket"] for g in got] == [w["bucket"] for w in want], (grid, params)
    for g, w in zip(got, want, strict=True):
        for k in ("x_start", "x_end", "x_min", "x_max", "count"):
            assert g[k] == w[k], (k, g, w, grid)
        for k in ("min", "max"):
            assert _num(g[k]) == w[k] or (math.isnan(_num(g[k])) and math.isnan(w[k])), (k, g, w)
        assert _num(g["avg"]) == pytest.approx(w["avg"], nan_ok=True, rel=1e-9)
        assert any(
            _num(g["last"]) == v or (math.isnan(v) and math.isnan(_num(g["last"])))
            for v in w["last"]
        ), (g, w)


def test_buckets_over_the_whole_int64_step_range(api: TestClient, models: ReadModels) -> None:
    """(step - start) * n overflows Int64 here: the bucket index is computed in Int128."""
    models.run("r")
    lo, hi = -(2**63) + 1, 2**63 - 1
    width = hi - lo + 1
    steps = [lo, lo + 3 * (width // 8), lo + 5 * (width // 8), hi]  # one per quarter
    models.client.insert(
        f"{models.db}.metric_points",
        [["r", "loss", "", s, 0, 0, float(i + 1), "p1", i, 0] for i, s in enumerate(steps)],
        column_names=["run_id", "key", "split", "step", "epoch", "timestamp", "value"]
        + ["producer_id", "seq", "idx"],
    )
    models.rollup("r", "loss", "", [(s, i, 0, float(i + 1)) for i, s in enumerate(steps)])
    models.client.insert(
        f"{models.db}.metric_summary",
        [["default", "1", "loss", "", "r", 4, 10.0, 1.0, 4.0, lo, hi, (hi, 0, 3, 0, 4.0)]],
        column_names=["project", "experiment_id", "key", "split", "run_id", "count"]
        + ["sum_value", "min_value", "max_value", "min_step", "max_step", "last"],
    )
    body = api.get("/api/v1/runs/r/metrics/loss/buckets", params={"n": 4}).json()
    assert (body["start"], body["end"]) == (lo, hi), body
    got = [(b["bucket"], b["count"], b["last"]) for b in body["buckets"]]
    assert got == [(0, 1, 1.0), (1, 1, 2.0), (2, 1, 3.0), (3, 1, 4.0)]


@pytest.mark.parametrize(
    "params",
    [{"n": 0}, {"n": 10**6}, {"x": "epoch"}, {"start": 5, "end": 1}, {"n": "ten"}],
)
def test_bad_bucket_requests_are_400(
    api: TestClient, models: ReadModels, params: dict[str, Any]
) -> None:
    models.run("r")
    r = api.get("/api/v1/runs/r/metrics/loss/buckets", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"


def test_compare_runs_by_keys_in_one_call(api: TestClient, models: ReadModels) -> None:
    for run_id, scale in (("a", 1.0), ("b", 2.0)):
        models.run(run_id)
        models.points(run_id, "loss", [scale * i for i in range(10)])
    models.points("a", "acc", [0.5, 0.6])
    body = {"run_ids": ["a", "b"], "keys": ["loss", "acc"], "n": 2}
    r = api.post("/api/v1/runs/compare", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["start"], out["end"]) == (0, 9)
    pairs = {(s["run_id"], s["key"]): s for s in out["series"]}
    assert list(pairs) == [("a", "loss"), ("a", "acc"), ("b", "loss"), ("b", "acc")]
    assert pairs[("b", "loss")]["summary"]["last"] == 18.0
    assert pairs[("b", "acc")]["summary"] is None
    assert pairs[("b", "acc")]["buckets"] == []
    assert [b["max"] for b in pairs[("b", "loss")]["buckets"]] == [8.0, 18.0]
    assert [b["count"] for b in pairs[("a", "acc")]["buckets"]] == [2]
    summaries_only = api.post("/api/v1/runs/compare", json={"run_ids": ["a"], "keys": ["loss"]})
    assert "buckets" not in summaries_only.json()["series"][0]
    missing = api.post("/api/v1/runs/compare", json={"run_ids": ["a", "zz"], "keys": ["loss"]})
    assert missing.status_code == 404
    assert api.post("/api/v1/runs/compare", json={"run_ids": [], "keys": ["x"]}).status_code == 400


def test_compare_buckets_are_the_same_whichever_query_shape(
    api: TestClient, models: ReadModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Few series are aggregated one per UNION ALL branch, many in one GROUP BY run, key:
    both give the same buckets (ranks at one step, NaN, a gap, uneven widths)."""
    from query_api.repository import metrics

    for run_id in ("a", "b", "c"):
        models.run(run_id)
        values = [math.cos(i / 7) + (i % 5) for i in range(997)]
        values[400] = float("nan")
        steps = [s for s in range(1100) if not 500 <= s < 603]
        models.points(run_id, "loss", values, steps=steps)
        models.points(run_id, "loss", [9.0] * 50, steps=list(range(0, 1100, 22)), producer="p2")
        models.points(run_id, "acc", [0.5, 0.7, 0.6])
    body = {"run_ids": ["a", "b", "c"], "keys": ["loss", "acc"], "n": 37}
    few = api.post("/api/v1/runs/compare", json=body).json()
    monkeypatch.setattr(metrics, "_UNION_SERIES", 0)
    many = api.post("/api/v1/runs/compare", json=body).json()
    # avg to the last bits aside (summation order is the engine's), identical
    avgs = [[b.pop("avg") for b in s["buckets"]] for s in few["series"]]
    assert [[b.pop("avg") for b in s["buckets"]] for s in many["series"]] == [
        [a if a == "NaN" else pytest.approx(a, rel=1e-12) for a in series] for series in avgs
    ]
    assert json.dumps(few, sort_keys=True) == json.dumps(many, sort_keys=True)
    for series, averages in zip(few["series"], avgs):
        for b, a in zip(series["buckets"], averages):
            b["avg"] = a
    loss_a = few["series"][0]["buckets"]
    assert sum(b["count"] for b in loss_a) == 997 + 50
    assert any(b["avg"] == "NaN" for b in loss_a)  # avg keeps NaN; min/max skip it
    assert all(isinstance(b["min"], float) for b in loss_a)
