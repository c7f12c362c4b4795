"""The `runstream` CLI over the real session stack."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from runstream.cli import app
from runstream.stack import LocalStack
from schemas import uuid7_time_ms

runner = CliRunner()


@pytest.mark.stack
def test_status_and_env_of_a_running_stack(stack: LocalStack) -> None:
    res = runner.invoke(app, ["status", "--json", "--home", str(stack.home)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["kafka"]["running"] is True
    assert info["kafka"]["ready"] is True
    assert info["s3"]["ready"] is True
    assert info["stale"]["pids"] == []
    env = runner.invoke(app, ["env", "--home", str(stack.home)])
    assert env.exit_code == 0
    assert f"export RUNSTREAM_KAFKA_BOOTSTRAP={stack.connection().kafka_bootstrap}" in env.stdout


def test_status_of_a_stack_that_is_not_up(tmp_path: Path) -> None:
    res = runner.invoke(app, ["status", "--json", "--home", str(tmp_path)])
    assert res.exit_code == 3
    assert json.loads(res.stdout)["kafka"]["running"] is False
    res = runner.invoke(app, ["env", "--home", str(tmp_path)])
    assert res.exit_code == 3
    assert "runstream" in res.output


def test_new_run_id_prints_time_ordered_ids() -> None:
    ids = []
    for _ in range(3):
        res = runner.invoke(app, ["new-run-id"])
        assert res.exit_code == 0, res.output
        ids.append(res.stdout.strip())
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    for run_id in ids:
        assert re.fullmatch(
            "[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
            run_id,
        )
        assert abs(uuid7_time_ms(run_id) - time.time() * 1000) < 600_000


def test_unknown_backend_is_refused(tmp_path: Path) -> None:
    res = runner.invoke(app, ["up", "--backend", "kubernetes", "--home", str(tmp_path)])
    assert res.exit_code == 2
    assert "unknown backend" in res.output


def test_bench_passes_its_arguments_to_the_benchmark_suite() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "runstream.cli", "bench", "--only", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "unknown scenario(s) ['0']" in done.stderr


@pytest.mark.parametrize("args", [[], ["*"], ["team-a", "--operator"]])
def test_token_issue_wants_a_project_or_operator(tmp_path: Path, args: list[str]) -> None:
    """Exactly one of PROJECT and --operator; '*' (what an operator token is stored with) is
    not a project. Refused before any database is opened."""
    res = runner.invoke(app, ["token", "issue", *args, "--home", str(tmp_path)])
    assert res.exit_code == 2, res.output
    assert "--operator" in res.output
