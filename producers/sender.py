"""The sending half of an engine: one thread, one asyncio loop, frames from spool to transport.

Rule: frames are read back from the spool in order, from the acknowledged cursor up to the
writer's position, and the cursor moves only after the transport acknowledged them. On any
transport failure the sender closes the transport, rewinds to the cursor and retries with
capped exponential backoff: a resend is harmless (events carry their own ids). A rejection
(`TransportRejected`) is also reported through `on_fail` so the next API call raises it.
Spools left in the same spool root by producers that could not deliver (same topic and mode,
not locked by a live process) are resent once, after the first successful connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from producers.errors import TransportRejected, TransportUnavailable
from producers.spool import Position, SpoolLock, SpoolReader
from producers.transport import Transport


class Sender:
    """Runs `transport` on a daemon thread; see the module rule."""

    def __init__(
        self,
        spool_dir: Path,
        transport: Transport,
        *,
        start: Position,
        written: Callable[[], Position],
        on_ack: Callable[[Position], None],
        on_fail: Callable[[BaseException], None],
        max_send_bytes: int,
        backoff_max_s: float,
        orphans_meta: dict[str, object] | None = None,
    ) -> None:
        self.spool_dir = spool_dir
        self.transport = transport
        self._start = start
        self._written = written
        self._on_ack = on_ack
        self._on_fail = on_fail
        self.max_send_bytes = max_send_bytes
        self.backoff_max_s = backoff_max_s
        self._orphans_meta = orphans_meta
        self.connected = False
        self.last_error: str | None = None
        self.recovered_events = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="runstream-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """New frames were written (called from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(wake.set)

    def stop(self, timeout: float) -> None:
        self._stop.set()
        self.wake()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.done.set()

    def _run(self) -> None:
        try:
            asyncio.run(self._loop_main())
        except Exception as exc:  # noqa: BLE001 - surfaced by the engine on the next call
            self._on_fail(exc)
        finally:
            self.done.set()

    async def _loop_main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        reader = SpoolReader(self.spool_dir, self._start)
        acked = self._start
        backoff = 0.05
        try:
            while not self._stop.is_set():
                if not self.connected:
                    try:
                        await self.transport.start()
                    except TransportUnavailable as exc:
                        self.last_error = str(exc)
                        backoff = await self._backoff(backoff)
                        continue
                    self.connected = True
                    backoff = 0.05
                    if self._orphans_meta is not None:
                        await self._recover_orphans(self._orphans_meta)
                        self._orphans_meta = None
                records = reader.read(self.max_send_bytes, limit=self._written())
                if not records:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), 0.5)
                    self._wake.clear()
                    continue
                try:
                    await self.transport.send(records)
                except (TransportUnavailable, TransportRejected) as exc:
                    self.last_error = str(exc)
                    if isinstance(exc, TransportRejected):
                        self._on_fail(exc)
                    await self.transport.close()
                    self.connected = False
                    reader.seek(acked)
                    backoff = await self._backoff(backoff)
                    continue
                acked = records[-1].end
                self._on_ack(acked)
        finally:
            with contextlib.suppress(Exception):
                await self.transport.close()
            self.connected = False

    async def _backoff(self, current: float) -> float:
        """Sleep `current` seconds (cut short by stop); return the next, doubled and capped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + current
        while not self._stop.is_set() and loop.time() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        return min(current * 2, self.backoff_max_s)

    async def _recover_orphans(self, mine: dict[str, object]) -> None:
        from producers.sync import drain, find_spools

        for spool in find_spools(self.spool_dir.parent):
            if spool == self.spool_dir:
                continue
            try:
                meta = json.loads((spool / "meta.json").read_text())
            except (OSError, ValueError):
                continue
            if (meta.get("topic"), meta.get("mode")) != (mine.get("topic"), mine.get("mode")):
                continue
            lock = SpoolLock(spool)
            if not lock.acquire():
                continue
            try:
                events, _sent, _torn = await drain(spool, self.transport)
                self.recovered_events += events
                shutil.rmtree(spool, ignore_errors=True)
            except (TransportUnavailable, TransportRejected, OSError) as exc:
                self.last_error = f"orphan spool {spool.name}: {exc}"
            finally:
                lock.release()
