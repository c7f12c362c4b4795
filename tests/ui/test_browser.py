"""The UI in headless Debian Chromium against the real stack: runs produced by SDK ranks,
projected by a worker in this process, served by uvicorn over the same chDB client."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ui.conftest import REPO, UiStack, sha256

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def _chart(page: Any, key: str) -> Any:
    return page.locator(f'[data-testid="chart"][data-key="{key}"]')


def _wait_chart_loaded(page: Any, key: str, loads: int = 1) -> Any:
    chart = _chart(page, key)
    page.wait_for_function(
        """([key, loads]) => {
          const el = document.querySelector(`[data-testid="chart"][data-key="${key}"]`);
          return el && Number(el.dataset.loads || 0) >= loads && el.querySelector("canvas");
        }""",
        arg=[key, loads],
    )
    return chart


def test_api_extras_over_the_produced_runs(ui_stack: UiStack) -> None:
    run_a = ui_stack.runs["a"]
    with httpx.Client(base_url=ui_stack.url, timeout=30) as http:
        producers = http.get(f"/api/v1/runs/{run_a}/producers").json()["producers"]
        assert [p["rank"] for p in producers] == [0, 1]
        assert {p["status"] for p in producers} == {"FINISHED"}
        alerts = http.get(f"/api/v1/runs/{run_a}/alerts").json()["alerts"]
        assert [(a["key"], a["op"], a["text"]) for a in alerts][:1] == [
            ("loss", "<", "train loss fell below 0.5")
        ]
        lineage = http.get(f"/api/v1/runs/{run_a}/lineage").json()
        assert [(i["name"], i["version"]) for i in lineage["inputs"]] == [("imagenet-mini", "v2")]
        assert [o["name"] for o in lineage["outputs"]] == ["resnet-a"]
        console = http.get(f"/api/v1/runs/{run_a}/console").json()
        text = "".join(c["text"] for c in console["chunks"])
        assert ui_stack.console_line in text
        assert {c["stream"] for c in console["chunks"]} <= {"stdout", "stderr"}
        tail = http.get(
            f"/api/v1/runs/{run_a}/console", params={"after_offset": console["next_after_offset"]}
        ).json()
        assert tail["chunks"] == []
        got = http.get(
            f"/api/v1/runs/{run_a}/artifacts/download", params={"key": "model/weights.bin"}
        )
        assert got.status_code == 200
        assert got.content == ui_stack.artifact
        assert got.headers["x-artifact-sha256"] == sha256(ui_stack.artifact)
        assert "weights.bin" in got.headers["content-disposition"]
        missing = http.get(f"/api/v1/runs/{run_a}/artifacts/download", params={"key": "nope"})
        assert missing.status_code == 404
        assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
        for route in ("producers", "alerts", "lineage", "console"):
            r = http.get(f"/api/v1/runs/no-such-run/{route}")
            assert r.status_code == 404, route
        page = http.get("/")
        assert page.status_code == 200
        assert "uPlot.iife.min.js" in page.text
        assert http.get("/ui/run/x").status_code == 200
        assert http.get("/ui/static/uPlot.iife.min.js").status_code == 200
        assert http.get("/ui/static/..%2F__init__.py").status_code == 404


def test_the_links_the_mlflow_client_prints_open_the_run_and_its_experiment(
    ui_stack: UiStack, page: Any
) -> None:
    """`mlflow` prints "View run <name> at: <server>/#/experiments/<e>/runs/<id>" (and the
    experiment's link) on every run end; pointed at Runstream they land on the run and on
    the experiment's runs table."""
    run_a = ui_stack.runs["a"]
    run = httpx.get(f"{ui_stack.url}/api/v1/runs/{run_a}", timeout=30).json()["run"]
    exp_id = run["experiment_id"]
    page.goto(f"{ui_stack.url}/#/experiments/{exp_id}/runs/{run_a}")
    page.wait_for_function(
        "(name) => (document.querySelector('[data-testid=run-name]') || {}).textContent"
        "?.startsWith(name)",
        arg=ui_stack.names["a"],
    )
    assert page.url.endswith(f"#/run/{run_a}")
    page.evaluate(f"location.hash = '#/experiments/{exp_id}'")
    page.wait_for_function("document.querySelectorAll('[data-testid=run-row]').length === 3")
    assert page.url.endswith(f"#/?exp={exp_id}")
    page.wait_for_function(
        "(e) => document.querySelector('[data-testid=experiment]').value === e", arg=exp_id
    )
    page.evaluate("location.hash = '#/experiments/no-such-experiment'")  # filtered: no run
    page.wait_for_function(
        "document.querySelector('[data-testid=run-count]')?.textContent === '0 runs'"
    )
    assert page.locator('[data-testid="run-row"]').count() == 0


def test_runs_table_filter_sort_run_page_zoom_download_compare(
    ui_stack: UiStack, page: Any, tmp_path: Path
) -> None:
    names = ui_stack.names
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(ui_stack.url + "/")

    # --- runs table: all three runs, then the search language
    rows = page.locator('[data-testid="run-row"]')
    rows.first.wait_for()
    assert rows.count() == 3
    page.fill('[data-testid="filter"]', "params.lr = '0.001' and status = 'FINISHED'")
    page.click('[data-testid="search"]')
    page.wait_for_function("document.querySelectorAll('[data-testid=run-row]').length === 1")
    assert rows.first.get_attribute("data-run-id") == ui_stack.runs["a"]
    page.fill('[data-testid="filter"]', "metrics.loss@train >")
    page.click('[data-testid="search"]')
    error = page.locator('[data-testid="error"]')
    error.wait_for()
    assert "position" in error.inner_text()
    page.fill('[data-testid="filter"]', "")
    page.click('[data-testid="search"]')
    page.wait_for_function("document.querySelectorAll('[data-testid=run-row]').length === 3")

    # --- sortable columns: a metric column orders on the server (order_by), lowest first
    page.click('[data-testid="col-metric:loss@train"]')  # metrics desc by default
    page.wait_for_function(
        "document.querySelector('[data-testid=order-by]').value.startsWith('metrics.')"
    )
    page.click('[data-testid="col-metric:loss@train"]')  # toggles to ascending
    page.wait_for_function("document.querySelector('[data-testid=order-by]').value.endsWith('ASC')")
    page.wait_for_function(
        "([a, b, c]) => [...document.querySelectorAll('[data-testid=run-row]')]"
        ".map(r => r.dataset.runId).join() === [a, b, c].join()",
        arg=[ui_stack.runs["a"], ui_stack.runs["b"], ui_stack.runs["c"]],
    )
    page.click('[data-testid="col-status"]')
    page.wait_for_function(
        "document.querySelector('[data-testid=order-by]').value === 'attributes.status ASC'"
    )
    page.wait_for_function(
        "document.querySelector('[data-testid=run-row] [data-testid=status]')"
        ".textContent === 'FAILED'"
    )
    page.click('[data-testid="col-duration"]')  # client-side: longest first
    first = page.locator('[data-testid="run-row"]').first.get_attribute("data-run-id")
    assert first == ui_stack.runs["a"]

    # --- the run page
    page.click(f'a:text-is("{names["a"]}")')
    page.wait_for_selector('main[data-ready="1"]')
    assert page.inner_text('[data-testid="run-name"]').startswith(names["a"])
    assert "FINISHED" in page.inner_text('[data-testid="run-name"]')
    params = page.inner_text('[data-testid="params"]')
    assert "lr" in params
    assert "0.001" in params
    assert "vision" in page.inner_text('[data-testid="tags"]')
    assert "A100" in page.inner_text('[data-testid="attributes"]')
    assert "two ranks" in page.inner_text('[data-testid="notes"]')
    lineage = page.locator('[data-testid="lineage"]')
    lineage.wait_for()
    assert "imagenet-mini" in lineage.inner_text()
    assert "resnet-a" in lineage.inner_text()
    producers = page.locator('[data-testid="producers"] tbody tr')
    producers.first.wait_for()
    assert producers.count() == 2
    assert page.locator('[data-testid="producers"] [data-testid="status"]').all_inner_texts() == [
        "FINISHED",
        "FINISHED",
    ]
    assert "train loss fell below 0.5" in page.inner_text('[data-testid="alerts"]')
    page.wait_for_function(
        "line => document.querySelector('[data-testid=console]').textContent.includes(line)",
        arg=ui_stack.console_line,
    )

    # --- charts: one per key; loss has train + val, acc has train
    loss = _wait_chart_loaded(page, "loss")
    assert loss.get_attribute("data-series") == "2"
    assert loss.get_attribute("data-drawn-series") == "2"
    assert int(loss.get_attribute("data-points") or 0) == 2 * 3_000 + 2 * 60
    assert _wait_chart_loaded(page, "acc").get_attribute("data-series") == "1"
    assert page.locator('[data-testid="chart"]').count() == 2
    # split toggle: hide val -> the loss chart is redrawn with one series
    page.uncheck('[data-testid="split-val"]')
    loss = _wait_chart_loaded(page, "loss")
    assert loss.get_attribute("data-series") == "1"
    page.check('[data-testid="split-val"]')
    loss = _wait_chart_loaded(page, "loss")
    assert loss.get_attribute("data-series") == "2"

    # zoom: drag across the middle of the plot re-queries the buckets of that range only
    over = loss.locator(".u-over")
    box = over.bounding_box()
    assert box is not None
    before = len([u for u in requests if "/buckets" in u and "start=" in u])
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.40, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.45, y, steps=5)
    page.mouse.up()
    page.wait_for_function(
        "document.querySelector('[data-testid=chart][data-key=loss]').dataset.start !== ''"
    )
    page.wait_for_function(
        "document.querySelector('[data-testid=chart][data-key=loss]').dataset.loads >= 2"
    )
    start = int(loss.get_attribute("data-start") or 0)
    end = int(loss.get_attribute("data-end") or 0)
    assert 0 < start < end < 3_000
    # the charts of a panel share the x axis: acc follows the zoom of loss
    page.wait_for_function(
        "s => document.querySelector('[data-testid=chart][data-key=acc]').dataset.start === s",
        arg=str(start),
    )
    zoomed = [u for u in requests if "/buckets" in u and f"start={start}&end={end}" in u]
    assert len(zoomed) == 3  # loss train + val, acc train: for the visible range only
    assert len(requests) > before
    # every point of the range (two ranks: train at every step, val every 50 steps)
    in_range = 2 * (end - start + 1) + 2 * sum(1 for s in range(start, end + 1) if s % 50 == 0)
    assert int(loss.get_attribute("data-points") or 0) == in_range
    loss.locator('[data-testid="reset-zoom"]').click()
    page.wait_for_function(
        "document.querySelector('[data-testid=chart][data-key=loss]').dataset.start === ''"
    )
    page.check('[data-testid="log-scale"]')
    _wait_chart_loaded(page, "loss")
    page.select_option('[data-testid="x-axis"]', "time")
    _wait_chart_loaded(page, "loss")
    assert any("x=time" in u for u in requests)

    # --- artifact download through the browser
    with page.expect_download() as info:
        page.click('[data-testid="artifact-link"]')
    download = info.value
    saved = tmp_path / "weights.bin"
    download.save_as(saved)
    assert download.suggested_filename == "weights.bin"
    assert sha256(saved.read_bytes()) == sha256(ui_stack.artifact)

    # --- compare: select A and B in the table, open the compare view
    page.goto(ui_stack.url + "/#/")
    page.locator('[data-testid="run-row"]').first.wait_for()
    for label in ("a", "b"):
        page.check(f'tr[data-run-id="{ui_stack.runs[label]}"] [data-testid="select-run"]')
    assert page.inner_text('[data-testid="compare"]') == "Compare (2)"
    page.click('[data-testid="compare"]')
    page.wait_for_selector('main[data-ready="1"]')
    loss = _wait_chart_loaded(page, "loss")
    assert loss.get_attribute("data-series") == "3"  # A train, A val, B train
    assert _wait_chart_loaded(page, "acc").get_attribute("data-series") == "1"
    table = page.inner_text('[data-testid="compare-table"]')
    assert names["a"] in table
    assert names["b"] in table
    assert re.search(r"params\.lr\s+0\.001\s+0\.01", table)
    page.wait_for_timeout(300)  # let the canvases settle before the screenshot
    # the README's picture is refreshed on request only, so a test run leaves the tree clean
    if os.environ.get("RUNSTREAM_UPDATE_SCREENSHOT"):
        shot = REPO / "docs" / "compare.png"
    else:
        shot = REPO / ".runstream" / "screenshots" / "compare.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


