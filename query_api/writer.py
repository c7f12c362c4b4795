"""Writes of one caller: build envelopes, encode with `schemas`, produce, remember the marks.

Rules: every event is encoded before anything is sent (a contract violation is a 400 naming
the field, and nothing of the batch leaves); the events carry the caller's project; once
Kafka acknowledged them, the offsets are remembered for the run and experiment they touch
(read-your-writes of the MLflow routes) and returned as a consistency token.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from query_api.consistency import Positions, WriteMarks, encode_token, merge
from query_api.errors import BadRequest
from query_api.eventlog import EventLog, Record, Stamp
from schemas import Envelope, InvalidEvent, encode, partition_key


class Writer:
    def __init__(self, log: EventLog, stamp: Stamp, marks: WriteMarks, project: str) -> None:
        self.log = log
        self.stamp = stamp
        self.marks = marks
        self.project = project

    def envelope(
        self,
        experiment_id: str,
        run_id: str | None = None,
        *,
        user: str | None = None,
        occurred_at: int | None = None,
    ) -> Envelope:
        return self.stamp.envelope(
            project=self.project,
            experiment_id=experiment_id,
            run_id=run_id,
            user=user,
            occurred_at=occurred_at,
        )

    async def emit(self, events: Sequence[Any], extra_keys: Iterable[str] = ()) -> str:
        """Encode and produce `events` (all or none); the consistency token of the write.

        The offsets are remembered under each event's keys (`event_keys`) and `extra_keys`.
        """
        records: list[Record] = []
        keys: set[str] = set(extra_keys)
        for event in events:
            try:
                records.append((partition_key(event), encode(event)))
            except InvalidEvent as exc:
                raise BadRequest(f"invalid {type(event).__name__}: {exc}") from exc
            keys.update(event_keys(event.envelope.experiment_id, event.envelope.run_id))
        return await self.produce(records, keys)

    async def produce(self, records: Sequence[Record], keys: Iterable[str]) -> str:
        """Produce already encoded records; remember their offsets under `keys`."""
        if not records:
            return encode_token({})
        positions = await self.log.send(records)
        self.marks.record(keys, positions)
        return encode_token(merge({}, positions))


def event_keys(experiment_id: str, run_id: str | None) -> list[str]:
    """The mark keys of an event: its run (or its experiment) and its experiment's runs."""
    own = run_key(run_id) if run_id else experiment_key(experiment_id)
    return [own, experiment_runs_key(experiment_id)]


def run_key(run_id: str) -> str:
    """Marks of one run's events (run get, metric history, param checks wait for these)."""
    return f"r:{run_id}"


def experiment_key(experiment_id: str) -> str:
    """Marks of the experiment's own events (not its runs'): experiment get / create."""
    return f"e:{experiment_id}"


def experiment_name_key(project: str, name: str) -> str:
    """Marks of the creation / renaming of an experiment to `name` (get-by-name waits)."""
    return f"n:{project}\x00{name}"


def experiment_runs_key(experiment_id: str) -> str:
    """Marks of every event of the experiment and its runs: run search waits for these."""
    return f"x:{experiment_id}"


@dataclass
class RunEntry:
    """What this process knows about a live run; `params` are those it saw or wrote."""

    experiment_id: str
    params: dict[str, str] | None  # None: unknown (read them from the store)
    #: the run as created here, with the renames and status changes written here since
    #: (what `runs/create` and `runs/update` answer with, without a read)
    created: dict[str, Any] | None = None


class RunDirectory:
    """(project, run id) -> `RunEntry` of runs known to be live (LRU; ids never move).

    A run created through this process starts with an empty, complete param ledger, so its
    param-conflict check (MLflow: params are immutable) needs no read; for other runs the
    ledger is filled from the store once. Params written around this process (the SDK, a
    second API replica) are still resolved by the processors (first in log order wins).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], RunEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, project: str, run_id: str) -> RunEntry | None:
        with self._lock:
            return self._items.get((project, run_id))

    def put(self, project: str, run_id: str, entry: RunEntry) -> None:
        with self._lock:
            self._items[(project, run_id)] = entry
            self._items.move_to_end((project, run_id))
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def drop(self, project: str, run_id: str) -> None:
        with self._lock:
            self._items.pop((project, run_id), None)


class CheckedExperiments:
    """Experiments as the checks of writes read them, held for `ttl_s` seconds (LRU).

    A run create, and every write to an experiment, first checks that the experiment exists
    (and for a run create, that it is active): one read of `experiments`, ~3 ms on chDB but
    6-12 ms in `runstream serve` while its worker writes, and concurrent requests take their
    turn on chDB. An entry is used only while this process's marks of the experiment
    (`WriteMarks.of`) are the ones it was read with: once this process writes to the
    experiment (delete, restore, rename, tags), the next check waits for that write and reads
    again (read-your-writes). A change by another writer (the SDK, a second API replica) is
    seen by the checks at most `ttl_s` after the read model shows it. `ttl_s` = 0: every
    check reads."""

    def __init__(
        self,
        ttl_s: float,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity
        self._clock = clock
        self._items: OrderedDict[Hashable, tuple[float, Positions, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, marks: Positions) -> dict[str, Any] | None:
        """The experiment held under `key` if read within `ttl_s` with these `marks`."""
        with self._lock:
            held = self._items.get(key)
            if held is None:
                return None
            expires, read_with, experiment = held
            if self._clock() >= expires or read_with != marks:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return dict(experiment)

    def put(self, key: Hashable, marks: Positions, experiment: dict[str, Any]) -> None:
        """Hold `experiment`, read after this process's writes `marks` of it were projected."""
        if self.ttl_s <= 0:
            return
        with self._lock:
            self._items[key] = (self._clock() + self.ttl_s, dict(marks), dict(experiment))
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
