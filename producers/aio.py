"""Async variant for asyncio programs: the same Run, with the blocking calls awaitable.

Rule: logging calls (`log_metric`, `log_params`, `set_tag`, ...) never block, so they are the
plain synchronous methods of the wrapped `Run`; only what can wait — starting (code and
environment capture), `flush`, `end`, artifact uploads and downloads — is awaitable and runs
in a worker thread (`asyncio.to_thread`), never on the event loop.

    async with await producers.aio.start_run("exp") as run:
        run.log_metric("loss", 0.1)
        await run.log_artifact("model.pt")
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import TracebackType
from typing import Any

from producers.artifacts import ArtifactInfo
from producers.run import Run
from producers.session import start_run as _start_run

__all__ = ["AsyncRun", "start_run"]


class AsyncRun:
    """Wraps a `Run`; attribute access falls through to it (log_* methods included)."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def __getattr__(self, name: str) -> Any:
        return getattr(self.run, name)

    async def flush(self, timeout: float | None = 30.0) -> bool:
        return await asyncio.to_thread(self.run.flush, timeout)

    async def end(self, status: str = "FINISHED", **kwargs: Any) -> bool:
        return await asyncio.to_thread(self.run.end, status, **kwargs)

    finish = end

    async def log_artifact(
        self, artifact: Any, key: str | None = None, **kwargs: Any
    ) -> ArtifactInfo:
        return await asyncio.to_thread(self.run.log_artifact, artifact, key, **kwargs)

    async def log_image(self, key: str, image: Any, **kwargs: Any) -> ArtifactInfo:
        return await asyncio.to_thread(self.run.log_image, key, image, **kwargs)

    async def log_table(self, key: str, data: Any, **kwargs: Any) -> ArtifactInfo:
        return await asyncio.to_thread(self.run.log_table, key, data, **kwargs)

    async def download_artifact(self, key: str, to: str | os.PathLike[str] = ".") -> Path:
        return await asyncio.to_thread(self.run.download_artifact, key, to)

    async def list_artifacts(self) -> list[ArtifactInfo]:
        return await asyncio.to_thread(self.run.list_artifacts)

    async def __aenter__(self) -> AsyncRun:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.run.__exit__, exc_type, exc, tb)


async def start_run(*args: Any, **kwargs: Any) -> AsyncRun:
    """`producers.start_run` in a worker thread (capture may run git / read metadata)."""
    return AsyncRun(await asyncio.to_thread(_start_run, *args, **kwargs))
