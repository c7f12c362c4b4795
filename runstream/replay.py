"""`runstream replay`: rebuild every read model from the log into a new versioned database,
then switch reads to it (blue/green).

One-machine mode: chDB belongs to the serve process, so the replay runs THERE — this module
adds `/admin/replay` routes to the serve app and the CLI drives them (start, watch progress,
Ctrl-C interrupts; running it again resumes). Cluster mode: the CLI runs the replay itself
against the ClickHouse server.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from runstream.settings import ServerSettings


@dataclass
class ReplayJob:
    """One replay running in a thread of the serve process."""

    source: str
    started_at: float = field(default_factory=time.time)
    events: int = 0
    partitions: dict[int, dict[str, int | None]] = field(default_factory=dict)
    state: str = "running"  # running | completed | interrupted | failed
    database: str | None = None
    switched: bool = False
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def view(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "state": self.state,
            "events": self.events,
            "database": self.database,
            "switched": self.switched,
            "error": self.error,
            "partitions": {str(p): v for p, v in sorted(self.partitions.items())},
            "elapsed_s": round(time.time() - self.started_at, 2),
        }


def run_replay(
    client: Any, settings: ServerSettings, database: str, job: ReplayJob, archive: Any | None
) -> None:
    """Execute `job` (blocking); records progress and outcome on the job."""
    from processors.replay import ReplayProgress, replay

    def progress(p: ReplayProgress) -> None:
        job.database = p.database
        job.events = max(job.events, p.events)
        job.partitions[p.partition] = {"next_offset": p.next_offset, "end_offset": p.end_offset}

    try:
        result = replay(
            client,
            database=database,
            bootstrap=settings.kafka_bootstrap,
            archive=archive,
            source=job.source,
            progress=progress,
            stop=job.stop,
        )
    except Exception as exc:  # noqa: BLE001 - reported to the caller through the job
        job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
        return
    job.database, job.switched, job.events = result.database, result.switched, result.events
    job.state = "completed" if result.completed else "interrupted"


def admin_router(
    client: Any, settings: ServerSettings, database: str, archive_factory: Callable[[], Any]
) -> Any:
    """`/admin/replay` routes for the serve app (the process that owns chDB). A replay
    rebuilds every project's read models: once tokens are required, only an operator token
    (`runstream token issue --operator`) may use them (401 without a valid token, 403 with
    a project's token)."""
    from fastapi import APIRouter, Depends, HTTPException

    from query_api.services import operator  # authenticates (401), then operator only (403)

    router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(operator)])
    current: dict[str, ReplayJob] = {}

    @router.post("/replay", status_code=202, summary="Start (or resume) a replay")
    def start(source: str = "kafka") -> dict[str, Any]:
        if source not in ("kafka", "archive"):
            raise HTTPException(400, detail=f"source must be kafka or archive, not {source!r}")
        job = current.get("job")
        if job is not None and job.state == "running":
            raise HTTPException(409, detail="a replay is already running")
        job = ReplayJob(source)
        current["job"] = job
        archive = archive_factory() if source == "archive" else None
        threading.Thread(
            target=run_replay,
            args=(client, settings, database, job, archive),
            name="replay",
            daemon=True,
        ).start()
        return job.view()

    @router.get("/replay", summary="Progress of the current or last replay")
    def status() -> dict[str, Any]:
        job = current.get("job")
        if job is None:
            raise HTTPException(404, detail="no replay has run in this process")
        return job.view()

    @router.delete("/replay", summary="Interrupt the running replay (resumable)")
    def interrupt() -> dict[str, Any]:
        job = current.get("job")
        if job is None:
            raise HTTPException(404, detail="no replay has run in this process")
        job.stop.set()
        return job.view()

    return router
