"""Arrow schemas of the read-model tables (mirror of migrations/*.sql) and row buffers.

Rule: one columnar insert per table per batch. Python-level rows are only built per event or
per entity (hundreds per batch); metric points never pass through here row by row (see
`projection.metrics`). A test checks these schemas against `DESCRIBE TABLE`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

_S = pa.string()
_TS = pa.timestamp("ms", tz="UTC")
_MAP = pa.map_(pa.string(), pa.string())
#: metric_summary.last: the point that is last by (step, timestamp, log offset, index)
_LAST = pa.struct(
    [
        ("step", pa.int64()),
        ("timestamp", _TS),
        ("log_offset", pa.uint64()),
        ("idx", pa.uint32()),
        ("value", pa.float64()),
    ]
)


def _schema(*cols: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([pa.field(n, t) for n, t in cols])


_EXPERIMENT = _schema(
    ("project", _S),
    ("experiment_id", _S),
    ("name", _S),
    ("description", _S),
    ("tags", _MAP),
    ("deleted", pa.uint8()),
    ("created_at", _TS),
    ("updated_at", _TS),
    ("created_event_id", _S),
    ("event_id", _S),
    ("log_partition", pa.uint32()),
    ("version", pa.uint64()),
)
_RUN = _schema(
    ("project", _S),
    ("experiment_id", _S),
    ("run_id", _S),
    ("name", _S),
    ("notes", _S),
    ("status", _S),
    ("status_reason", _S),
    ("start_time", _TS),
    ("end_time", _TS),
    ("deleted", pa.uint8()),
    ("parent_run_id", _S),
    ("fork_step", pa.int64()),
    ("cloned_from_run_id", _S),
    ("created_at", _TS),
    ("updated_at", _TS),
    ("created_event_id", _S),
    ("event_id", _S),
    ("version", pa.uint64()),
)
_PRODUCER = _schema(
    ("project", _S),
    ("run_id", _S),
    ("producer_id", _S),
    ("host", _S),
    ("pid", pa.int64()),
    ("rank", pa.int64()),
    ("world_size", pa.int64()),
    ("status", _S),
    ("reason", _S),
    ("joined_at", _TS),
    ("exited_at", _TS),
    ("last_seq", pa.uint64()),
    ("last_seen_at", _TS),
    ("event_id", _S),
    ("version", pa.uint64()),
)
_ARTIFACT = _schema(
    ("project", _S),
    ("experiment_id", _S),
    ("run_id", _S),
    ("key", _S),
    ("uri", _S),
    ("size", pa.int64()),
    ("sha256", _S),
    ("content_type", _S),
    ("kind", _S),
    ("step", pa.int64()),
    ("metadata", _MAP),
    ("deleted", pa.uint8()),
    ("occurred_at", _TS),
    ("event_id", _S),
    ("version", pa.uint64()),
)

SCHEMAS: dict[str, pa.Schema] = {
    "events": _schema(
        ("project", _S),
        ("experiment_id", _S),
        ("run_id", _S),
        ("event_id", _S),
        ("event_type", _S),
        ("producer_id", _S),
        ("seq", pa.uint64()),
        ("occurred_at", _TS),
        ("log_partition", pa.uint32()),
        ("log_offset", pa.uint64()),
        ("log_time", _TS),
        ("payload", _S),
    ),
    "experiments": _EXPERIMENT,
    "experiment_versions": _EXPERIMENT,
    "runs": _RUN,
    "run_versions": _RUN,
    "producer_versions": _PRODUCER,
    "params": _schema(
        ("project", _S),
        ("experiment_id", _S),
        ("run_id", _S),
        ("key", _S),
        ("value", _S),
        ("occurred_at", _TS),
        ("event_id", _S),
        ("log_offset", pa.uint64()),
    ),
    "tags": _schema(
        ("project", _S),
        ("experiment_id", _S),
        ("run_id", _S),
        ("key", _S),
        ("value", _S),
        ("deleted", pa.uint8()),
        ("occurred_at", _TS),
        ("event_id", _S),
        ("version", pa.uint64()),
    ),
    "attributes": _schema(
        ("project", _S),
        ("experiment_id", _S),
        ("run_id", _S),
        ("key", _S),
        ("value", _S),
        ("occurred_at", _TS),
        ("event_id", _S),
        ("version", pa.uint64()),
    ),
    "artifacts": _ARTIFACT,
    "artifact_versions": _ARTIFACT,
    "lineage": _schema(
        ("project", _S),
        ("experiment_id", _S),
        ("run_id", _S),
        ("direction", _S),
        ("kind", _S),
        ("name", _S),
        ("version", _S),
        ("digest", _S),
        ("source_uri", _S),
        ("context", _S),
        ("metadata", _MAP),
        ("occurred_at", _TS),
        ("event_id", _S),
        ("row_version", pa.uint64()),
    ),
    "alerts": _schema(
        ("project", _S),
        ("experiment_id", _S),
        ("run_id", _S),
        ("event_id", _S),
        ("rule_id", _S),
        ("key", _S),
        ("op", _S),
        ("threshold", pa.float64()),
        ("value", pa.float64()),
        ("step", pa.int64()),
        ("text", _S),
        ("level", _S),
        ("occurred_at", _TS),
    ),
    "rejected_events": _schema(
        ("project", _S),
        ("experiment_id", _S),
        ("run_id", _S),
        ("event_id", _S),
        ("event_type", _S),
        ("reason", _S),
        ("item", _S),
        ("detail", _S),
        ("winner_event_id", _S),
        ("occurred_at", _TS),
        ("log_partition", pa.uint32()),
        ("log_offset", pa.uint64()),
    ),
    "metric_points": _schema(
        ("run_id", _S),
        ("key", _S),
        ("split", _S),
        ("step", pa.int64()),
        ("epoch", pa.int64()),
        ("timestamp", _TS),
        ("value", pa.float64()),
        ("producer_id", _S),
        ("seq", pa.uint64()),
        ("idx", pa.uint32()),
    ),
    "metric_summary": _schema(
        ("project", _S),
        ("experiment_id", _S),
        ("key", _S),
        ("split", _S),
        ("run_id", _S),
        ("count", pa.uint64()),
        ("sum_value", pa.float64()),
        ("min_value", pa.float64()),
        ("max_value", pa.float64()),
        ("min_step", pa.int64()),
        ("max_step", pa.int64()),
        ("last", _LAST),
    ),
    "run_search": _schema(
        ("project", _S),
        ("experiment_id", _S),
        ("run_id", _S),
        (
            "run",
            pa.struct(
                [
                    ("version", pa.uint64()),
                    ("name", _S),
                    ("status", _S),
                    ("status_reason", _S),
                    ("start_time", _TS),
                    ("end_time", _TS),
                    ("deleted", pa.uint8()),
                    ("notes", _S),
                    ("parent_run_id", _S),
                    ("fork_step", pa.int64()),
                    ("cloned_from_run_id", _S),
                ]
            ),
        ),
        ("run_state", pa.uint64()),
        ("params", _MAP),
        (
            "tags",
            pa.map_(
                _S,
                pa.struct([("version", pa.uint64()), ("deleted", pa.uint8()), ("value", _S)]),
            ),
        ),
        ("m_last", pa.map_(_S, _LAST)),
        ("m_count", pa.map_(_S, pa.uint64())),
        ("m_sum", pa.map_(_S, pa.float64())),
        ("m_min", pa.map_(_S, pa.float64())),
        ("m_max", pa.map_(_S, pa.float64())),
        ("m_min_step", pa.map_(_S, pa.int64())),
        ("m_max_step", pa.map_(_S, pa.int64())),
        ("touches", pa.uint64()),
    ),
    "run_page": _schema(
        ("project", _S),
        ("experiment_id", _S),
        ("run_id", _S),
        ("touches", pa.uint64()),
        ("doc", _S),
    ),
}

#: Tables written from Python rows, in insert order (history before current state).
ROW_TABLES: tuple[str, ...] = (
    "experiment_versions",
    "experiments",
    "run_versions",
    "runs",
    "producer_versions",
    "params",
    "tags",
    "attributes",
    "artifact_versions",
    "artifacts",
    "lineage",
    "alerts",
    "rejected_events",
    "run_search",
    "run_page",
    "events",
)


class Rows:
    """Column buffers per table; `add(table, row)` then `arrow(table)`."""

    def __init__(self) -> None:
        self._cols: dict[str, dict[str, list[Any]]] = {}
        #: rows per table, kept as rows are added: `mark` (once per event) is a dict copy
        self._counts: dict[str, int] = {}

    def add(self, table: str, row: dict[str, Any]) -> None:
        cols = self._cols.get(table)
        if cols is None:
            cols = self._cols[table] = {f.name: [] for f in SCHEMAS[table]}
            self._counts[table] = 0
        for name, values in cols.items():
            values.append(row.get(name))
        self._counts[table] += 1

    def mark(self) -> dict[str, int]:
        return self._counts.copy()

    def rollback(self, mark: dict[str, int]) -> None:
        """Drop rows added since `mark` (an event that turned out to be poison)."""
        for table, cols in self._cols.items():
            keep = mark.get(table, 0)
            for values in cols.values():
                del values[keep:]
            self._counts[table] = keep

    def count(self, table: str) -> int:
        return self._counts.get(table, 0)

    def tables(self) -> list[str]:
        return [t for t in ROW_TABLES if self.count(t)]

    def column(self, table: str, name: str) -> list[Any]:
        return self._cols.get(table, {}).get(name, [])

    def arrow(self, table: str) -> pa.Table:
        schema = SCHEMAS[table]
        cols = self._cols.get(table) or {f.name: [] for f in schema}
        return pa.table({f.name: pa.array(cols[f.name], type=f.type) for f in schema})
