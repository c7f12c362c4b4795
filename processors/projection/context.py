"""The mutable context of one batch projection (rows being built, state advancing).

Rule: everything the per-event handlers (`handlers.py`) need goes through `BatchContext`;
an event's rows are rolled back if its handler raises (poison).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from processors.errors import ProjectionFailed
from processors.model import MAX_ABS_EPOCH_MS, Decoded, PartitionProgress, Poison
from processors.projection.metrics import PointBuffer
from processors.state import ExperimentState, PartitionState, ProducerState, RunState
from processors.tables import Rows

#: payload fields too large or binary for the events table (packed metric columns)
_PACKED = frozenset({"key_idx", "split_idx", "steps", "epochs", "timestamps", "values"})


@dataclass
class Projected:
    """Output of one batch: Python-built rows, the metric points, counters."""

    rows: Rows
    points: pa.Table | None
    progress: PartitionProgress


def payload_json(name: str, record: dict[str, Any]) -> str:
    """The record minus envelope (and minus packed metric columns) as JSON text."""
    body = {k: v for k, v in record.items() if k != "envelope" and k not in _PACKED}
    return json.dumps(body, default=_json_default, sort_keys=True, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


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
            if ev.env.run_id and ev.env.producer_id:
                p = self.producer(ev)
                p.last_seq = max(p.last_seq, ev.env.seq)
                p.last_seen_at = max(p.last_seen_at, ev.env.occurred_at)
                p.version = ev.offset
                p.event_id = ev.env.event_id
                self.producers_touched[(p.run_id, p.producer_id)] = p
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
        except (KeyError, ValueError, TypeError, AttributeError, ProjectionFailed) as exc:
            self.rows.rollback(mark)
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
            self.rows.add("producers", p.row())
        points, summary = self.points.build()
        for row in summary:
            self.rows.add("metric_summary", row)
        self.progress.points = self.points.points
        return Projected(self.rows, points, self.progress)


# ---- handlers: parse first (may raise), then mutate --------------------------------------
