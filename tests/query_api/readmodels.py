"""Test helper: create the read-model tables from the processors' SQL migrations (read from
disk — the query API must not import `processors`) and insert rows straight into them.
Each write also adds its partial row to `run_search`, as a projection batch does, and with
`pages=True` rewrites the run's `run_page` search document, as the processors do after their
batches (otherwise searches read `run_search`: the documents are missing or stale).

The migration files use `{db}` for the database; statements are split the way the
processors' runner splits them: `--` comment lines dropped, then split on `;`.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

from schemas.metrics import ROLLUP_SHIFTS, series_key

MIGRATIONS = Path(__file__).resolve().parents[2] / "processors" / "migrations"
UTC = dt.timezone.utc
T0 = 1_790_000_000_000  # epoch ms used as the base of test times


def migration_statements(database: str) -> list[str]:
    files = sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    if not files:
        raise FileNotFoundError(f"no migrations in {MIGRATIONS}")
    out: list[str] = []
    for f in files:
        body = "\n".join(
            line for line in f.read_text("utf-8").splitlines() if not line.lstrip().startswith("--")
        )
        out += [s.strip().replace("{db}", database) for s in body.split(";") if s.strip()]
    return out


def ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=UTC)


class ReadModels:
    """Inserts rows into one test database's read-model tables."""

    def __init__(
        self, client: Any, database: str, project: str = "default", *, pages: bool = False
    ) -> None:
        self.client = client
        self.db = database
        self.project = project
        self.pages = pages
        self._version = 0

    def migrate(self) -> ReadModels:
        for stmt in migration_statements(self.db):
            self.client.command(stmt)
        return self

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    def _insert(self, table: str, row: dict[str, Any]) -> None:
        self.client.insert(f"{self.db}.{table}", [list(row.values())], column_names=list(row))

    def _search_row(self, run_id: str, experiment_id: str, project: str, **cols: Any) -> None:
        """A partial `run_search` row (the other columns: empty maps, no run state)."""
        self._insert(
            "run_search",
            {"project": project, "experiment_id": experiment_id, "run_id": run_id, **cols},
        )
        if self.pages:
            self.refresh_page(run_id, experiment_id, project)

    def refresh_page(
        self, run_id: str, experiment_id: str = "1", project: str | None = None
    ) -> None:
        """Rewrite the run's `run_page` document from `run_search` (migration 0003)."""
        self.client.command(
            f"INSERT INTO {self.db}.run_page SELECT project, experiment_id, run_id, touches, doc"
            f" FROM {self.db}.run_page_source WHERE project = {{p:String}}"
            " AND experiment_id = {e:String} AND run_id = {r:String}",
            parameters={"p": project or self.project, "e": experiment_id, "r": run_id},
        )

    def experiment(self, experiment_id: str, name: str, *, created: int = T0, **kw: Any) -> None:
        self._insert(
            "experiments",
            {
                "project": kw.get("project", self.project),
                "experiment_id": experiment_id,
                "name": name,
                "description": kw.get("description", ""),
                "tags": kw.get("tags", {}),
                "deleted": kw.get("deleted", 0),
                "created_at": ts(created),
                "updated_at": ts(created),
                "event_id": f"e-{experiment_id}-{self._version}",
                "version": self._next_version(),
            },
        )

    def run(self, run_id: str, experiment_id: str = "1", *, start: int = T0, **kw: Any) -> None:
        end = kw.get("end")
        row = {
            "project": kw.get("project", self.project),
            "experiment_id": experiment_id,
            "run_id": run_id,
            "name": kw.get("name", run_id),
            "notes": kw.get("notes", ""),
            "status": kw.get("status", "RUNNING"),
            "status_reason": "",
            "start_time": ts(start),
            "end_time": None if end is None else ts(end),
            "deleted": kw.get("deleted", 0),
            "parent_run_id": kw.get("parent"),
            "fork_step": kw.get("fork_step"),
            "cloned_from_run_id": None,
            "created_at": ts(start),
            "updated_at": ts(start),
            "event_id": f"r-{run_id}-{self._version}",
            "version": kw.get("version") or self._next_version(),
        }
        self._insert("runs", row)
        fields = ("name", "status", "status_reason", "start_time", "end_time", "deleted", "notes")
        more = ("parent_run_id", "fork_step", "cloned_from_run_id")
        self._search_row(
            run_id,
            experiment_id,
            row["project"],
            run=(row["version"], *(row[f] for f in fields), *(row[f] for f in more)),
            run_state=(row["version"] + 1) * 2 + row["deleted"],
        )

    def params(self, run_id: str, values: dict[str, str], experiment_id: str = "1") -> None:
        for k, v in values.items():
            self._insert(
                "params",
                {
                    "project": self.project,
                    "experiment_id": experiment_id,
                    "run_id": run_id,
                    "key": k,
                    "value": v,
                    "occurred_at": ts(T0),
                    "event_id": f"p-{run_id}-{k}",
                    "log_offset": self._next_version(),
                },
            )
        self._search_row(run_id, experiment_id, self.project, params=dict(values))

    def tags(
        self, run_id: str, values: dict[str, str], experiment_id: str = "1", deleted: int = 0
    ) -> None:
        live: dict[str, tuple[int, int, str]] = {}
        for k, v in values.items():
            version = self._next_version()
            self._insert(
                "tags",
                {
                    "project": self.project,
                    "experiment_id": experiment_id,
                    "run_id": run_id,
                    "key": k,
                    "value": v,
                    "deleted": deleted,
                    "occurred_at": ts(T0),
                    "event_id": f"t-{run_id}-{k}",
                    "version": version,
                },
            )
            live[k] = (version, deleted, v)
        self._search_row(run_id, experiment_id, self.project, tags=live)

    def attributes(self, run_id: str, values: dict[str, str], experiment_id: str = "1") -> None:
        for k, v in values.items():
            self._insert(
                "attributes",
                {
                    "project": self.project,
                    "experiment_id": experiment_id,
                    "run_id": run_id,
                    "key": k,
                    "value": v,
                    "occurred_at": ts(T0),
                    "event_id": f"a-{run_id}-{k}",
                    "version": self._next_version(),
                },
            )

    def artifact(self, run_id: str, key: str, *, size: int = 10, experiment_id: str = "1") -> None:
        """An artifact row whose uri is a blob of the project (an object that need not
        exist) in the default bucket."""
        uri = f"s3://runstream/{self.project}/blobs/sha256/ab/ab{run_id}{key}"
        self.artifact_at(run_id, key, uri, size=size, experiment_id=experiment_id)

    def artifact_at(
        self, run_id: str, key: str, uri: str, *, size: int = 10, experiment_id: str = "1"
    ) -> None:
        self._insert(
            "artifacts",
            {
                "project": self.project,
                "experiment_id": experiment_id,
                "run_id": run_id,
                "key": key,
                "uri": uri,
                "size": size,
                "sha256": "ab",
                "content_type": "text/plain",
                "kind": "file",
                "step": None,
                "metadata": {"m": "1"},
                "deleted": 0,
                "occurred_at": ts(T0),
                "event_id": f"f-{run_id}-{key}",
                "version": self._next_version(),
            },
        )

    def points(
        self,
        run_id: str,
        key: str,
        values: list[float],
        *,
        steps: list[int] | None = None,
        split: str = "",
        experiment_id: str = "1",
        t0: int = T0,
        producer: str = "p1",
        summary: bool = True,
        seq: int = 0,
    ) -> None:
        """Points at `steps` (default 0..n-1), timestamp t0 + 1000*step, seq `seq` + i, idx 0;
        plus their summary."""
        steps = list(range(len(values))) if steps is None else steps
        n = len(values)
        self.client.insert(
            f"{self.db}.metric_points",
            [
                [run_id] * n,
                [key] * n,
                [split] * n,
                steps,
                [0] * n,
                [ts(t0 + 1000 * s) for s in steps],
                values,
                [producer] * n,
                list(range(seq, seq + n)),
                [0] * n,
            ],
            column_names=[
                "run_id",
                "key",
                "split",
                "step",
                "epoch",
                "timestamp",
                "value",
                "producer_id",
                "seq",
                "idx",
            ],
            column_oriented=True,
        )
        self.rollup(
            run_id,
            key,
            split,
            [(st, seq + i, 0, v) for i, (st, v) in enumerate(zip(steps, values))],
            producer,
        )
        if summary and n:
            last = max(range(n), key=lambda i: (steps[i], i))
            stats = {
                "count": n,
                "sum_value": sum(values),
                "min_value": min(values),
                "max_value": max(values),
                "min_step": min(steps),
                "max_step": max(steps),
                "last": (steps[last], ts(t0 + 1000 * steps[last]), 0, last, values[last]),
            }
            self._insert(
                "metric_summary",
                {
                    "project": self.project,
                    "experiment_id": experiment_id,
                    "key": key,
                    "split": split,
                    "run_id": run_id,
                    **stats,
                },
            )
            sk = series_key(key, split)
            maps = {"m_last": "last", "m_count": "count", "m_sum": "sum_value"}
            maps |= {"m_min": "min_value", "m_max": "max_value"}
            maps |= {"m_min_step": "min_step", "m_max_step": "max_step"}
            self._search_row(
                run_id,
                experiment_id,
                self.project,
                **{m: {sk: stats[f]} for m, f in maps.items()},
            )

    def rollup(
        self,
        run_id: str,
        key: str,
        split: str,
        points: list[tuple[int, int, int, float]],
        producer: str = "p1",
    ) -> None:
        """The `metric_rollup` rows of points (step, seq, idx, value) inserted into
        `metric_points`, as a projection batch writes them (migration 0005), computed here
        point by point: the reference the API tests read the rollup through."""
        rows = []
        for level, shift in enumerate(ROLLUP_SHIFTS):
            blocks: dict[int, list[tuple[int, int, int, float]]] = {}
            for p in points:
                blocks.setdefault(p[0] >> shift, []).append(p)
            for block, pts in blocks.items():
                values = [p[3] for p in pts]
                real = [v for v in values if not math.isnan(v)]
                last = max(pts, key=lambda p: (p[0], ((p[1] << 20) + p[2]) % 2**64))
                rows.append(
                    [run_id, key, split, level, block, len(pts), sum(values)]
                    + [min(real, default=math.nan), max(real, default=math.nan)]
                    + [min(p[0] for p in pts)]
                    + [(last[0], ((last[1] << 20) + last[2]) % 2**64, producer, last[3])]
                )
        if rows:
            self.client.insert(
                f"{self.db}.metric_rollup",
                rows,
                column_names=["run_id", "key", "split", "level", "block", "count", "sum_value"]
                + ["min_value", "max_value", "min_step", "last"],
            )
