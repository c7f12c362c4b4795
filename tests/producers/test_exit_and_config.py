"""Process exit gives every run a final status (subprocesses, offline spool), configuration
precedence, the HTTP ingest body format, sync of an offline spool's format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from producers.config import ClientConfig
from producers.errors import ConfigError
from producers.spool import Record, SpoolReader
from producers.sync import find_spools
from producers.transport import decode_http_batch, encode_http_batch
from schemas import codec

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import os, signal, sys, time
import producers
run = producers.start_run("exit", mode="offline", spool_dir=sys.argv[1],
                          capture_code=False, capture_environment=False)
run.log_metric("loss", 1.0)
how = sys.argv[2]
if how == "raise":
    raise RuntimeError("died in training")
if how == "sigterm":
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
"""


@pytest.mark.parametrize(
    ("how", "status", "code"),
    [("normal", "FINISHED", 0), ("raise", "FAILED", 1), ("sigterm", "KILLED", 143)],
)
def test_exit_sets_final_status(tmp_path: Path, how: str, status: str, code: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RUNSTREAM_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(tmp_path), how],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == code, proc.stderr
    (spool,) = find_spools(tmp_path)
    events = [codec.decode(r.payload) for r in SpoolReader(spool).read(1 << 40)]
    final = [e for e in events if type(e).__name__ in ("RunStatusChanged", "ProducerExited")]
    assert [(type(e).__name__, e.status.value) for e in final] == [
        ("RunStatusChanged", "RUNNING"),
        ("ProducerExited", status),
        ("RunStatusChanged", status),
    ]
    if how == "raise":
        assert final[-1].reason == "RuntimeError: died in training"
    assert sum(getattr(e, "count", 0) for e in events) == 1, "the logged point is spooled"


def test_config_precedence(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "stack").mkdir(parents=True)
    (home / "stack" / "connection.json").write_text(
        json.dumps(
            {
                "RUNSTREAM_KAFKA_BOOTSTRAP": "file:1",
                "RUNSTREAM_S3_ENDPOINT": "http://file:2",
                "RUNSTREAM_S3_BUCKET": "from-file",
            }
        )
    )
    env = {"RUNSTREAM_HOME": str(home), "RUNSTREAM_KAFKA_BOOTSTRAP": "env:1"}
    cfg = ClientConfig.from_env(env)
    assert (cfg.kafka_bootstrap, cfg.s3_endpoint, cfg.s3_bucket) == (
        "env:1",
        "http://file:2",
        "from-file",
    )
    assert cfg.mode == "kafka"
    assert cfg.topic == codec.EVENTS_TOPIC
    assert cfg.project == "default"
    assert cfg.spool_dir == str(home / "spool")
    cfg2 = ClientConfig.from_env(env, kafka_bootstrap="arg:1", project="p")
    assert (cfg2.kafka_bootstrap, cfg2.project) == ("arg:1", "p")
    assert ClientConfig.from_env({"RUNSTREAM_HOME": str(tmp_path / "none")}).mode == "offline"
    with pytest.raises(ConfigError, match="unknown"):
        ClientConfig.from_env(env, nonsense=1)
    (home / "stack" / "connection.json").write_text("[1]")
    with pytest.raises(ConfigError, match="JSON object"):
        ClientConfig.from_env(env)
    with pytest.raises(ConfigError, match="RUNSTREAM_S3_ACCESS_KEY"):
        ClientConfig(s3_endpoint="http://x").require_s3()


def test_http_batch_body_roundtrip() -> None:
    from producers.spool import Position

    recs = [Record(b"k", bytes([i]) * i, Position(1, i)) for i in range(5)]
    body = encode_http_batch(recs)
    assert body[:4] == b"RSB1"
    assert decode_http_batch(body) == [r.payload for r in recs]
    with pytest.raises(ValueError, match="truncated"):
        decode_http_batch(body[:-1])


KILL_SCRIPT = """
import os, signal, sys, time
import producers
run = producers.start_run("kill", mode="offline", spool_dir=sys.argv[1],
                          capture_code=False, capture_environment=False)
for step in range(1000):
    run.log_metric("loss", float(step), step=step)
time.sleep(0.6)  # > linger_s: the sealer has written these to the spool
for step in range(1000, 1010):
    run.log_metric("loss", float(step), step=step)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_sigkill_loses_at_most_the_unsealed_tail(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RUNSTREAM_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILL_SCRIPT), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    (spool,) = find_spools(tmp_path)
    events = [codec.decode(r.payload) for r in SpoolReader(spool).read(1 << 40)]
    from tests.producers.helpers import points

    steps = sorted(s for (_k, _sp, s, _v) in points(events).values())
    assert steps[:1000] == list(range(1000)), "everything sealed before the kill survives"
    assert len(steps) <= 1010


FORK_SCRIPT = """
import os, sys
import producers
run = producers.start_run("fork", mode="offline", spool_dir=sys.argv[1],
                          capture_code=False, capture_environment=False)
run.log_metric("loss", 1.0)
pid = os.fork()
if pid == 0:
    try:
        run.log_metric("loss", 2.0)
    except producers.RunStateError:
        os._exit(7)
    os._exit(0)
_, status = os.waitpid(pid, 0)
run.log_metric("loss", 3.0)
run.end()
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_forked_child_refuses_the_parents_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RUNSTREAM_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", FORK_SCRIPT, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 7, proc.stderr
    (spool,) = find_spools(tmp_path)
    events = [codec.decode(r.payload) for r in SpoolReader(spool).read(1 << 40)]
    assert sum(getattr(e, "count", 0) for e in events) == 2


def test_sync_cli_on_an_empty_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from producers.sync import main

    assert main([str(tmp_path), "--bootstrap", "127.0.0.1:1", "--quiet"]) == 0
    assert "synced 0 events" in capsys.readouterr().err
    assert main([str(tmp_path)]) == 1  # no bootstrap configured: offline only
