"""The owned chDB's memory caps must not cost read parallelism.

chDB's server options apply to the first open in a process, so the engine is opened in a
fresh subprocess exactly as `runstream serve` opens it (`processors.cli.clickhouse_client`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from processors.cli import clickhouse_client
    c = clickhouse_client(chdb_path=sys.argv[2])
    c.command("CREATE TABLE t (k UInt64, v Float64) ENGINE = MergeTree ORDER BY k")
    c.command("SYSTEM STOP MERGES t")
    for part in range(2):
        c.command(f"INSERT INTO t SELECT number + {part} * 100000, rand() FROM numbers(100000)")
    plan = c.query("EXPLAIN PIPELINE SELECT sum(v) FROM t")
    print("\\n".join(row[0] for row in plan.result_rows))
    """
)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to read in parallel")
def test_capped_chdb_still_reads_a_table_with_two_threads(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO), str(tmp_path / "chdb")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    # two threads: two aggregating streams; one thread: the parts read in turn (Concat)
    # into one AggregatingTransform
    assert "AggregatingTransform × 2" in out, out
