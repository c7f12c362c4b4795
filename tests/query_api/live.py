"""A live API for tests: projection worker + uvicorn in background threads, the real `mlflow`
client in its own venv (`.runstream/mlflow-venv`, installed on first use)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
MLFLOW_VENV = REPO / ".runstream" / "mlflow-venv"
#: mlflow-skinny is the client without the server (fewest deps); pyfunc.log_model needs
#: numpy, pandas and cloudpickle on top of it.
MLFLOW_PACKAGES = ["mlflow-skinny", "numpy", "pandas", "cloudpickle"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mlflow_python() -> Path:
    """The venv's python with the real `mlflow` client; skips naming what is missing."""
    py = MLFLOW_VENV / "bin" / "python"
    probe = "import mlflow, mlflow.pyfunc, numpy, pandas, cloudpickle"
    if py.exists() and subprocess.run([py, "-c", probe], capture_output=True).returncode == 0:
        return py
    base = "python3.11"
    steps = [
        [base, "-m", "venv", str(MLFLOW_VENV)],
        [str(py), "-m", "pip", "install", "-q", *MLFLOW_PACKAGES],
    ]
    for cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot install the mlflow client ({' '.join(cmd)}): {exc}")
        if done.returncode != 0:
            pytest.skip(f"cannot install the mlflow client ({' '.join(cmd)}): {done.stderr[-500:]}")
    return py


class WorkerThread:
    """A ProjectionWorker on its own event loop in a background thread."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.loop = asyncio.new_event_loop()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="qa-test-worker", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.worker.run())
        except BaseException as exc:  # reported by stop()
            self.error = exc
        finally:
            self.loop.close()

    def start(self) -> WorkerThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.worker.stop(), self.loop).result(60)
            self.thread.join(60)
        if self.error is not None:
            raise self.error


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, name="qa-test-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@dataclass
class Live:
    url: str
    database: str
    topic: str
    app: Any


@contextlib.contextmanager
def live_api(
    connection: Any,
    chdb_client: Any,
    database: str,
    topic: str,
    writers: tuple[Any, ...] = (),
    settings: Mapping[str, Any] | None = None,
    **app_kwargs: Any,
) -> Iterator[Live]:
    """Worker + API over `database` / `topic` (the session stack's Kafka and S3); `writers`:
    the worker's other chDB handles (`runstream serve` gives it one); `settings`: API
    `Settings` fields besides the database."""
    from processors import ProjectionWorker, WorkerSettings
    from processors.migrate import migrate
    from query_api.app import create_app
    from query_api.artifacts import S3Settings
    from query_api.settings import Settings
    from runstream.serve import wake_reads_on_commits

    migrate(chdb_client, database)
    worker = WorkerThread(
        ProjectionWorker(
            chdb_client,
            bootstrap=connection.kafka_bootstrap,
            database=database,
            topic=topic,
            dlq_topic=f"{topic}.dlq",
            settings=WorkerSettings(
                group_id=f"g-{database}", batch_timeout=0.05, pointer_check_interval=0.2
            ),
            writers=writers,
        )
    ).start()
    s3 = S3Settings(
        connection.s3_endpoint,
        connection.s3_access_key,
        connection.s3_secret_key,
        connection.s3_bucket,
    )
    app = create_app(
        Settings(database=database, consistency_timeout_s=30.0, **(settings or {})),
        lambda: chdb_client,
        kafka_bootstrap=connection.kafka_bootstrap,
        topic=topic,
        s3=s3,
        **app_kwargs,
    )
    wake_reads_on_commits(app, worker.worker)  # as `runstream serve` does
    server = ServerThread(app).start()
    try:
        yield Live(server.url, database, topic, app)
    finally:
        server.stop()
        worker.stop()


def run_client(py: Path, script: str, url: str, tmp: Path, timeout: float = 600) -> str:
    """Run `script` with the mlflow venv against `url`; its stdout (fails with its stderr)."""
    path = tmp / "client.py"
    path.write_text(script)
    env = {"MLFLOW_TRACKING_URI": url, "PATH": "/usr/bin:/bin", "HOME": str(tmp)}
    done = subprocess.run(
        [str(py), str(path), url], capture_output=True, text=True, timeout=timeout, env=env
    )
    if done.returncode != 0:
        pytest.fail(f"mlflow client script failed:\n{done.stderr[-4000:]}", pytrace=False)
    return done.stdout


__all__ = ["Live", "live_api", "mlflow_python", "run_client"]
