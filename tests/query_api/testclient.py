"""Starlette's TestClient, imported without its httpx-vs-httpx2 notice.

Starlette 1.x warns (a UserWarning, an error under this project's filterwarnings) at import
when it finds `httpx` rather than `httpx2`; the venv pins httpx and the notice is not about
our code, so it is silenced here, at the one place the client is imported.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

__all__ = ["TestClient"]
