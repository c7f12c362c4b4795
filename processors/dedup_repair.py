"""Repair of ClickHouse's insert-deduplication logs in a chDB directory, before it is opened.

Why: a batch's inserts carry `insert_deduplication_token`s so a batch redone after a crash
writes only what had not landed. On a non-replicated MergeTree, ClickHouse records the
token's block id in the table's `deduplication_logs/` (a text file, flushed) *before* it
renames the inserted part into place (`MergeTreeSink::finishDelayedChunk`: `addPart` on
the log, then `renameTempPartAndAdd`, both under the table's parts lock). A process killed
between the two leaves a record of a part that never existed; on the next start the log is
loaded without looking at the parts, and the redone insert of that batch is dropped as a
duplicate: the batch's rows of that table are lost while its position says done (seen in
`tests/processors/test_kill.py`: one SIGKILL in a few hundred).

The repair: an ADD record whose part is neither on disk nor covered by a part on disk (the
block range of a merged or mutated part) names an insert that never landed, and gets a DROP
record (what ClickHouse itself writes when a part is dropped), in a new log file. It is
exact when run before anything opens the directory: the lost part held the table's highest
block number (the number, the record and the rename happen under one lock), so no later part
can cover it, and block numbers are reused only after the table is opened again.

Only for chDB directories this process is about to own (a worker's or serve's): a ClickHouse
server's files are its own, and a server outlives the workers that crash.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PART = re.compile(r"^(?P<partition>.+)_(?P<min>\d+)_(?P<max>\d+)_(?P<level>\d+)(?:_\d+)?$")
_LOG = re.compile(r"^deduplication_log_(\d+)\.txt$")
_ADD, _DROP = "1", "2"


@dataclass(frozen=True)
class PartRange:
    partition: str
    min_block: int
    max_block: int

    @classmethod
    def parse(cls, name: str) -> PartRange | None:
        m = _PART.match(name)
        if m is None:
            return None
        return cls(m["partition"], int(m["min"]), int(m["max"]))

    def covers(self, other: PartRange) -> bool:
        return (
            self.partition == other.partition
            and self.min_block <= other.min_block
            and other.max_block <= self.max_block
        )


def _records(path: Path) -> list[list[str]]:
    """The complete records of one log file (a line torn by the crash is ignored, as
    ClickHouse's loader stops at it)."""
    text = path.read_text("utf-8", errors="replace")
    lines = text.split("\n")
    complete = lines[:-1]  # the last element is "" or a torn line
    return [line.split("\t") for line in complete if line.count("\t") == 2]


def lost_inserts(table_dir: Path) -> list[tuple[str, str]]:
    """(part name, block id) of each deduplication record of `table_dir` whose part never
    landed: neither on disk nor covered by a part on disk, and not dropped since."""
    logs_dir = table_dir / "deduplication_logs"
    if not logs_dir.is_dir():
        return []
    parts = [
        r
        for p in table_dir.iterdir()
        if p.is_dir()
        and not p.name.startswith(("tmp", "delete_tmp"))  # unfinished: never a landed part
        and (r := PartRange.parse(p.name)) is not None
    ]
    live: dict[str, str] = {}  # block id -> part name
    files = sorted(
        (int(m.group(1)), p) for p in logs_dir.iterdir() if (m := _LOG.match(p.name)) is not None
    )
    for _, path in files:
        for op, part, block in _records(path):
            if op == _ADD:
                live[block] = part
            elif op == _DROP:
                live.pop(block, None)
    lost = []
    for block, name in live.items():
        rng = PartRange.parse(name)
        if rng is not None and not any(p.covers(rng) for p in parts):
            lost.append((name, block))
    return lost


def repair(chdb_path: str | Path) -> list[tuple[str, str]]:
    """Add DROP records for the lost inserts of every table under `chdb_path` (which no
    process may have open); returns (table dir, part name) of each."""
    root = Path(chdb_path)
    repaired: list[tuple[str, str]] = []
    for logs_dir in sorted(root.glob("store/*/*/deduplication_logs")):
        table_dir = logs_dir.parent
        lost = lost_inserts(table_dir)
        if not lost:
            continue
        numbers = [int(m.group(1)) for p in logs_dir.iterdir() if (m := _LOG.match(p.name))]
        target = logs_dir / f"deduplication_log_{max(numbers, default=0) + 1}.txt"
        target.write_text("".join(f"{_DROP}\t{part}\t{block}\n" for part, block in lost), "utf-8")
        for part, _ in lost:
            log.warning(
                "%s: insert of part %s was recorded but never landed (process killed "
                "mid-insert); its deduplication record is dropped so the batch can be redone",
                table_dir.name,
                part,
            )
            repaired.append((str(table_dir), part))
    return repaired
