"""Sampling profiles of benchmark subprocesses with py-spy, summarised by pipeline stage.

    argv = profiled(argv, out)  # py-spy record ... -- argv (SIGINT to it writes `out`)
    print(render(summarize(out.read_text())))

py-spy samples every thread of the process (idle ones excluded), so time spent inside
ClickHouse (chDB, C++) shows as the Python frame that called it. A stack is charged to the
first stage (in `STAGES` order) with a marker in one of its frames.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

#: (stage, markers): a marker is a substring of one frame, as `_func` shortens it:
#: "function (package/file.py)"
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("decode (Avro -> dicts)", ("decode (processors/codec.py)", "decode_record (")),
    ("state load (ClickHouse reads)", ("load_state (processors/sink.py)", "positions (")),
    ("project (pure, numpy/Arrow)", ("project_batch (",)),
    ("write read models (ClickHouse inserts)", ("write (processors/sink.py)",)),
    ("positions intent/done (ClickHouse)", ("mark_intent (", "mark_done (")),
    ("S3 archive", ("(processors/archive.py)",)),
    ("Kafka fetch (aiokafka)", ("aiokafka/",)),
    ("event loop / other", ("",)),
)


@dataclass
class Profile:
    samples: int
    stages: list[tuple[str, int]]
    self_top: list[tuple[str, int]]


def available() -> bool:
    return _pyspy() is not None


def _pyspy() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def profiled(argv: list[str], out: Path, rate: int = 50) -> list[str]:
    """`argv` run under `py-spy record` (raw collapsed stacks into `out`); stop it with
    SIGINT: py-spy then writes the file and ends the child."""
    exe = _pyspy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    return [
        exe,
        "record",
        "--format",
        "raw",
        "--rate",
        str(rate),
        "--nonblocking",
        "--output",
        str(out),
        "--",
        *argv,
    ]


def _func(frame: str) -> str:
    """'name (path/to/file.py:123)' -> 'name (file.py)' so lines of one function add up."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else path
    return f"{name} ({short})"


def summarize(raw: str, top: int = 12) -> Profile:
    stages: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_func(f) for f in stack.split(";")]
        leaf[frames[-1]] += n
        for stage, markers in STAGES:
            if any(m in f for f in frames for m in markers):
                stages[stage] += n
                break
    order = [s for s, _ in STAGES]
    return Profile(
        total,
        sorted(stages.items(), key=lambda kv: order.index(kv[0])),
        leaf.most_common(top),
    )


def render(p: Profile, title: str) -> str:
    lines = [f"{title}: {p.samples:,} samples (all threads)"]
    for stage, n in p.stages:
        lines.append(f"  {100 * n / max(1, p.samples):5.1f}%  {stage}")
    lines.append("  hottest functions (self time):")
    for fn, n in p.self_top:
        lines.append(f"  {100 * n / max(1, p.samples):5.1f}%    {fn}")
    return "\n".join(lines)
