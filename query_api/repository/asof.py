"""Time travel: one run's state as of a moment (event time) or a log position.

Rule: the state is rebuilt from the history read models only — `run_versions` (run row after
each change), `params` (write-once, filtered by `occurred_at` / `log_offset`), `events` (tags
and attributes replayed from RunCreated / TagsSet / TagsRemoved / AttributesLogged payloads;
the current-state tables collapse their history at merge time) and `metric_points` joined
with their MetricsLogged events (a point belongs to the past when its event does, by
`occurred_at <= T` or `log_offset <= O`). Every user value is a bound parameter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from query_api.errors import BadRequest, NotFound, RunNotFound
from query_api.repository.runs import run_info
from query_api.repository.store import ReadStore
from query_api.repository.summaries import existing_runs, summary_json

_RUN_COLUMNS = (
    "run_id, experiment_id, project, name, status, status_reason, "
    "toUnixTimestamp64Milli(start_time) AS start_time, "
    "toUnixTimestamp64Milli(end_time) AS end_time, deleted, notes, parent_run_id, fork_step, "
    "cloned_from_run_id, toUnixTimestamp64Milli(updated_at) AS updated_ms, version"
)
_VALID = "NOT isNaN(value)"
_LAST_ORDER = "(step, timestamp, e.log_offset, idx)"
_METRICS = (
    "SELECT {id:String} AS run_id, key, split, count() AS count, "
    f"sumIf(value, {_VALID}) AS sum_value, "
    f"if(countIf({_VALID}) = 0, nan, minIf(value, {_VALID})) AS min, "
    f"if(countIf({_VALID}) = 0, nan, maxIf(value, {_VALID})) AS max, "
    "min(step) AS min_step, max(step) AS max_step, "
    f"argMax(value, {_LAST_ORDER}) AS last, argMax(step, {_LAST_ORDER}) AS last_step, "
    f"toUnixTimestamp64Milli(argMax(timestamp, {_LAST_ORDER})) AS last_timestamp "
    "FROM {db}.metric_points AS p "
    "INNER JOIN (SELECT producer_id, seq, log_offset FROM {db}.events "
    "WHERE run_id = {id:String} AND event_type = 'MetricsLogged' AND {cond}) AS e "
    "ON p.producer_id = e.producer_id AND p.seq = e.seq "
    "WHERE p.run_id = {id:String} GROUP BY key, split ORDER BY key, split"
)
_HISTORY_TYPES = ["RunCreated", "TagsSet", "TagsRemoved", "AttributesLogged"]


@dataclass(frozen=True)
class AsOf:
    """A moment: `time_ms` (event time, epoch ms) or a log position (`offset`, and the
    partition when the caller named it)."""

    time_ms: int | None = None
    offset: int | None = None
    partition: int | None = None

    def describe(self) -> dict[str, Any]:
        if self.time_ms is not None:
            return {"time": self.time_ms}
        return {"partition": self.partition, "offset": self.offset}


class AsOfRepository:
    def __init__(self, store: ReadStore, project: str | None) -> None:
        self.store = store
        self.project = project

    def run_as_of(self, run_id: str, at: AsOf) -> dict[str, Any]:
        """The run's state at `at`; RunNotFound / NotFound when it did not exist then."""
        db = self.store.db
        params: dict[str, Any] = {"id": run_id}
        scope = ""
        if self.project is not None:
            params["project"] = self.project
            scope = " AND project = {project:String}"
        if at.time_ms is not None:
            params["t"] = at.time_ms
            version_cond = "toUnixTimestamp64Milli(updated_at) <= {t:Int64}"
            event_cond = "toUnixTimestamp64Milli(occurred_at) <= {t:Int64}"
        else:
            params["o"] = at.offset
            version_cond = "version <= {o:UInt64}"
            event_cond = "log_offset <= {o:UInt64}"
            if at.partition is not None:
                self._check_partition(run_id, at.partition, params, scope)
        rows = self.store.dicts(
            f"SELECT {_RUN_COLUMNS} FROM {db}.run_versions "
            f"WHERE run_id = {{id:String}}{scope} AND {version_cond} "
            "ORDER BY version DESC LIMIT 1",
            params,
        )
        if not rows:
            if run_id not in existing_runs(self.store, [run_id], self.project):
                raise RunNotFound(run_id)
            raise NotFound(f"Run with id={run_id} did not exist at {_moment(at)}")
        row = rows[0]
        version = int(row.pop("version"))
        updated_at = row.pop("updated_ms")
        run = run_info(row)
        run["deleted"] = run["lifecycle_stage"] == "deleted"
        run["as_of"] = {**at.describe(), "version": version, "updated_at": updated_at}
        param_rows = self.store.rows(
            f"SELECT key, value FROM {db}.params FINAL "
            f"WHERE run_id = {{id:String}}{scope} AND {event_cond} ORDER BY key",
            params,
        )
        run["params"] = {str(k): str(v) for k, v in param_rows}
        run["tags"], attrs = self._tags_and_attributes(params, scope, event_cond)
        run["attributes"] = {k: _json_value(v) for k, v in sorted(attrs.items())}
        run["metrics"] = [
            {k: v for k, v in summary_json(r).items() if k != "run_id"}
            for r in self.store.dicts(
                _METRICS.replace("{db}", db).replace("{cond}", event_cond), params
            )
        ]
        return run

    def _check_partition(
        self, run_id: str, partition: int, params: dict[str, Any], scope: str
    ) -> None:
        rows = self.store.rows(
            f"SELECT DISTINCT log_partition FROM {self.store.db}.events "
            f"WHERE run_id = {{id:String}}{scope}",
            params,
        )
        found = {int(r[0]) for r in rows}
        if found and partition not in found:
            where = ", ".join(str(p) for p in sorted(found))
            raise BadRequest(f"run {run_id} is in log partition {where}, not {partition}")

    def _tags_and_attributes(
        self, params: dict[str, Any], scope: str, cond: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        rows = self.store.rows(
            f"SELECT event_type, payload FROM {self.store.db}.events "
            f"WHERE run_id = {{id:String}}{scope} AND event_type IN {{types:Array(String)}} "
            f"AND {cond} ORDER BY log_partition, log_offset",
            {**params, "types": _HISTORY_TYPES},
        )
        tags: dict[str, str] = {}
        attrs: dict[str, str] = {}
        for event_type, payload in rows:
            body = _payload(payload)
            if event_type in ("RunCreated", "TagsSet"):
                tags.update(_str_map(body.get("tags")))
            elif event_type == "TagsRemoved":
                keys = body.get("keys")
                for key in keys if isinstance(keys, list) else []:
                    tags.pop(str(key), None)
            else:
                attrs.update(_str_map(body.get("attributes")))
        return dict(sorted(tags.items())), attrs


def _moment(at: AsOf) -> str:
    if at.time_ms is not None:
        return f"time {at.time_ms}"
    where = "" if at.partition is None else f"{at.partition}:"
    return f"offset {where}{at.offset}"


def _payload(text: Any) -> dict[str, Any]:
    try:
        body = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
