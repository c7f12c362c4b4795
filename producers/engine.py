"""The background engine: memory buffer -> write-ahead spool -> transport. Never blocks logging.

Pipeline (one engine per process and configuration; many runs may share it)::

    log_*() ──append──► memory (Columns per run, encoded events) ──seal──► spool segment
                                                                            │ (write, fsync)
                         sender thread (asyncio) ◄──read back──────────────┘
                           └─ transport.send() ──ack──► cursor.commit() ──► segment deleted

- Sealing (every `linger_s`, on `flush()`, or inline in the logging thread when the memory
  buffer reaches `max_buffer_points`: spill, not block, not drop) assigns nothing new: seq
  numbers are given when items enter the pending list, so the spool order is the seq order.
- The sender reads frames back from the spool (page cache) up to the writer's position, so
  live sending, resending after an outage, and recovery after a crash are one code path.
  Transport failures are retried with capped exponential backoff from the last
  acknowledged position; a resend is harmless (events carry their own ids).
- Durability starts when a frame is written to the spool (survives a crash of the process,
  SIGKILL included); after the next fsync it also survives an OS crash / power loss; after
  the transport's ack (Kafka acks=all) it is in the log. A SIGKILL loses exactly what was
  still in memory: at most `linger_s` of logging (default 0.2 s), or up to
  `max_buffer_points` points if the sealer had fallen behind.
- Failures of the engine itself (a spool write error, an event the transport rejects, an
  encoding failure) are kept in `error` and raised as BackgroundError by the next API call,
  `flush()` or `end()`; transport outages are not errors (training continues; the spool
  holds the events) but are visible in `status()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from producers.errors import (
    BackgroundError,
    RunStateError,
    SpoolError,
)
from producers.sender import Sender
from producers.spool import Cursor, Position, SpoolWriter, encode_frame
from producers.transport import NullTransport, Transport

log = logging.getLogger(__name__)
_WRITE_CHUNK = 8 * 1024 * 1024  # bytes of frames per write() while sealing a big backlog
_SEALED: Any = None


class Pending(Protocol):
    """An item waiting to be sealed: it knows how to become (partition key, event bytes)."""

    def encode(self) -> tuple[bytes, bytes]: ...


@dataclass(frozen=True)
class Encoded:
    """An event encoded at the call site (everything but metric batches)."""

    key: bytes
    payload: bytes

    def encode(self) -> tuple[bytes, bytes]:
        return self.key, self.payload


class Source(Protocol):
    """Something holding open buffers (a run, console capture) that the sealer rotates."""

    def rotate_locked(self) -> None: ...


@dataclass
class EngineOptions:
    """Tuning knobs of the engine (all have safe defaults)."""

    linger_s: float = 0.2
    max_points_per_event: int = 20_000
    max_buffer_points: int = 1_000_000
    max_send_bytes: int = 4 * 1024 * 1024
    segment_bytes: int = 64 * 1024 * 1024
    fsync: str = "interval"
    fsync_interval_s: float = 1.0
    backoff_max_s: float = 5.0
    keep_spool: bool = False
    recover_orphans: bool = True


@dataclass(frozen=True)
class EngineStatus:
    """A snapshot for users and tests."""

    producer_id: str
    transport: str
    connected: bool
    written: Position
    acked: Position
    pending_points: int
    spooled_bytes: int
    spool_dir: str
    last_transport_error: str | None


class Engine:
    """Buffers, spools and sends the events of one producer (see the module docstring)."""

    def __init__(
        self,
        producer_id: str,
        spool_dir: Path,
        transport: Transport,
        options: EngineOptions | None = None,
        *,
        meta: dict[str, object] | None = None,
    ) -> None:
        self.producer_id = producer_id
        self.options = options or EngineOptions()
        self.spool_dir = Path(spool_dir)
        self.transport = transport
        self.offline = isinstance(transport, NullTransport)
        self.lock = threading.Lock()  # guards buffers, pending, seq (the hot path takes it)
        self._seal_lock = threading.Lock()  # orders sealers (never taken under self.lock)
        self._pending: list[Pending] = []
        self.pending_points = 0
        self.spill_requested = False  # set under lock when the buffer reached its bound
        self._sources: list[Source] = []
        self._seq = 0
        self.error: BaseException | None = None
        self._last_failure = ""
        self._pid = os.getpid()
        self.closed = False
        self._close_lock = threading.Lock()  # concurrent close() calls: one closes
        self._delivered_at_close = True
        self._meta = meta or {}
        self._writer = SpoolWriter(
            self.spool_dir,
            segment_bytes=self.options.segment_bytes,
            fsync=self.options.fsync,
            meta=meta,
        )
        self._cursor = Cursor(self.spool_dir)
        self._written = self._writer.position
        self._acked = self._written
        self._ack_cond = threading.Condition()
        self._last_fsync = time.monotonic()
        self._stop = threading.Event()
        self._sealer = threading.Thread(
            target=self._seal_loop, name="runstream-sealer", daemon=True
        )
        self._sender = Sender(
            self.spool_dir,
            transport,
            start=self._cursor.position,
            written=lambda: self._written,
            on_ack=self._ack,
            on_fail=self._fail,
            max_send_bytes=self.options.max_send_bytes,
            backoff_max_s=self.options.backoff_max_s,
            orphans_meta=self._meta if self.options.recover_orphans else None,
        )
        self._sealer.start()
        if not self.offline:
            self._sender.start()

    # ---- called by runs (under self.lock unless said otherwise) -------------------------
    def next_seq(self) -> int:
        """The next per-producer sequence number (call under `lock`)."""
        seq = self._seq
        self._seq = seq + 1
        return seq

    def rewind_seq(self, seq: int) -> None:
        """Give back the last seq when its event could not be built (under `lock`)."""
        if seq == self._seq - 1:
            self._seq = seq

    def add_pending(self, item: Pending, points: int = 0) -> bool:
        """Queue a sealed-to-be item (under `lock`); True when the buffer should spill."""
        if self.closed:
            raise RunStateError("the Runstream engine is closed (shutdown() or a fork)")
        self._pending.append(item)
        self.pending_points += points
        return self.pending_points >= self.options.max_buffer_points

    def register(self, source: Source) -> None:
        with self.lock:
            self._sources.append(source)

    def unregister(self, source: Source) -> None:
        with self.lock, contextlib.suppress(ValueError):
            self._sources.remove(source)

    def has_sources(self) -> bool:
        with self.lock:
            return bool(self._sources)

    def check(self) -> None:
        """Raise a kept background failure once (as BackgroundError), then clear it."""
        err = self.error
        if err is not None:
            self.error = None
            if isinstance(err, RunStateError):
                self.error = err  # a forked engine stays unusable
                raise err
            raise BackgroundError(f"Runstream background engine failed: {err}") from err

    # ---- sealing ------------------------------------------------------------------------
    def seal(self, *, fsync: bool = False) -> Position:
        """Move everything buffered into the spool; return the written position."""
        if os.getpid() != self._pid:
            raise RunStateError("a forked child cannot write its parent's spool")
        with self._seal_lock:
            with self.lock:
                for src in self._sources:
                    src.rotate_locked()
                items, self._pending = self._pending, []
                self.pending_points = 0
                self.spill_requested = False
            wrote = False
            try:
                frames: list[bytes] = []
                size = 0
                for i, item in enumerate(items):
                    items[i] = _SEALED  # free each batch's columns as soon as it is framed
                    try:
                        frame = encode_frame(*item.encode())
                    except Exception as exc:  # noqa: BLE001 - kept, raised on the next call
                        self._fail(exc)
                        continue
                    frames.append(frame)
                    size += len(frame)
                    if size >= _WRITE_CHUNK:
                        self._written = self._writer.append(frames)
                        frames, size, wrote = [], 0, True
                if frames:
                    self._written = self._writer.append(frames)
                    wrote = True
                now = time.monotonic()
                if fsync or now - self._last_fsync >= self.options.fsync_interval_s:
                    self._writer.sync()
                    self._last_fsync = now
            except OSError as exc:  # SpoolError included: disk full, fsync failure
                self._fail(exc if isinstance(exc, SpoolError) else SpoolError(str(exc)))
            written = self._written
        if wrote:
            self._sender.wake()
        return written

    def spill(self) -> None:
        """Called by a logging thread when the memory bound was reached: seal inline."""
        self.spill_requested = False
        self.seal()

    def _seal_loop(self) -> None:
        while not self._stop.wait(self.options.linger_s):
            self.seal()

    def _fail(self, exc: BaseException) -> None:
        if repr(exc) != self._last_failure:  # a retry loop re-failing is logged once
            self._last_failure = repr(exc)
            log.error("runstream engine: %r", exc)
        if self.error is None:
            self.error = exc

    def _ack(self, position: Position) -> None:
        try:
            self._cursor.commit(position)
        except OSError as exc:
            self._fail(SpoolError(f"cannot update the spool cursor: {exc}"))
        with self._ack_cond:
            self._acked = position
            self._ack_cond.notify_all()

    # ---- flush / close ------------------------------------------------------------------
    def flush(self, timeout: float | None = 30.0) -> bool:
        """Seal and fsync everything, then wait (bounded) until the transport acked it.

        Returns True when every event logged before the call is delivered (offline mode:
        durable in the spool), False on timeout (the events stay in the spool).
        """
        target = self.seal(fsync=True)
        if self.offline:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._ack_cond:
            while self._acked < target:
                if self._sender.done.is_set():
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._ack_cond.wait(0.2 if left is None else min(left, 0.2))
        return True

    def close(self, timeout: float | None = 30.0) -> bool:
        """Flush (bounded), stop the threads; delete the spool when everything was sent.

        Safe from several threads at once: one closes, the others wait for it and return
        its result."""
        with self._close_lock:
            if self.closed:
                return self._delivered_at_close
            self._delivered_at_close = self._close(timeout)
            return self._delivered_at_close

    def _close(self, timeout: float | None) -> bool:
        delivered = self.flush(timeout)
        self._stop.set()
        self._sealer.join(timeout=5)
        self._sender.stop(timeout=15)
        self.seal(fsync=True)  # anything logged during the flush wait stays in the spool
        self.closed = True
        self._writer.close()
        if delivered and not self.offline and not self.options.keep_spool:
            with self._ack_cond:
                done = self._acked >= self._written
            if done:
                shutil.rmtree(self.spool_dir, ignore_errors=True)
        return delivered

    @property
    def recovered_events(self) -> int:
        """Events resent from orphaned spools of earlier producers."""
        return self._sender.recovered_events

    def status(self) -> EngineStatus:
        with self.lock:
            pending = self.pending_points
        return EngineStatus(
            producer_id=self.producer_id,
            transport=getattr(self.transport, "name", type(self.transport).__name__),
            connected=self._sender.connected,
            written=self._written,
            acked=self._acked,
            pending_points=pending,
            spooled_bytes=self._writer.bytes_written,
            spool_dir=str(self.spool_dir),
            last_transport_error=self._sender.last_error,
        )

    def mark_forked(self) -> None:
        """In a forked child: threads are gone; refuse further use with a clear error."""
        self.closed = True
        self.error = RunStateError(
            "this Runstream engine belongs to the parent process (os.fork); "
            "call start_run(run_id=...) again in the child"
        )


def default_meta(
    producer_id: str, topic: str, extra: dict[str, Any] | None = None
) -> dict[str, object]:
    """What a spool's meta.json records about its producer."""
    meta: dict[str, object] = {
        "producer_id": producer_id,
        "topic": topic,
        "pid": os.getpid(),
        "created_at": int(time.time() * 1000),
    }
    meta.update(extra or {})
    return meta
