"""Upload spooled events later: `python -m producers.sync DIR` (`runstream sync DIR`).

Rule: a spool is drained only under its LOCK (a live writer holds it, so a running job's
spool is skipped, never read twice at once); frames go out in order from the spool's
acknowledged cursor, the cursor advances only after the transport acknowledged them, and a
fully drained spool is deleted. Interrupting and re-running is safe: at worst the last
unacknowledged batch is sent again, and event ids make that harmless.

DIR may be a spool root (`$RUNSTREAM_SPOOL_DIR`, holding one folder per producer) or one
producer's spool folder.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producers.config import ClientConfig
from producers.errors import ConfigError, TransportError
from producers.spool import (
    Cursor,
    SpoolLock,
    SpoolReader,
    list_segments,
    pending_bytes,
    recover_segment,
    segment_path,
)
from producers.transport import Transport, make_transport

BATCH_BYTES = 4 * 1024 * 1024


@dataclass
class SyncResult:
    """What a sync did."""

    spools: int = 0
    events: int = 0
    bytes: int = 0
    skipped_locked: list[str] = field(default_factory=list)
    discarded_bytes: int = 0
    failed: list[str] = field(default_factory=list)


def find_spools(directory: Path) -> list[Path]:
    """`directory` itself if it is a spool, else its sub-folders that are spools."""
    directory = Path(directory).expanduser()
    if list_segments(directory) or (directory / "cursor").exists():
        return [directory]
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and list_segments(p))


async def drain(
    directory: Path, transport: Transport, advance: Callable[[int], None] = lambda n: None
) -> tuple[int, int, int]:
    """Send one (locked, finished) spool from its cursor; return (events, bytes, discarded).

    The caller holds the spool's lock and has started the transport.
    """
    for number in list_segments(directory):
        recover_segment(segment_path(directory, number))
    cursor = Cursor(directory)
    reader = SpoolReader(directory, cursor.position)
    events = sent = 0
    while records := reader.read(BATCH_BYTES):
        await transport.send(records)
        cursor.commit(records[-1].end)
        size = sum(len(r.payload) for r in records)
        events += len(records)
        sent += size
        advance(size)
    return events, sent, reader.discarded_bytes


def _advancer(bar: Any, task: Any) -> Callable[[int], None]:
    return lambda n: bar.advance(task, n)


async def _sync(
    spools: list[Path], transport: Transport, progress: bool, result: SyncResult
) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    await transport.start()
    try:
        with Progress(
            TextColumn("[bold]sync[/] {task.description}"),
            BarColumn(),
            DownloadColumn(),
            disable=not progress,
            transient=False,
        ) as bar:
            for spool in spools:
                lock = SpoolLock(spool)
                if not lock.acquire():
                    result.skipped_locked.append(str(spool))
                    continue
                try:
                    total = pending_bytes(spool, Cursor(spool).position)
                    task = bar.add_task(spool.name[:36], total=total)
                    try:
                        events, sent, discarded = await drain(
                            spool, transport, _advancer(bar, task)
                        )
                    except TransportError:
                        result.failed.append(str(spool))
                        raise
                    bar.update(task, completed=total)
                    result.spools += 1
                    result.events += events
                    result.bytes += sent
                    result.discarded_bytes += discarded
                    shutil.rmtree(spool, ignore_errors=True)
                finally:
                    lock.release()
    finally:
        await transport.close()


def sync_spool(
    directory: str | Path, config: ClientConfig | None = None, *, progress: bool = True
) -> SyncResult:
    """Upload every finished spool under `directory` through `config`'s transport.

    Raises:
        ConfigError: the configuration is offline-only (no Kafka bootstrap / API URL).
        TransportError: the broker/API failed; what was acknowledged is kept as sent.
    """
    cfg = config or ClientConfig.from_env()
    if cfg.mode == "offline":
        if cfg.kafka_bootstrap:
            cfg = cfg.with_overrides(mode="kafka")
        elif cfg.api_url:
            cfg = cfg.with_overrides(mode="http")
        else:
            raise ConfigError("sync needs RUNSTREAM_KAFKA_BOOTSTRAP or RUNSTREAM_API_URL")
    result = SyncResult()
    spools = find_spools(Path(directory))
    if spools:
        asyncio.run(_sync(spools, make_transport(cfg), progress, result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m producers.sync", description="Upload spooled Runstream events."
    )
    parser.add_argument("directory", help="spool root or one producer's spool folder")
    parser.add_argument("--bootstrap", help="Kafka bootstrap (default: env/connection.json)")
    parser.add_argument("--topic", help="Kafka topic (default runstream.events.v1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    cfg = ClientConfig.from_env(kafka_bootstrap=args.bootstrap, topic=args.topic)
    try:
        res = sync_spool(args.directory, cfg, progress=not args.quiet)
    except (ConfigError, TransportError) as exc:
        sys.stderr.write(f"sync failed: {exc}\n")
        return 1
    sys.stderr.write(
        f"synced {res.events} events ({res.bytes} bytes) from {res.spools} spool(s)"
        + (f"; skipped {len(res.skipped_locked)} in use" if res.skipped_locked else "")
        + (f"; discarded {res.discarded_bytes} torn bytes" if res.discarded_bytes else "")
        + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
