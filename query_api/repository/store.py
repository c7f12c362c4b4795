"""The one door to ClickHouse: bound queries, settings, and error translation.

Rules: every read goes through `ReadStore`; driver exceptions leave it only as
`ReadModelUnavailable` (503), chained. `db` follows the blue/green pointer
(`<base>.read_models_pointer`, row `current`, written when a replay switches the read
models), re-read at most every `pointer_ttl_s`; a missing table or row means the base
database, an unreadable pointer keeps the last known database. `generation` is that
database's name with its UUID (read with the pointer), so what is cached by read-model
state never outlives a database dropped and created again under the same name. The
client factory is called once per thread, so an HTTP client is never shared between
concurrent requests (clickhouse-connect sessions are not re-entrant); chDB's in-process
client may be returned by every call.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from query_api.errors import ReadModelUnavailable

ClientFactory = Callable[[], Any]
log = logging.getLogger(__name__)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}\Z")


class ReadStore:
    """Runs read queries against the read models of one database."""

    def __init__(
        self,
        factory: ClientFactory,
        database: str,
        timeout_s: int = 30,
        pointer_ttl_s: float = 1.0,
    ) -> None:
        self.base = database
        #: (database, its UUID or None): replaced whole, so no reader sees half of a switch
        self._current: tuple[str, str | None] = (database, None)
        self._checked_at = -float("inf")
        self._pointer_ttl_s = pointer_ttl_s
        self._factory = factory
        self._local = threading.local()
        self._settings = {"max_execution_time": timeout_s}

    @property
    def db(self) -> str:
        """The database the read models are read from now (see the module rules)."""
        return self._refresh()[0]

    @property
    def generation(self) -> tuple[str, str] | None:
        """(database, its UUID) of `db`; None while the UUID cannot be read."""
        name, uuid = self._refresh()
        return None if uuid is None else (name, uuid)

    def _refresh(self) -> tuple[str, str | None]:
        now = time.monotonic()
        if now - self._checked_at >= self._pointer_ttl_s:
            self._checked_at = now
            name = self._read_pointer()
            self._current = (name, self._read_uuid(name))
        return self._current

    def _read_uuid(self, name: str) -> str | None:
        try:
            rows = (
                self._client()
                .query(
                    "SELECT toString(uuid) FROM system.databases WHERE name = {n:String}",
                    parameters={"n": name},
                    settings=self._settings,
                )
                .result_rows
            )
        except Exception as exc:
            log.warning("UUID of database %s unreadable: %s", name, _first_line(exc))
            return None
        return str(rows[0][0]) if rows else None

    def _read_pointer(self) -> str:
        try:
            result = self._client().query(
                f"SELECT database FROM {self.base}.read_models_pointer FINAL "
                "WHERE name = 'current' ORDER BY switched_at DESC LIMIT 1",
                settings=self._settings,
            )
            rows = list(result.result_rows)
        except Exception as exc:
            log.warning("read-model pointer of %s unreadable: %s", self.base, _first_line(exc))
            return self._current[0]
        if not rows:
            return self.base
        name = str(rows[0][0])
        if not _IDENT.match(name):
            log.warning("read-model pointer of %s names %r: ignored", self.base, name)
            return self._current[0]
        return name

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            try:
                client = self._factory()
            except Exception as exc:
                raise ReadModelUnavailable(f"cannot connect to ClickHouse: {exc}") from exc
            self._local.client = client
        return client

    def rows(
        self, sql: str, params: Mapping[str, Any], formats: Mapping[str, str] | None = None
    ) -> list[Sequence[Any]]:
        """Result rows as tuples; `formats`: clickhouse-connect `query_formats` (e.g.
        {"DateTime64": "int"}: epoch ticks instead of datetime objects)."""
        try:
            result = self._client().query(
                sql,
                parameters=dict(params),
                settings=self._settings,
                query_formats=dict(formats) if formats else None,
            )
            return list(result.result_rows)
        except Exception as exc:
            raise ReadModelUnavailable(f"read-model query failed: {_first_line(exc)}") from exc

    def dicts(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Result rows as dicts keyed by column name."""
        try:
            result = self._client().query(sql, parameters=dict(params), settings=self._settings)
            names = result.column_names
            return [dict(zip(names, row)) for row in result.result_rows]
        except Exception as exc:
            raise ReadModelUnavailable(f"read-model query failed: {_first_line(exc)}") from exc

    def raw(self, sql: str, params: Mapping[str, Any], fmt: str) -> bytes:
        """The result in a ClickHouse output format (e.g. ArrowStream), unparsed."""
        try:
            data = self._client().raw_query(
                sql, parameters=dict(params), settings=self._settings, fmt=fmt
            )
            return bytes(data)
        except Exception as exc:
            raise ReadModelUnavailable(f"read-model query failed: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
