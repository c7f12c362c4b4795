"""`python -m query_api.ui`: build the web UI into query_api/ui/static (npm ci + build.mjs)."""

from __future__ import annotations

import sys

from query_api.ui import build

if __name__ == "__main__":
    sys.stdout.write(f"built {build()}\n")
