"""The one place the processors touch the wire format: `schemas` decodes, we never hand-parse.

Rule: any failure to decode (garbage, unknown fingerprint, missing envelope) becomes
`processors.errors.UndecodableEvent`, which the worker routes to the DLQ.
"""

from __future__ import annotations

import schemas
from processors.errors import UndecodableEvent
from processors.model import Decoded, Envelope, SourceEvent
from schemas.errors import SchemaError

EVENTS_TOPIC: str = schemas.EVENTS_TOPIC
DLQ_TOPIC: str = schemas.DLQ_TOPIC


def decode(src: SourceEvent) -> Decoded:
    """Decode one log record (fast path: `schemas.decode_record`, no typed objects)."""
    try:
        name, record = schemas.decode_record(src.value)
        env = Envelope.from_record(record)
    except SchemaError as exc:
        raise UndecodableEvent(str(exc)) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise UndecodableEvent(f"no usable envelope: {type(exc).__name__}: {exc}") from exc
    if not env.event_id:
        raise UndecodableEvent("empty envelope.event_id")
    return Decoded(src, name, record, env)
