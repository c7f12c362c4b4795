"""`Run`: the handle a training job logs through. Every call only appends to memory.

Rule: a logging call validates its input synchronously (raising a `producers.errors`
exception that names the argument) and then only appends to the engine's memory buffer; it
never waits for the network. `log_metric` appends six numbers to preallocated columns under
one lock (~1 µs). Failures of the background engine surface on the next call.

Ownership: the process that created the run (or resumed it, or calls `end()` explicitly)
owns its status; every process (rank) writing to it is a producer, announced by
ProducerJoined and closed by ProducerExited carrying how that producer ended.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from producers import validation as v
from producers.alerts import AlertBook
from producers.columns import Columns, KeyTable
from producers.config import ClientConfig
from producers.console import ConsoleCapture
from producers.emit import Emitter, MetricBatch, encode_event, now_ms
from producers.engine import Engine
from producers.errors import InvalidArgument, RunStateError, ValueTooLong
from producers.run_eval import EvalMixin
from producers.run_media import MediaMixin
from producers.run_meta import MetaMixin
from schemas import events as ev

FINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
_time_ns = time.time_ns
terminating = threading.Event()  # set by the SIGTERM handler (session): runs end KILLED
MAX_EVENT_BYTES = 900 * 1024  # below Kafka's default 1 MiB message limit


class Run(MetaMixin, EvalMixin, MediaMixin):
    """One run as seen by this process. Create it with `start_run()` / `init()`."""

    def __init__(
        self,
        engine: Engine,
        emitter: Emitter,
        *,
        name: str,
        experiment: str,
        owner: bool,
        rank: int | None,
        world_size: int | None,
        artifacts_factory: Any = None,
        config: ClientConfig | None = None,
    ) -> None:
        self._engine = engine
        self._emit = emitter
        self.id = emitter.run_id
        self.name = name
        self.experiment = experiment
        self.experiment_id = emitter.experiment_id
        self.project = emitter.project
        self.owner = owner
        self.rank = rank
        self.world_size = world_size
        self.status = "RUNNING"
        self._ended = False
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._attributes: dict[str, str] = {}
        self._notes: str | None = None
        # metric state: slot = one (key, split) series of this run
        self._table = KeyTable()
        self._slots: dict[Any, int] = {}
        self._slot_key = array("H")
        self._slot_split = array("B")
        self._slot_last = array("q")
        self._cols = Columns()
        self._max_per_event = engine.options.max_points_per_event
        self._alerts = AlertBook()
        self._alert_keys: set[str] = set()
        self._artifacts_factory = artifacts_factory
        self._artifact_store = None
        self._stored_keys: set[str] = set()
        self._side_threads: list[Any] = []
        self.config = config
        self._console: ConsoleCapture | None = None
        self._lock = threading.Lock()  # cold-path state (params, tags) of this run
        engine.register(self)

    def __repr__(self) -> str:
        return f"Run(id={self.id!r}, name={self.name!r}, status={self.status!r})"

    # ---- context manager --------------------------------------------------------------
    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ended:
            return
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED", reason="KeyboardInterrupt")
        elif issubclass(exc_type, SystemExit):
            code = getattr(exc, "code", 0)
            self.end("FINISHED" if code in (0, None) else "FAILED", reason=f"SystemExit({code})")
        else:
            self.end("FAILED", reason=f"{exc_type.__name__}: {exc}"[:4000])

    # ---- internals ----------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._ended:
            raise RunStateError(f"run {self.id} has ended; start a new run or resume it")
        if self._engine.error is not None:
            self._engine.check()

    def _event(self, cls: Any, *, experiment_level: bool = False, **fields: Any) -> None:
        """Build, encode (raising at the call site) and enqueue one non-metric event."""
        with self._engine.lock:
            self.rotate_locked()
            self._enqueue_locked(cls, experiment_level, fields)

    def _enqueue_locked(self, cls: Any, experiment_level: bool, fields: dict[str, Any]) -> None:
        eng = self._engine
        seq = eng.next_seq()
        try:
            env = self._emit.envelope(seq, run_id=not experiment_level)
            item = encode_event(cls(envelope=env, **fields))
            if len(item.payload) > MAX_EVENT_BYTES:
                raise ValueTooLong(
                    cls.__name__,
                    f"{len(item.payload)} bytes encoded, the limit is {MAX_EVENT_BYTES}",
                )
        except BaseException:
            eng.rewind_seq(seq)
            raise
        eng.add_pending(item)

    def rotate_locked(self) -> None:
        """Close the open metric batch (and console text) into the pending list.

        Called under engine.lock, by the sealer and before every non-metric event, so a
        run's events keep their call order.
        """
        cols = self._cols
        if len(cols.values):
            self._cols = Columns()
            env = self._emit.envelope(self._engine.next_seq())
            if self._engine.add_pending(MetricBatch(cols, self._table, env), len(cols.values)):
                self._engine.spill_requested = True
        if self._console is not None:
            try:
                for stream, text, offset in self._console.drain():
                    self._enqueue_locked(
                        ev.ConsoleLogged,
                        False,
                        {
                            "stream": ev.ConsoleStream(stream.upper()),
                            "text": text,
                            "offset": offset,
                        },
                    )
            except Exception as exc:  # noqa: BLE001 - kept, raised on the next call
                self._engine.error = self._engine.error or exc

    def drain_console(self) -> None:
        with self._engine.lock:
            self.rotate_locked()

    def _new_slot(self, key: str, split: str | None) -> int:
        v.check_key(key, "key")
        if split is not None:
            v.check_key(split, "split")
        with self._engine.lock:
            slot_id = key if split is None else (key, split)
            slot = self._slots.get(slot_id)
            if slot is None:
                slot = len(self._slot_last)
                self._slot_key.append(self._table.key(key))
                self._slot_split.append(self._table.split(split or ""))
                self._slot_last.append(-1)
                self._slots[slot_id] = slot
            return slot

    # ---- metrics (hot path) -------------------------------------------------------------
    def log_metric(
        self,
        key: str,
        value: float,
        step: int | None = None,
        epoch: int | None = None,
        timestamp: Any = None,
        split: str | None = None,
    ) -> None:
        """Log one point. Never blocks on the network.

        Args:
            key: metric name (letters, digits, `_ - . / ` and space; <= 250 chars).
            value: a number; NaN and +/-Inf are stored as they are.
            step: int64 step; when None, the previous step of this (key, split) + 1,
                starting at 0 (observation style).
            epoch: optional epoch number (>= 0).
            timestamp: seconds since the epoch or a datetime; default now.
            split: e.g. "train", "val", "test"; None = no split.
        """
        if self._ended or self._engine.error is not None:
            if self._ended and terminating.is_set():
                return  # SIGTERM: the run was ended KILLED; the process exits shortly
            self._check_open()
        slot = self._slots.get(key if split is None else (key, split))
        if slot is None:
            slot = self._new_slot(key, split)
        if type(value) is not float:
            value = v.to_metric_value(value)
        ts = _time_ns() // 1_000_000 if timestamp is None else v.to_timestamp_ms(timestamp)
        ep = -1 if epoch is None else v.check_int64(epoch, "epoch", minimum=0)
        if step is not None and type(step) is not int:
            step = v.check_int64(step, "step")
        eng = self._engine
        with eng.lock:
            last = self._slot_last
            if step is None:
                step = last[slot] + 1
            try:
                last[slot] = step  # an int64 array: out-of-range steps fail here, first
            except OverflowError:
                raise InvalidArgument(
                    "step", f"{v.show(step)} is outside the int64 range"
                ) from None
            c = self._cols
            c.key_idx.append(self._slot_key[slot])
            c.split_idx.append(self._slot_split[slot])
            c.steps.append(step)
            c.epochs.append(ep)
            c.timestamps.append(ts)
            c.values.append(value)
            if len(c.values) >= self._max_per_event:
                self.rotate_locked()
        if eng.spill_requested:
            eng.spill()
        if self._alert_keys and key in self._alert_keys:
            self._check_alerts(key, split, value, step)

    def log_metrics(
        self,
        metrics: Mapping[str, Any],
        step: int | None = None,
        epoch: int | None = None,
        timestamp: Any = None,
        split: str | None = None,
    ) -> None:
        """Log several points sharing step/epoch/timestamp/split (see `log_metric`).

        All or nothing: every key and value is checked before the first point is logged, so
        a bad one raises (naming it) and logs none of the call's points."""
        v.check_mapping(metrics, "metrics")
        # one shared timestamp, as seconds (float seconds hold milliseconds exactly)
        seconds = (now_ms() if timestamp is None else v.to_timestamp_ms(timestamp)) / 1000
        if step is not None and type(step) is not int:
            step = v.check_int64(step, "step")
        if epoch is not None:
            v.check_int64(epoch, "epoch", minimum=0)
        if split is not None:
            v.check_key(split, "split")
        checked: list[tuple[str, float]] = []
        for key, value in metrics.items():
            if (key if split is None else (key, split)) not in self._slots:
                v.check_key(key, f"metrics key {v.show(key)}")
            if type(value) is not float:
                value = v.to_metric_value(value, f"metrics[{v.show(key)}]")
            checked.append((key, value))
        for key, value in checked:
            self.log_metric(key, value, step, epoch, seconds, split)

    def _check_alerts(self, key: str, split: str | None, value: float, step: int) -> None:
        for firing in self._alerts.evaluate(key, split, value, step):
            self._fire(firing)

    # ---- lifecycle ----------------------------------------------------------------------
    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait (bounded) until everything logged so far is delivered; False on timeout."""
        self._engine.check()
        ok = self._engine.flush(timeout)
        self._engine.check()
        return ok

    def end(
        self,
        status: str = "FINISHED",
        *,
        reason: str | None = None,
        exit_code: int | None = None,
        timeout: float | None = 30.0,
        run_status: bool | None = None,
    ) -> bool:
        """End this process's part of the run and, if it owns the run, the run's status.

        Args:
            status: FINISHED, FAILED or KILLED.
            reason: why (e.g. the exception text); recorded on both events.
            exit_code: process exit code, if known.
            timeout: bounded wait for delivery (None = wait until delivered).
            run_status: also set the run's status (RunStatusChanged) — default: only when
                this process owns the run (created or resumed it). A non-owner rank passes
                True to end the whole run explicitly.

        Returns:
            True when every event was delivered within `timeout` (the spool keeps the rest
            either way). Calling end() twice is a no-op.
        """
        if self._ended:
            return True
        if status not in FINAL_STATUSES:
            raise InvalidArgument("status", f"{status!r} is not one of {FINAL_STATUSES}")
        for t in self._side_threads:
            t.stop()
        reason = reason[:4000] if reason else None
        self._event(
            ev.ProducerExited, status=ev.RunStatus(status), reason=reason, exit_code=exit_code
        )
        if self.owner if run_status is None else run_status:
            self._event(ev.RunStatusChanged, status=ev.RunStatus(status), reason=reason)
        self._ended = True
        self.status = status
        from producers import session

        session.forget(self)
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = self._engine.flush(timeout)
        self._engine.unregister(self)
        if session.release_engine(self._engine):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ok = self._engine.close(left if ok else 0.0) and ok
        self._engine.check()  # a background failure is raised, not lost
        return ok

    finish = end
    end_run = end

    def clone(
        self, *, experiment: str | None = None, name: str | None = None, **kwargs: Any
    ) -> Run:
        """A new run with the params, tags and notes this process logged here."""
        from producers import session

        return session.clone(self, experiment=experiment, name=name, **kwargs)

    @property
    def notes(self) -> str | None:
        return self._notes

    @property
    def params(self) -> dict[str, str]:
        """Params this process logged (as stored: strings)."""
        return dict(self._params)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    @property
    def engine(self) -> Engine:
        return self._engine

    def child_env(self) -> dict[str, str]:
        """Environment for worker processes that should log to this run."""
        return {
            "RUNSTREAM_RUN_ID": self.id,
            "RUNSTREAM_EXPERIMENT": self.experiment,
            "RUNSTREAM_PROJECT": self.project,
        }
