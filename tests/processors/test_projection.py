"""The pure projection, without infrastructure: events in, rows out."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.model import Decoded, Envelope, SourceEvent
from processors.projection import project_batch
from processors.state import PartitionState
from schemas.metrics import ROLLUP_SHIFTS, pack_points, series_key

from .factory import Writer, decoded


def _rows(out: Any, table: str) -> list[dict[str, Any]]:
    return out.rows.arrow(table).to_pylist()


def test_metric_points_are_columnar_and_ranks_never_collapse() -> None:
    a, b = Writer(), Writer()
    steps = np.arange(100, dtype=np.int64)
    evs = decoded(
        [
            ("MetricsLogged", a.metrics("r1", steps, ["loss", "acc"], seed=1)),
            ("MetricsLogged", b.metrics("r1", steps, ["loss"], seed=2)),
        ]
    )
    out = project_batch(evs, PartitionState(0))
    assert out.points is not None
    assert out.points.num_rows == 300 == out.progress.points
    ident = set(
        zip(
            *(
                out.points.column(c).to_pylist()
                for c in ("run_id", "key", "split", "step", "producer_id", "seq", "idx")
            ),
            strict=True,
        )
    )
    assert len(ident) == 300  # two ranks at one step are two points
    loss = [r for r in _rows(out, "metric_summary") if r["key"] == "loss"]
    assert len(loss) == 1
    assert loss[0]["count"] == 200
    vals = np.array(
        [
            v
            for k, v in zip(
                out.points.column("key").to_pylist(),
                out.points.column("value").to_pylist(),
                strict=True,
            )
            if k == "loss"
        ]
    )
    assert loss[0]["min_value"] == vals.min()
    assert loss[0]["max_value"] == vals.max()
    assert math.isclose(loss[0]["sum_value"], vals.sum())
    # last = max step, then time, then log order: rank b's point (later offset) wins
    assert loss[0]["last"]["step"] == 99
    assert loss[0]["last"]["log_offset"] == 1


def test_summary_ignores_nan_in_min_max_but_counts_it() -> None:
    w = Writer()
    rec = w.metrics("r1", np.arange(3, dtype=np.int64), ["x"])
    rec["values"] = np.array([np.nan, 2.0, np.nan]).astype("<f8").tobytes()
    out = project_batch(decoded([("MetricsLogged", rec)]), PartitionState(0))
    (row,) = _rows(out, "metric_summary")
    assert (row["count"], row["min_value"], row["max_value"], row["sum_value"]) == (3, 2, 2, 2)
    assert math.isnan(row["last"]["value"])


def test_first_event_by_log_order_wins_later_ones_are_rejected() -> None:
    w = Writer()
    art = {"key": "model", "uri": "s3://b/1"}
    evs = decoded(
        [
            ("ExperimentCreated", w.record("ExperimentCreated", None, name="e")),
            ("RunCreated", w.record("RunCreated", "r1", name="run", params={"lr": "0.1"})),
            ("ParamsLogged", w.record("ParamsLogged", "r1", params={"lr": "0.2", "bs": "8"})),
            ("ParamsLogged", w.record("ParamsLogged", "r1", params={"lr": "0.1"})),
            ("ArtifactStored", w.record("ArtifactStored", "r1", **art)),
            ("ArtifactStored", w.record("ArtifactStored", "r1", **{**art, "uri": "s3://b/2"})),
            (
                "ArtifactStored",
                w.record("ArtifactStored", "r1", **{**art, "uri": "s3://b/3"}, overwrite=True),
            ),
            ("RunCreated", w.record("RunCreated", "r1", name="again")),
        ]
    )
    out = project_batch(evs, PartitionState(0))
    assert {(r["key"], r["value"]) for r in _rows(out, "params")} == {("lr", "0.1"), ("bs", "8")}
    rejected = {(r["reason"], r["item"]) for r in _rows(out, "rejected_events")}
    assert rejected == {
        ("param_conflict", "lr"),
        ("artifact_exists", "model"),
        ("run_exists", "r1"),
    }
    assert [r["uri"] for r in _rows(out, "artifacts")] == ["s3://b/1", "s3://b/3"]
    (run,) = _rows(out, "runs")
    assert run["name"] == "run"
    detail = json.loads(
        next(r["detail"] for r in _rows(out, "rejected_events") if r["reason"] == "param_conflict")
    )
    assert detail == {"existing": "0.1", "value": "0.2"}


def test_experiment_name_held_by_another_experiment_is_rejected() -> None:
    w1, w2 = Writer(experiment_id="e1"), Writer(experiment_id="e2")
    state = PartitionState(0)
    state.experiment_names[("proj", "shared")] = "e1"
    out = project_batch(
        decoded(
            [
                ("ExperimentCreated", w2.record("ExperimentCreated", None, name="shared")),
                ("ExperimentCreated", w1.record("ExperimentCreated", None, name="shared")),
            ]
        ),
        state,
    )
    assert [r["reason"] for r in _rows(out, "rejected_events")] == ["experiment_name_taken"]
    assert [r["experiment_id"] for r in _rows(out, "experiments")] == ["e1"]


def test_resend_is_a_duplicate_redelivery_is_not() -> None:
    w = Writer()
    rec = w.record("RunRenamed", "r1", name="n1")
    evs = decoded(
        [
            ("RunRenamed", rec),
            ("RunRenamed", w.record("RunRenamed", "r1", name="n2")),
            ("RunRenamed", rec),
        ]
    )  # client resend of the first event at offset 2
    out = project_batch(evs, PartitionState(0))
    assert out.progress.duplicates == 1
    assert _rows(out, "runs")[0]["name"] == "n2"
    state = PartitionState(0)
    state.seen = {rec["envelope"]["event_id"]: 0}  # an earlier attempt wrote offset 0 already
    again = project_batch(evs, state)
    assert again.rows.arrow("run_versions").equals(out.rows.arrow("run_versions"))


def test_poison_event_is_rolled_back_and_the_batch_flows_on() -> None:
    w = Writer()
    good = decoded([("TagsSet", w.record("TagsSet", "r1", tags={"a": "1"}))])[0]
    rec = w.metrics("r1", np.arange(4, dtype=np.int64), ["x"])
    rec["values"] = b"\x00" * 5  # inconsistent packed column (decode would refuse it too)
    bad = Decoded(
        SourceEvent("t", 0, 1, 0, b"r1", b""), "MetricsLogged", rec, Envelope.from_record(rec)
    )
    out = project_batch([good, bad], PartitionState(0))
    assert [p.src.offset for p in out.progress.poison] == [1]
    assert out.progress.poison[0].reason == "projection_failed"
    assert out.points is None
    assert out.rows.count("events") == 1
    assert out.rows.count("tags") == 1


def test_an_event_whose_payload_cannot_be_stored_leaves_its_producer_untouched() -> None:
    """The `events` row is built last but one: an event failing there (its payload is not
    JSON text) is poison, and its producer's state (last seq, last seen) is not moved by it
    (a `producer_versions` row would otherwise be written for an event that never was)."""
    w = Writer()
    rec = w.record("TagsSet", "r1", tags={"a": "1"})
    rec["extra"] = {1: "a", "b": "c"}  # keys that cannot be sorted: json refuses them
    bad = Decoded(SourceEvent("t", 0, 0, 0, b"r1", b""), "TagsSet", rec, Envelope.from_record(rec))
    state = PartitionState(0)
    out = project_batch([bad], state)
    assert [(p.src.offset, p.reason) for p in out.progress.poison] == [(0, "projection_failed")]
    assert out.rows.count("events") == 0
    assert out.rows.count("producer_versions") == 0
    assert out.rows.count("tags") == 0


@pytest.mark.parametrize(
    ("keys", "column", "bad"),
    [
        (["x"], "key_idx", b"\x01\x00"),  # one key: index 1
        (["x"], "key_idx", b"\x00\x01"),  # one key: index 256
        (["x", "y"], "key_idx", b"\x02\x00"),  # two keys: index 2
        (["x"], "split_idx", b"\x01"),  # one split: index 1
    ],
)
def test_an_index_naming_no_label_is_poison_and_leaves_no_trace(
    keys: list[str], column: str, bad: bytes
) -> None:
    """A point whose key or split index names no label of its event: the event goes to the
    DLQ and interns nothing (the batch's dictionaries hold only the good event's labels)."""
    w = Writer()
    good = decoded([("MetricsLogged", w.metrics("r1", np.arange(3, dtype=np.int64), ["ok"]))])[0]
    rec = w.metrics("r1", np.arange(10, 14, dtype=np.int64), [k + "!" for k in keys])
    width = len(bad)
    rec[column] = rec[column][: 2 * width] + bad + rec[column][3 * width :]
    ev = Decoded(
        SourceEvent("t", 0, 1, 0, b"r1", b""), "MetricsLogged", rec, Envelope.from_record(rec)
    )
    out = project_batch([good, ev], PartitionState(0))
    assert [(p.src.offset, p.reason) for p in out.progress.poison] == [(1, "projection_failed")]
    assert out.points is not None
    assert out.points.column("key").chunk(0).dictionary.to_pylist() == ["ok"]
    assert out.points.column("split").chunk(0).dictionary.to_pylist() == ["train"]
    assert out.points.num_rows == 3


@pytest.mark.parametrize("cut", [1, 3, 5])
def test_batch_boundaries_do_not_change_the_rows(cut: int) -> None:
    w = Writer()
    items = [
        ("RunCreated", w.record("RunCreated", "r1", name="a", params={"p": "1"})),
        ("ParamsLogged", w.record("ParamsLogged", "r1", params={"p": "2"})),
        ("MetricsLogged", w.metrics("r1", np.arange(10, dtype=np.int64), ["l"])),
        ("RunStatusChanged", w.record("RunStatusChanged", "r1", status="FINISHED")),
        ("TagsRemoved", w.record("TagsRemoved", "r1", keys=["x"])),
        (
            "AlertTriggered",
            w.record(
                "AlertTriggered",
                "r1",
                rule_id="r",
                key="l",
                op=">",
                threshold=1.0,
                value=2.0,
                text="t",
                level="WARN",
                step=None,
            ),
        ),
    ]
    evs = decoded(items)
    whole = project_batch(evs, PartitionState(0))
    state = PartitionState(0)
    first, second = project_batch(evs[:cut], state), project_batch(evs[cut:], state)
    for table in ("events", "params", "rejected_events", "run_versions", "alerts", "tags"):
        split = first.rows.arrow(table).to_pylist() + second.rows.arrow(table).to_pylist()
        assert split == whole.rows.arrow(table).to_pylist(), table


@pytest.mark.parametrize("cut", [0, 1, 2, 3])
def test_a_rank_naming_another_experiment_sums_into_its_runs_experiment(cut: int) -> None:
    """Rank 1 logs under "exp-other" before and after rank 0 creates the run in "exp-1":
    points before RunCreated keep their envelope's experiment, later ones follow the run,
    whatever the batch boundaries."""
    rank0, rank1 = Writer(), Writer(experiment_id="exp-other")
    steps = np.arange(5, dtype=np.int64)
    items = [
        ("MetricsLogged", rank1.metrics("r1", steps, ["loss"], seed=1)),
        ("RunCreated", rank0.record("RunCreated", "r1", name="a")),
        ("MetricsLogged", rank1.metrics("r1", steps + 5, ["loss"], seed=2)),
        ("MetricsLogged", rank0.metrics("r1", steps + 5, ["loss"], seed=3)),
    ]
    evs = decoded(items)
    state = PartitionState(0)
    outs = [project_batch(evs[:cut], state), project_batch(evs[cut:], state)]
    counts: dict[str, int] = {}
    for out in outs:
        for row in _rows(out, "metric_summary"):
            counts[row["experiment_id"]] = counts.get(row["experiment_id"], 0) + row["count"]
    assert counts == {"exp-other": 5, "exp-1": 10}


def test_run_search_rows_follow_the_run_as_of_each_event() -> None:
    """One partial row per run and owner: params logged before RunCreated by a rank naming
    another experiment stay under that experiment (as metric summaries do), everything
    after the run is known goes under the run's experiment; the run state rides along."""
    own, other = Writer(), Writer(experiment_id="e-rank")
    steps = np.arange(4, dtype=np.int64)
    evs = decoded(
        [
            ("ParamsLogged", other.record("ParamsLogged", "r1", params={"early": "1"})),
            ("RunCreated", own.record("RunCreated", "r1", name="one", params={"lr": "0.1"})),
            ("TagsSet", other.record("TagsSet", "r1", tags={"t": "a"})),
            ("TagsRemoved", own.record("TagsRemoved", "r1", keys=["t"])),
            ("MetricsLogged", other.metrics("r1", steps, ["loss"], seed=1)),
        ]
    )
    out = project_batch(evs, PartitionState(0))
    rows = {r["experiment_id"]: r for r in _rows(out, "run_search")}
    assert sorted(rows) == ["e-rank", own.experiment_id]
    early, run = rows["e-rank"], rows[own.experiment_id]
    assert early["run"]["version"] == 0
    assert dict(early["params"]) == {"early": "1"}
    assert run["run"]["name"] == "one"
    assert run["run"]["version"] > 0
    assert dict(run["params"]) == {"lr": "0.1"}
    assert early["run_state"] == 0
    assert run["run_state"] == (run["run"]["version"] + 1) * 2  # live (odd = deleted)
    (tag,) = dict(run["tags"]).values()
    assert (tag["deleted"], tag["value"]) == (1, "")  # the later removal wins in the batch
    (summary,) = _rows(out, "metric_summary")
    key = series_key("loss", summary["split"])
    assert dict(run["m_count"]) == {key: 4}
    assert dict(run["m_last"])[key] == summary["last"]
    assert dict(run["m_min"])[key] == summary["min_value"]


