"""The HTTP ingest transport against a stub server on 127.0.0.1 (the real API endpoint does
not exist yet): body format, auth header, retry on 5xx, rejection on 4xx surfaced."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import producers
from producers.engine import EngineOptions
from producers.transport import HTTP_CONTENT_TYPE, decode_http_batch
from schemas import codec
from tests.producers.helpers import points


class Stub:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.answers: list[int] = []  # status codes to answer first, then 200


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            code = state.answers.pop(0) if state.answers else 200
            if code == 200:
                state.bodies.append(body)
                state.headers.append(dict(self.headers))
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _start(url: str, tmp_path: Path) -> producers.Run:
    cfg = producers.ClientConfig(api_url=url, token="tok-123", spool_dir=str(tmp_path))
    assert cfg.mode == "http"
    return producers.start_run(
        "http",
        config=cfg,
        capture_code=False,
        capture_environment=False,
        options=EngineOptions(backoff_max_s=0.1),
    )


def test_batches_posted_with_token_and_retried_on_5xx(
    stub: tuple[Stub, str], tmp_path: Path
) -> None:
    state, url = stub
    state.answers = [503]
    run = _start(url, tmp_path)
    for step in range(1000):
        run.log_metric("loss", float(step), step=step)
    assert run.end(timeout=20)
    assert state.headers[0]["Content-Type"] == HTTP_CONTENT_TYPE
    assert state.headers[0]["Authorization"] == "Bearer tok-123"
    events = [codec.decode(p) for body in state.bodies for p in decode_http_batch(body)]
    assert sorted(s for (_k, _sp, s, _v) in points(events).values()) == list(range(1000))


def test_rejection_is_surfaced(stub: tuple[Stub, str], tmp_path: Path) -> None:
    state, url = stub
    state.answers = [401] * 1000
    run = _start(url, tmp_path)
    run.log_metric("loss", 1.0)
    assert not run.engine.flush(timeout=1.0), "a refused batch is never acknowledged"
    with pytest.raises(producers.BackgroundError, match="401"):
        run.log_metric("loss", 1.0)
    with pytest.raises(producers.BackgroundError, match="401"):
        run.end(timeout=0.5)
    assert run.status == "FINISHED"
    assert list(Path(run.engine.spool_dir).glob("*.seg")), "the events stay in the spool"
