"""Kafka's sparse segment indexes: `.index` (offset -> position) and `.timeindex`.

Both keep their entries in memory (arrays, searched with bisect) and, for the
disk provider, mirror every entry to the index file with `os.write` (through
the handle pool, handles.py) as Kafka lays it out:

- `.index`: 8-byte entries, relative offset int32 + file position int32.  An
  entry (offset O, position P) says the append holding offset O starts at byte
  P (Kafka indexes the *last* offset of an append at the position where that
  append starts), so a lookup of offset T takes the largest entry with
  offset <= T and scans batch headers forward from its position.
- `.timeindex`: 12-byte entries, timestamp int64 + relative offset int32: the
  largest timestamp seen so far in the segment and the offset of the batch that
  carried it; appended only when the timestamp grows.

Kafka preallocates and mmaps index files; akfak writes them at their exact
length, which is what Kafka itself leaves after trimming an inactive segment.

An index is derived data: a write that fails (disk full, I/O error) never fails
the append that made it.  The file is removed instead (and no longer written),
the entries in memory keep serving, and the next start rebuilds the segment's
indexes by recovering it (a missing `.index` or `.timeindex` means recovery).
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from pathlib import Path

from twisted.logger import Logger

from akfak.errors import KafkaStorageError
from akfak.log.handles import PooledFile, Syncable

log = Logger()

OFFSET_ENTRY = struct.Struct(">ii")
TIME_ENTRY = struct.Struct(">qi")
NO_TIMESTAMP = -1


class CorruptIndex(Exception):
    """An index file that does not match its segment (rebuilt by recovery)."""


def _int_array(typecode: str, data: bytes) -> array:  # type: ignore[type-arg]
    values = array(typecode)
    values.frombytes(data)
    if sys.byteorder == "little":
        values.byteswap()
    return values


class IndexFile:
    """The append-only file behind an index (None path: memory only).

    Its descriptor comes from the handle pool (handles.py) for each write; a
    file closed by its owner opens again at the next write, as a new one.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: PooledFile | None = None
        #: Written since the last flush took it (it then needs an fsync).
        self._unsynced = False
        #: A write failed: the file was removed and is not written again until a rewrite.
        self.failed = False
        #: Called once when a write fails (the segment then has itself recovered at the
        #: next start).
        self.on_failure: Callable[[], None] | None = None

    def _pooled(self) -> PooledFile:
        file = self._file
        if file is None or file.closed:
            assert self.path is not None
            file = self._file = PooledFile(self.path, os.O_WRONLY | os.O_APPEND,
                                           keep_creating=True)
        return file

    def write(self, data: bytes) -> None:
        if self.path is None or self.failed:
            return
        try:
            self._pooled().write(data)
        except (OSError, KafkaStorageError) as e:
            self.fail(e)
            return
        self._unsynced = True

    def rewrite(self, data: bytes) -> None:
        """Replace the file's contents (after truncation or a rebuild); a success also
        ends a failure, since the file is then whole again."""
        if self.path is None:
            return
        try:
            file = self._pooled()
            file.ftruncate(0)
            if data:
                file.write(data)
        except (OSError, KafkaStorageError) as e:
            self.failed = False  # a new failure of a file that is whole again
            self.fail(e)
            return
        self.failed = False
        self._unsynced = True

    def fail(self, error: Exception | None = None) -> None:
        """Give the file up: remove it, so that the next start rebuilds it, not trusts it."""
        if self.failed or self.path is None:
            return
        self.failed = True
        if error is not None:
            log.error("Cannot write index {path} ({e}); it is removed and rebuilt at the "
                      "next start", path=str(self.path), e=error)
        self.close()
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:
            log.error("Cannot remove index {path}: {e}", path=str(self.path), e=e)
        if self.on_failure is not None:
            self.on_failure()

    def ensure_exists(self) -> None:
        if self.path is not None and self._file is None:
            self._pooled().touch()
            self._unsynced = True

    def sync_target(self) -> Syncable | None:
        """The file, if written since the last call (for fsync on a thread)."""
        if not self._unsynced or self._file is None:
            return None
        self._unsynced = False
        return self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def delete(self) -> None:
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def rename(self, path: Path) -> None:
        if self.path is not None and self.path.exists():
            if self._file is not None:
                self._file.rename(path)
            else:
                self.path.rename(path)
        elif self._file is not None:
            self._file.set_path(path)
        self.path = path


