"""Read-your-writes: consistency tokens, the API's own write marks, and the bounded wait.

Rules:
- A token is an opaque string `c1.<base64url(JSON {"partition": offset, ...})>`: the highest
  offset of each partition a write reached. A read that presents one waits until the
  projections have passed every offset of it (`projection_position`, `state = 1`,
  `max(last_offset) >= offset`), at most `timeout_s`, then fails with `ConsistencyTimeout`
  (504) - the write stays durable; retrying the read is safe.
- The `mlflow` client cannot carry a token: every write of this process is remembered per run
  and per experiment (`WriteMarks`, bounded LRU), and the MLflow routes wait for the marks of
  what they read. Marks live in this process only: with several API replicas behind a load
  balancer, read-your-writes holds per replica (sticky sessions, or pass tokens).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

from query_api.errors import BadRequest, ConsistencyTimeout
from query_api.repository import ReadStore

Positions = dict[int, int]
_PREFIX = "c1."
#: the longest pause between two reads of the projection position while a read waits: a
#: position read is one small query (~3 ms), and a batch is projected ~20 ms after its
#: records arrive (worker `batch_linger`), so 200 ms steps added up to ~150 ms of waiting
_MAX_POLL_S = 0.05
#: with `Ticks` (the worker runs in this process) a wait wakes on every committed batch; it
#: still re-reads the position this often (a replay's switch, another writer)
_TICKED_POLL_S = 0.25
HEADER = "X-Runstream-Consistency"


def merge(into: Positions, positions: Iterable[tuple[int, int]]) -> Positions:
    for partition, offset in positions:
        if offset > into.get(partition, -1):
            into[partition] = offset
    return into


def encode_token(positions: Mapping[int, int]) -> str:
    body = json.dumps({str(p): o for p, o in sorted(positions.items())}, separators=(",", ":"))
    return _PREFIX + base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode_token(token: str) -> Positions:
    """The positions of a token; BadRequest (400) for anything this API did not issue."""
    if not token.startswith(_PREFIX) or len(token) > 8_192:
        raise BadRequest("consistency token not issued by this API")
    raw = token[len(_PREFIX) :]
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        positions = {int(p): int(o) for p, o in data.items()}
    except (ValueError, AttributeError, TypeError, binascii.Error, RecursionError) as exc:
        raise BadRequest("consistency token not issued by this API") from exc
    if any(p < 0 or o < 0 for p, o in positions.items()):
        raise BadRequest("consistency token not issued by this API")
    return positions


class WriteMarks:
    """The latest offsets this process wrote, per key (run id / experiment id), LRU-bounded."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._marks: OrderedDict[str, Positions] = OrderedDict()
        self._latest: Positions = {}
        self._lock = threading.Lock()

    def record(self, keys: Iterable[str], positions: Iterable[tuple[int, int]]) -> None:
        pos = list(positions)
        with self._lock:
            merge(self._latest, pos)
            for key in keys:
                merge(self._marks.setdefault(key, {}), pos)
                self._marks.move_to_end(key)
            while len(self._marks) > self.capacity:
                self._marks.popitem(last=False)

    def latest(self) -> Positions:
        """The highest offset this process wrote, per partition."""
        with self._lock:
            return dict(self._latest)

    def of(self, keys: Iterable[str]) -> Positions:
        out: Positions = {}
        with self._lock:
            for key in keys:
                merge(out, self._marks.get(key, {}).items())
        return out


