"""ClickHouse's deduplication log after a process died mid-insert, on real chDB directories
(each step in a process of its own: a process owns one chDB directory).

The state a SIGKILL between the log record and the part's rename leaves behind is made by
hand (the window is microseconds wide): the record of a part that does not exist, for the
token of an insert that is then redone. Without the repair the redone insert is dropped as
a duplicate (the loss `processors.dedup_repair` is about); with it, it lands, and inserts
that did land (also once merged into another part) still deduplicate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from processors.dedup_repair import PartRange, lost_inserts, repair

REPO = Path(__file__).resolve().parents[2]

STEP = """
import json, sys
sys.path.insert(0, sys.argv[1])
path, repaired, tokens, optimize = sys.argv[2], sys.argv[3] == "1", sys.argv[4], sys.argv[5] == "1"
if repaired:
    from processors.cli import clickhouse_client
    c = clickhouse_client(chdb_path=path)
else:
    import clickhouse_connect
    c = clickhouse_connect.get_client(dsn="chdb://" + path)
for table in ("t", "scratch"):
    c.command(f"CREATE TABLE IF NOT EXISTS default.{table} (token String, n UInt32) "
              "ENGINE = MergeTree ORDER BY (token, n) "
              "SETTINGS non_replicated_deduplication_window = 100")
for spec in tokens.split(",") if tokens else []:
    table, token = spec.split(":")
    c.command(f"INSERT INTO default.{table} SELECT '{token}', number FROM numbers(10) "
              f"SETTINGS insert_deduplication_token = '{token}'")
if optimize:
    c.command("OPTIMIZE TABLE default.t FINAL")
rows = c.query("SELECT token, count() FROM default.t GROUP BY token").result_rows
print(json.dumps(dict(rows)))
"""


def _step(path: Path, *, repaired: bool, tokens: str = "", optimize: bool = False) -> Any:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            STEP,
            str(REPO),
            str(path),
            "1" if repaired else "0",
            tokens,
            "1" if optimize else "0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _table_dir(path: Path, table: str) -> Path:
    """The data directory of default.`table` (Atomic database: store/xxx/<table uuid>)."""
    (meta,) = path.glob(f"**/{table}.sql")
    uuid = meta.read_text().split("UUID '")[1].split("'")[0]
    (found,) = path.glob(f"store/*/{uuid}")
    return found


def _crash_leftover(path: Path) -> None:
    """t holds token a; the insert of token b was recorded in t's log but its part never
    renamed into place (the block id is the one chDB gave b in `scratch`: "all" + the
    token's hash; the part name: t's next block number)."""
    _step(path, repaired=False, tokens="t:a,scratch:b", optimize=False)
    logs = sorted((_table_dir(path, "scratch") / "deduplication_logs").glob("*.txt"))
    block_b = logs[-1].read_text().strip().splitlines()[-1].split("\t")[2]
    t = _table_dir(path, "t")
    top = max(r.max_block for p in t.iterdir() if (r := PartRange.parse(p.name)) is not None)
    t_log = sorted((t / "deduplication_logs").glob("*.txt"))[-1]
    with t_log.open("a") as f:
        f.write(f"1\tall_{top + 1}_{top + 1}_0\t{block_b}\n")


@pytest.mark.stack
def test_without_the_repair_the_redone_insert_is_lost(tmp_path: Path) -> None:
    _crash_leftover(tmp_path)
    assert _step(tmp_path, repaired=False, tokens="t:b") == {"a": 10}


@pytest.mark.stack
def test_the_repair_lets_the_redone_insert_land_and_keeps_landed_ones(tmp_path: Path) -> None:
    _step(tmp_path, repaired=False, tokens="t:x,t:y", optimize=True)  # parts merged away
    _crash_leftover(tmp_path)
    t = _table_dir(tmp_path, "t")
    assert [name for name, _ in lost_inserts(t)] != []
    # the first open in a process repairs (processors.cli.clickhouse_client), then redoes b
    got = _step(tmp_path, repaired=True, tokens="t:b,t:a,t:x")
    assert got == {"a": 10, "b": 10, "x": 10, "y": 10}
    assert lost_inserts(t) == []
    assert repair(tmp_path) == []  # nothing left to repair