_POINT_KEY = ("run_id", "key", "split", "step", "producer_id", "seq", "idx")


def _point_rows(table: Any) -> list[tuple[Any, ...]]:
    cols = [table.column(c).to_pylist() for c in table.column_names]
    return list(zip(*cols, strict=True))


def _in_key_order(table: Any) -> bool:
    """Rows ascending by the metric_points key, strings compared as UTF-8 bytes (ClickHouse)."""
    keys = [
        tuple(v.encode() if isinstance(v, str) else v for v in row)
        for row in zip(*(table.column(c).to_pylist() for c in _POINT_KEY), strict=True)
    ]
    return all(a < b for a, b in zip(keys, keys[1:], strict=False))


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(
        st.tuples(
            st.integers(0, 2),  # writer
            st.sampled_from(["r-b", "r-a", "rZ", "ré"]),  # run
            st.lists(
                st.sampled_from(["loss", "Acc", "é", "z"]), min_size=1, max_size=3, unique=True
            ),
            st.integers(-5, 40),  # first step
            st.booleans(),  # steps descending
            st.sampled_from(["train", "val"]),
        ),
        min_size=1,
        max_size=8,
    ),
    as_training=st.booleans(),
)
def test_points_reach_the_insert_as_the_same_rows_in_key_order_when_cheap(
    plan: list[tuple[int, str, list[str], int, bool, str]], as_training: bool
) -> None:
    """`PointBuffer` hands ClickHouse the batch's points in table-key order when a radix
    sort on (run, key, split) gives it (ClickHouse then skips its sort), else as logged:
    the same rows either way. `as_training`: every event logs steps after the ones before
    it (a training loop), whatever the writers: always the sorted path."""
    writers = [Writer(producer_id=f"rank-{i}") for i in range(3)]
    items = []
    for i, (w, run, keys, first, desc, split) in enumerate(plan):
        if as_training:
            first, desc = 5 * i, False
        steps = np.arange(first, first + 5, dtype=np.int64)
        rec = writers[w].metrics(run, steps[::-1] if desc else steps, keys, split)
        items.append(("MetricsLogged", rec))
    evs = decoded(items)
    out = project_batch(evs, PartitionState(0))
    assert out.points is not None
    # the same points (seq and idx are per event, so one-event projections give the rows)
    expected = sorted(
        row for ev in evs for row in _point_rows(project_batch([ev], PartitionState(0)).points)
    )
    assert sorted(_point_rows(out.points)) == expected
    if as_training:
        assert _in_key_order(out.points)


