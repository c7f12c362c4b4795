"""The local write-ahead spool: append-only segment files of CRC-framed encoded events.

Rule: an event is handed to the network only after its frame was written here, and a segment
is deleted only once every frame in it was acknowledged. Resending from the spool is always
safe because every event carries its own client-generated `event_id`.

Layout of one spool (one per producer process) under `<spool_dir>/<producer_id>/`::

    LOCK                 flock()ed by the process that owns the spool (writer or sync)
    meta.json            producer id, host, pid, topic, created_at (informational)
    cursor               acknowledged position "segment offset" (atomic rename)
    00000000000000000001.seg, ...   segments, numbered from 1

Segment format: an 8-byte header `b"RSSPOOL1"`, then frames::

    u32 LE body_length | u32 LE crc32(body) | body
    body = u16 LE key_length | key (utf-8 partition key) | event bytes (schemas.encode)

Torn tails: a crash can leave a partial frame at the end of the newest segment (SIGKILL
mid-write leaves at most the bytes the kernel got; power loss can leave garbage). Readers stop
at the first frame whose length overruns the file or whose CRC does not match;
`recover_segment()` truncates the file there and reports the discarded byte count.

fsync policy (`fsync=`): "always" fsyncs after every append; "interval" (default) fsyncs
from the engine at most every `fsync_interval` seconds and on flush/close; "never" leaves it
to the OS. A process crash (SIGKILL included) loses nothing that was written, whatever the
policy: written bytes are in the kernel's page cache. Only an OS crash or power loss can lose
the frames written since the last fsync.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple

from producers.errors import SpoolCorrupt, SpoolError

MAGIC = b"RSSPOOL1"
HEADER = len(MAGIC)
_FRAME = struct.Struct("<II")
_KEYLEN = struct.Struct("<H")
SEGMENT_SUFFIX = ".seg"
FSYNC_POLICIES = ("always", "interval", "never")
MAX_KEY_BYTES = 65535


class Position(NamedTuple):
    """A place in a spool: segment number and byte offset inside it."""

    segment: int
    offset: int


class Record(NamedTuple):
    """One framed event read back from a spool; `end` is the position just after it."""

    key: bytes
    payload: bytes
    end: Position


@dataclass
class ScanResult:
    """What `scan_segment` found: frames up to `valid_end`, `discarded` trailing bytes."""

    valid_end: int
    size: int
    frames: int

    @property
    def discarded(self) -> int:
        return self.size - self.valid_end


def encode_frame(key: bytes, payload: bytes) -> bytes:
    """One frame: header (length, crc) + body (key length, key, payload)."""
    if len(key) > MAX_KEY_BYTES:
        raise SpoolError(f"partition key of {len(key)} bytes exceeds {MAX_KEY_BYTES}")
    body = _KEYLEN.pack(len(key)) + key + payload
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:020d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[int]:
    """Segment numbers present in `directory`, ascending."""
    out = []
    for p in directory.glob(f"*{SEGMENT_SUFFIX}"):
        stem = p.name[: -len(SEGMENT_SUFFIX)]
        if stem.isdigit():
            out.append(int(stem))
    return sorted(out)


def _check_magic(path: Path, head: bytes) -> None:
    if head != MAGIC:
        raise SpoolCorrupt(f"{path} is not a Runstream spool segment (bad header {head!r})")


def scan_segment(path: Path) -> ScanResult:
    """Validate every frame of a segment; report where the valid frames end."""
    size = path.stat().st_size
    if size < HEADER:
        return ScanResult(valid_end=0, size=size, frames=0)
    records, end, _left = _read_segment(path, HEADER, 1 << 62, None)
    return ScanResult(valid_end=end, size=size, frames=len(records))


def recover_segment(path: Path) -> int:
    """Truncate a torn tail; return how many bytes were discarded (0 when intact)."""
    result = scan_segment(path)
    if result.discarded:
        if result.valid_end < HEADER:
            path.unlink()
        else:
            with open(path, "r+b") as fh:
                fh.truncate(result.valid_end)
                fh.flush()
                os.fsync(fh.fileno())
    return result.discarded


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolLock:
    """An exclusive, non-blocking flock on `<spool>/LOCK`; released on close or process exit."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "LOCK"
        self._fh: IO[str] | None = None

    def acquire(self) -> bool:
        fh = open(self._path, "a")  # noqa: SIM115 - held for the spool's lifetime
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


