"""Errors of the local stack.

StackError
 ├── ComponentFailed     a component did not install, start or become ready
 ├── StackNotRunning     an operation needs the stack up
 └── DockerUnavailable   the testcontainers path was asked for, no engine answers
"""

from __future__ import annotations


class StackError(RuntimeError):
    """Base class for local-stack failures."""


class ComponentFailed(StackError):
    """A component failed to install, start or become ready; the message says which and why."""

    def __init__(self, component: str, reason: str, log: str | None = None) -> None:
        self.component = component
        self.reason = reason
        self.log = log
        where = f" (log: {log})" if log else ""
        tail = log_tail(log) if log else []
        shown = "".join(f"\n  | {line}" for line in tail)
        super().__init__(f"{component}: {reason}{where}{shown}")


def log_tail(path: str, lines: int = 8, max_bytes: int = 8192) -> list[str]:
    """The last non-empty lines of a log, read when the error is raised: the log may be gone
    by the time anyone reads the message (a test's stack directory is deleted)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line[:300] for line in text.splitlines() if line.strip()][-lines:]


class StackNotRunning(StackError):
    """The stack is not up."""


class DockerUnavailable(StackError):
    """No Docker engine answered; the message names what was tried."""