class OffsetIndex:
    """Sparse offset -> file position index of one segment."""

    def __init__(self, base_offset: int, path: Path | None = None) -> None:
        self.base_offset = base_offset
        self._relative = array("i")
        self._positions = array("i")
        self.file = IndexFile(path)

    @classmethod
    def load(cls, base_offset: int, path: Path, log_size: int) -> OffsetIndex:
        """Read an index file, raising CorruptIndex if it cannot belong to a log of `log_size`."""
        data = path.read_bytes()
        if len(data) % OFFSET_ENTRY.size:
            raise CorruptIndex(f"{path}: size {len(data)} is not a multiple of 8")
        values = _int_array("i", data)
        relative, positions = values[0::2], values[1::2]
        for i in range(len(relative)):
            if relative[i] < 0 or positions[i] < 0 or positions[i] >= max(log_size, 1):
                raise CorruptIndex(f"{path}: entry {i} points outside the segment")
            if i and (relative[i] <= relative[i - 1] or positions[i] <= positions[i - 1]):
                raise CorruptIndex(f"{path}: entry {i} is not after entry {i - 1}")
        index = cls(base_offset, path)
        index._relative, index._positions = relative, positions
        return index

    @property
    def entries(self) -> int:
        return len(self._relative)

    @property
    def last_offset(self) -> int:
        return self.base_offset + self._relative[-1] if self._relative else self.base_offset

    def append(self, offset: int, position: int) -> None:
        relative = offset - self.base_offset
        if self._relative and relative <= self._relative[-1]:
            return  # Kafka refuses non-increasing entries; an index is only ever a hint
        self._relative.append(relative)
        self._positions.append(position)
        self.file.write(OFFSET_ENTRY.pack(relative, position))

    def lookup(self, offset: int) -> tuple[int, int]:
        """(offset, position) of the largest entry with offset <= `offset`, else (base, 0)."""
        i = bisect_right(self._relative, offset - self.base_offset) - 1
        if i < 0:
            return self.base_offset, 0
        return self.base_offset + self._relative[i], self._positions[i]

    def floor_position(self, position: int) -> int:
        """The largest indexed position <= `position` (0 if none): a batch boundary."""
        i = bisect_right(self._positions, position) - 1
        return self._positions[i] if i >= 0 else 0

    def truncate_to_offset(self, offset: int) -> None:
        """Drop entries for offsets >= `offset`."""
        keep = bisect_left(self._relative, offset - self.base_offset)
        self._truncate_entries(keep)

    def truncate_to_position(self, position: int) -> None:
        """Drop entries pointing at or beyond `position`."""
        keep = bisect_left(self._positions, position)
        self._truncate_entries(keep)

    def _truncate_entries(self, keep: int) -> None:
        if keep >= len(self._relative):
            return
        del self._relative[keep:]
        del self._positions[keep:]
        self.file.rewrite(self._encoded())

    def reset(self) -> None:
        self.rebuild([])

    def rebuild(self, entries: list[tuple[int, int]]) -> None:
        """Replace every entry with (offset, position) pairs, writing the file once."""
        self._relative = array("i", [offset - self.base_offset for offset, _ in entries])
        self._positions = array("i", [position for _, position in entries])
        self.file.rewrite(self._encoded())

    def _encoded(self) -> bytes:
        values = array("i", [0]) * (2 * len(self._relative))
        values[0::2] = self._relative
        values[1::2] = self._positions
        if sys.byteorder == "little":
            values.byteswap()
        return values.tobytes()


class TimeIndex:
    """Sparse max-timestamp -> offset index of one segment."""

    def __init__(self, base_offset: int, path: Path | None = None) -> None:
        self.base_offset = base_offset
        self._timestamps = array("q")
        self._relative = array("i")
        self.file = IndexFile(path)

    @classmethod
    def load(cls, base_offset: int, path: Path) -> TimeIndex:
        data = path.read_bytes()
        if len(data) % TIME_ENTRY.size:
            raise CorruptIndex(f"{path}: size {len(data)} is not a multiple of 12")
        index = cls(base_offset, path)
        previous: tuple[int, int] | None = None
        for timestamp, relative in TIME_ENTRY.iter_unpack(data):
            if relative < 0 or (previous is not None and (
                    timestamp <= previous[0] or relative < previous[1])):
                raise CorruptIndex(f"{path}: entries are not increasing")
            index._timestamps.append(timestamp)
            index._relative.append(relative)
            previous = (timestamp, relative)
        return index

    @property
    def entries(self) -> int:
        return len(self._timestamps)

    def last_entry(self) -> tuple[int, int]:
        """(timestamp, offset) of the last entry, else (-1, base offset)."""
        if not self._timestamps:
            return NO_TIMESTAMP, self.base_offset
        return self._timestamps[-1], self.base_offset + self._relative[-1]

    def maybe_append(self, timestamp: int, offset: int) -> None:
        """Add (timestamp, offset) if the timestamp is larger than the last entry's."""
        last_ts, last_offset = self.last_entry()
        if timestamp <= last_ts or (self._timestamps and offset < last_offset):
            return
        relative = offset - self.base_offset
        self._timestamps.append(timestamp)
        self._relative.append(relative)
        self.file.write(TIME_ENTRY.pack(timestamp, relative))

    def lookup(self, timestamp: int) -> tuple[int, int]:
        """(timestamp, offset) of the largest entry with timestamp <= `timestamp`."""
        i = bisect_right(self._timestamps, timestamp) - 1
        if i < 0:
            return NO_TIMESTAMP, self.base_offset
        return self._timestamps[i], self.base_offset + self._relative[i]

    def truncate_to_offset(self, offset: int) -> None:
        keep = bisect_left(self._relative, offset - self.base_offset)
        if keep >= len(self._relative):
            return
        del self._timestamps[keep:]
        del self._relative[keep:]
        self.file.rewrite(b"".join(TIME_ENTRY.pack(t, r)
                                   for t, r in zip(self._timestamps, self._relative, strict=True)))

    def reset(self) -> None:
        self.rebuild([])

    def rebuild(self, entries: list[tuple[int, int]]) -> None:
        """Replace every entry with (timestamp, offset) pairs, writing the file once."""
        self._timestamps = array("q", [timestamp for timestamp, _ in entries])
        self._relative = array("i", [offset - self.base_offset for _, offset in entries])
        self.file.rewrite(b"".join(TIME_ENTRY.pack(t, r)
                                   for t, r in zip(self._timestamps, self._relative, strict=True)))
