"""`python -m benchmarks`: Runstream beside MLflow, one table.

    .venv/bin/python -m benchmarks [--quick] [--only 1,2,...] [--json PATH] [--write-md]

Brings up a Runstream stack in `.runstream/bench` (Kafka, SeaweedFS, `runstream serve`) and an
MLflow tracking server (own venv `.runstream/mlflow-venv`, SQLite, gunicorn x4), runs every
scenario against both, prints one table (median [min–max, n] per cell, ratio = how many times
better Runstream is), writes JSON and, with --write-md, BENCHMARKS.md. A failure on one side
is a FAILED cell with the error's first line; nothing is estimated unless marked "~".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import rs_side
from benchmarks.results import Figure, Row, first_line, guarded
from benchmarks.servers import (
    PEER_DIR,
    REPO,
    RS_HOME,
    MlflowServer,
    RssSampler,
    Runstream,
    ensure_mlflow_venv,
    mlflow_python,
    mlflow_up,
    runstream_up,
)

MLFLOW_SIDE = Path(__file__).resolve().with_name("mlflow_side.py")
GIB = 1024 * 1024  # kB per GiB


@dataclass(frozen=True)
class Sizes:
    ranks: tuple[int, ...]  # scenario 1 total points (Runstream)
    ranks_mlflow_cap: int  # scenario 1: MLflow runs at most this many points
    ranks_repeats: int  # for sizes <= 200k (bigger: 1)
    backlog: int  # scenario 9: points logged while serve is down
    calls_rs: int
    calls_mlflow: int
    fresh_rs: int
    fresh_mlflow: int
    series: tuple[int, ...]
    series_mlflow: int  # MLflow's series size; bigger rows are extrapolated from it
    read_repeats: int
    search_runs: tuple[int, ...]
    search_mlflow_cap: int
    search_repeats: int
    search_budget_s: float  # set-up time allowed for runs beyond 1,000 (Runstream)
    peer_args: tuple[str, ...]  # bench_mlflow.py sizes


QUICK = Sizes(
    ranks=(10_000, 100_000),
    ranks_mlflow_cap=40_000,
    ranks_repeats=2,
    backlog=1_000_000,
    calls_rs=100_000,
    calls_mlflow=200,
    fresh_rs=20,
    fresh_mlflow=10,
    series=(10_000, 100_000),
    series_mlflow=10_000,
    read_repeats=3,
    search_runs=(100,),
    search_mlflow_cap=100,
    search_repeats=5,
    search_budget_s=60,
    peer_args=tuple(
        shlex.split(
            "--single-calls 100 --batch-total 10000 --points-per-proc 1000 "
            "--history-sizes 10000 --history-repeats 1 --search-runs 100 --search-repeats 3 "
            "--async-calls 100 --async-batch-total 10000"
        )
    ),
)
FULL = Sizes(
    ranks=(100_000, 1_000_000, 10_000_000),
    ranks_mlflow_cap=200_000,
    ranks_repeats=3,
    backlog=10_000_000,
    calls_rs=1_000_000,
    calls_mlflow=2000,
    fresh_rs=100,
    fresh_mlflow=50,
    series=(100_000, 1_000_000),
    series_mlflow=100_000,
    read_repeats=5,
    search_runs=(1000, 100_000),
    search_mlflow_cap=1000,
    search_repeats=10,
    search_budget_s=90,
    peer_args=tuple(
        shlex.split(
            "--single-calls 500 --batch-total 100000 --points-per-proc 25000 "
            "--history-sizes 100000 --history-log-budget 60 --history-repeats 2 "
            "--search-runs 1000 --async-calls 500 --async-batch-total 100000"
        )
    ),
)


def say(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def cpu_note(r: dict[str, Any]) -> str:
    """Where scenario 1's CPU went: seconds per 1M points and how busy the cores were."""
    cpu = r["cpu_s"]
    per_m = 1e6 / r["points"]
    parts = ", ".join(f"{k} {v * per_m:.2f}" for k, v in cpu.items())
    busy = sum(cpu.values()) / (r["seconds"] * r["cores"])
    return f"CPU s per 1M pts: {parts}; {busy:.0%} of {r['cores']} cores"


