"""`runstream serve` runs the API and the projection worker side by side
(`runstream.serve.serve_with_worker`, pure logic with stand-ins): a worker that dies on an
error stops serve (exit status non-zero) instead of leaving an API whose read models no
longer move; a server stopped by a signal stops the worker."""

from __future__ import annotations

import asyncio

import pytest

from runstream.serve import WorkerDied, serve_with_worker


class _Server:
    """uvicorn.Server's contract: serve() returns once `should_exit` is set."""

    def __init__(self, stop_after: float | None = None) -> None:
        self.should_exit = False
        self.stop_after = stop_after
        self.served = False

    async def serve(self) -> None:
        self.served = True
        loop = asyncio.get_running_loop()
        start = loop.time()
        while not self.should_exit:
            if self.stop_after is not None and loop.time() - start > self.stop_after:
                return  # a signal
            await asyncio.sleep(0.005)


class _Worker:
    def __init__(self, fail_after: float | None = None) -> None:
        self.fail_after = fail_after
        self.stopped = asyncio.Event()
        self.stops = 0

    async def run(self) -> None:
        if self.fail_after is not None:
            await asyncio.sleep(self.fail_after)
            raise RuntimeError("chDB directory removed")
        await self.stopped.wait()

    async def stop(self) -> None:
        self.stops += 1
        self.stopped.set()


def test_a_worker_dying_on_an_error_stops_serve() -> None:
    server, worker = _Server(), _Worker(fail_after=0.05)
    with pytest.raises(WorkerDied, match="chDB directory removed"):
        asyncio.run(asyncio.wait_for(serve_with_worker(server, worker), timeout=10))
    assert server.should_exit
    assert worker.stops == 1


def test_a_signal_stops_the_server_then_the_worker_cleanly() -> None:
    server, worker = _Server(stop_after=0.05), _Worker()
    asyncio.run(asyncio.wait_for(serve_with_worker(server, worker), timeout=10))
    assert server.served
    assert not server.should_exit
    assert worker.stops == 1
    assert worker.stopped.is_set()
