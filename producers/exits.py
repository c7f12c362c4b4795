"""Process-exit handling: every active run gets a final status however the process ends.

Rule: a normal exit ends runs FINISHED (atexit), an uncaught exception FAILED with its text
(`sys.excepthook`), KeyboardInterrupt KILLED, SIGTERM KILLED. SIGTERM is handled on a helper
thread — the interrupted thread may hold an SDK lock or be inside library code that must not
see an exception — which ends the runs, waits (bounded) for delivery and `os._exit(143)`s.
A Python SIGTERM handler installed before ours is called instead; SIG_IGN is respected.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from producers.run import terminating

Shutdown = Callable[[Any, Any], None]

_lock = threading.Lock()
_handlers_installed = False
_exit_status: tuple[str, str | None] | None = None
_shutdown: Shutdown = lambda status, reason: None  # noqa: E731 - replaced by install()


def _atexit() -> None:
    status, reason = _exit_status or ("FINISHED", None)
    _shutdown(status, reason)


def _excepthook(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    global _exit_status
    if issubclass(exc_type, KeyboardInterrupt):
        _exit_status = ("KILLED", "KeyboardInterrupt")
    else:
        _exit_status = ("FAILED", f"{exc_type.__name__}: {exc}"[:4000])
    _prev_excepthook(exc_type, exc, tb)


_prev_excepthook = sys.excepthook
_prev_sigterm: Any = None


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Record KILLED and end the runs from a helper thread, then exit with 143.

    Nothing is done on the interrupted main thread itself: it may be inside the SDK holding a
    lock (a log_metric append) or inside library code that must not see an exception. The
    helper ends every run KILLED, waits (bounded) for delivery and calls `os._exit(143)`;
    meanwhile the main thread goes on, and its metric points are dropped (the run is over).
    """
    global _exit_status
    _exit_status = ("KILLED", "SIGTERM")
    prev = _prev_sigterm
    if callable(prev):
        prev(signum, frame)
        return
    if prev == signal.SIG_IGN:
        return
    if terminating.is_set():  # a second SIGTERM while shutting down: stop now, never swallow it
        os._exit(128 + signal.SIGTERM)
    terminating.set()
    threading.Thread(target=_terminate, name="runstream-sigterm", daemon=True).start()


def _terminate() -> None:
    try:
        _shutdown("KILLED", "SIGTERM")
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(128 + signal.SIGTERM)


def install(shutdown: Shutdown) -> None:
    """Install the atexit hook, the excepthook and (from the main thread) SIGTERM, once."""
    global _handlers_installed, _prev_excepthook, _prev_sigterm, _shutdown
    with _lock:
        if _handlers_installed:
            return
        _handlers_installed = True
        _shutdown = shutdown
    atexit.register(_atexit)
    _prev_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            _prev_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _on_sigterm)
