"""Exceptions of the processors package; foreign exceptions are translated at the boundary.

Hierarchy::

    ProcessorError
    ├── ConfigError            bad worker/replay configuration (database name, topic, …)
    ├── MigrationError         a migration file failed or its checksum changed after release
    ├── PoisonEvent            one event cannot be projected; it goes to the DLQ, the partition
    │   ├── UndecodableEvent   flows on (not raised out of the worker)
    │   └── ProjectionFailed
    ├── SinkError              ClickHouse or S3 write/read failed; the batch is retried
    │   ├── ReadModelWriteFailed
    │   └── ArchiveWriteFailed
    └── ReplayError            replay cannot start or continue
        └── ReplayInterrupted  a replay was asked to stop; run it again to resume
"""

from __future__ import annotations


class ProcessorError(Exception):
    """Base of every error raised by the processors package."""


class ConfigError(ProcessorError):
    """Invalid configuration (identifier, topic, source)."""


class MigrationError(ProcessorError):
    """A migration could not be applied, or an applied one was edited afterwards."""


class PoisonEvent(ProcessorError):
    """An event that cannot be projected; routed to the DLQ with the original bytes."""

    reason = "poison"


class UndecodableEvent(PoisonEvent):
    """The bytes are not a known event (garbage, unknown schema fingerprint)."""

    reason = "undecodable"


class ProjectionFailed(PoisonEvent):
    """The event decoded but its projection raised (inconsistent packed columns, …)."""

    reason = "projection_failed"


class SinkError(ProcessorError):
    """A sink write failed; the worker retries the same batch and commits nothing."""


class ReadModelWriteFailed(SinkError):
    """ClickHouse rejected or could not receive an insert."""


class PartitionTaken(ProcessorError):
    """Another worker has written this partition past the batch in hand (this one is a
    zombie: it lost the partition in a rebalance it did not see). The batch is dropped, not
    retried; the partition's new owner projects those records."""


class ArchiveWriteFailed(SinkError):
    """The S3 event archive could not store a segment."""


class ReplayError(ProcessorError):
    """Replay cannot start or continue."""


class ReplayInterrupted(ReplayError):
    """Replay stopped on request; its progress is stored, calling it again resumes."""
