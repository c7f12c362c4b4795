"""Errors of the `schemas` package.

Rule: foreign exceptions (fastavro, struct, json) never escape the codec; they are translated
at the boundary into one of these, with the original chained as ``__cause__``.

Hierarchy::

    SchemaError                      base of everything raised here (a ValueError)
    ├── InvalidEvent(field, reason)  encode time: the event does not match its schema;
    │                                ``field`` is the dotted path, e.g. "envelope.seq", "values"
    ├── UndecodableEvent(reason)     decode time: the bytes are not one of our events
    │                                (too short, bad marker, unknown fingerprint, truncated or
    │                                corrupt body, trailing bytes); processors route it to the DLQ
    └── IncompatibleSchema(field, reason)
                                     the compatibility checker: a schema change that breaks
                                     readers (BACKWARD_TRANSITIVE) or edits a frozen version
"""

from __future__ import annotations

from typing import Optional

__all__ = ["IncompatibleSchema", "InvalidEvent", "SchemaError", "UndecodableEvent"]


class SchemaError(ValueError):
    """Base class of every error raised by `schemas`."""


class InvalidEvent(SchemaError):
    """An event refused at encode time because it does not match its schema.

    Attributes:
        field: Dotted path of the offending field ("envelope.seq", "keys[2]", "tags['x']");
            "" when the whole event is at fault (e.g. an unknown event type).
        reason: What is wrong with it.
        event: Event type name, when known.
    """

    def __init__(self, field: str, reason: str, event: Optional[str] = None) -> None:
        self.field = field
        self.reason = reason
        self.event = event
        where = ".".join(p for p in (event, field) if p)
        super().__init__(f"{where}: {reason}" if where else reason)


class UndecodableEvent(SchemaError):
    """Bytes that cannot be decoded as one of our events (route the message to the DLQ).

    Attributes:
        reason: Short machine-friendly category, one of `REASONS`.
        detail: Human-readable explanation.
        prefix: The first bytes of the message (at most 32), for the DLQ record.
    """

    TOO_SHORT = "too short"
    BAD_MARKER = "bad marker"
    UNKNOWN_FINGERPRINT = "unknown fingerprint"
    CORRUPT = "truncated or corrupt body"
    TRAILING_BYTES = "trailing bytes"
    INVALID_CONTENT = "invalid content"
    REASONS = (TOO_SHORT, BAD_MARKER, UNKNOWN_FINGERPRINT, CORRUPT, TRAILING_BYTES, INVALID_CONTENT)

    def __init__(self, reason: str, data: bytes = b"", detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        self.prefix = bytes(data[:32])
        text = f"undecodable event ({reason})"
        if detail:
            text += f": {detail}"
        super().__init__(f"{text}; first bytes {self.prefix.hex()!r}")


class IncompatibleSchema(SchemaError):
    """A schema change that breaks compatibility, naming the field and why.

    Attributes:
        field: Dotted path, starting with the event type, e.g. "MetricsLogged.count".
        reason: Why the change breaks readers.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")