def human(n: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{suffix}"
    return f"{n:,}"


# ------------------------------------------------------------------------ the MLflow side
def mlflow_side(
    server: MlflowServer, scenario: str, *args: str, sample: bool = False, timeout: float = 3600
) -> tuple[dict[str, Any], tuple[int, int]]:
    """Run mlflow_side.py in the MLflow venv; returns (its JSON, (peak RSS kB of the gunicorn
    workers summed, of the whole server process tree summed)) -- (0, 0) unless `sample`."""
    argv = [str(mlflow_python()), str(MLFLOW_SIDE), scenario, "--uri", server.uri, *args]
    workers = server.workers() if sample else []
    tree = server.tree() if sample else []
    with (
        tempfile.TemporaryFile("w+") as err,
        RssSampler(lambda: workers, 0.2) as w_rss,
        RssSampler(lambda: tree, 0.2) as t_rss,
    ):
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=err, text=True, timeout=timeout)
        err.seek(0)
        stderr = err.read()
    if p.returncode != 0:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        raise RuntimeError(lines[-1] if lines else f"mlflow_side exit {p.returncode}")
    return json.loads(p.stdout.strip().splitlines()[-1]), (w_rss.peak_kb, t_rss.peak_kb)


# ------------------------------------------------------------------------ scenarios
def _searches(
    out: dict[str, Any] | None, field: str, note: str, missing: str = "not run"
) -> Figure:
    """Scenario 5's searches of one kind from a side's output: "s_settled" (SETTLE_S after
    the first set) or "first" (the first search of the runs, one sample)."""
    if out is None:
        return Figure(unit="ms", unavailable=True, note=missing)
    got = out[field]
    return Figure([v * 1e3 for v in (got if isinstance(got, list) else [got])], "ms", note=note)