class Ticks:
    """A counter that wakes its waiters when it moves, and the positions the in-process
    worker projected. `runstream serve` publishes after each batch its worker commits, so a
    read waiting for its write sees it projected at once, without reading the projection
    position (a query on the chDB the worker is writing to: ~5 ms, 20-50 ms while the
    worker's next batch or its search documents are being written)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0
        #: (database, partition -> last offset projected there by the worker): replaced
        #: whole on each publish, reset when the worker writes another database
        self._published: tuple[str, Positions] = ("", {})
        #: the offsets each blocked wait wants (`awaiting`), by its id
        self._waits: dict[int, Mapping[int, int]] = {}
        self._next_wait = 0

    @property
    def count(self) -> int:
        return self._count

    def bump(self) -> None:
        with self._cond:
            self._count += 1
            self._cond.notify_all()

    def publish(self, database: str, next_offsets: Mapping[int, int]) -> None:
        """A batch was committed into `database`; `next_offsets`: the worker's next offset
        to project per partition (everything before it is projected there). Offsets
        projected into one database never go back, so what was published stays true until
        the worker writes another database (a replay's switch)."""
        with self._cond:
            db, known = self._published
            base = dict(known) if db == database else {}
            self._published = (database, merge(base, ((p, o - 1) for p, o in next_offsets.items())))
            self._count += 1
            self._cond.notify_all()

    def projected(self, database: str) -> Positions:
        """What the worker published for `database` (read-only; {} for another one)."""
        db, known = self._published
        return known if db == database else {}

    @contextmanager
    def awaiting(self, wanted: Mapping[int, int]) -> Iterator[None]:
        """A read blocks, waiting for `wanted`, while inside."""
        with self._cond:
            key = self._next_wait = self._next_wait + 1
            self._waits[key] = wanted
        try:
            yield
        finally:
            with self._cond:
                self._waits.pop(key, None)

    def awaited(self, fetched: Mapping[int, int]) -> bool:
        """Whether a read waits for nothing beyond what the worker projected or `fetched`
        (the last offset fetched per partition): the worker then commits what it holds
        without lingering for more records (`ProjectionWorker.awaited`)."""
        with self._cond:
            if not self._waits:
                return False
            _, done = self._published
            return any(
                all(o <= max(done.get(p, -1), fetched.get(p, -1)) for p, o in wanted.items())
                for wanted in self._waits.values()
            )

    def wait_past(self, seen: int, timeout: float) -> None:
        """Return once the count differs from `seen`, or after `timeout` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._count != seen, timeout)


class Projections:
    """Reads how far the projections have gone and waits for a position (bounded)."""

    def __init__(
        self,
        store: ReadStore,
        topic: str,
        timeout_s: float,
        poll_s: float = 0.02,
        ticks: Ticks | None = None,
        ticked_poll_s: float = _TICKED_POLL_S,
    ):
        self.store = store
        self.topic = topic
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        #: set when the projection worker runs in this process and bumps it per batch
        self.ticks = ticks
        self.ticked_poll_s = ticked_poll_s
        #: (database generation, positions read there): within one generation the projected
        #: offsets only grow, so a wait for offsets at or below them needs no read (the marks
        #: of a run or experiment written long ago would otherwise cost every read of it a
        #: position query: ~5-17 ms on a busy chDB, and the table grows by a row per batch)
        self._known: tuple[tuple[str, str] | None, Positions] = (None, {})

    def position(self) -> Positions:
        """Per partition, the last offset the projections have fully written."""
        rows = self.store.rows(
            f"SELECT log_partition, max(last_offset) FROM {self.store.db}.projection_position "
            "FINAL WHERE topic = {t:String} AND state = 1 GROUP BY log_partition",
            {"t": self.topic},
        )
        return {int(p): int(o) for p, o in rows}

    def wait(self, wanted: Mapping[int, int], timeout_s: float | None = None) -> None:
        """Return once every wanted offset is projected; ConsistencyTimeout after the bound."""
        if not wanted:
            return
        generation = self.store.generation
        known_at, known = self._known
        if generation is not None and known_at == generation and _reached(known, wanted):
            return
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        if self.ticks is None:
            self._wait(wanted, generation, deadline)
            return
        with self.ticks.awaiting(wanted):
            self._wait(wanted, generation, deadline)

    def _wait(
        self, wanted: Mapping[int, int], generation: tuple[str, str] | None, deadline: float
    ) -> None:
        pause = self.poll_s
        # as if just read: while the worker publishes every wanted partition, the first
        # read waits for ticked_poll_s too
        read_at = time.monotonic()
        while True:
            seen = self.ticks.count if self.ticks is not None else 0
            published = self._published(generation)
            if _reached(published, wanted):
                return
            now = time.monotonic()
            if wanted.keys() <= published.keys() and now - read_at < self.ticked_poll_s:
                # the worker here projects every wanted partition and publishes each
                # batch: the next tick brings the news (read anyway every ticked_poll_s)
                have = published
            else:
                have, read_at = self.position(), now
                if generation is not None and self.store.generation == generation:
                    known_at, known = self._known
                    base = known if known_at == generation else {}
                    self._known = (generation, merge(dict(base), have.items()))
                if _reached(have, wanted):
                    return
            if time.monotonic() >= deadline:
                behind = {p: o for p, o in wanted.items() if have.get(p, -1) < o}
                raise ConsistencyTimeout(
                    f"projections did not reach {behind} within the consistency timeout "
                    f"(at { ({p: have.get(p, -1) for p in behind}) }); the write is durable, "
                    "retry the read"
                )
            if self.ticks is not None:
                self.ticks.wait_past(seen, min(self.ticked_poll_s, deadline - time.monotonic()))
                continue
            time.sleep(pause)
            pause = min(pause * 1.5, _MAX_POLL_S)

    def _published(self, generation: tuple[str, str] | None) -> Positions:
        if self.ticks is None or generation is None:
            return {}
        return self.ticks.projected(generation[0])


def _reached(have: Mapping[int, int], wanted: Mapping[int, int]) -> bool:
    return all(have.get(p, -1) >= o for p, o in wanted.items())
