"""`runstream serve`'s API reads do not wait behind the worker's queries: the worker and
each API thread have their own client (chDB handles on one engine run side by side; a
shared handle runs one query at a time), and the worker's query threads are niced.

chDB opens one data path per process: the engine is opened in a fresh subprocess, through
`runstream.serve.serve_clients` as `serve` opens it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from runstream.serve import serve_clients
    from runstream.settings import ServerSettings

    settings = ServerSettings(
        kafka_bootstrap="127.0.0.1:9", clickhouse_url="chdb://" + sys.argv[2],
        s3_endpoint="http://127.0.0.1:9", s3_access_key="", s3_secret_key="",
    )
    worker, api = serve_clients(settings)
    mine = api()
    other = []
    t = threading.Thread(target=lambda: other.append(api()))
    t.start(); t.join()
    print("same thread, same client:", api() is mine)
    print("distinct clients:", len({id(worker), id(mine), id(other[0])}) == 3)
    nice = "SELECT getSetting('os_thread_priority')"
    print("nice:", worker.query(nice).result_rows[0][0], mine.query(nice).result_rows[0][0])
    busy = threading.Event()
    done = threading.Event()
    def slow():
        busy.set()
        worker.query("SELECT sleep(3)")  # a long insert or merge of the worker's
        done.set()
    t = threading.Thread(target=slow)
    t.start(); busy.wait(); time.sleep(0.3)
    api().query("SELECT 1")
    print("read while the worker's query ran:", not done.is_set())
    t.join()
    """
)


def test_api_reads_do_not_wait_behind_the_worker_client(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO), str(tmp_path / "chdb")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "same thread, same client: True" in out, out
    assert "distinct clients: True" in out, out
    assert "nice: 10 0" in out, out  # the worker's query threads yield the CPU to reads
    assert "read while the worker's query ran: True" in out, out