def _reference_sum(values: list[float]) -> float:
    if any(math.isnan(v) for v in values) or {math.inf, -math.inf} <= set(values):
        return math.nan
    for inf in (math.inf, -math.inf):
        if inf in values:
            return inf
    return math.fsum(values)


def _reference_rollup(
    points: list[tuple[str, str, str, int, int, int, str, float]],
) -> dict[Any, Any]:
    """metric_rollup computed point by point: (run, key, split, level, block) -> row, from
    points (run, key, split, step, seq, idx, producer, value)."""
    out: dict[Any, Any] = {}
    for level, shift in enumerate(ROLLUP_SHIFTS):
        blocks: dict[Any, list[tuple[int, int, str, float]]] = {}
        for run, key, split, step, seq, idx, producer, value in points:
            blocks.setdefault((run, key, split, level, step >> shift), []).append(
                (step, (seq << 20) + idx, producer, value)
            )
        for ident, pts in blocks.items():
            real = [p[3] for p in pts if not math.isnan(p[3])]
            last = max(pts, key=lambda p: p[:3])  # ranks tied on (step, seq, idx): producer
            out[ident] = {
                "count": len(pts),
                "sum_value": _reference_sum([p[3] for p in pts]),
                "min_value": min(real, default=math.nan),
                "max_value": max(real, default=math.nan),
                "min_step": min(p[0] for p in pts),
                "last": dict(zip(("step", "order", "producer", "value"), last, strict=True)),
            }
    return out


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=80, deadline=None)
@given(
    plan=st.lists(
        st.tuples(
            st.integers(0, 2),  # writer (rank)
            st.sampled_from(["r-b", "r-a", "ré"]),  # run
            st.lists(st.sampled_from(["loss", "Acc", "é"]), min_size=1, max_size=2, unique=True),
            st.sampled_from(["", "val"]),
            st.one_of(
                st.lists(
                    st.one_of(  # steps: ranks meet at a step, blocks of every level, extremes
                        st.integers(-40, 80),
                        st.integers(-3000, 20_000),
                        st.sampled_from([-(2**63), 2**63 - 1]),
                    ),
                    min_size=1,
                    max_size=60,
                ),
                st.just(list(range(0, 40, 3))),  # ranks logging the same steps
            ),
            st.lists(
                st.sampled_from([0.5, -2.0, 7.25, math.nan, 1e300, math.inf, -math.inf]),
                min_size=1,
            ),
        ),
        min_size=1,
        max_size=6,
    ),
    training=st.booleans(),
    seqs=st.lists(st.sampled_from([0, 40]), min_size=3, max_size=3),
)
def test_rollup_rows_equal_the_points_aggregated_one_by_one(
    plan: list[tuple[int, str, list[str], str, list[int], list[float]]],
    training: bool,
    seqs: list[int],
) -> None:
    """Every level's block aggregates of a batch equal a point-by-point reference, whatever
    the order the points come in (ranks at one step, steps out of order, negative and
    extreme steps, NaN) and on the in-order path (`training`: each event's steps ascend
    after the ones before it); ranks whose seqs meet tie on (step, seq, idx) and are
    ordered by producer id; ±inf and their sums."""
    # ranks start at their own or the same seq: log order and (seq, idx) order disagree
    writers = [Writer(producer_id=f"rank-{i}", _seq=itertools.count(s)) for i, s in enumerate(seqs)]
    items, points = [], []
    at = 0
    for w, run, keys, split, steps, pool in plan:
        if training:
            steps = list(range(at, at + len(steps)))
            at += len(steps) + 40
        n = len(steps) * len(keys)
        values = [pool[i % len(pool)] for i in range(n)]
        key_col = [keys[i % len(keys)] for i in range(n)]
        step_col = [steps[i // len(keys)] for i in range(n)]
        rec = writers[w].record(
            "MetricsLogged",
            run,
            **pack_points(key_col, values, step_col, timestamps=0, splits=split),
        )
        items.append(("MetricsLogged", rec))
        seq = rec["envelope"]["seq"]
        producer = writers[w].producer_id
        points += [
            (run, key_col[i], split, step_col[i], seq, i, producer, values[i]) for i in range(n)
        ]
    out = project_batch(decoded(items), PartitionState(0))
    assert out.rollup is not None
    got = {
        (r["run_id"], r["key"], r["split"], r["level"], r["block"]): r
        for r in out.rollup.to_pylist()
    }
    want = _reference_rollup(points)
    assert len(got) == out.rollup.num_rows  # one row per block of a batch
    assert got.keys() == want.keys()
    for ident, w_row in want.items():
        g_row = got[ident]
        for col in ("count", "min_step"):
            assert g_row[col] == w_row[col], (ident, col)
        for col in ("sum_value", "min_value", "max_value"):
            assert _same_float(g_row[col], w_row[col]), (ident, col, g_row[col], w_row[col])
        g_last, w_last = g_row["last"], w_row["last"]
        assert {k: g_last[k] for k in ("step", "order", "producer")} == {
            k: w_last[k] for k in ("step", "order", "producer")
        }, ident
        assert _same_float(g_last["value"], w_last["value"]), ident


@pytest.mark.parametrize("log_order", [("rank-0", "rank-1"), ("rank-1", "rank-0")])
def test_ranks_tied_at_the_last_step_keep_the_highest_producer_whatever_the_log_order(
    log_order: tuple[str, str],
) -> None:
    """Two ranks log the same steps with the same seq: their points tie on (step, seq, idx).
    The rollup's last point is the higher producer id's in either log order, so the merged
    row is the same whatever the batch boundaries (a replay equals the live read models)."""
    items = []
    for producer in log_order:
        w = Writer(producer_id=producer)
        value = 1.0 if producer == "rank-1" else 2.0
        rec = w.record(
            "MetricsLogged", "r", **pack_points("loss", [value] * 2, [5, 6], timestamps=0)
        )
        items.append(("MetricsLogged", rec))
    out = project_batch(decoded(items), PartitionState(0))
    assert out.rollup is not None
    lasts = [r["last"] for r in out.rollup.to_pylist()]
    assert len(lasts) == len(ROLLUP_SHIFTS)
    assert all(
        last == {"step": 6, "order": 1, "producer": "rank-1", "value": 1.0} for last in lasts
    )


def test_a_run_created_at_offset_0_has_a_run_state_searches_see() -> None:
    """The first event of a partition has offset 0, the version of the state it makes:
    `run_state` still tells that row from one without a run state (0), or a search never
    shows the run until it changes again."""
    w = Writer()
    evs = decoded([("RunCreated", w.record("RunCreated", "r1", name="first"))])
    assert evs[0].offset == 0
    (row,) = _rows(project_batch(evs, PartitionState(0)), "run_search")
    assert row["run"]["version"] == 0
    assert row["run_state"] > 0
    assert row["run_state"] % 2 == 0  # live
