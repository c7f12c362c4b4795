"""Runs read model: search (filter + order + pages) and the full detail of one run.

Rule: search reads `run_search` and its documents `run_page` only — never metric points —
and every user value reaches SQL as a bound parameter (see `query_api.search.compile`).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from query_api.errors import RunNotFound
from query_api.repository.store import ReadStore
from query_api.repository.summaries import summaries, summary_json
from query_api.search import Binder, Expr, OrderKey, RowCompiler
from schemas.metrics import parse_series_key

ViewType = Literal["ACTIVE_ONLY", "DELETED_ONLY", "ALL"]

RUN_COLUMNS = (
    "r.run_id AS run_id, r.experiment_id AS experiment_id, r.project AS project, "
    "r.name AS name, r.status AS status, r.status_reason AS status_reason, "
    "toUnixTimestamp64Milli(r.start_time) AS start_time, "
    "toUnixTimestamp64Milli(r.end_time) AS end_time, r.deleted AS deleted, r.notes AS notes, "
    "r.parent_run_id AS parent_run_id, r.fork_step AS fork_step, "
    "r.cloned_from_run_id AS cloned_from_run_id"
)
_VIEW = {"ACTIVE_ONLY": "deleted = 0", "DELETED_ONLY": "deleted = 1", "ALL": "1"}


@dataclass(frozen=True)
class SearchQuery:
    experiment_ids: tuple[str, ...]
    filter: Expr | None
    order_by: tuple[OrderKey, ...]
    view: ViewType
    limit: int
    offset: int


RunKey = tuple[str, str, str]  # (project, experiment id, run id)


class ResultCache:
    """Search results by the run state they show, shared by the requests of one API process.

    Key: the read database's generation (`ReadStore.generation`: name and UUID) and the run;
    a result is used only for the `touches` it was built at. `touches` (migration 0003)
    counts the rows merged into the run's `run_search` state; every row the processors write
    counts 1, so within one database a run's `touches` names exactly one state (the argument
    `run_page` documents already rest on). The page-key query runs on every search (it
    decides which runs, in what order, and returns their `touches`), so a hit is exactly the
    result the document read would give: a page whose runs are all held skips that read and
    the parsing (1 k runs: ~9 of ~17 ms).

    One entry per run: a newer state replaces the older (a run written every second leaves
    no dead entries behind). Least recently used entries go first once the estimated size
    passes `max_bytes` (three times a result's JSON length, what the dicts of a typical
    result take). Results are shared: callers read them and never change them
    (`RunRepository.search` hands out shallow copies)."""

    #: estimated bytes of a result's dicts per byte of its JSON (measured: ~2.7 KB for 0.9 KB)
    OVERHEAD = 3

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        #: (generation, run key) -> (touches, result, estimated bytes)
        self._items: OrderedDict[tuple[Any, ...], tuple[int, dict[str, Any], int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, generation: tuple[str, str], page: dict[RunKey, int]) -> dict[RunKey, Any]:
        """The held results of `page` (run key -> touches) in exactly those states."""
        found = {}
        with self._lock:
            for key, touches in page.items():
                k = (generation, key)
                hit = self._items.get(k)
                if hit is not None and hit[0] == touches:
                    self._items.move_to_end(k)
                    found[key] = hit[1]
        return found

    def put(self, generation: tuple[str, str], results: dict[tuple[RunKey, int], Any]) -> None:
        """Hold `results` ((run key, touches) -> result), each replacing its run's entry,
        evicting the least recently used."""
        sized = [
            ((generation, key), touches, result, self.OVERHEAD * _json_size(result))
            for (key, touches), result in results.items()
        ]
        with self._lock:
            for k, touches, result, size in sized:
                old = self._items.pop(k, None)
                if old is not None:
                    self._bytes -= old[2]
                if size > self.max_bytes:
                    continue
                self._items[k] = (touches, result, size)
                self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, _, size) = self._items.popitem(last=False)
                self._bytes -= size

    def __len__(self) -> int:
        return len(self._items)


def _json_size(result: dict[str, Any]) -> int:
    try:
        return len(orjson.dumps(result))
    except TypeError:  # what orjson refuses (an int beyond 64 bits) `json` writes
        return len(json.dumps(result, default=str))


class RunRepository:
    def __init__(
        self, store: ReadStore, project: str | None, results: ResultCache | None = None
    ) -> None:
        self.store = store
        self.project = project
        self.results = results

    def _runs_source(self, params: dict[str, Any], where: Sequence[str]) -> str:
        conds = list(where)
        if self.project is not None:
            params["project"] = self.project
            conds.append("project = {project:String}")
        return f"(SELECT * FROM {self.store.db}.runs FINAL WHERE {' AND '.join(conds)}) AS r"

    # -- search ----------------------------------------------------------------------
    def search(self, q: SearchQuery) -> tuple[list[dict[str, Any]], bool]:
        """One page of runs (with params, tags, metric summaries) and whether more follow.

        Two reads: the page's run keys in order from `run_search` (one row per run,
        migration 0002), reading only the columns the filter and order need, then the page's
        rows by primary key (`_page`) unless the `ResultCache` holds them. Reading every
        column of every matching run to keep 100 costs ~4x at 100 k runs."""
        generation = self.store.generation
        db = generation[0] if generation is not None else self.store.db
        binder = Binder()
        compiler = RowCompiler(db, binder)
        where = ["s.run_state > 0", _VIEW_ROW[q.view]]
        if q.filter is not None:
            where.append(compiler.where(q.filter))
        order = compiler.order(q.order_by)
        params = binder.params
        head = []
        if self.project is not None:
            params["project"] = self.project
            head.append("s.project = {project:String}")
        if q.experiment_ids:
            params["exp"] = list(q.experiment_ids)
            head.append("s.experiment_id IN {exp:Array(String)}")
        params["lim"] = q.limit + 1
        params["off"] = q.offset
        prewhere = f"PREWHERE {' AND '.join(head)} " if head else ""
        found = self.store.rows(
            "SELECT s.project, s.experiment_id, s.run_id, s.touches "
            f"FROM {db}.run_search AS s "
            f"FINAL {prewhere}WHERE {' AND '.join(where)} ORDER BY {', '.join(order.terms)} "
            "LIMIT {lim:UInt64} OFFSET {off:UInt64}",
            params,
        )
        more = len(found) > q.limit
        page = {(str(p), str(e), str(r)): int(t) for p, e, r, t in found[: q.limit]}
        if self.results is None or generation is None:
            built = self._page(page, db)
            return [built[k] for k in page if k in built], more
        held = self.results.get(generation, page)
        missing = {k: t for k, t in page.items() if k not in held}
        if missing:
            built = self._page(missing, db)
            self.results.put(generation, {(k, missing[k]): r for k, r in built.items()})
            held.update(built)
        return [dict(held[k]) for k in page if k in held], more

    def _page(self, page: dict[RunKey, int], db: str) -> dict[RunKey, dict[str, Any]]:
        """The results of the runs of `page` (run key -> its `run_search.touches`) in `db`
        (the database the page's keys were read from): from their
        `run_page` documents (migration 0003) where a document was built from exactly that
        state, from `run_search` for the others (written since the processors last
        refreshed their documents, or never refreshed)."""
        if not page:
            return {}
        rows: dict[tuple[str, str, str], Sequence[Any]] = {}
        for key, (touches, doc) in self._documents(list(page), db).items():
            if touches == page[key]:
                rows[key] = (*key, *_document_columns(doc))
        stale = [k for k in page if k not in rows]
        if stale:
            rows.update(self._rows(stale, db))
        return {k: _search_run(rows[k]) for k in page if k in rows}

    def _documents(self, keys: Sequence[RunKey], db: str) -> dict[Any, tuple[int, str]]:
        """(project, experiment, run id) -> (touches, doc) of its newest `run_page` row.
        Without FINAL: a run has a few rows until merges drop the older ones, and picking
        the highest `touches` here costs less than FINAL (9.6 vs 21.7 ms for the documents of a
        100-run page among 100 k runs)."""
        newest: dict[Any, tuple[int, str]] = {}
        for p, e, r, touches, doc in self.store.rows(_DOC_SQL.format(db=db), _in(keys)):
            key = (p, e, r)
            if key in newest and newest[key][0] >= touches:
                continue
            newest[key] = (int(touches), doc)
        return newest

    def _rows(self, keys: Sequence[RunKey], db: str) -> dict[Any, Sequence[Any]]:
        """(project, experiment, run id) -> its merged `run_search` row (`_PAGE_SQL`)."""
        rows = self.store.rows(_PAGE_SQL.format(db=db), _in(keys), _PAGE_FORMATS)
        return {(r[0], r[1], r[2]): r for r in rows}

    def metrics_of(self, run_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """run_id -> its metric summaries (one per key and split)."""
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in summaries(self.store, run_ids):
            out[s.pop("run_id")].append(s)
        return out

    def key_values(self, table: str, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """run_id -> {key: value} of `params`, `tags` (live only) or `attributes`."""
        live = " AND deleted = 0" if table == "tags" else ""
        rows = self.store.rows(
            f"SELECT run_id, key, value FROM {self.store.db}.{table} FINAL "
            f"WHERE run_id IN {{ids:Array(String)}}{live} ORDER BY run_id, key",
            {"ids": list(run_ids)},
        )
        out: dict[str, dict[str, str]] = defaultdict(dict)
        for run_id, key, value in rows:
            out[run_id][key] = value
        return out

    # -- one run ---------------------------------------------------------------------
    def info(self, run_id: str) -> dict[str, Any]:
        params: dict[str, Any] = {"id": run_id}
        rows = self.store.dicts(
            f"SELECT {RUN_COLUMNS} FROM {self._runs_source(params, ['run_id = {id:String}'])} "
            "LIMIT 1",
            params,
        )
        if not rows:
            raise RunNotFound(run_id)
        return run_info(rows[0])

    def detail(self, run_id: str) -> dict[str, Any]:
        """Everything about one run except its metric points."""
        run = self.info(run_id)
        run["params"] = self.key_values("params", [run_id]).get(run_id, {})
        run["tags"] = self.key_values("tags", [run_id]).get(run_id, {})
        attrs = self.key_values("attributes", [run_id]).get(run_id, {})
        run["attributes"] = {k: _json_value(v) for k, v in attrs.items()}
        run["metrics"] = [
            {k: v for k, v in s.items() if k != "run_id"} for s in summaries(self.store, [run_id])
        ]
        run["artifacts"] = self.artifacts(run_id)
        run["children"] = self.children(run_id)
        return run

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.store.dicts(
            "SELECT key, uri, size, sha256, content_type, kind, step, metadata, "
            "toUnixTimestamp64Milli(occurred_at) AS created_time "
            f"FROM {self.store.db}.artifacts FINAL "
            "WHERE run_id = {id:String} AND deleted = 0 ORDER BY key",
            {"id": run_id},
        )
        for row in rows:
            row["metadata"] = dict(row["metadata"])
        return rows

    def children(self, run_id: str) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"id": run_id}
        source = self._runs_source(params, ["parent_run_id = {id:String}", "deleted = 0"])
        return self.store.dicts(
            "SELECT r.run_id AS run_id, r.name AS name, r.status AS status, "
            f"r.fork_step AS fork_step FROM {source} ORDER BY r.start_time, r.run_id",
            params,
        )


#: `run_state` = (version + 1) * 2 + deleted (0: no run state in the row; rows migration
#: 0002 backfilled: version * 2 + deleted); one narrow column,
#: where the `run` tuple costs every search ~10 ms more at 100 k runs
_VIEW_ROW = {
    "ACTIVE_ONLY": "s.run_state % 2 = 0",
    "DELETED_ONLY": "s.run_state % 2 = 1",
    "ALL": "1",
}


def _in(keys: Sequence[tuple[str, str, str]]) -> dict[str, list[str]]:
    """Parameters of a primary-key read of `keys`. The read may hold other rows of these run
    ids (another project's or experiment's): the caller matches whole keys, not SQL
    (binding 100 tuples costs ~2 ms of the driver's Python)."""
    return {
        "projects": sorted({k[0] for k in keys}),
        "exps": sorted({k[1] for k in keys}),
        "ids": [k[2] for k in keys],
    }


_KEYS_IN = (
    "PREWHERE project IN {{projects:Array(String)}} AND experiment_id IN {{exps:Array(String)}} "
    "AND run_id IN {{ids:Array(String)}}"
)

#: the `run_page` rows of the page's runs, every version (see `_documents`)
_DOC_SQL = "SELECT project, experiment_id, run_id, touches, doc FROM {db}.run_page " + _KEYS_IN

#: The rows of `run_search` of the page's runs, through the primary key (`{projects}`,
#: `{exps}`, `{ids}`), with FINAL (partial rows merged). Whole columns, no per-row SQL
#: functions: read with DateTime64 as epoch-ms ints (`_PAGE_FORMATS`), the run tuple and
#: the maps cost less to convert in `_search_run` than `tupleElement`/`mapApply` did in
#: ClickHouse (a 100-run page of 1 k runs: 10.8 -> 8.3 ms).
_PAGE_SQL = (
    "SELECT project, experiment_id, run_id, run, params, tags, m_last, "
    "m_count, m_sum, m_min, m_max, m_min_step, m_max_step "
    "FROM {db}.run_search FINAL " + _KEYS_IN
)
_PAGE_FORMATS = {"DateTime64": "int"}


def _float_or_minus_zero(text: str) -> int | float:
    """JSON integers of a document; ClickHouse writes the float -0.0 as `-0`."""
    return -0.0 if text == "-0" else int(text)


#: a JSON integer `-0` (ClickHouse's spelling of the float -0.0), not -0.5 or -01
_MINUS_ZERO = re.compile(r"-0(?![.\deE])")


def _document_columns(doc: str) -> tuple[Any, ...]:
    """A `run_page` document (migration 0003) as the `_PAGE_SQL` columns after the key: the
    same values `_search_run` gets from `run_search` (floats that ClickHouse wrote as
    integers or as "nan"/"inf"/"-inf" made floats again). orjson parses a 100-run page's
    documents in 0.3 ms (`json` with the -0 hook: 1.5 ms); a document holding `-0` takes
    the hook, so -0.0 keeps its sign."""
    parsed = None
    if not _MINUS_ZERO.search(doc):
        # orjson refuses some text `json` takes (a lone surrogate escape): the hook then
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(doc)
    if parsed is None:
        parsed = json.loads(doc, parse_int=_float_or_minus_zero)
    run, params, tags, last, count, total, lo, hi, first_step, last_step = parsed
    for point in last.values():
        point["value"] = float(point["value"])
    for m in (total, lo, hi):
        for k, v in m.items():
            m[k] = float(v)
    return run, params, tags, last, count, total, lo, hi, first_step, last_step


def _search_run(row: Sequence[Any]) -> dict[str, Any]:
    """A search result from a `_PAGE_SQL` row: the run, its params, live tags, summaries."""
    project, experiment_id, run_id, state, params, tags, last = row[:7]
    count, total, lo, hi, first_step, last_step = row[7:13]
    run = run_info(
        {
            "project": project,
            "experiment_id": experiment_id,
            "run_id": run_id,
            **{f: state[f] for f in _PAGE_RUN_FIELDS},
        }
    )
    run["params"] = dict(sorted(params.items()))
    run["tags"] = {k: v["value"] for k, v in sorted(tags.items()) if not v["deleted"]}
    metrics = []
    for k in sorted(last, key=parse_series_key):
        key, split = parse_series_key(k)
        point = last[k]
        summary = summary_json(
            {
                "run_id": run_id,
                "key": key,
                "split": split,
                "last": point["value"],
                "last_step": point["step"],
                "last_timestamp": point["timestamp"],
                "min": lo.get(k),
                "max": hi.get(k),
                "sum_value": total.get(k),
                "count": count.get(k, 0),
                "min_step": first_step.get(k),
                "max_step": last_step.get(k),
            }
        )
        del summary["run_id"]
        metrics.append(summary)
    run["metrics"] = metrics
    return run


#: the `run_search.run` tuple elements a search result shows (migration 0002)
_PAGE_RUN_FIELDS = (
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


def _json_value(text: str) -> Any:
    """Attribute values are JSON documents (AttributesLogged); anything else stays text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def run_info(row: dict[str, Any]) -> dict[str, Any]:
    info = dict(row)
    info["lifecycle_stage"] = "deleted" if info.pop("deleted") else "active"
    return info
