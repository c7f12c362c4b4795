"""Process bookkeeping: start detached, identify by (pid, start time), stop by pid only."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence


@dataclass(frozen=True)
class ProcessRecord:
    """A process we started: pid plus its kernel start time, so a reused pid is never hit."""

    name: str
    pid: int
    start_ticks: int
    log: str

    def alive(self) -> bool:
        return start_ticks(self.pid) == self.start_ticks

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "log": self.log,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> ProcessRecord:
        return cls(str(d["name"]), int(str(d["pid"])), int(str(d["start_ticks"])), str(d["log"]))


def start_ticks(pid: int) -> int | None:
    """The process start time (clock ticks since boot) from /proc, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces; fields after the closing paren are fixed.
    rest = stat[stat.rindex(")") + 2 :].split()
    if rest[0] == "Z":  # zombie: exited, not yet reaped
        return None
    return int(rest[19])


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def spawn(
    name: str,
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start `argv` in its own session (it outlives the caller), output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            cwd=str(cwd) if cwd else None,
        )
    ticks = None
    for _ in range(50):
        ticks = start_ticks(proc.pid)
        if ticks is not None:
            break
        time.sleep(0.01)
    return ProcessRecord(name, proc.pid, ticks or -1, str(log))


def stop(rec: ProcessRecord, timeout: float = 20.0) -> bool:
    """SIGTERM, wait up to `timeout`, then SIGKILL. Returns True if it had been running."""
    if not rec.alive():
        _reap(rec.pid)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(rec.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(rec.pid)
        if not rec.alive():
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(rec.pid, signal.SIGKILL)
    for _ in range(50):
        _reap(rec.pid)
        if not rec.alive():
            break
        time.sleep(0.1)
    return True


def kill(rec: ProcessRecord) -> None:
    """SIGKILL (fault injection): no clean shutdown."""
    if rec.alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGKILL)
    for _ in range(100):
        _reap(rec.pid)
        if not rec.alive():
            return
        time.sleep(0.05)


def _reap(pid: int) -> None:
    """Collect our own exited child so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def processes_referencing(marker: str) -> list[tuple[int, list[str]]]:
    """Every live process whose command line mentions `marker` (a stack directory)."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        argv = cmdline(int(entry.name))
        if argv and any(marker in a for a in argv) and start_ticks(int(entry.name)) is not None:
            found.append((int(entry.name), argv))
    return found
