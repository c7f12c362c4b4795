"""Apply the SQL migrations shipped in `processors/migrations/` to one database.

Rule: idempotent. Each file `NNNN_name.sql` is applied once per database and recorded in
`<db>.schema_migrations` with its checksum; every statement is `IF NOT EXISTS`, so a crash
half-way through a file is repaired by running `migrate` again. An applied file whose
checksum changed is an error (release a new migration instead of editing an old one).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from processors.errors import ConfigError, MigrationError

log = logging.getLogger(__name__)
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
    pack_small_parts(client, db)
    return done


#: a MergeTree part smaller than this (uncompressed) is written as one archive file
#: ("packed" part storage) instead of one file per column stream, marks, checksums, counts
#: and metadata (~10 files and a directory). A batch writes a part per table it touches
#: (6 for one MetricsLogged, plus two position rows), and creating files dominates a small
#: part's insert: a one-event batch's table inserts took 46.8 -> 38.1 ms with packed parts
#: in a fresh directory, 92.7 -> 58.2 ms in one where many files had been deleted (as merges
#: do all the time); BENCHMARKS.md, twelfth session. Large batches' parts (1 M points of
#: metric_points: ~48 MB) stay full, and a merge writes its result full past this size.
PACKED_PART_BYTES = 8 * 1024 * 1024


def pack_small_parts(client: Any, database: str, threshold: int = PACKED_PART_BYTES) -> list[str]:
    """Set `min_bytes_for_full_part_storage = threshold` on every MergeTree table of
    `database` that has another value (new parts only; existing ones keep their storage until
    merged; 0 = ClickHouse's default, every part full); returns the tables changed. An engine
    that refuses the setting (packed storage came to open-source ClickHouse in 2026, long
    after ClickHouse Cloud; chDB 26.9 has it) keeps full parts: logged once per call, not an
    error - it is a cost, not a behaviour."""
    db = check_identifier(database)
    rows = client.query(
        "SELECT name FROM system.tables WHERE database = {d:String} AND engine LIKE '%MergeTree'"
        " AND NOT match(engine_full, {s:String}) ORDER BY name",
        parameters={"d": db, "s": rf"\bmin_bytes_for_full_part_storage = {int(threshold)}(,|$)"},
    ).result_rows
    changed = []
    for (name,) in rows:
        try:
            client.command(
                f"ALTER TABLE {db}.`{name}` MODIFY SETTING"
                f" min_bytes_for_full_part_storage = {int(threshold)}"
            )
        except Exception as exc:  # noqa: BLE001 - an older server: full parts, as before
            log.info("%s: packed part storage not available (%s); parts stay full", db, exc)
            break
        changed.append(name)
    return changed
