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
        super().__init__(f"{component}: {reason}{where}")


class StackNotRunning(StackError):
    """The stack is not up."""


class DockerUnavailable(StackError):
    """No Docker engine answered; the message names what was tried."""