class Cursor:
    """The acknowledged position of a spool, persisted by atomic rename."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / "cursor"
        self._tmp = directory / "cursor.tmp"
        self.position = self._load()

    def _load(self) -> Position:
        try:
            seg, off = self._path.read_text().split()
            return Position(int(seg), int(off))
        except (OSError, ValueError):
            return Position(0, 0)

    def commit(self, position: Position) -> None:
        """Persist `position` and delete every segment before its segment."""
        if position <= self.position:
            return
        self._tmp.write_text(f"{position.segment} {position.offset}\n")
        self._tmp.replace(self._path)
        directory = self._path.parent
        for number in list_segments(directory):
            if number >= position.segment:
                break
            with contextlib.suppress(FileNotFoundError):
                segment_path(directory, number).unlink()
        self.position = position


class SpoolWriter:
    """Appends frames to the newest segment of a spool directory it owns exclusively."""

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = 64 * 1024 * 1024,
        fsync: str = "interval",
        meta: dict[str, object] | None = None,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            raise SpoolError(f"fsync policy must be one of {FSYNC_POLICIES}, got {fsync!r}")
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.fsync_policy = fsync
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock = SpoolLock(self.directory)
            if not self._lock.acquire():
                raise SpoolError(f"spool {self.directory} is in use by another process")
            if meta is not None:
                (self.directory / "meta.json").write_text(json.dumps(meta, indent=1))
            existing = list_segments(self.directory)
            for number in existing[-1:]:
                recover_segment(segment_path(self.directory, number))
            self._segment = (existing[-1] if existing else 0) + 1
            self._fh = self._open_segment(self._segment)
        except OSError as exc:
            if isinstance(exc, SpoolError):
                raise
            raise SpoolError(f"cannot open spool {self.directory}: {exc}") from exc
        self._offset = HEADER
        self._dirty = False
        self.bytes_written = 0

    def _open_segment(self, number: int) -> IO[bytes]:
        fh = open(segment_path(self.directory, number), "xb")  # noqa: SIM115
        fh.write(MAGIC)
        fh.flush()
        if self.fsync_policy != "never":
            _fsync_dir(self.directory)
        return fh

    @property
    def position(self) -> Position:
        """Where the next frame will go (everything before it is written)."""
        return Position(self._segment, self._offset)

    def append(self, frames: Sequence[bytes]) -> Position:
        """Write pre-encoded frames in one write(); return the position after them."""
        if not frames:
            return self.position
        blob = b"".join(frames)
        try:
            if self._offset > HEADER and self._offset + len(blob) > self.segment_bytes:
                self._roll()
            self._fh.write(blob)
            self._fh.flush()
            self._offset += len(blob)
            self.bytes_written += len(blob)
            self._dirty = True
            if self.fsync_policy == "always":
                self.sync()
        except OSError as exc:
            raise SpoolError(f"cannot write spool {self.directory}: {exc}") from exc
        return self.position

    def _roll(self) -> None:
        self.sync()
        self._fh.close()
        self._segment += 1
        self._fh = self._open_segment(self._segment)
        self._offset = HEADER

    def sync(self) -> None:
        """fsync the current segment if anything was written since the last sync."""
        if self._dirty and self.fsync_policy != "never":
            os.fsync(self._fh.fileno())
        self._dirty = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sync()
            self._fh.close()
        self._lock.release()


class SpoolReader:
    """Reads frames from a position on, following a live writer or a finished spool."""

    def __init__(self, directory: Path, start: Position | None = None) -> None:
        self.directory = Path(directory)
        self.position = start or Position(0, 0)
        self.discarded_bytes = 0

    def seek(self, position: Position) -> None:
        self.position = position

    def read(self, max_bytes: int, limit: Position | None = None) -> list[Record]:
        """Records after `position`, about `max_bytes` of payload (at least one record).

        `limit` is a live writer's position: never read past it, and a segment before it is
        complete. Without a limit (a finished spool), a torn tail ends its segment; the bytes
        are counted in `discarded_bytes` and reading moves on to the next segment.
        """
        out: list[Record] = []
        budget = max_bytes
        while budget > 0:
            seg, off = self.position
            if limit is not None and self.position >= limit:
                break
            numbers = [n for n in list_segments(self.directory) if n >= seg]
            if not numbers:
                break
            if numbers[0] != seg:
                self.position = Position(numbers[0], HEADER)
                continue
            stop = limit.offset if limit is not None and limit.segment == seg else None
            records, new_off, leftover = _read_segment(
                segment_path(self.directory, seg), max(off, HEADER), budget, stop
            )
            self.position = Position(seg, new_off)
            out.extend(records)
            budget -= sum(len(r.payload) for r in records)
            if budget <= 0 or stop is not None:
                break
            is_last = seg == numbers[-1]
            if is_last and limit is not None:
                break  # the live writer is still appending here
            if leftover < 0:
                continue  # budget-limited read ended before the data: keep going
            self.discarded_bytes += leftover
            if is_last:
                self.position = Position(seg, new_off + leftover)
                break
            self.position = Position(seg + 1, HEADER)
        return out


def _read_segment(
    path: Path, off: int, budget: int, stop: int | None
) -> tuple[list[Record], int, int]:
    """Frames of one segment from `off`: (records, end offset, leftover bytes).

    leftover is -1 when the budget ran out with frames still to read, else the count of
    bytes after the last whole valid frame (0 = clean end; > 0 = torn or corrupt tail).
    """
    out: list[Record] = []
    number = int(path.name[: -len(SEGMENT_SUFFIX)])
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return out, off, 0
    with fh:
        _check_magic(path, fh.read(HEADER))
        size = os.fstat(fh.fileno()).st_size
        end = size if stop is None else min(stop, size)
        fh.seek(off)
        while off < end:
            if budget <= 0:
                return out, off, -1
            head = fh.read(_FRAME.size)
            if len(head) < _FRAME.size:
                break
            length, crc = _FRAME.unpack(head)
            if length < _KEYLEN.size or off + _FRAME.size + length > end:
                break
            body = fh.read(length)
            if len(body) < length or zlib.crc32(body) != crc:
                break
            (klen,) = _KEYLEN.unpack_from(body, 0)
            if _KEYLEN.size + klen > length:
                break
            off += _FRAME.size + length
            payload = body[_KEYLEN.size + klen :]
            out.append(
                Record(body[_KEYLEN.size : _KEYLEN.size + klen], payload, Position(number, off))
            )
            budget -= len(payload)
        return out, off, end - off


def pending_bytes(directory: Path, cursor: Position) -> int:
    """Bytes of segment data at or after `cursor` (an upper bound of what is unsent)."""
    total = 0
    for number in list_segments(directory):
        if number < cursor.segment:
            continue
        size = segment_path(directory, number).stat().st_size
        total += size - (cursor.offset if number == cursor.segment else HEADER)
    return max(total, 0)
