"""The web UI with tokens required: the token entered in the header is stored in
localStorage and sent as `Authorization: Bearer` on every API call (real Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from query_api.app import create_app
from query_api.auth import issue_token
from query_api.settings import Settings
from tests.query_api.live import ServerThread
from tests.query_api.readmodels import ReadModels

pytestmark = pytest.mark.stack


@pytest.fixture
def locked(chdb_client: Any, ch_database: str) -> Iterator[tuple[str, str]]:
    """(url, token): an API over one run that demands a token."""
    models = ReadModels(chdb_client, ch_database).migrate()
    models.experiment("1", "exp")
    models.run("r-locked", name="locked run", status="FINISHED")
    token = issue_token(chdb_client, ch_database, "default").token
    app = create_app(Settings(database=ch_database), lambda: chdb_client, require_tokens=True)
    server = ServerThread(app).start()
    try:
        yield server.url, token
    finally:
        server.stop()


def test_ui_sends_the_stored_token(page: Any, locked: tuple[str, str]) -> None:
    url, token = locked
    sent: list[str | None] = []
    page.on(
        "request",
        lambda r: sent.append(r.headers.get("authorization")) if "/api/v1/" in r.url else None,
    )
    page.goto(url + "/")
    error = page.locator('[data-testid="error"]')
    error.wait_for()
    assert "token" in error.inner_text().lower()  # 401 names the fix
    assert sent
    assert all(h is None for h in sent)

    page.fill('[data-testid="token-input"]', token)
    page.click('[data-testid="token-save"]')
    rows = page.locator('[data-testid="run-row"]')
    rows.first.wait_for()
    assert rows.count() == 1
    assert rows.first.get_attribute("data-run-id") == "r-locked"
    assert f"Bearer {token}" in sent
    assert page.evaluate("localStorage.getItem('runstream.token')") == token

    page.reload()  # kept across page loads
    rows.first.wait_for()
    assert page.input_value('[data-testid="token-input"]') == token

    page.fill('[data-testid="token-input"]', "rst_0000_wrong")
    page.click('[data-testid="token-save"]')
    page.wait_for_function("document.querySelector('[data-testid=error]') !== null")
    assert page.locator('[data-testid="run-row"]').count() == 0
