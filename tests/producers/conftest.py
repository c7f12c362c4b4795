"""Producer tests never read or write the user's ~/.runstream, nor inherit RUNSTREAM_*/RANK
variables from the shell; every test ends with no active run and no open engine, and the
SDK's SIGTERM handler (installed by start_run) does not stay on the pytest process."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import producers

_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@pytest.fixture(autouse=True)
def _isolated_sdk(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    home: Path = tmp_path_factory.mktemp("rs-home")
    for name in list(os.environ):
        if name.startswith("RUNSTREAM_") or name in _VARS:
            monkeypatch.delenv(name)
    monkeypatch.setenv("RUNSTREAM_HOME", str(home))
    sigterm = signal.getsignal(signal.SIGTERM)
    yield
    producers.shutdown(timeout=2.0)
    signal.signal(signal.SIGTERM, sigterm)  # pytest's own SIGTERM behaviour stays intact
