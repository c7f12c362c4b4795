"""Apply the SQL migrations shipped in `processors/migrations/` to one database.

Rule: idempotent. Each file `NNNN_name.sql` is applied once per database and recorded in
`<db>.schema_migrations` with its checksum; every statement is `IF NOT EXISTS`, so a crash
half-way through a file is repaired by running `migrate` again. An applied file whose
checksum changed is an error (release a new migration instead of editing an old one).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from processors.errors import ConfigError, MigrationError

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def check_identifier(name: str) -> str:
    """Return `name` if it is a plain ClickHouse identifier (databases are interpolated)."""
    if not _IDENT.match(name):
        raise ConfigError(f"not a plain identifier: {name!r}")
    return name


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self, database: str) -> list[str]:
        body = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        return [s.strip().replace("{db}", database) for s in body.split(";") if s.strip()]


def migrations() -> list[Migration]:
    """The shipped migrations in version order."""
    found = []
    for entry in resources.files("processors.migrations").iterdir():
        m = _FILE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name, entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


#: database names the shipped SQL cannot use: migration 0002 aliases a table `r`, and
#: ClickHouse then reads `r.params` as a column of that alias, not the database's table
RESERVED_DATABASES = frozenset({"r"})


def migrate(client: Any, database: str) -> list[str]:
    """Create `database` if needed and apply pending migrations; return the names applied."""
    db = check_identifier(database)
    if db in RESERVED_DATABASES:
        raise ConfigError(
            f"database name {db!r} is reserved (the read-model SQL uses it as a table alias);"
            " choose another name"
        )
    try:
        client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
        client.command(
            f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations (version UInt32, name String,"
            " checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3))"
            " ENGINE = ReplacingMergeTree ORDER BY version"
        )
        rows = client.query(f"SELECT version, checksum FROM {db}.schema_migrations FINAL")
        applied = {int(v): str(c) for v, c in rows.result_rows}
    except Exception as exc:
        raise MigrationError(f"cannot read {db}.schema_migrations: {exc}") from exc
    done = []
    for mig in migrations():
        if mig.version in applied:
            if applied[mig.version] != mig.checksum:
                raise MigrationError(f"{mig.name} was edited after it was applied to {db}")
            continue
        try:
            for stmt in mig.statements(db):
                client.command(stmt)
            client.insert(
                f"{db}.schema_migrations",
                [[mig.version, mig.name, mig.checksum]],
                column_names=["version", "name", "checksum"],
            )
        except Exception as exc:
            raise MigrationError(f"{mig.name} failed on {db}: {exc}") from exc
        done.append(mig.name)
    return done
