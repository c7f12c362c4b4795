"""Opaque page tokens: url-safe base64 of a small JSON object bound to its query.

Rule: a token is only accepted by the query that issued it (a fingerprint of the query is
inside); anything else is `InvalidPageToken`, a 400 — never a 500.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

from query_api.errors import InvalidPageToken


def fingerprint(*parts: Any) -> str:
    """A short digest of the query a token belongs to."""
    raw = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


def encode(query: str, **state: Any) -> str:
    body = json.dumps({"q": query, **state}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode(token: str | None, query: str) -> dict[str, Any] | None:
    """The state stored in `token`, or None for no token."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        state = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidPageToken("page_token is not a token issued by this API") from None
    if not isinstance(state, dict) or state.get("q") != query:
        raise InvalidPageToken("page_token belongs to a different query")
    return state


def offset_of(token: str | None, query: str) -> int:
    """The row offset stored by `encode(query, offset=N)` (0 without a token)."""
    state = decode(token, query)
    if state is None:
        return 0
    offset = state.get("offset")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidPageToken("page_token carries no valid offset")
    return offset


def cursor_of(token: str | None, query: str) -> tuple[int, str, int, int] | None:
    """The (step, producer_id, seq, idx) position stored by `encode(query, after=[...])`."""
    state = decode(token, query)
    if state is None:
        return None
    after = state.get("after")
    if not (isinstance(after, list) and len(after) == 4 and isinstance(after[1], str)):
        raise InvalidPageToken("page_token carries no valid position")
    step, producer, seq, idx = after
    if not all(type(v) is int for v in (step, seq, idx)) or not (
        -(2**63) <= step < 2**63 and 0 <= seq < 2**64 and 0 <= idx < 2**32
    ):  # the point's columns: Int64 step, UInt64 seq, UInt32 idx
        raise InvalidPageToken("page_token carries no valid position")
    return (step, producer, seq, idx)
