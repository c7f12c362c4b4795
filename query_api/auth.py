"""API tokens scoped to one project: issue, list, revoke, and authenticate requests.

Rules:
- A token is `rst_<token_id>_<secret>`; only its SHA-256 is stored, in the table
  `<database>.api_tokens` that this module creates itself (`ensure_table`, idempotent; it is
  query_api's own migration, in the BASE database, untouched by replays):

      api_tokens(token_id, project, name, token_sha256, created_at, revoked, revoked_at,
                 version)  ReplacingMergeTree(version) ORDER BY token_id

- A request presents it as `Authorization: Bearer <token>` (what the `mlflow` client sends
  for MLFLOW_TRACKING_TOKEN) and then sees and writes only its project's data.
- Mode: `require_tokens=True` always demands a token; `False` is open mode; `None` (auto)
  demands one as soon as any token was ever issued in the database (revoking the last token
  does not reopen the API). Open mode is announced by a loud warning at start-up.
- Lookups are cached for `ttl_s` (default 5 s): a revocation takes effect within that time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from query_api.errors import Unauthenticated
from query_api.repository import ReadStore

log = logging.getLogger(__name__)

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS {db}.api_tokens
(
    token_id String,
    project String,
    name String,
    token_sha256 String,
    created_at DateTime64(3, 'UTC'),
    revoked UInt8,
    revoked_at Nullable(DateTime64(3, 'UTC')),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY token_id
"""
_COLUMNS = [
    "token_id",
    "project",
    "name",
    "token_sha256",
    "created_at",
    "revoked",
    "revoked_at",
    "version",
]


@dataclass(frozen=True)
class TokenInfo:
    """What is stored about a token (never the token itself)."""

    token_id: str
    project: str
    name: str
    created_at: dt.datetime
    revoked: bool


@dataclass(frozen=True)
class IssuedToken:
    """A new token: `token` is shown once and cannot be recovered."""

    info: TokenInfo
    token: str


@dataclass(frozen=True)
class Principal:
    """Who calls: `project` None means every project (open mode without a project, or an
    operator token). `operator`: may use the admin routes (replay rebuilds every project's
    read models): an operator token, or anyone in open mode."""

    project: str | None
    token_id: str | None = None
    operator: bool = False


#: The project an operator token is stored with (not a valid project name for events).
OPERATOR = "*"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ensure_table(client: Any, database: str) -> None:
    """Create `<database>.api_tokens` if missing (idempotent)."""
    client.command(TABLE_DDL.replace("{db}", database))


def issue_token(client: Any, database: str, project: str, name: str = "") -> IssuedToken:
    """A new token for `project` (stored hashed); returns it with its info."""
    if not project:
        raise ValueError("project must not be empty")
    ensure_table(client, database)
    token_id = secrets.token_hex(6)
    token = f"rst_{token_id}_{secrets.token_urlsafe(32)}"
    now = dt.datetime.now(dt.timezone.utc)
    client.insert(
        f"{database}.api_tokens",
        [[token_id, project, name, digest(token), now, 0, None, time.time_ns()]],
        column_names=_COLUMNS,
    )
    return IssuedToken(TokenInfo(token_id, project, name, now, False), token)


def list_tokens(client: Any, database: str) -> list[TokenInfo]:
    """Every token ever issued (revoked ones included), oldest first."""
    ensure_table(client, database)
    rows = client.query(
        f"SELECT token_id, project, name, created_at, revoked FROM {database}.api_tokens FINAL "
        "ORDER BY created_at, token_id"
    ).result_rows
    return [TokenInfo(str(r[0]), str(r[1]), str(r[2]), r[3], bool(r[4])) for r in rows]


def revoke_token(client: Any, database: str, token_id: str) -> bool:
    """Revoke a token by id; False when no such (live) token exists."""
    ensure_table(client, database)
    rows = client.query(
        f"SELECT token_id, project, name, token_sha256, created_at FROM {database}.api_tokens "
        "FINAL WHERE token_id = {id:String} AND revoked = 0",
        parameters={"id": token_id},
    ).result_rows
    if not rows:
        return False
    tid, project, name, sha, created = rows[0]
    now = dt.datetime.now(dt.timezone.utc)
    client.insert(
        f"{database}.api_tokens",
        [[tid, project, name, sha, created, 1, now, time.time_ns()]],
        column_names=_COLUMNS,
    )
    return True


class Authenticator:
    """Turns a request's Authorization header into a `Principal` (see the module rules)."""

    def __init__(
        self,
        store: ReadStore,
        *,
        require_tokens: bool | None,
        default_project: str | None,
        ttl_s: float = 5.0,
    ) -> None:
        self.store = store
        self.require_tokens = require_tokens
        self.default_project = default_project
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._mode: tuple[float, bool] = (-float("inf"), False)
        self._lock = threading.Lock()

    def tokens_required(self) -> bool:
        if self.require_tokens is not None:
            return self.require_tokens
        at, required = self._mode
        if time.monotonic() - at < self.ttl_s:
            return required
        rows = self.store.rows(
            f"SELECT count() > 0 FROM {self.store.base}.api_tokens",
            {},
        )
        required = bool(rows and rows[0][0])
        self._mode = (time.monotonic(), required)
        return required

    def principal(self, authorization: str | None) -> Principal:
        token = _bearer(authorization)
        required = self.tokens_required()
        if token is None or (not required and not token.startswith("rst_")):
            if required:
                raise Unauthenticated("this API requires a token: Authorization: Bearer <token>")
            # open mode: other credentials ignored; nobody holds an operator token either
            return Principal(self.default_project, operator=True)
        found = self._lookup(token)
        if found is None:
            raise Unauthenticated("unknown or revoked token")
        return found

    def _lookup(self, token: str) -> Principal | None:
        sha = digest(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(sha)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        rows = self.store.rows(
            f"SELECT token_id, project FROM {self.store.base}.api_tokens FINAL "
            "WHERE token_sha256 = {sha:String} AND revoked = 0 LIMIT 1",
            {"sha": sha},
        )
        found = None
        if rows:
            project, token_id = str(rows[0][1]), str(rows[0][0])
            if project == OPERATOR:
                found = Principal(None, token_id, operator=True)
            else:
                found = Principal(project, token_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[sha] = (now, found)
        return found


def _bearer(header: str | None) -> str | None:
    """The bearer token of an Authorization header; None for none or another scheme."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