class Suite:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sizes = QUICK if args.quick else FULL
        if args.search_budget is not None:
            self.sizes = dataclasses.replace(self.sizes, search_budget_s=args.search_budget)
        self.rows: list[Row] = []
        self.raw: dict[str, Any] = {}
        self.rs: Runstream | None = None
        self.ml: MlflowServer | None = None
        self.rss_rs: list[float] = []
        self.rss_ml: list[float] = []
        self.rss_ml_tree: list[float] = []
        self.rss_rs_err: str | None = None
        self.checkpoint: Callable[[], None] = lambda: None
        self.rss_ml_err: str | None = None

    def add(self, row: Row) -> None:
        self.rows.append(row)
        say(
            f"  -> [{row.scenario}] {row.label} {row.size}: Runstream {row.runstream.cell()} | "
            f"MLflow {row.mlflow.cell()}"
        )

    def servers(self) -> tuple[Runstream, MlflowServer]:
        if self.rs is None or self.ml is None:
            raise RuntimeError("servers not started")
        return self.rs, self.ml

    def side(self, unit: str, fn: Callable[[], Figure]) -> Figure:
        return guarded(unit, fn, say)

    # 1 + 7
    def s1(self) -> None:
        z = self.sizes
        rs, ml = self.servers()
        shapes = {"runs": "8 runs, 1 per rank", "one": "ONE run, 8 ranks"}
        ours: dict[tuple[str, int], Figure] = {}
        try:
            with rs_side.RankPool(8) as pool:
                for shape in shapes:
                    for total in z.ranks:
                        reps = z.ranks_repeats if total <= 200_000 else 1

                        def one_size(
                            total: int = total, reps: int = reps, shape: str = shape
                        ) -> Figure:
                            vals, notes = [], []
                            for _ in range(reps):
                                r = pool.ranks(
                                    rs.conn.api_url,
                                    rs.serve_pid,
                                    total,
                                    shape == "one",
                                    120 + total / 2000,
                                    kafka_pid=rs.kafka_pid,
                                )
                                self.raw.setdefault("1_runstream", []).append(r)
                                vals.append(r["points_per_s"])
                                self.rss_rs.append(r["serve_peak_rss_kb"] / GIB)
                                notes.append(
                                    f"logged {r['logged_s']:.2f}s, in Kafka "
                                    f"{r['delivered_s']:.2f}s, queryable {r['seconds']:.2f}s"
                                    f" ({cpu_note(r)})"
                                )
                            return Figure(vals, "pts/s", note="; ".join(notes))

                        ours[(shape, total)] = self.side("pts/s", one_size)
        except Exception as exc:  # noqa: BLE001 - the pool itself failed: every cell says so
            err = first_line(exc)
            for shape in shapes:
                for total in z.ranks:
                    ours.setdefault((shape, total), Figure(unit="pts/s", error=err))
        for fig in ours.values():
            if fig.error and not self.rss_rs:
                self.rss_rs_err = fig.error
        ml_sizes = sorted({min(t, z.ranks_mlflow_cap) for t in z.ranks})
        theirs: dict[tuple[str, int], Figure] = {}
        try:
            out, (w_peak, t_peak) = mlflow_side(
                ml,
                "ranks",
                "--points",
                ",".join(map(str, ml_sizes)),
                "--procs",
                "8",
                "--shapes",
                ",".join(shapes),
                sample=True,
            )
            self.raw["1_mlflow"] = {
                **out,
                "workers_peak_rss_kb": w_peak,
                "tree_peak_rss_kb": t_peak,
            }
            self.rss_ml.append(w_peak / GIB)
            self.rss_ml_tree.append(t_peak / GIB)
            for rnd in out["rounds"]:
                key = (rnd["shape"], rnd["total"])
                if rnd["errors"]:
                    theirs[key] = Figure(
                        unit="pts/s", error=f"{len(rnd['errors'])} rank(s): {rnd['errors'][0]}"
                    )
                else:
                    theirs[key] = Figure([rnd["points_per_s"]], "pts/s")
        except Exception as exc:  # noqa: BLE001 - reported in the table
            self.rss_ml_err = first_line(exc)
            for shape in shapes:
                for size in ml_sizes:
                    theirs[(shape, size)] = Figure(unit="pts/s", error=self.rss_ml_err)
        for shape, label in shapes.items():
            for total in z.ranks:
                ml_size = min(total, z.ranks_mlflow_cap)
                fig_ml = theirs.get((shape, ml_size), Figure(unit="pts/s", error="not run"))
                if ml_size < total and fig_ml.ok:
                    fig_ml = Figure(
                        fig_ml.values,
                        "pts/s",
                        estimated=True,
                        note=f"rate measured at {human(ml_size)} points",
                    )
                self.add(
                    Row(
                        "1",
                        f"8 ranks -> all queryable ({label})",
                        human(total),
                        ours[(shape, total)],
                        fig_ml,
                        "higher",
                        "≥ 1,000,000 pts/s",
                        1_000_000,
                    )
                )

    def s7(self) -> None:
        rs_fig = (
            Figure([max(self.rss_rs)], "GiB", note="serve VmHWM/VmRSS peak over scenario 1")
            if self.rss_rs
            else Figure(unit="GiB", error=self.rss_rs_err or "scenario 1 not run (use --only 1,7)")
        )
        ml_fig = (
            Figure(
                [max(self.rss_ml)],
                "GiB",
                note=f"sum of the {len(self.ml.workers()) if self.ml else '?'} gunicorn workers' "
                f"RSS; whole server tree (CLI, gunicorn master, job runner, huey consumers): "
                f"{max(self.rss_ml_tree):.2f} GiB",
            )
            if self.rss_ml
            else Figure(unit="GiB", error=self.rss_ml_err or "scenario 1 not run (use --only 1,7)")
        )
        self.add(
            Row(
                "7",
                "peak RSS of the server during scenario 1",
                "",
                rs_fig,
                ml_fig,
                "lower",
                "≤ 1 GiB",
                1.0,
            )
        )

    # 9
    def s9(self) -> None:
        rs, _ = self.servers()
        total = self.sizes.backlog
        no_log = Figure(unit="pts/s", unavailable=True, note="writes are synchronous: no backlog")
        out: dict[str, Any] = {}

        def ours() -> Figure:
            with rs_side.RankPool(8) as pool:
                out.update(pool.backlog(rs, total, 600 + total / 2000))
            self.raw["9_runstream"] = out
            return Figure(
                [out["points_per_s"]],
                "pts/s",
                note=f"from its first batch; {out['points_per_s_incl_start']:,.0f} pts/s from"
                f" serve's spawn (API up at {out['start_s']:.1f} s, first batch done at"
                f" {out['first_batch_s']:.1f} s, all {out['events']:,} events at"
                f" {out['seconds']:.1f} s); serve CPU"
                f" {out['serve_cpu_s'] * 1e6 / out['points']:.2f} s per 1M pts",
            )

        fig = self.side("pts/s", ours)
        self.add(
            Row(
                "9",
                "serve catches up on a backlog (8 ranks logged while it was down)",
                human(total),
                fig,
                no_log,
                "higher",
                "≥ 1,000,000 pts/s",
                1_000_000,
            )
        )
        rss = (
            Figure([out["serve_peak_rss_kb"] / GIB], "GiB", note="serve VmHWM over the catch-up")
            if out
            else Figure(unit="GiB", error=fig.error or "not run")
        )
        self.add(
            Row(
                "9",
                "peak RSS of serve while catching up",
                human(total),
                rss,
                Figure(unit="GiB", unavailable=True, note="no backlog"),
                "lower",
                "≤ 1 GiB",
                1.0,
            )
        )

    # 2
    def s2(self) -> None:
        z = self.sizes
        _, ml = self.servers()

        def ours() -> Figure:
            per = rs_side.call_cost(z.calls_rs)
            self.raw["2_runstream_us_per_batch"] = per
            return Figure(per, "µs", note="median of 10k-call batches, in-process")

        def theirs() -> Figure:
            out, _ = mlflow_side(ml, "call", "--calls", str(z.calls_mlflow))
            self.raw["2_mlflow_us"] = out["us"]
            return Figure(out["us"], "µs", note="single synchronous calls (fluent API)")

        self.add(
            Row(
                "2",
                "one log_metric call in the training loop",
                "",
                self.side("µs", ours),
                self.side("µs", theirs),
                "lower",
                "≤ 2 µs",
                2.0,
            )
        )

    # 3
    def s3(self) -> None:
        z = self.sizes
        rs, ml = self.servers()
        got: dict[str, list[float]] = {}

        def ours() -> Figure:
            got["rs"] = rs_side.freshness(rs.conn.api_url, z.fresh_rs)
            self.raw["3_runstream_ms"] = got["rs"]
            return Figure(got["rs"], "ms")

        def theirs() -> Figure:
            out, _ = mlflow_side(ml, "fresh", "--samples", str(z.fresh_mlflow))
            got["ml"] = out["ms"]
            self.raw["3_mlflow_ms"] = out["ms"]
            return Figure(out["ms"], "ms")

        f_rs, f_ml = self.side("ms", ours), self.side("ms", theirs)
        self.add(Row("3", "freshness: log call -> visible via API, p50", "", f_rs, f_ml, "lower"))

        def p99(fig: Figure, key: str) -> Figure:
            if not fig.ok:
                return fig
            vals = sorted(got[key])
            return Figure(
                [vals[max(0, int(len(vals) * 0.99 + 0.5) - 1)]],
                "ms",
                note=f"of {len(vals)} samples",
            )

        self.add(
            Row(
                "3",
                "freshness: log call -> visible via API, p99",
                "",
                p99(f_rs, "rs"),
                p99(f_ml, "ml"),
                "lower",
                "p99 ≤ 500 ms",
                500.0,
            )
        )

    # 4
    def s4(self) -> None:
        z = self.sizes
        rs, ml = self.servers()
        ml_out: dict[str, Any] = {}

        def theirs_measured() -> dict[str, Any]:
            if not ml_out:
                out, _ = mlflow_side(
                    ml,
                    "history",
                    "--points",
                    str(z.series_mlflow),
                    "--repeats",
                    str(min(3, z.read_repeats)),
                    timeout=7200,
                )
                self.raw["4_mlflow"] = out
                ml_out.update(out)
            return ml_out

        for size in z.series:
            got: dict[str, Any] = {}

            def ours(size: int = size, got: dict[str, Any] = got) -> Figure:
                got.update(rs_side.series(rs.conn.api_url, size, z.read_repeats, 1800))
                self.raw.setdefault("4_runstream", []).append({"points": size, **got})
                return Figure(got["full_s"], "s", note="Arrow IPC stream, parsed")

            def theirs(size: int = size) -> Figure:
                out = theirs_measured()
                scale = size / z.series_mlflow
                vals = [v * scale for v in out["full_s"]]
                note = f"get_metric_history of {out['rows']:,} pts"
                if scale != 1:
                    note = f"~ linear ×{scale:g} from {human(z.series_mlflow)}; " + note
                return Figure(vals, "s", estimated=scale != 1, note=note)

            f_rs = self.side("s", ours)
            self.add(
                Row(
                    "4",
                    "full read of one series",
                    human(size),
                    f_rs,
                    self.side("s", theirs),
                    "lower",
                    "≤ 1 s (1M)" if size >= 1_000_000 else "",
                    1.0 if size >= 1e6 else None,
                )
            )

            def ours_view(f_rs: Figure = f_rs, got: dict[str, Any] = got) -> Figure:
                if not f_rs.ok:
                    raise RuntimeError(f_rs.error or "series not logged")
                return Figure(
                    [v * 1e3 for v in got["view_s"]], "ms", note=f"{got['buckets']} buckets"
                )

            def theirs_view(size: int = size) -> Figure:
                if size != z.series_mlflow:
                    return Figure(
                        unit="ms", note="measured at MLflow's size only", unavailable=True
                    )
                out = theirs_measured()
                return Figure(
                    [v * 1e3 for v in out["view_s"]],
                    "ms",
                    note=f"get-history-bulk-interval, {out['view_rows']} pts",
                )

            self.add(
                Row(
                    "4",
                    "1,000-bucket view of the series",
                    human(size),
                    self.side("ms", ours_view),
                    self.side("ms", theirs_view),
                    "lower",
                    "≤ 50 ms",
                    50.0,
                )
            )

    # 5
    def s5(self) -> None:
        """Each side searches as soon as its runs are visible, and again SETTLE_S later
        (Runstream rewrites search documents and merges its search table after a load)."""
        z = self.sizes
        rs, ml = self.servers()
        settle = f"{rs_side.SETTLE_S:g} s later"
        for runs in z.search_runs:
            got: dict[str, dict[str, Any]] = {}

            def ours(runs: int = runs, got: dict[str, Any] = got) -> Figure:
                budget = z.search_budget_s if runs > 1000 else None
                out = rs_side.search(rs.conn.api_url, runs, z.search_repeats, 900, budget)
                self.raw.setdefault("5_runstream", []).append({"planned": runs, **out})
                got["rs"] = out
                note = f"{out['rows']} rows; {out['runs']:,} runs logged in {out['logged_s']:.0f}s"
                if out["runs"] < runs:
                    note = f"ONLY {out['runs']:,} of {runs:,} runs (set-up budget spent); " + note
                return Figure([v * 1e3 for v in out["s"]], "ms", note=note)

            def theirs(runs: int = runs, got: dict[str, Any] = got) -> Figure:
                if runs > z.search_mlflow_cap:
                    return Figure(
                        unit="ms",
                        unavailable=True,
                        note=f"not run: > {human(z.search_mlflow_cap)} runs",
                    )
                out, _ = mlflow_side(
                    ml,
                    "search",
                    "--runs",
                    str(runs),
                    "--repeats",
                    str(z.search_repeats),
                    "--settle",
                    str(rs_side.SETTLE_S),
                )
                self.raw.setdefault("5_mlflow", []).append({"runs": runs, **out})
                got["ml"] = out
                return Figure([v * 1e3 for v in out["s"]], "ms", note=f"{out['rows']} rows")

            goal = 20.0 if runs <= 1000 else 100.0
            f_rs = self.side("ms", ours)
            f_ml = self.side("ms", theirs)
            made = self.raw.get("5_runstream", [{}])[-1].get("runs", runs) if f_rs.ok else runs
            size = f"{human(runs)} runs" + (f" (RS: only {made:,})" if made < runs else "")
            missing = f_ml.note or "not run"
            first = (
                _searches(got.get("rs"), "first", "one sample; no result held yet"),
                _searches(got.get("ml"), "first", "one sample", missing),
            )
            later = (
                _searches(got.get("rs"), "s_settled", settle),
                _searches(got.get("ml"), "s_settled", settle, missing),
            )
            for label, rs_fig, ml_fig in (
                ("first search", *first),
                ("as soon as visible", f_rs, f_ml),
                (settle, *later),
            ):
                self.add(
                    Row(
                        "5",
                        f"search: filter loss<0.5, order loss, 100 rows ({label})",
                        size,
                        rs_fig,
                        ml_fig,
                        "lower",
                        f"≤ {goal:g} ms",
                        goal,
                    )
                )

    # 6
    def s6(self) -> None:
        rs, _ = self.servers()
        if not rs_side.replay_available():
            fig = Figure(unit="pts/s", unavailable=True, note="no processors/replay.py")
        else:

            def ours() -> Figure:
                out = rs_side.replay(rs, 900)
                self.raw["6_runstream"] = out
                return Figure(
                    [out["points_per_s"]],
                    "pts/s",
                    note=f"{out['points']:,} points, {out['events']:,} events in "
                    f"{out['seconds']:.1f} s ({out['events'] / out['seconds']:,.0f} events/s)",
                )

            fig = self.side("pts/s", ours)
        self.add(
            Row(
                "6",
                "replay all read models from the log",
                "whole topic",
                fig,
                Figure(unit="pts/s", unavailable=True, note="no event log"),
                "higher",
                "≥ 1,000,000 pts/s",
                1_000_000,
            )
        )

    # 8
    def s8(self) -> None:
        rs, ml = self.servers()
        targets = {"runstream": (rs.conn.api_url, [rs.serve_pid]), "mlflow": (ml.uri, ml.tree())}
        res: dict[str, dict[str, list[dict[str, Any]] | str]] = {"runstream": {}, "mlflow": {}}
        for letter in "abcdef":
            for name, (uri, pids) in targets.items():
                res[name][letter] = self.peer(name, letter, uri, pids)
        self.raw["8"] = res
        for letter in "abcdef":
            r_rs, r_ml = res["runstream"][letter], res["mlflow"][letter]
            base = r_ml if isinstance(r_ml, list) else r_rs if isinstance(r_rs, list) else []
            n = max(len(base), 1)
            for i in range(n):
                desc = base[i]["desc"] if base else f"scenario {letter}"

                def pick(r: list[dict[str, Any]] | str, i: int = i) -> tuple[Figure, str]:
                    if isinstance(r, str):
                        return Figure(error=r), "higher"
                    if i >= len(r):
                        return Figure(error="row missing from its output"), "higher"
                    rec = r[i]
                    if rec.get("errors"):
                        return Figure(error=f"{rec['errors']} errors; {rec.get('notes', '')}"), ""
                    if "latency_s" in rec:
                        lat = rec["latency_s"]
                        unit, vals = ("ms", [v * 1e3 for v in lat])
                        return Figure(vals, unit, note=rec.get("notes", "")), "lower"
                    return Figure([rec["rate"]], rec["unit"], note=rec.get("notes", "")), "higher"

                f_rs, better = pick(r_rs)
                f_ml, better_ml = pick(r_ml)
                self.add(
                    Row("8", f"bench_mlflow {letter}: {desc}", "", f_rs, f_ml, better_ml or better)
                )

    def peer(self, name: str, letter: str, uri: str, pids: list[int]) -> list[dict[str, Any]] | str:
        """bench_mlflow.py, unchanged, from its own directory, in the MLflow venv."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "r.json"
            argv = [
                str(mlflow_python()),
                "bench_mlflow.py",
                "--tracking-uri",
                uri,
                "--only",
                letter,
                "--json",
                str(out),
                "--prefix",
                f"bench-{name}",
                "--server-pids",
                ",".join(map(str, pids)),
                *self.sizes.peer_args,
            ]
            say(f"[8] {name} {letter}: {shlex.join(argv[1:])}")
            try:
                p = subprocess.run(argv, cwd=PEER_DIR, capture_output=True, text=True, timeout=900)
            except subprocess.TimeoutExpired:
                return "timed out after 900 s"
            if p.returncode != 0 or not out.exists():
                lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
                return lines[-1][:160] if lines else f"exit {p.returncode}"
            rows: list[dict[str, Any]] = json.loads(out.read_text())["results"].get(letter, [])
            rank_err = [ln for ln in p.stderr.splitlines() if "rank errors" in ln]
            if rank_err:
                for r in rows:
                    if r.get("errors"):
                        r["notes"] = rank_err[0][:160]
            return rows

    # ---------------------------------------------------------------- run it all
    def run(self, only: list[str]) -> None:
        say(f"load before: {loadavg()}")
        self.raw["load_before"] = loadavg()
        try:
            version = ensure_mlflow_venv(say)
            self.raw["mlflow_version"] = version
            self.ml = mlflow_up(say)
            self.rs = runstream_up(say)
            os.environ.update(self.rs.conn.env())
            os.environ["RUNSTREAM_HOME"] = str(RS_HOME)
            import logging

            logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
            order = ["1", "7", "9", "2", "3", "4", "5", "8", "6"]  # 6 stops serve: last
            for s in order:
                if s in only:
                    say(f"[{s}] ...")
                    t = time.perf_counter()
                    getattr(self, f"s{s}")()
                    say(f"[{s}] done in {time.perf_counter() - t:.0f}s")
                    self.checkpoint()
        finally:
            self.raw["load_after"] = loadavg()
            import producers

            producers.shutdown(timeout=10)
            if self.ml is not None:
                self.ml.stop()
                say(f"[mlflow] stopped (pid {self.ml.pid})")
            if self.rs is not None:
                stopped = self.rs.stack.down()
                say(f"[runstream] stopped {', '.join(stopped)}")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine() -> str:
    model, cores = "?", 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "?":
                model = line.split(":", 1)[1].strip()
            if line.startswith("processor"):
                cores += 1
        mem = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
    except (OSError, StopIteration, ValueError):
        mem = 0
    return (
        f"{model}, {cores} logical CPUs, {mem / 1024 / 1024:.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


# ------------------------------------------------------------------------ output
HEAD = ("#", "scenario", "size", "Runstream", "MLflow", "RS advantage", "goal (RS)", "met")


def ratio_text(r: float) -> str:
    return f"{r:,.0f}×" if r >= 100 else f"{r:.1f}×" if r >= 1 else f"{r:.2g}× (behind)"


def cells(row: Row) -> list[str]:
    ratio = row.ratio()
    met = row.goal_met()
    return [
        row.scenario,
        row.label,
        row.size,
        row.runstream.cell(),
        row.mlflow.cell(),
        "" if ratio is None else ratio_text(ratio),
        row.goal,
        "" if met is None else ("yes" if met else "NO"),
    ]


def print_table(rows: list[Row], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(*HEAD, title=title, show_lines=False)
    for r in rows:
        t.add_row(*cells(r))
    Console(width=250).print(t)


def markdown_table(rows: list[Row]) -> str:
    out = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    for r in rows:
        out.append("| " + " | ".join(c.replace("|", "/") for c in cells(r)) + " |")
    return "\n".join(out)


MD_START, MD_END = "<!-- bench:start -->", "<!-- bench:end -->"


def write_md(path: Path, rows: list[Row], meta: dict[str, Any]) -> None:
    notes = "\n".join(
        f"- [{r.scenario}] {r.label} {r.size}: Runstream — {r.runstream.note}; "
        f"MLflow — {r.mlflow.note}".rstrip("; ")
        for r in rows
        if r.runstream.note or r.mlflow.note
    )
    body = f"""{MD_START}
