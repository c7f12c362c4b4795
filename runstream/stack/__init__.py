"""The local stack: real Kafka (KRaft, Maven jars), SeaweedFS S3 and chDB on 127.0.0.1.

Rule: every process this package starts is recorded (pid + start time) in the stack's
state file and is stopped by that pid only; processes that reference a stack directory but
are not in its state are reported as stale and stopped, never left running.
"""

from __future__ import annotations

from runstream.stack.errors import DockerUnavailable, StackError, StackNotRunning
from runstream.stack.local import Connection, LocalStack

__all__ = ["Connection", "DockerUnavailable", "LocalStack", "StackError", "StackNotRunning"]
