"""The web UI: plain ES modules + uPlot, served by the query API.

`web/` holds the sources (`web/src/`) and the npm manifest + lock of uPlot; `build()` (or
`cd query_api/ui/web && npm ci --no-audit --no-fund && node build.mjs`) copies them and
uPlot's browser build into `static/` (ignored). `router` serves the page at `/` and
`/ui/...` and the assets at `/ui/static/...`; without a build every UI route answers 503
naming the build command (never a 500). The page only calls the public `/api/v1` routes.
"""

from __future__ import annotations

import mimetypes
import shutil
import subprocess
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from query_api.responses import error_response

HERE = Path(__file__).resolve().parent
WEB_DIR = HERE / "web"
STATIC_DIR = HERE / "static"
BUILD_COMMAND = "cd query_api/ui/web && npm ci --no-audit --no-fund && node build.mjs"
REQUIRED = ("index.html", "app.js", "uPlot.iife.min.js", "uPlot.min.css")

router = APIRouter(include_in_schema=False)


def is_built(static_dir: Path | None = None) -> bool:
    """True when every file the page needs is in `static_dir` (default: `STATIC_DIR`)."""
    folder = STATIC_DIR if static_dir is None else static_dir
    return all((folder / name).is_file() for name in REQUIRED)


def build(web_dir: Path | None = None) -> Path:
    """`npm ci` + `node build.mjs` in `web_dir` (default: `WEB_DIR`); returns the static
    folder it filled."""
    web_dir = WEB_DIR if web_dir is None else web_dir
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        raise RuntimeError("the UI build needs Node.js and npm on PATH")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=web_dir, check=True)
    subprocess.run([node, "build.mjs"], cwd=web_dir, check=True)
    return STATIC_DIR


def _not_built() -> Response:
    return error_response(
        503,
        "TEMPORARILY_UNAVAILABLE",
        f"the web UI is not built: run `{BUILD_COMMAND}` (or `python -m query_api.ui`)",
    )


def _index() -> Response:
    if not is_built():
        return _not_built()
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


@router.get("/", response_model=None)
def index() -> Response:
    """The single-page UI (hash routes: #/, #/run/<id>, #/compare?runs=a,b)."""
    return _index()


@router.get("/ui", response_model=None)
def ui_index() -> Response:
    return _index()


@router.get("/ui/static/{name:path}", response_model=None)
def asset(name: str) -> Response:
    """A built asset; unknown names (and any path leaving the folder) are 404."""
    if not is_built():
        return _not_built()
    root = STATIC_DIR.resolve()
    try:
        path = (root / name).resolve()
        found = root in path.parents and path.is_file()
    except (OSError, ValueError):  # a NUL byte, a name too long for the file system
        found = False
    if not found:
        return error_response(404, "ENDPOINT_NOT_FOUND", f"no UI asset {name!r}")
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if path.suffix in (".js", ".mjs"):
        media = "text/javascript"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


@router.get("/ui/{rest:path}", response_model=None)
def ui_page(rest: str) -> Response:
    """Any other /ui/... path is the page itself (deep links survive a reload)."""
    return _index()