## Runstream beside MLflow {meta["mlflow_version"]}

- date: {meta["date"]}
- machine: {meta["machine"]}
- load average (1/5/15 min) before / after: {meta["load_before"]} / {meta["load_after"]}
- command: `{meta["command"]}` ({meta["mode"]} sizes)
- cells: median [min–max, n repeats]; `~` = extrapolated (see notes); RS advantage = how many
  times better Runstream's median is; FAILED = that side raised (first line of the error).

{markdown_table(rows)}

Notes:
{notes}
{MD_END}
"""
    old = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if MD_START in old and MD_END in old:
        new = (
            old[: old.index(MD_START)] + body.rstrip("\n") + old[old.index(MD_END) + len(MD_END) :]
        )
    else:
        new = old.rstrip("\n") + "\n\n" + body
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about ÷10)")
    ap.add_argument("--only", default="1,2,3,4,5,6,7,8,9", help="comma list of scenarios 1..9")
    ap.add_argument("--json", default=None, help="write every figure and raw sample here")
    ap.add_argument("--write-md", action="store_true", help="write/update BENCHMARKS.md")
    ap.add_argument(
        "--search-budget",
        type=float,
        default=None,
        help="s of set-up allowed for the >1,000-run search (default 90; quick 60)",
    )
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in only if s not in "123456789" or len(s) != 1]
    if bad:
        ap.error(f"unknown scenario(s) {bad}: pick from 1..9")
    if "7" in only and "1" not in only:
        say("note: scenario 7 measures during scenario 1; adding 1")
        only.append("1")
    suite = Suite(args)
    t0 = time.perf_counter()
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])

    def meta(error: str | None, final: bool) -> dict[str, Any]:
        return {
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "machine": machine(),
            "command": command.strip(),
            "mode": ("quick" if args.quick else "full") + ("" if final else " (in progress)"),
            "mlflow_version": suite.raw.get("mlflow_version", "?"),
            "load_before": suite.raw.get("load_before", "?"),
            "load_after": suite.raw.get("load_after", loadavg()),
            "seconds": round(time.perf_counter() - t0),
            "aborted": error,
        }

    def save(error: str | None = None, final: bool = False) -> None:
        m = meta(error, final)
        if args.json:
            rows = [r.to_json() for r in suite.rows]
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(
                json.dumps({**m, "rows": rows, "raw": suite.raw}, indent=1, default=str)
            )
        if args.write_md:
            write_md(REPO / "BENCHMARKS.md", suite.rows, m)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)  # run the finally blocks: servers are stopped

    signal.signal(signal.SIGTERM, on_term)
    suite.checkpoint = save
    error = None
    try:
        suite.run(only)
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # still print what we have
        error = first_line(exc)
        say(f"ABORTED: {error}")
    m = meta(error, True)
    print_table(
        suite.rows,
        f"Runstream vs MLflow {m['mlflow_version']} — {m['mode']} — load "
        f"{m['load_before']} → {m['load_after']} — {m['seconds']} s",
    )
    if error:
        sys.stdout.write(f"ABORTED: {error}\n")
    save(error, final=True)
    return 1 if error else 0