def test_live_run_charts_update_while_it_logs(
    ui_stack: UiStack, page: Any, chdb_client: Any
) -> None:
    import producers
    from producers.config import ClientConfig

    run = producers.start_run(
        "ui-demo",
        name="ui-live",
        params={"lr": "0.002"},
        config=ClientConfig(**ui_stack.cfg),
        capture_code=False,
        capture_environment=False,
    )
    stop = threading.Event()
    logged = [0]

    def train() -> None:
        step = 0
        while not stop.is_set():
            run.log_metric("loss", 1.0 / (1 + step), step=step, split="train")
            step += 1
            logged[0] = step
            if step % 50 == 0:
                run.flush(timeout=10)
                time.sleep(0.1)

    trainer = threading.Thread(target=train, daemon=True)
    trainer.start()
    try:
        deadline = time.monotonic() + 60
        while logged[0] < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        ui_stack.wait_projected(chdb_client)
        page.goto(f"{ui_stack.url}/#/run/{run.id}")
        page.wait_for_selector('main[data-ready="1"][data-live="1"]')
        loss = _wait_chart_loaded(page, "loss")
        first = int(loss.get_attribute("data-points") or 0)
        assert first > 0
        page.wait_for_function(
            "n => Number(document.querySelector('[data-testid=chart][data-key=loss]')"
            ".dataset.points) > n",
            arg=first,
            timeout=30_000,
        )
    finally:
        stop.set()
        trainer.join(30)
    assert run.end(timeout=60)
    # the page notices the end of the run and stops polling
    page.wait_for_selector('main[data-live="0"]', timeout=30_000)
    assert "FINISHED" in page.inner_text('[data-testid="run-name"]')
    total = logged[0]
    page.wait_for_function(
        "n => Number(document.querySelector('[data-testid=chart][data-key=loss]')"
        ".dataset.points) === n",
        arg=total,
        timeout=30_000,
    )
