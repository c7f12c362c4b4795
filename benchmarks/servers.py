"""What the benchmark brings up and takes down: the Runstream stack (its own home) and an
MLflow tracking server in its own venv. Both are started here and stopped by PID."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RS_HOME = REPO / ".runstream" / "bench"
CACHE = REPO / ".runstream" / "cache"
MLFLOW_VENV = REPO / ".runstream" / "mlflow-venv"
MLFLOW_HOME = RS_HOME / "mlflow"
#: the version checked against the peer's REST notes (../shared/peers/mlflow/REST_API.md)
MLFLOW_VERSION = "3.17.2"
PEER_DIR = Path("/work/shared/peers/mlflow")

Say = Callable[[str], None]


# ------------------------------------------------------------------------ /proc helpers
def proc_status_kb(pid: int, field_name: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def descendants(root: int) -> list[int]:
    """`root` and every process below it (from /proc/*/stat ppid links)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (0.0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> bool:
    """Reset VmHWM of `pid` (Linux: write 5 to clear_refs); False when not permitted."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples the summed VmRSS of some PIDs every `interval` s in a thread; `peak_kb`."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 0.1) -> None:
        self.pids = pids
        self.interval = interval
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            total = sum(proc_status_kb(p, "VmRSS") or 0 for p in self.pids())
            self.peak_kb = max(self.peak_kb, total)
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, alive: Callable[[], bool], timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not alive():
            raise RuntimeError(f"server exited before {url} answered")
        with (
            contextlib.suppress(urllib.error.URLError, OSError),
            urllib.request.urlopen(url, timeout=2) as r,
        ):
            if r.status == 200:
                return time.monotonic() - t0
        time.sleep(0.25)
    raise RuntimeError(f"{url} not answering after {timeout:.0f}s")


# ------------------------------------------------------------------------ Runstream
@dataclass
class Runstream:
    stack: Any
    conn: Any

    @property
    def serve_pid(self) -> int:
        return int(self.stack.records()["serve"].pid)

    @property
    def kafka_pid(self) -> int:
        return int(self.stack.records()["kafka"].pid)

    def stop_serve(self) -> None:
        from runstream.stack.procs import stop

        rec = self.stack.records().get("serve")
        if rec is not None:
            stop(rec)

    def start_serve(self) -> None:
        """Start serve again (the stack's other processes keep running); returns once its
        /health answers."""
        self.conn = self.stack.up(serve=True)


def runstream_up(say: Say, fresh: bool = True) -> Runstream:
    from runstream.stack import LocalStack

    stack = LocalStack(RS_HOME, cache=CACHE)
    if fresh:
        stack.destroy()  # stops this home's recorded processes, deletes its data
    conn = stack.up(progress=lambda m: say(f"[runstream] {m}"), serve=True)
    return Runstream(stack, conn)


# ------------------------------------------------------------------------ MLflow
def mlflow_python() -> Path:
    return MLFLOW_VENV / "bin" / "python"


def _mlflow_ok() -> str | None:
    """The installed mlflow version when the venv has the full server, else None."""
    py = mlflow_python()
    if not py.exists():
        return None
    probe = "import mlflow, mlflow.server, sqlalchemy, gunicorn; print(mlflow.__version__)"
    r = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, timeout=120)
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_mlflow_venv(say: Say) -> str:
    """`python3.11 -m venv` + `pip install mlflow==MLFLOW_VERSION` unless already there."""
    version = _mlflow_ok()
    if version == MLFLOW_VERSION:
        return version
    say(f"[mlflow] installing mlflow=={MLFLOW_VERSION} into {MLFLOW_VENV} (found: {version})")
    python = shutil.which("python3.11") or sys.executable
    if not mlflow_python().exists():
        subprocess.run([python, "-m", "venv", str(MLFLOW_VENV)], check=True)
    subprocess.run(
        [str(mlflow_python()), "-m", "pip", "install", "-q", f"mlflow=={MLFLOW_VERSION}"],
        check=True,
        timeout=1800,
    )
    version = _mlflow_ok()
    if version is None:
        raise RuntimeError("mlflow installed but `import mlflow.server` fails in its venv")
    return version


@dataclass
class MlflowServer:
    pid: int
    port: int
    log: Path
    popen: subprocess.Popen[bytes] = field(repr=False)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tree(self) -> list[int]:
        return descendants(self.pid)

    def workers(self) -> list[int]:
        """The gunicorn worker processes (a gunicorn process whose parent is gunicorn)."""
        tree = self.tree()
        gun = {
            p for p in tree if any(a == "gunicorn" or a.endswith("/gunicorn") for a in cmdline(p))
        }
        return [p for p in gun if parent(p) in gun]

    def stop(self) -> None:
        """SIGTERM the server, then any of its processes still there (by PID)."""
        tree = self.tree()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        deadline = time.monotonic() + 10
        for pid in tree:
            while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                if proc_status_kb(pid, "VmRSS") is None:  # zombie: gone
                    break
                time.sleep(0.1)
            if os.path.exists(f"/proc/{pid}") and proc_status_kb(pid, "VmRSS") is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def mlflow_up(say: Say, workers: int = 4) -> MlflowServer:
    shutil.rmtree(MLFLOW_HOME, ignore_errors=True)
    MLFLOW_HOME.mkdir(parents=True)
    port = free_port()
    log = MLFLOW_HOME / "server.log"
    argv = [
        str(MLFLOW_VENV / "bin" / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{MLFLOW_HOME / 'mlflow.db'}",
        "--default-artifact-root",
        str(MLFLOW_HOME / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        # gunicorn instead of uvicorn (INFRA.md: avoids a 40 ms uvicorn stall)
        "--gunicorn-opts",
        "--timeout 600",
    ]
    env = dict(os.environ, MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true")
    env = {k: v for k, v in env.items() if not k.startswith(("RUNSTREAM_", "VIRTUAL_ENV"))}
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=str(MLFLOW_HOME),
        )
    server = MlflowServer(popen.pid, port, log, popen)
    try:
        waited = wait_http(f"{server.uri}/health", lambda: popen.poll() is None, 120)
    except RuntimeError:
        server.stop()
        raise
    say(f"[mlflow] server ready in {waited:.1f}s at {server.uri} (pid {server.pid}, log {log})")
    return server
