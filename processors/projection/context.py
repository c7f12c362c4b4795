"""The mutable context of one batch projection (rows being built, state advancing).

Rule: everything the per-event handlers (`handlers.py`) need goes through `BatchContext`;
an event's rows are rolled back if its handler raises (poison).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from processors.errors import ProjectionFailed
from processors.model import MAX_ABS_EPOCH_MS, Decoded, PartitionProgress, Poison
from processors.projection.metrics import PointBuffer
from processors.state import ExperimentState, PartitionState, ProducerState, RunState
from processors.tables import Rows
from schemas.metrics import series_key

#: payload fields too large or binary for the events table (packed metric columns)
_PACKED = frozenset({"key_idx", "split_idx", "steps", "epochs", "timestamps", "values"})


@dataclass
class Projected:
    """Output of one batch: Python-built rows, the metric points, counters."""

    rows: Rows
    points: pa.Table | None
    progress: PartitionProgress
    #: `metric_rollup` rows of the batch's points (None: no points)
    rollup: pa.Table | None = None


def payload_json(name: str, record: dict[str, Any]) -> str:
    """The record minus envelope (and minus packed metric columns) as JSON text."""
    body = {k: v for k, v in record.items() if k != "envelope" and k not in _PACKED}
    return _PAYLOAD_JSON.encode(body)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


#: what `json.dumps(body, default=..., sort_keys=True, separators=(",", ":"))` builds per
#: call, built once (the same text; ~1.3 us less per event)
_PAYLOAD_JSON = json.JSONEncoder(default=_json_default, sort_keys=True, separators=(",", ":"))


#: `run_search.run`: the runs columns search shows, led by the version (max wins)
_RUN_FIELDS = (
    "version",
    "name",
    "status",
    "status_reason",
    "start_time",
    "end_time",
    "deleted",
    "notes",
    "parent_run_id",
    "fork_step",
    "cloned_from_run_id",
)
#: the run of a `run_search` row that carries no run state (version 0 loses every max)
_NO_RUN: dict[str, Any] = {
    "version": 0,
    "name": "",
    "status": "",
    "status_reason": "",
    "start_time": 0,
    "end_time": None,
    "deleted": 0,
    "notes": "",
    "parent_run_id": None,
    "fork_step": None,
    "cloned_from_run_id": None,
}
#: `run_search` metric map -> the `metric_summary` field it holds
_METRIC_MAPS = {
    "m_last": "last",
    "m_count": "count",
    "m_sum": "sum_value",
    "m_min": "min_value",
    "m_max": "max_value",
    "m_min_step": "min_step",
    "m_max_step": "max_step",
}


def str_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (value or {}).items()}


def opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


class BatchContext:
    def __init__(
        self, state: PartitionState, handlers: Mapping[str, Callable[[BatchContext, Decoded], None]]
    ) -> None:
        self.state = state
        self.handlers = handlers
        self.rows = Rows()
        self.points = PointBuffer()
        self.progress = PartitionProgress()
        self.runs_touched: dict[str, RunState] = {}
        self.experiments_touched: dict[str, ExperimentState] = {}
        self.producers_touched: dict[tuple[str, str], ProducerState] = {}
        #: (project, experiment) of each params/tags row's run as of its event (run_search)
        self.row_owners: dict[str, list[tuple[str, str]]] = {"params": [], "tags": []}

    # ---- helpers -------------------------------------------------------------------
    def base(self, ev: Decoded) -> dict[str, Any]:
        e = ev.env
        return {
            "project": e.project,
            "experiment_id": e.experiment_id,
            "run_id": e.run_id,
            "event_id": e.event_id,
            "occurred_at": e.occurred_at,
        }

    def reject(
        self, ev: Decoded, reason: str, item: str, detail: dict[str, Any], winner: str
    ) -> None:
        self.rows.add(
            "rejected_events",
            {
                **self.base(ev),
                "event_type": ev.name,
                "reason": reason,
                "item": item,
                "detail": json.dumps(detail, default=_json_default, sort_keys=True),
                "winner_event_id": winner,
                "log_partition": ev.src.partition,
                "log_offset": ev.offset,
            },
        )
        self.progress.rejected += 1

    def run(self, ev: Decoded) -> RunState:
        e = ev.env
        st = self.state.runs.get(e.run_id)
        if st is None:
            st = RunState(
                e.project,
                e.experiment_id,
                e.run_id,
                start_time=e.occurred_at,
                created_at=e.occurred_at,
            )
            self.state.runs[e.run_id] = st
        return st

    def add_run_row(self, table: str, ev: Decoded, row: dict[str, Any]) -> None:
        """A params or tags row; `run_search` files it under the run's project and experiment
        as of this event (the event's own when the run is not known yet), as metric
        summaries are: the same whatever the batch boundaries."""
        self.rows.add(table, row)
        st = self.state.runs.get(ev.env.run_id)
        e = ev.env if st is None else st
        self.row_owners[table].append((e.project, e.experiment_id))

    def touch_run(self, ev: Decoded, st: RunState) -> None:
        st.updated_at = ev.env.occurred_at
        st.event_id = ev.env.event_id
        st.version = ev.offset
        self.rows.add("run_versions", st.row())
        self.runs_touched[st.run_id] = st

    def experiment(self, ev: Decoded) -> ExperimentState:
        e = ev.env
        st = self.state.experiments.get(e.experiment_id)
        if st is None:
            st = ExperimentState(e.project, e.experiment_id, created_at=e.occurred_at)
            self.state.experiments[e.experiment_id] = st
        return st

    def touch_experiment(self, ev: Decoded, st: ExperimentState) -> None:
        st.updated_at = ev.env.occurred_at
        st.event_id = ev.env.event_id
        st.log_partition = ev.src.partition
        st.version = ev.offset
        self.rows.add("experiment_versions", st.row())
        self.experiments_touched[st.experiment_id] = st

    def producer(self, ev: Decoded) -> ProducerState:
        e = ev.env
        k = (e.run_id, e.producer_id)
        st = self.state.producers.get(k)
        if st is None:
            st = ProducerState(e.project, e.run_id, e.producer_id)
            self.state.producers[k] = st
        return st

    # ---- per-event -----------------------------------------------------------------
    def one(self, ev: Decoded) -> None:
        seen = self.state.seen.get(ev.env.event_id)
        if seen is not None and seen < ev.offset:
            self.progress.duplicates += 1
            return
        self.state.seen[ev.env.event_id] = ev.offset
        mark = self.rows.mark()
        try:
            if abs(ev.env.occurred_at) > MAX_ABS_EPOCH_MS:
                raise ProjectionFailed(f"envelope.occurred_at {ev.env.occurred_at} is not epoch ms")
            handler = self.handlers.get(ev.name)
            if handler is not None:
                handler(self, ev)
            self.rows.add(
                "events",
                {
                    **self.base(ev),
                    "event_type": ev.name,
                    "producer_id": ev.env.producer_id,
                    "seq": ev.env.seq,
                    "log_partition": ev.src.partition,
                    "log_offset": ev.offset,
                    "log_time": ev.src.timestamp,
                    "payload": payload_json(ev.name, ev.record),
                },
            )
            # last: state outside the rows is not rolled back, so nothing may raise after it
            if ev.env.run_id and ev.env.producer_id:
                p = self.producer(ev)
                p.last_seq = max(p.last_seq, ev.env.seq)
                p.last_seen_at = max(p.last_seen_at, ev.env.occurred_at)
                p.version = ev.offset
                p.event_id = ev.env.event_id
                self.producers_touched[(p.run_id, p.producer_id)] = p
        except (KeyError, ValueError, TypeError, AttributeError, ProjectionFailed) as exc:
            self.rows.rollback(mark)
            for table, owners in self.row_owners.items():
                del owners[mark.get(table, 0) :]
            err = (
                exc
                if isinstance(exc, ProjectionFailed)
                else ProjectionFailed(f"{ev.name}: {type(exc).__name__}: {exc}")
            )
            self.progress.poison.append(Poison(ev.src, str(err), err.reason))
            return
        self.progress.events += 1

    def finish(self) -> Projected:
        for run in self.runs_touched.values():
            self.rows.add("runs", run.row())
        for exp in self.experiments_touched.values():
            self.rows.add("experiments", exp.row())
        for p in self.producers_touched.values():
            self.rows.add("producer_versions", p.row())
        points, summary, rollup = self.points.build()
        for row in summary:
            self.rows.add("metric_summary", row)
        fresh = self.state.fresh
        for row in self._run_search(summary):
            self.rows.add("run_search", row)
            if row["run_id"] in fresh and row["run_state"]:
                # the run's only row: its document now, not at the next refresh (a bulk
                # load's or a replay's runs are searched from documents at once)
                self.rows.add("run_page", {**row, "doc": search_document(row)})
        self.state.fresh = frozenset()
        self.progress.points = self.points.points
        return Projected(self.rows, points, self.progress, rollup)

    def _run_search(self, summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One partial `run_search` row per run the batch touched (migration 0002 says how
        the engine merges them): its state, and the batch's params, tags and summaries, each
        filed under the run's project and experiment as of its event (`add_run_row`)."""
        out: dict[tuple[str, str, str], dict[str, Any]] = {}

        def row(project: str, experiment_id: str, run_id: str) -> dict[str, Any]:
            k = (project, experiment_id, run_id)
            r = out.get(k)
            if r is None:
                r = out[k] = {
                    "project": project,
                    "experiment_id": experiment_id,
                    "run_id": run_id,
                    "run": _NO_RUN,
                    "run_state": 0,
                    "touches": 1,  # migration 0003: the run's row changed
                    "params": {},
                    "tags": {},
                    **{m: {} for m in _METRIC_MAPS},
                }
            return r

        for st in self.runs_touched.values():
            r = row(st.project, st.experiment_id, st.run_id)
            r["run"] = {f: getattr(st, f) for f in _RUN_FIELDS}
            # the version is the offset, 0 for the first event of a partition: + 1 keeps
            # 0 for "no run state" (a run created at offset 0 was left out of every search)
            r["run_state"] = (st.version + 1) * 2 + (1 if st.deleted else 0)
        cols = self.rows.column
        for (project, exp), run_id, key, value in zip(
            self.row_owners["params"],
            cols("params", "run_id"),
            cols("params", "key"),
            cols("params", "value"),
        ):
            row(project, exp, run_id)["params"][key] = value
        for (project, exp), run_id, key, value, deleted, version in zip(
            self.row_owners["tags"],
            cols("tags", "run_id"),
            cols("tags", "key"),
            cols("tags", "value"),
            cols("tags", "deleted"),
            cols("tags", "version"),
        ):
            tags = row(project, exp, run_id)["tags"]
            cur = tags.get(key)
            if cur is None or cur["version"] <= version:
                tags[key] = {"version": version, "deleted": deleted, "value": value}
        for srow in summary:  # already filed under the run's experiment as of its event
            r = row(srow["project"], srow["experiment_id"], srow["run_id"])
            k = series_key(srow["key"], srow["split"])
            for m, field in _METRIC_MAPS.items():
                r[m][k] = srow[field]
        return [out[k] for k in sorted(out)]


def _json_float(value: float) -> float | str:
    """A float as the document holds it: non-finite ones as ClickHouse quotes them."""
    if math.isfinite(value):
        return value
    return "nan" if value != value else "inf" if value > 0 else "-inf"


def search_document(row: Mapping[str, Any]) -> str:
    """The `run_page` document (migration 0003: what the view `run_page_source` makes of
    `run_search FINAL`) of a run whose only `run_search` row is `row` (touches 1), as
    `query_api.repository.runs` reads it back (a test holds the two equal)."""
    run = row["run"]
    return orjson.dumps(
        [
            {f: run[f] for f in _RUN_FIELDS},
            row["params"],
            row["tags"],
            {k: {**v, "value": _json_float(v["value"])} for k, v in row["m_last"].items()},
            row["m_count"],
            {k: _json_float(v) for k, v in row["m_sum"].items()},
            {k: _json_float(v) for k, v in row["m_min"].items()},
            {k: _json_float(v) for k, v in row["m_max"].items()},
            row["m_min_step"],
            row["m_max_step"],
        ]
    ).decode()


# ---- handlers: parse first (may raise), then mutate --------------------------------------
