"""ClickHouse sink: read the projection's position and state, write a batch idempotently.

Rules:
- Position is stored WITH the state (`projection_position`, one row per batch): an `intent`
  row (first, last offset) is written before any row of the batch, a `done` row after all
  of them. On (re)assignment a partition resumes after the last `done` batch, or redoes the
  pending `intent` range with the SAME boundaries.
- Every insert of a batch carries `insert_deduplication_token = topic:partition:first-last:
  table` (tables have `non_replicated_deduplication_window`): a redone batch is byte-identical
  (see `state`), so ClickHouse drops what had landed and writes what had not.
- Works unchanged on chDB (`chdb://` path) and on a ClickHouse server over HTTP.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from clickhouse_connect.driver.binding import format_query_value

from processors.errors import PartitionTaken, ReadModelWriteFailed
from processors.migrate import check_identifier
from processors.model import Decoded, epoch_ms
from processors.projection import Projected
from processors.state import (
    ArtifactState,
    ExperimentState,
    ParamState,
    PartitionState,
    ProducerState,
    RunState,
)

INTENT, DONE = 0, 1
RUN_EVENTS = frozenset(
    {"RunCreated", "RunRenamed", "RunNoteSet", "RunStatusChanged", "RunDeleted", "RunRestored"}
)
PARAM_EVENTS = frozenset({"RunCreated", "ParamsLogged"})
ARTIFACT_EVENTS = frozenset({"ArtifactStored", "ArtifactDeleted"})
NAME_EVENTS = frozenset({"ExperimentCreated", "ExperimentRenamed"})
#: events whose projection reads the run's state (metrics: its project and experiment)
RUN_STATE_EVENTS = RUN_EVENTS | {"MetricsLogged"}
_IN_CHUNK = 2000
_SEEN_CHUNK = 1000  # pairs: two lists per query
#: metric_points is inserted without ClickHouse's "merge the block as if merged" pass
#: (`optimize_on_insert`): a batch's points are already unique by the table key (idx
#: numbers the points of one event; a resent event produces nothing), so the pass only
#: re-reads the sorted block; without it an insert takes ~25 % less time
#: (1.45 -> 1.89 M rows/s for 1 M-row batches here). Reads never depend on it: the same
#: point from two batches lands in two parts anyway and FINAL/merges collapse both cases.
#: So is metric_rollup (a batch writes one row per series, level and block: nothing for the
#: pass to merge; 33 k rows of 1 M points: 65 -> 36 ms, with the producer ids of `last`
#: dictionary-encoded 31 ms).
_UNIQUE_ROWS_INSERT = {"optimize_on_insert": 0}
#: a batch of at most this many rows (points and table rows) runs its inserts on the sink's
#: clients side by side after one fence: a small batch's ~10 inserts cost ~3-5 ms each,
#: mostly the engine's fixed work per statement, which two cores overlap. Larger batches
#: share theirs out by rows too, the fence before each insert of the main client's share
#: (`_insert_side_by_side`)
PARALLEL_INSERT_ROWS = 20_000
#: what one insert statement costs in rows, whatever it holds (~3-5 ms of fixed work: the
#: engine's rate is ~2 M rows/s), when the inserts of a batch are shared out by rows
_INSERT_OVERHEAD_ROWS = 8_000


@dataclass(frozen=True)
class _Insert:
    table: str
    rows: int
    data: Callable[[], pa.Table]
    settings: dict[str, Any]


#: threads running the other clients' shares of a batch's inserts (`ClickHouseSink.writers`)
_INSERTS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sink-insert")


@dataclass(frozen=True)
class Resume:
    """Where a partition continues: `redo` = the pending intent [first, last] exactly."""

    offset: int
    redo_last: int | None = None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: epoch_ms(v) if isinstance(v, dt.datetime) else v for k, v in row.items()}


def _build(cls: Any, row: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in _plain(row).items() if k in names})


#: the characters clickhouse-connect escapes in a string literal, escaped the same way
_ESCAPES = str.maketrans({c: "\\" + c for c in ("\\", "'", "`", "\t", "\n")})


def sql_literal(value: Any) -> str:
    """A query parameter as SQL text, exactly as clickhouse-connect binds it (`%(name)s`).
    A list of strings (the state loads' IN lists: a 20,000-event batch binds ~50,000 ids)
    is escaped by one `str.translate` per string; the driver escapes character by character,
    half of a small-event batch's state load."""
    if type(value) is list and all(type(v) is str for v in value):
        return "[" + ", ".join(["'" + v.translate(_ESCAPES) + "'" for v in value]) + "]"
    return str(format_query_value(value))


def _as_is(table: pa.Table) -> pa.Table:
    """An insert's data already in Arrow (`ClickHouseSink.write` converts the others when
    their insert runs)."""
    return table


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class ClickHouseSink:
    """Reads/writes one read-model database through a clickhouse-connect client; `writers`:
    more clients of the same engine or server, which a small batch's inserts share (`write`)."""

    def __init__(self, client: Any, database: str, writers: Sequence[Any] = ()) -> None:
        self.client = client
        self.writers = tuple(writers)
        self.database = check_identifier(database)

    def _q(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Rows of `sql` as dicts; `{db}` is the database, `%(name)s` a parameter bound by
        `sql_literal`."""
        text = sql.replace("{db}", self.database) % {k: sql_literal(v) for k, v in params.items()}
        return list(self.client.query(text).named_results())

    # ---- position ----------------------------------------------------------------------
    def positions(self, topic: str) -> dict[int, Resume]:
        """The resume point of every partition that has one."""
        rows = self._q(
            "SELECT log_partition, first_offset, last_offset, state FROM {db}.projection_position"
            " FINAL WHERE topic = %(t)s ORDER BY first_offset DESC LIMIT 1 BY log_partition",
            t=topic,
        )
        out = {}
        for r in rows:
            if r["state"] == DONE:
                out[int(r["log_partition"])] = Resume(int(r["last_offset"]) + 1)
            else:
                out[int(r["log_partition"])] = Resume(int(r["first_offset"]), int(r["last_offset"]))
        return out

    def prune_positions(self, topic: str, above: int) -> int:
        """Drop the position rows no reader needs, in each partition of `topic` holding more
        than `above`: every row ending before the partition's newest `done` batch (its
        row and any later intent stay: the resume point, the projected offset and the
        zombie fence read only those). Returns the rows dropped.

        Without it the table grows by a row per batch for ever, and the consistency wait's
        read of the projected offsets (`query_api.consistency`) with it: 8 ms over 100 k
        rows, 29 ms over 1 M, 39 ms over 5 M here; 4.5 ms once pruned. The newest done
        offset is read from this same table, so a stale caller (a worker after a
        rebalance, or one that switched databases) never drops a row that is still
        needed; rows written meanwhile end after it and stay."""
        rows = self._q(
            "SELECT p.log_partition AS part, k.keep AS keep, count() AS n,"
            " countIf(p.last_offset < k.keep) AS stale"
            " FROM {db}.projection_position AS p INNER JOIN (SELECT log_partition,"
            " maxIf(last_offset, state = %(done)s) AS keep FROM {db}.projection_position"
            " WHERE topic = %(t)s GROUP BY log_partition) AS k"
            " ON p.log_partition = k.log_partition"
            " WHERE p.topic = %(t)s GROUP BY part, keep",
            t=topic,
            done=DONE,
        )
        due = [
            (int(r["part"]), int(r["keep"]), int(r["stale"]))
            for r in rows
            if int(r["n"]) > above and int(r["stale"]) > 0
        ]
        if not due:
            return 0
        ranges = " OR ".join(
            f"(log_partition = {p} AND last_offset < {keep})" for p, keep, _ in due
        )
        self._guard(
            lambda: self.client.command(
                f"DELETE FROM {self.database}.projection_position"
                f" WHERE topic = {sql_literal(topic)} AND ({ranges})"
            )
        )
        return sum(stale for _, _, stale in due)

    def _position(
        self, topic: str, partition: int, first: int, last: int, state: int, events: int
    ) -> None:
        # one row as an INSERT ... VALUES statement: on chDB, `client.insert` goes through a
        # Native temp file (2.9 ms a row here, 1.4 ms this way), and a small batch writes two
        self.client.command(
            f"INSERT INTO {self.database}.projection_position (topic, log_partition,"
            " first_offset, last_offset, state, events, updated_at) VALUES"
            " (%(t)s, %(p)s, %(f)s, %(l)s, %(s)s, %(e)s, %(u)s)",
            parameters={
                "t": topic,
                "p": partition,
                "f": first,
                "l": last,
                "s": state,
                "e": events,
                "u": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            },
        )

    def check_owner(self, topic: str, partition: int, first: int, last: int) -> None:
        """Fence a zombie: raise PartitionTaken when a batch overlapping [first, last] was
        written by someone else (any position row reaching `first`, other than this exact
        batch's own pending intent). Batches are at most a few 10k events long, so rows
        starting more than 1M offsets earlier cannot reach `first` (a key-range bound)."""
        rows: list[dict[str, Any]] = []

        def read() -> None:
            rows.extend(self._check_rows(topic, partition, first))

        self._guard(read)
        for r in rows:
            if (int(r["first_offset"]), int(r["last_offset"])) != (first, last):
                raise PartitionTaken(
                    f"{topic}[{partition}]: offsets {r['first_offset']}-{r['last_offset']}"
                    f" were written by another worker; dropping batch {first}-{last}"
                )

    def _check_rows(self, topic: str, partition: int, first: int) -> list[dict[str, Any]]:
        return self._q(
            "SELECT first_offset, last_offset, state FROM {db}.projection_position"
            " WHERE topic = %(t)s AND log_partition = %(p)s AND first_offset >= %(lo)s"
            " AND last_offset >= %(f)s",
            t=topic,
            p=partition,
            lo=max(0, first - 1_000_000),
            f=first,
        )

    def mark_intent(self, topic: str, partition: int, first: int, last: int) -> None:
        self._guard(lambda: self._position(topic, partition, first, last, INTENT, 0))

    def mark_done(self, topic: str, partition: int, first: int, last: int, events: int) -> None:
        self._guard(lambda: self._position(topic, partition, first, last, DONE, events))

    # ---- state -------------------------------------------------------------------------
    def load_state(self, state: PartitionState, events: Sequence[Decoded], first: int) -> None:
        """Fill what `project_batch` needs for `events` (cache misses only), as of `first`."""
        self._guard(lambda: self._load(state, events, first))

    def _load(self, state: PartitionState, events: Sequence[Decoded], first: int) -> None:
        # (run, event id) pairs, chunked: both IN lists stay far below ClickHouse's query
        # size limit (256 KiB) whatever the batch holds (a batch can touch 10k runs)
        pairs = sorted({(e.env.run_id, e.env.event_id) for e in events})
        state.seen = {}
        state.fresh = frozenset()
        # Which runs have any event stored: one query per _IN_CHUNK runs (run_id leads the
        # events key), for the runs the cache cannot vouch for. A run with no event stored
        # ("fresh": a new run, most of a replay or bulk load) has nothing else stored
        # either: every accepted event has its `events` row, written in the commit that
        # writes the run, producer, param and artifact rows it makes (a half-written batch
        # being redone finds its own `events` rows when they landed: its runs are then not
        # fresh, which only costs the state reads, filtered to before `first`). Its events
        # are not looked up and its state is not read: a new run's first batch (an MLflow
        # create_run) costs 1 query instead of 5, a 20,000-event batch of new runs 1
        # instead of 20. The cache vouches for a run whose state or one of whose
        # producers' it holds: it holds only what was read back or committed (a failed
        # batch drops the partition's cache).
        known = {
            e.env.run_id
            for e in events
            if state.runs.get(e.env.run_id) is not None
            or state.producers.get((e.env.run_id, e.env.producer_id)) is not None
        }
        unknown = sorted({run for run, _ in pairs} - known)
        stored = set(known)
        for runs in _chunks(unknown):
            stored.update(
                r["run_id"]
                for r in self._q(
                    "SELECT DISTINCT run_id FROM {db}.events WHERE run_id IN %(runs)s",
                    runs=list(runs),
                )
            )
        fresh = set(unknown) - stored
        state.fresh = frozenset(fresh)
        pairs = [p for p in pairs if p[0] in stored]
        for chunk in _chunks(pairs, _SEEN_CHUNK):
            for r in self._q(
                "SELECT event_id, min(log_offset) AS o FROM {db}.events"
                " WHERE run_id IN %(runs)s AND event_id IN %(ids)s"
                " GROUP BY event_id",
                runs=sorted({run for run, _ in chunk}),
                ids=[eid for _, eid in chunk],
            ):
                state.seen[r["event_id"]] = int(r["o"])
        need_runs = sorted(
            {
                e.env.run_id
                for e in events
                if e.name in RUN_STATE_EVENTS and e.env.run_id not in state.runs
            }
        )
        for chunk in _chunks([r for r in need_runs if r not in fresh]):
            for r in self._q(
                "SELECT * FROM {db}.run_versions WHERE run_id IN %(k)s AND"
                " version < %(f)s ORDER BY version DESC LIMIT 1 BY run_id",
                k=list(chunk),
                f=first,
            ):
                state.runs[r["run_id"]] = _build(RunState, r)
        for k in need_runs:
            state.runs.setdefault(k, None)
        need_exp = sorted(
            {
                e.env.experiment_id
                for e in events
                if e.name.startswith("Experiment") and e.env.experiment_id not in state.experiments
            }
        )
        for chunk in _chunks(need_exp):
            for r in self._q(
                "SELECT * FROM {db}.experiment_versions WHERE experiment_id IN"
                " %(k)s AND version < %(f)s AND log_partition = %(p)s"
                " ORDER BY version DESC LIMIT 1 BY experiment_id",
                k=list(chunk),
                f=first,
                p=state.partition,
            ):
                r["tags"] = dict(r["tags"])
                state.experiments[r["experiment_id"]] = _build(ExperimentState, r)
        for k in need_exp:
            state.experiments.setdefault(k, None)
        self._load_names(state, events, first)
        self._load_producers(state, events, first, fresh)
        self._load_params(state, events, first, fresh)
        self._load_artifacts(state, events, first, fresh)

    def _load_names(self, state: PartitionState, events: Sequence[Decoded], first: int) -> None:
        state.experiment_names = {}
        names = sorted(
            {(e.env.project, str(e.record.get("name"))) for e in events if e.name in NAME_EVENTS}
        )
        if not names:
            return
        rows = self._q(
            "SELECT project, experiment_id, argMax(name, version) AS name,"
            " argMax(deleted, version) AS deleted FROM {db}.experiment_versions"
            " WHERE project IN %(pr)s AND (log_partition != %(p)s OR version < %(f)s)"
            " GROUP BY project, experiment_id",
            pr=sorted({p for p, _ in names}),
            p=state.partition,
            f=first,
        )
        wanted = set(names)
        for r in rows:
            k = (r["project"], r["name"])
            if k in wanted and not r["deleted"]:
                held = state.experiment_names.get(k)
                eid = str(r["experiment_id"])
                state.experiment_names[k] = eid if held is None else min(held, eid)

    def _load_producers(
        self, state: PartitionState, events: Sequence[Decoded], first: int, fresh: set[str]
    ) -> None:
        need = sorted(
            {
                (e.env.run_id, e.env.producer_id)
                for e in events
                if e.env.run_id and e.env.producer_id
            }
            - state.producers.keys()
        )
        runs = sorted({r for r, _ in need} - fresh)
        for chunk in _chunks(runs):
            for r in self._q(
                "SELECT * FROM {db}.producer_versions WHERE run_id IN %(k)s AND"
                " version < %(f)s ORDER BY version DESC LIMIT 1 BY run_id,"
                " producer_id",
                k=list(chunk),
                f=first,
            ):
                k = (r["run_id"], r["producer_id"])
                if k not in state.producers:
                    state.producers[k] = _build(ProducerState, r)
        for k in need:
            state.producers.setdefault(k, None)

    def _load_params(
        self, state: PartitionState, events: Sequence[Decoded], first: int, fresh: set[str]
    ) -> None:
        runs = sorted(
            {e.env.run_id for e in events if e.name in PARAM_EVENTS} - state.params.keys()
        )
        for run in runs:
            state.params[run] = {}
        for chunk in _chunks([r for r in runs if r not in fresh]):
            for r in self._q(
                "SELECT run_id, key, value, event_id FROM {db}.params WHERE run_id"
                " IN %(k)s AND log_offset < %(f)s ORDER BY log_offset"
                " LIMIT 1 BY run_id, key",
                k=list(chunk),
                f=first,
            ):
                state.params[r["run_id"]][r["key"]] = ParamState(r["value"], r["event_id"])

    def _load_artifacts(
        self, state: PartitionState, events: Sequence[Decoded], first: int, fresh: set[str]
    ) -> None:
        need = sorted(
            {(e.env.run_id, str(e.record.get("key"))) for e in events if e.name in ARTIFACT_EVENTS}
            - state.artifacts.keys()
        )
        runs = sorted({r for r, _ in need} - fresh)
        for chunk in _chunks(runs):
            for r in self._q(
                "SELECT run_id, key, event_id, deleted FROM {db}.artifact_versions"
                " WHERE run_id IN %(k)s AND version < %(f)s ORDER BY version DESC"
                " LIMIT 1 BY run_id, key",
                k=list(chunk),
                f=first,
            ):
                k = (r["run_id"], r["key"])
                if k not in state.artifacts:
                    state.artifacts[k] = ArtifactState(r["event_id"], int(r["deleted"]))
        for k in need:
            state.artifacts.setdefault(k, None)

    # ---- write -------------------------------------------------------------------------
    def write(
        self,
        topic: str,
        partition: int,
        first: int,
        last: int,
        out: Projected,
        fence: Callable[[], None] | None = None,
    ) -> float:
        """Insert every table of the batch (one columnar insert each); return seconds.
        `fence` (raises PartitionTaken to stop a zombie) runs before each insert on one
        client; with `writers`, once before the inserts are shared out, and for a large
        batch before each insert of the main client's share as well."""
        t0 = time.perf_counter()
        base = f"{topic}:{partition}:{first}-{last}"
        check = fence or (lambda: None)
        inserts: list[_Insert] = []

        def add(table: str, rows: int, data: Callable[[], pa.Table], **extra: Any) -> None:
            token = {"insert_deduplication_token": f"{base}:{table}", **extra}
            inserts.append(_Insert(f"{self.database}.{table}", rows, data, token))

        for table, arrow in (("metric_points", out.points), ("metric_rollup", out.rollup)):
            if arrow is not None and arrow.num_rows:
                add(table, arrow.num_rows, functools.partial(_as_is, arrow), **_UNIQUE_ROWS_INSERT)
        for table in ("metric_summary", *out.rows.tables()):
            if out.rows.count(table):
                add(table, out.rows.count(table), functools.partial(out.rows.arrow, table))

        def run() -> None:
            if not self.writers or len(inserts) < 2:
                for ins in inserts:
                    check()
                    self.client.insert_arrow(ins.table, ins.data(), settings=ins.settings)
            else:
                check()
                small = sum(ins.rows for ins in inserts) <= PARALLEL_INSERT_ROWS
                self._insert_side_by_side(inserts, (lambda: None) if small else check)

        self._guard(run)
        return time.perf_counter() - t0

    def _insert_side_by_side(self, inserts: Sequence[_Insert], check: Callable[[], None]) -> None:
        """`inserts` spread over this sink's clients, each client's share in turn (`check`
        before each insert of the main client's share: the fence queries that client, in
        this thread); returns once every one has ended, raising the first failure, the
        main client's first (a batch is redone only when none of its inserts still runs).
        The shares are balanced by rows, largest insert first: a catch-up batch's
        metric_points insert (~150 ms for 300 k points) runs alone on one client while its
        ~10 other tables (~60 ms together) go in turn on another; its memory in flight is
        then that insert's and one small table's."""
        clients = (self.client, *self.writers)
        shares: list[list[_Insert]] = [[] for _ in clients]
        load = [0] * len(clients)
        for ins in sorted(inserts, key=lambda i: -i.rows):
            i = load.index(min(load))
            shares[i].append(ins)
            load[i] += ins.rows + _INSERT_OVERHEAD_ROWS

        def share(i: int) -> None:
            for ins in shares[i]:
                if i == 0:
                    check()
                clients[i].insert_arrow(ins.table, ins.data(), settings=ins.settings)

        n = sum(1 for sh in shares if sh)
        futures = [_INSERTS.submit(share, i) for i in range(1, n)]
        errors: list[BaseException] = []
        try:
            share(0)
        except Exception as exc:  # noqa: BLE001 - raised once the others ended
            errors.append(exc)
        for f in futures:
            failed = f.exception()
            if failed is not None:
                errors.append(failed)
        if errors:
            raise errors[0]

    # ---- run_page: search documents (migration 0003) -------------------------------------
    def refresh_pages(self, keys: Sequence[tuple[str, str, str]] | None = None) -> None:
        """Rewrite the `run_page` documents of `keys` (project, experiment_id, run_id), or of
        every run, from `run_search FINAL` (through the `run_page_source` view). A cache:
        reads use a document only while its `touches` equals the run's, so this may run at
        any time after a batch (not inside its commit) and may be repeated."""
        insert = (
            f"INSERT INTO {self.database}.run_page SELECT project, experiment_id, run_id,"
            f" touches, doc FROM {self.database}.run_page_source"
        )
        if keys is None:
            self.client.command(insert)
            return
        for chunk in _chunks(sorted(set(keys))):
            # the cross product of the three lists may name more rows: those get theirs too
            self.client.command(
                insert + " WHERE project IN {p:Array(String)}"
                " AND experiment_id IN {e:Array(String)} AND run_id IN {r:Array(String)}",
                parameters={
                    "p": sorted({k[0] for k in chunk}),
                    "e": sorted({k[1] for k in chunk}),
                    "r": [k[2] for k in chunk],
                },
            )

    def compact_search(self) -> None:
        """Merge `run_search` into one part (a no-op when it is one part already). Search
        reads it with FINAL, which merges every key range that several parts share: over
        100 k runs in 3 parts the page-key query took 77 ms, 20 ms once merged (0.7 s of
        OPTIMIZE); ClickHouse's own merges leave a few parts of very different sizes."""
        self.client.command(
            f"OPTIMIZE TABLE {self.database}.run_search FINAL",
            settings={"optimize_skip_merged_partitions": 1},
        )

    def _guard(self, fn: Any) -> None:
        try:
            fn()
        except (ReadModelWriteFailed, PartitionTaken):
            raise
        except Exception as exc:
            raise ReadModelWriteFailed(f"{self.database}: {type(exc).__name__}: {exc}") from exc

    # ---- read-model pointer (blue/green) -----------------------------------------------
    def active_database(self) -> str:
        """The database reads should use (this one unless a replay switched the pointer)."""
        rows = self._q("SELECT database FROM {db}.read_models_pointer FINAL WHERE name = 'current'")
        return str(rows[0]["database"]) if rows else self.database

    def switch_to(self, database: str) -> None:
        check_identifier(database)
        self.client.insert(
            f"{self.database}.read_models_pointer",
            [["current", database, dt.datetime.now(dt.timezone.utc)]],
            column_names=["name", "database", "switched_at"],
        )
