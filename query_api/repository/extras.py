"""The rest of one run's read models: producers (ranks), alerts, console log, lineage and the
artifact row behind a download.

Rules: "current state" tables (`lineage`, `artifacts`) are read with FINAL, a producer's
state is its newest row of `producer_versions`; the console log is the `ConsoleLogged` rows
of `events` (not projected into a table of its own; payload = the record minus envelope as
JSON), read in log order, and since every event of a run is in one partition the log offset
is the console's cursor. Every value is bound.
"""

from __future__ import annotations

import json
from typing import Any

from query_api.repository.store import ReadStore


class RunExtrasRepository:
    """Reads of one run's producers, alerts, console output, lineage and artifact rows."""

    def __init__(self, store: ReadStore) -> None:
        self.store = store

    def producers(self, run_id: str) -> list[dict[str, Any]]:
        """One row per producer (rank) of the run, by rank then producer id."""
        return self.store.dicts(
            "SELECT producer_id, host, pid, rank, world_size, status, reason, "
            "toUnixTimestamp64Milli(joined_at) AS joined_at, "
            "toUnixTimestamp64Milli(exited_at) AS exited_at, last_seq, "
            "toUnixTimestamp64Milli(last_seen_at) AS last_seen_at "
            f"FROM (SELECT * FROM {self.store.db}.producer_versions WHERE run_id = {{id:String}}"
            " ORDER BY version DESC LIMIT 1 BY producer_id) ORDER BY rank, producer_id",
            {"id": run_id},
        )

    def alerts(self, run_id: str, limit: int) -> list[dict[str, Any]]:
        """The run's triggered alerts, oldest first."""
        return self.store.dicts(
            "SELECT event_id, rule_id, key, op, threshold, value, step, text, level, "
            "toUnixTimestamp64Milli(occurred_at) AS occurred_at "
            f"FROM {self.store.db}.alerts WHERE run_id = {{id:String}} "
            "ORDER BY occurred_at, event_id LIMIT {lim:UInt64}",
            {"id": run_id, "lim": limit},
        )

    def lineage(self, run_id: str) -> list[dict[str, Any]]:
        """Datasets and models the run consumed (INPUT) or produced (OUTPUT)."""
        rows = self.store.dicts(
            "SELECT direction, kind, name, version, digest, source_uri, context, metadata, "
            "toUnixTimestamp64Milli(occurred_at) AS occurred_at "
            f"FROM {self.store.db}.lineage FINAL WHERE run_id = {{id:String}} "
            "ORDER BY direction, kind, name, version",
            {"id": run_id},
        )
        for row in rows:
            row["metadata"] = dict(row["metadata"])
        return rows

    def console(
        self, run_id: str, after_offset: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Console chunks in log order after `after_offset`; the offset of the last one."""
        params: dict[str, Any] = {"id": run_id, "lim": limit}
        after = ""
        if after_offset is not None:
            params["after"] = after_offset
            after = " AND log_offset > {after:UInt64}"
        rows = self.store.rows(
            "SELECT log_offset, producer_id, toUnixTimestamp64Milli(occurred_at), payload "
            f"FROM {self.store.db}.events WHERE run_id = {{id:String}} "
            f"AND event_type = 'ConsoleLogged'{after} "
            "ORDER BY log_partition, log_offset LIMIT {lim:UInt64}",
            params,
        )
        chunks = []
        for log_offset, producer_id, occurred_at, payload in rows:
            body = _json_object(str(payload))
            chunks.append(
                {
                    "log_offset": int(log_offset),
                    "producer_id": producer_id,
                    "occurred_at": occurred_at,
                    "stream": str(body.get("stream", "")).lower(),
                    "offset": body.get("offset"),
                    "text": str(body.get("text", "")),
                }
            )
        last = int(rows[-1][0]) if rows else after_offset
        return chunks, last

    def artifact(self, run_id: str, key: str) -> dict[str, Any] | None:
        """The live artifact row of (run, key), or None."""
        rows = self.store.dicts(
            "SELECT project, key, uri, size, sha256, content_type, kind "
            f"FROM {self.store.db}.artifacts FINAL "
            "WHERE run_id = {id:String} AND key = {key:String} AND deleted = 0 LIMIT 1",
            {"id": run_id, "key": key},
        )
        return rows[0] if rows else None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
