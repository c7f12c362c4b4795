"""Fixtures of the UI tests: runs produced for real (SDK ranks -> a fresh Kafka topic -> a
ProjectionWorker in this process -> chDB), the query API + UI served by uvicorn on a free
port over the same chDB client, and headless Debian Chromium driven by Playwright.

Chromium is Debian's (`apt-get install -y chromium` -> /usr/bin/chromium); Playwright never
downloads a browser here. Without /usr/bin/chromium (or the `playwright` package) the
browser tests skip naming what is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import multiprocessing
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.query_api.live import ServerThread, WorkerThread

CHROMIUM = Path(os.environ.get("RUNSTREAM_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]


@dataclass
class UiStack:
    """What the UI tests read: the served app and the runs really produced into it."""

    url: str
    database: str
    topic: str
    bootstrap: str
    cfg: dict[str, Any]
    runs: dict[str, str] = field(default_factory=dict)  # label -> run id
    names: dict[str, str] = field(default_factory=dict)  # label -> run name
    artifact: bytes = b""
    console_line: str = ""

    def wait_projected(self, client: Any, timeout: float = 120.0) -> None:
        from tests.processors.stackutil import wait_projected

        # a thread of its own: Playwright's sync API keeps an event loop in this one
        errors: list[BaseException] = []

        def main() -> None:
            try:
                asyncio.run(
                    wait_projected(client, self.database, self.bootstrap, self.topic, timeout)
                )
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=main, name="ui-test-wait")
        t.start()
        t.join(timeout + 30)
        if errors:
            raise errors[0]


def _curve(step: int, steps: int, scale: float) -> float:
    return scale * 2.0 * math.exp(-step / (steps / 4))


def _produce(stack: UiStack, client: Any) -> None:
    """Three runs of experiment `ui-demo`: A (2 ranks, every kind of run data), B, C (failed)."""
    import producers
    from producers.config import ClientConfig
    from tests.ui import _ranks

    cfg = ClientConfig(**stack.cfg)
    common: dict[str, Any] = {"config": cfg, "capture_code": False, "capture_environment": False}
    tag = uuid.uuid4().hex[:6]

    # A: rank 0 here (owner, console captured), rank 1 in a spawned process
    stack.names["a"] = f"ui-resnet-a-{tag}"
    run_id_a = f"ui-a-{uuid.uuid4().hex[:12]}"
    steps = 3_000
    run = producers.start_run(
        "ui-demo",
        name=stack.names["a"],
        run_id=run_id_a,
        rank=0,
        world_size=2,
        params={"lr": "0.001", "batch_size": 256, "optimizer": "adamw"},
        tags={"team": "vision", "stage": "ui-test"},
        capture_console=True,
        **common,
    )
    stack.runs["a"] = run.id
    run.alert_on("loss", "<", 0.5, text="train loss fell below 0.5", split="train")
    run.log_attributes({"gpu": {"model": "A100", "count": 8}})
    run.log_input("imagenet-mini", version="v2", digest="d1g357", source_uri="s3://data/imnet")
    stack.console_line = f"epoch 0 of run {tag}: warming up"
    print(stack.console_line, flush=True)
    ctx = multiprocessing.get_context("spawn")
    rank1 = ctx.Process(target=_ranks.train_rank, args=(stack.cfg, run_id_a, 1, 2, steps))
    rank1.start()
    for step in range(steps):
        loss = _curve(step, steps, 1.0)
        run.log_metrics({"loss": loss, "acc": 1 - loss / 3}, step=step, split="train")
        if step % 50 == 0:
            run.log_metrics({"loss": loss * 1.1}, step=step, split="val")
    stack.artifact = os.urandom(64 * 1024)
    run.log_artifact(stack.artifact, key="model/weights.bin")
    run.log_output("resnet-a", version="1", kind="MODEL")
    run.set_notes("UI test run: two ranks, one run id")
    rank1.join(120)
    assert rank1.exitcode == 0, "rank 1 failed"
    assert run.end(timeout=60)

    # B: one rank, another learning rate
    stack.names["b"] = f"ui-resnet-b-{tag}"
    run = producers.start_run(
        "ui-demo", name=stack.names["b"], params={"lr": "0.01", "batch_size": 128}, **common
    )
    stack.runs["b"] = run.id
    for step in range(1_500):
        run.log_metric("loss", _curve(step, 1_500, 1.3), step=step, split="train")
    assert run.end(timeout=60)

    # C: a failed run
    stack.names["c"] = f"ui-resnet-c-{tag}"
    run = producers.start_run(
        "ui-demo", name=stack.names["c"], params={"lr": "0.1", "batch_size": 128}, **common
    )
    stack.runs["c"] = run.id
    for step in range(300):
        run.log_metric("loss", 3.0 + step * 0.01, step=step, split="train")
    assert run.end("FAILED", reason="loss diverged", timeout=60)
    stack.wait_projected(client)


@pytest.fixture(scope="module")
def ui_stack(
    connection: Any, chdb_client: Any, minio_client: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[UiStack]:
    from processors import ProjectionWorker, WorkerSettings
    from processors.migrate import migrate
    from query_api import ui
    from query_api.app import create_app
    from query_api.settings import Settings
    from runstream.stack.kafka import create_topics

    if not ui.is_built():
        pytest.fail(f"the web UI is not built: run `{ui.BUILD_COMMAND}`")
    suffix = uuid.uuid4().hex[:8]
    database = f"t_ui_{suffix}"
    topic = f"t.ui.{suffix}"
    create_topics(connection.kafka_bootstrap, {topic: 4, f"{topic}.dlq": 1})
    chdb_client.command(f"CREATE DATABASE {database}")
    migrate(chdb_client, database)
    worker = WorkerThread(
        ProjectionWorker(
            chdb_client,
            bootstrap=connection.kafka_bootstrap,
            database=database,
            topic=topic,
            dlq_topic=f"{topic}.dlq",
            settings=WorkerSettings(
                group_id=f"g-ui-{suffix}", batch_timeout=0.1, pointer_check_interval=0.2
            ),
        )
    ).start()
    app = create_app(Settings(database=database), lambda: chdb_client)
    app.state.object_store = minio_client
    server = ServerThread(app).start()
    spool = tmp_path_factory.mktemp("ui-spool")
    stack = UiStack(
        url=server.url,
        database=database,
        topic=topic,
        bootstrap=connection.kafka_bootstrap,
        cfg={
            "kafka_bootstrap": connection.kafka_bootstrap,
            "topic": topic,
            "spool_dir": str(spool),
            "mode": "kafka",
            "s3_endpoint": connection.s3_endpoint,
            "s3_access_key": connection.s3_access_key,
            "s3_secret_key": connection.s3_secret_key,
            "s3_bucket": connection.s3_bucket,
        },
    )
    try:
        _produce(stack, chdb_client)
        yield stack
    finally:
        server.stop()
        worker.stop()
        chdb_client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
        shutil.rmtree(spool, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install -y chromium` (Debian) installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the `playwright` package")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1400, "height": 1000}, accept_downloads=True, device_scale_factor=1
    )
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.set_default_timeout(20_000)
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
