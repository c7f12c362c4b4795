"""Process-exit handling: every active run gets a final status however the process ends.

Rule: a normal exit ends runs FINISHED (atexit), an uncaught exception FAILED with its text
(`sys.excepthook`), KeyboardInterrupt KILLED, SIGTERM KILLED. SIGTERM is handled off the
interrupted thread — it may hold an SDK lock or be inside library code that must not see an
exception — by a helper that ends the runs, waits (bounded) for delivery and `os._exit(143)`s.
A Python SIGTERM handler installed before ours is called instead; SIG_IGN is respected.

Why a watcher thread: a Python-level signal handler only runs when the main thread executes
bytecode. A main thread blocked in C — e.g. a `multiprocessing` pool worker waiting on the
task queue's semaphore, which `Pool.terminate()` leaves held by the parent — never runs it,
and a SIGTERM that the default action would have ended then hangs the process (and the
parent joining it) forever. So the SDK also routes signals through `signal.set_wakeup_fd`
(the C-level handler writes the signal number there from whichever thread took it) to a
daemon thread that starts the same bounded shutdown without the main thread. A wakeup fd
installed earlier (an asyncio loop's) keeps receiving every byte. The main-thread handler
stays as the fallback when someone replaces the wakeup fd later.

Both the SIGTERM helper and the atexit hook end runs under one lock, so a SIGTERM arriving
while the interpreter is being torn down (atexit already ending the runs) neither ends a run
twice nor waits on a lock held by a frozen thread; every wait is bounded.
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

EXIT_CODE = 128 + signal.SIGTERM
# the helper's shutdown waits at most EXIT_TIMEOUT_S for delivery and as much to close;
# atexit waits for it a little longer, then leaves anyway
_SHUTDOWN_WAIT_S = 30.0

_lock = threading.Lock()
_handlers_installed = False
_exit_status: tuple[str, str | None] | None = None
_shutdown: Shutdown = lambda status, reason: None  # noqa: E731 - replaced by install()
_shutdown_lock = threading.Lock()  # one shutdown at a time (SIGTERM helper vs atexit)
_term_lock = threading.RLock()
_terminate_started = False
_sigterm_seen = 0  # SIGTERMs counted by the watcher
_watch_fds: tuple[int, int] | None = None  # (read, write) of the wakeup pipe
_forward_fd = -1  # a wakeup fd installed before ours: gets every byte we read


def _run_shutdown(status: str, reason: str | None) -> None:
    if not _shutdown_lock.acquire(timeout=_SHUTDOWN_WAIT_S):
        return  # another shutdown is stuck; never hang the exit on it
    try:
        _shutdown(status, reason)
    finally:
        _shutdown_lock.release()


def _atexit() -> None:
    status, reason = _exit_status or ("FINISHED", None)
    _run_shutdown(status, reason)


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


def _ours() -> bool:
    """True when SIGTERM is ours to act on (no earlier Python handler, not ignored)."""
    prev = _prev_sigterm
    return not callable(prev) and prev != signal.SIG_IGN


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Main-thread handler: record KILLED and start the bounded shutdown on a helper thread.

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
    if _watch_fds is None and terminating.is_set():
        os._exit(EXIT_CODE)  # a second SIGTERM while shutting down: stop now, never swallow it
    _begin_terminate(inline=False)


def _begin_terminate(*, inline: bool) -> None:
    """Start the SIGTERM shutdown once (inline on the calling thread, or on a helper)."""
    global _terminate_started
    with _term_lock:
        if _terminate_started:
            return
        _terminate_started = True
    terminating.set()
    if inline:
        _terminate()
        return
    # RuntimeError: the interpreter is exiting; atexit ends the runs (KILLED recorded)
    with contextlib.suppress(RuntimeError):
        threading.Thread(target=_terminate, name="runstream-sigterm", daemon=True).start()


def _terminate() -> None:
    try:
        _run_shutdown("KILLED", "SIGTERM")
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(EXIT_CODE)


def _watch(read_fd: int) -> None:
    """Signal numbers written by the C-level handler (any thread); SIGTERM starts shutdown."""
    global _exit_status, _sigterm_seen
    while True:
        try:
            data = os.read(read_fd, 256)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        fwd = _forward_fd
        if fwd >= 0:
            with contextlib.suppress(OSError):
                os.write(fwd, data)
        for signum in data:
            if signum != signal.SIGTERM or not _ours():
                continue
            if signal.getsignal(signal.SIGTERM) is not _on_sigterm:
                continue  # replaced after us: the new handler decides
            _sigterm_seen += 1
            if _sigterm_seen > 1:
                os._exit(EXIT_CODE)  # a second SIGTERM while shutting down: stop now
            _exit_status = ("KILLED", "SIGTERM")
            # RuntimeError: the interpreter is exiting; atexit ends the runs (KILLED recorded)
            with contextlib.suppress(RuntimeError):
                threading.Thread(
                    target=_begin_terminate,
                    kwargs={"inline": True},
                    name="runstream-sigterm",
                    daemon=True,
                ).start()


def _start_watcher() -> None:
    """Route signal numbers through our pipe (main thread only); keep any earlier fd fed."""
    global _watch_fds, _forward_fd
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(r)
        os.close(w)
        return
    _forward_fd = previous
    _watch_fds = (r, w)
    try:
        threading.Thread(target=_watch, args=(r,), name="runstream-signals", daemon=True).start()
    except RuntimeError:
        _stop_watcher()


def _stop_watcher() -> None:
    global _watch_fds, _forward_fd
    fds, _watch_fds = _watch_fds, None
    if fds is None:
        return
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(_forward_fd)
    _forward_fd = -1
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


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
            if _ours():
                _start_watcher()


def _after_fork_in_child() -> None:
    """A forked child has no watcher thread and must not feed its parent's pipe."""
    global _terminate_started, _sigterm_seen, _term_lock, _shutdown_lock
    _term_lock = threading.RLock()
    _shutdown_lock = threading.Lock()
    _terminate_started = False
    _sigterm_seen = 0
    if _watch_fds is not None:
        _stop_watcher()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
