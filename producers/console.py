"""Optional console capture: tee sys.stdout/sys.stderr into ConsoleLogged events.

Rule: the original stream always gets the text first, unchanged; capture only copies it into
a bounded buffer that the engine drains at each flush window. When the buffer is full
(`max_chars` not yet drained), the oldest text is kept and the overflow is counted and
reported as a "[runstream: N characters of console output dropped]" line, never silently.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

DEFAULT_MAX_CHARS = 4 * 1024 * 1024
CHUNK_CHARS = 64 * 1024


class _Tee:
    """A text stream that writes through to `target` and copies into `sink`."""

    def __init__(self, target: TextIO, sink: ConsoleCapture, stream: str) -> None:
        self._target = target
        self._sink = sink
        self._stream = stream

    def write(self, text: str) -> int:
        n = self._target.write(text)
        if text:
            self._sink.append(self._stream, text)
        return n

    def flush(self) -> None:
        self._target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class ConsoleCapture:
    """Owns the tees on sys.stdout/sys.stderr and the text waiting to be sent."""

    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        self._lock = threading.Lock()
        self._chunks: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._size = 0
        self._dropped = 0
        self._offsets = {"stdout": 0, "stderr": 0}
        self.max_chars = max_chars
        self._saved: tuple[TextIO, TextIO] | None = None

    def install(self) -> None:
        if self._saved is not None:
            return
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _Tee(sys.stdout, self, "stdout")  # type: ignore[assignment]
        sys.stderr = _Tee(sys.stderr, self, "stderr")  # type: ignore[assignment]

    def uninstall(self) -> None:
        if self._saved is None:
            return
        out, err = self._saved
        if isinstance(sys.stdout, _Tee) and sys.stdout._sink is self:
            sys.stdout = out
        if isinstance(sys.stderr, _Tee) and sys.stderr._sink is self:
            sys.stderr = err
        self._saved = None

    def append(self, stream: str, text: str) -> None:
        with self._lock:
            if self._size + len(text) > self.max_chars:
                self._dropped += len(text)
                return
            self._chunks[stream].append(text)
            self._size += len(text)

    def drain(self) -> list[tuple[str, str, int]]:
        """(stream, text, offset) chunks since the last drain; offset counts UTF-8 bytes."""
        with self._lock:
            chunks, self._chunks = self._chunks, {"stdout": [], "stderr": []}
            dropped, self._dropped = self._dropped, 0
            self._size = 0
        out = []
        for stream, parts in chunks.items():
            if not parts and not (dropped and stream == "stderr"):
                continue
            text = "".join(parts)
            if dropped and stream == "stderr":
                text += f"\n[runstream: {dropped} characters of console output dropped]\n"
            for i in range(0, len(text), CHUNK_CHARS):  # events stay far below 1 MiB
                piece = text[i : i + CHUNK_CHARS]
                out.append((stream, piece, self._offsets[stream]))
                self._offsets[stream] += len(piece.encode("utf-8", "replace"))
        return out
