"""Server settings from RUNSTREAM_* variables: numbers checked where they enter, and the
search cache `serve`/`api` build from them (pure: no service is contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runstream.serve import build_api
from runstream.settings import ServerSettings

REQUIRED = {
    "RUNSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1",
    "RUNSTREAM_CLICKHOUSE_URL": "chdb:///unused",
    "RUNSTREAM_S3_ENDPOINT": "http://127.0.0.1:2",
    "RUNSTREAM_S3_ACCESS_KEY": "a",
    "RUNSTREAM_S3_SECRET_KEY": "b",
}


@pytest.mark.parametrize(
    ("var", "text", "least"),
    [
        ("RUNSTREAM_SEARCH_CACHE_MB", "lots", 0),
        ("RUNSTREAM_SEARCH_CACHE_MB", "-1", 0),
        ("RUNSTREAM_SEARCH_CACHE_MB", "1.5", 0),
        ("RUNSTREAM_SEARCH_CACHE_MB", "²", 0),  # a digit int() refuses
        ("RUNSTREAM_PRESIGN_EXPIRY_S", "0", 1),
        ("RUNSTREAM_PRESIGN_EXPIRY_S", "15m", 1),
        ("RUNSTREAM_EXPERIMENT_CHECK_TTL_MS", "-5", 0),
        ("RUNSTREAM_EXPERIMENT_CHECK_TTL_MS", "0.5", 0),
    ],
)
def test_a_bad_number_is_refused_naming_its_variable(
    tmp_path: Path, var: str, text: str, least: int
) -> None:
    with pytest.raises(ValueError, match=var) as err:
        ServerSettings.load({**REQUIRED, var: text}, home=tmp_path)
    assert str(err.value) == f"{var} must be a whole number >= {least}, got {text!r}"


@pytest.mark.parametrize(("mb", "held"), [(None, 32 << 20), ("8", 8 << 20), ("0", None)])
def test_the_api_holds_as_many_search_results_as_configured(
    tmp_path: Path, mb: str | None, held: int | None
) -> None:
    env = {**REQUIRED, **({"RUNSTREAM_SEARCH_CACHE_MB": mb} if mb is not None else {})}
    app = build_api(ServerSettings.load(env, home=tmp_path), "runstream", lambda: None)
    results = app.state.shared.results
    assert (results.max_bytes if results is not None else None) == held


@pytest.mark.parametrize(("ms", "ttl"), [(None, 1.0), ("250", 0.25), ("0", 0.0)])
def test_the_api_holds_checked_experiments_as_long_as_configured(
    tmp_path: Path, ms: str | None, ttl: float
) -> None:
    env = {**REQUIRED, **({"RUNSTREAM_EXPERIMENT_CHECK_TTL_MS": ms} if ms is not None else {})}
    app = build_api(ServerSettings.load(env, home=tmp_path), "runstream", lambda: None)
    assert app.state.shared.checked_experiments.ttl_s == ttl
