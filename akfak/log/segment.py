"""One log segment: a run of batches in a store (file or memory) plus its two indexes.

Segments are named by base offset, 20 digits (`00000000000000000042.log`,
`.index`, `.timeindex`).  Appends go straight to the file with `os.writev`: no
user-space buffer, so once `append` returns the bytes are in the kernel's page
cache and survive a kill -9; they are durable on the disk once a flush (fsync,
on a thread) has covered them.  Reads use `os.pread`.  Descriptors come from
the bounded handle pool (handles.py) per operation.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from twisted.logger import Logger

from akfak.errors import CorruptMessage, KafkaStorageError
from akfak.log.batch import HEADER_SIZE, INT32_MAX, MIN_BATCH_LENGTH, BatchHeader, crc_of, parse_header
from akfak.log.handles import FileRange, PooledFile, Syncable, pread_all
from akfak.log.index import NO_TIMESTAMP, IndexFile, OffsetIndex, TimeIndex
from akfak.log.txn_index import TransactionIndex

log = Logger()

#: How much to read at a time when walking batch headers or recovering.
SCAN_CHUNK = 64 * 1024
RECOVERY_CHUNK = 8 * 1024 * 1024

Buffer = bytes | bytearray | memoryview


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


class SegmentReader(Protocol):
    """A read-only view of a segment's bytes that a thread may use (the log cleaner).

    It stays valid when the segment is closed or deleted meanwhile on the reactor
    thread: a duplicated descriptor, or the very buffer a memory segment had.
    """

    size: int

    def read(self, position: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class SegmentStore(Protocol):
    """Where a segment's bytes live."""

    size: int

    def open_reader(self) -> SegmentReader: ...

    def append(self, parts: Sequence[Buffer]) -> None: ...

    def read(self, position: int, length: int) -> bytes: ...

    def range(self, position: int, length: int) -> bytes | FileRange | list[bytes]:
        """What `read` would return, or a FileRange to send it from (a file's store), or
        its pieces (a memory store's chunks)."""

    def truncate(self, size: int) -> None: ...

    def sync_target(self) -> Syncable | None: ...

    def mtime_ms(self) -> int | None: ...

    def close(self) -> None: ...

    def delete(self) -> None: ...


class _FdReader:
    """A segment file read through its own duplicated descriptor."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd: int | None = fd
        self.size = size

    def read(self, position: int, length: int) -> bytes:
        if self._fd is None:
            raise KafkaStorageError("segment reader is closed")
        return pread_all(self._fd, position, max(0, min(length, self.size - position)))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class FileStore:
    """A segment's `.log` file, appended with writev and read with pread.

    Its descriptor comes from the process's handle pool (handles.py) for each
    operation, so an idle segment holds none; `create` makes the file now.
    """

    def __init__(self, path: Path, *, create: bool = False) -> None:
        self.file = PooledFile(path, os.O_RDWR | os.O_APPEND, create=create)
        #: A failed append may have left bytes past `size` that are not cut off yet.
        self._torn = False
        if create:
            self.file.touch()
        try:
            self.size = os.stat(path).st_size
        except OSError as e:
            raise KafkaStorageError(f"Cannot open {path}: {e}") from e

    @property
    def path(self) -> Path:
        return self.file.path

    def append(self, parts: Sequence[Buffer]) -> None:
        """Write whole batches, or nothing: a failed write (ENOSPC, EIO) is cut off again,
        so the file stays as it was and a later append lands right after the last batch."""
        total = sum(len(p) for p in parts)
        if self._torn:
            self._cut_torn_tail()
        try:
            self.file.writev(parts)
        except OSError as e:
            # O_APPEND: bytes left behind would come before the next append's.
            self._torn = True
            with contextlib.suppress(OSError, KafkaStorageError):
                self._cut_torn_tail()
            raise KafkaStorageError(f"Cannot append to {self.path}: {e}") from e
        self.size += total

    def _cut_torn_tail(self) -> None:
        try:
            self.file.ftruncate(self.size)
        except OSError as e:
            raise KafkaStorageError(f"Cannot truncate {self.path} to {self.size} bytes after a "
                                    f"failed write: {e}") from e
        self._torn = False

    def read(self, position: int, length: int) -> bytes:
        return self.file.pread(position, max(0, min(length, self.size - position)))

    def range(self, position: int, length: int) -> FileRange:
        return FileRange(self.file, position, max(0, min(length, self.size - position)))

    def open_reader(self) -> SegmentReader:
        return _FdReader(self.file.dup(), self.size)

    def rename(self, path: Path) -> None:
        """Move the file (an open descriptor stays open on it)."""
        self.file.rename(path)

    def truncate(self, size: int) -> None:
        self.file.ftruncate(size)
        self.size = size

    def sync_target(self) -> Syncable | None:
        return None if self.file.closed else self.file

    def mtime_ms(self) -> int | None:
        return int(os.stat(self.path).st_mtime * 1000)

    def close(self) -> None:
        self.file.close()

    def delete(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


class LogSegment:
    """A segment: batches from `base_offset` on, with sparse offset and time indexes."""

    def __init__(self, base_offset: int, store: SegmentStore, offset_index: OffsetIndex,
                 time_index: TimeIndex, *, index_interval_bytes: int, created_ms: int,
                 jitter_ms: int = 0, txn_index: TransactionIndex | None = None) -> None:
        self.base_offset = base_offset
        self.store = store
        self.offset_index = offset_index
        self.time_index = time_index
        self.index_interval_bytes = index_interval_bytes
        self.created_ms = created_ms
        self.roll_jitter_ms = random.randrange(jitter_ms) if jitter_ms > 0 else 0
        #: The aborted transactions whose markers are in this segment (`.txnindex`).
        self.txn_index = txn_index if txn_index is not None else TransactionIndex(base_offset)
        self.next_offset = base_offset
        self.max_timestamp = NO_TIMESTAMP
        self.offset_of_max_timestamp = base_offset
        self.first_batch_timestamp: int | None = None
        self.last_modified_ms = created_ms
        self.bytes_since_last_index_entry = 0
        #: Whether bytes were written since the last flush started.
        self.dirty = False
        # A `.timeindex` or `.txnindex` that fails fails the `.index` too: without it the
        # segment is recovered at the next start, which rebuilds all three (a `.txnindex`
        # that is merely missing would read as empty).  The `.index`'s own method, not the
        # segment's: that would be a reference cycle, which only the garbage collector frees
        # (akfak/collector.py keeps long-lived logs out of its sight).
        offset_file = self.offset_index.file
        for index_file in (self.time_index.file, self.txn_index.file):
            index_file.on_failure = offset_file.fail
        #: Bytes below this are known good: written by this process (validated on the way
        #: in) or CRC-checked by recovery or a read.  A segment trusted at start without
        #: recovery begins at 0, so its batches are CRC-checked as they are first served.
        self.verified_until = 0
        self._reported_corrupt: set[int] = set()

    def __repr__(self) -> str:
        return (f"<LogSegment base={self.base_offset} next={self.next_offset} "
                f"size={self.size}>")

    @property
    def size(self) -> int:
        return self.store.size

    @property
    def largest_timestamp(self) -> int:
        """The largest record timestamp, else the last modification time (for retention)."""
        return self.max_timestamp if self.max_timestamp >= 0 else self.last_modified_ms

    # -- appending -----------------------------------------------------------------------

    def append(self, parts: Sequence[Buffer], size: int, *, last_offset: int,
               max_timestamp: int, offset_of_max_timestamp: int, now_ms: int) -> None:
        """Append whole batches (already offset-assigned) and index them as Kafka does."""
        position = self.store.size
        if position == 0:
            self.first_batch_timestamp = max_timestamp
        self.store.append(parts)
        self.dirty = True
        if self.verified_until == position:
            self.verified_until = self.store.size
        self.next_offset = last_offset + 1
        self.last_modified_ms = now_ms
        if max_timestamp > self.max_timestamp:
            self.max_timestamp = max_timestamp
            self.offset_of_max_timestamp = offset_of_max_timestamp
        if self.bytes_since_last_index_entry > self.index_interval_bytes:
            self.offset_index.append(last_offset, position)
            self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)
            self.bytes_since_last_index_entry = 0
        self.bytes_since_last_index_entry += size

    def should_roll(self, *, segment_bytes: int, segment_ms: int, incoming_size: int,
                    max_timestamp_in_messages: int, last_offset_in_messages: int,
                    now_ms: int, max_index_entries: int) -> bool:
        """Kafka's LogSegment.shouldRoll."""
        size = self.size
        first = self.first_timestamp()
        if first is not None and first >= 0:
            waited = max_timestamp_in_messages - first
        else:
            waited = now_ms - self.created_ms
        return (size > segment_bytes - incoming_size
                or (size > 0 and waited > segment_ms - self.roll_jitter_ms)
                or self.offset_index.entries >= max_index_entries
                or self.time_index.entries >= max_index_entries
                or last_offset_in_messages - self.base_offset > INT32_MAX)

    def first_timestamp(self) -> int | None:
        if self.first_batch_timestamp is None and self.size >= HEADER_SIZE:
            self.first_batch_timestamp = parse_header(self.store.read(0, HEADER_SIZE)).max_timestamp
        return self.first_batch_timestamp

    def on_inactive(self) -> None:
        """The segment stops being the active one: record its final max timestamp."""
        self.time_index.maybe_append(self.max_timestamp, self.offset_of_max_timestamp)

    # -- reading -------------------------------------------------------------------------

    def headers_from(self, position: int, end: int | None = None
                     ) -> Iterator[tuple[int, BatchHeader]]:
        """(position, header) of each batch from `position` (a batch boundary) to `end`."""
        limit = self.store.size if end is None else min(end, self.store.size)
        buf = b""
        buf_start = position
        pos = position
        while pos + HEADER_SIZE <= limit:
            if pos + HEADER_SIZE > buf_start + len(buf):
                buf_start = pos
                buf = self.store.read(pos, min(SCAN_CHUNK, limit - pos))
            header = parse_header(buf, pos - buf_start)
            if header.magic != 2 or header.batch_length < MIN_BATCH_LENGTH:
                log.error("Malformed batch header at byte {pos} of segment {base}",
                          pos=pos, base=self.base_offset)
                return
            yield pos, header
            pos += header.size

    def find(self, offset: int, start_position: int = 0) -> tuple[int, BatchHeader] | None:
        """Position and header of the first batch whose last offset is >= `offset`."""
        _, indexed = self.offset_index.lookup(offset)
        for pos, header in self.headers_from(max(indexed, start_position)):
            if header.last_offset >= offset:
                return pos, header
        return None

    def end_within(self, start: int, limit: int) -> int:
        """The largest batch boundary in [start, limit]: where a read of whole batches ends.

        The offset index gives a batch boundary close below `limit`, so only a
        few headers past it are read.
        """
        if limit >= self.store.size:
            return self.store.size
        boundary = max(start, self.offset_index.floor_position(limit))
        for pos, header in self.headers_from(boundary):
            if pos + header.size > limit:
                return pos
            boundary = pos + header.size
        return boundary

    def read(self, position: int, length: int) -> bytes:
        return self.store.read(position, length)

    def read_batches(self, position: int, length: int, where: str, *,
                     ranges: bool = False) -> bytes | FileRange | list[bytes]:
        """Whole batches at [position, position + length), CRC-checked where not yet known
        good: cut before the first corrupt batch, CorruptMessage if that is the first.
        With `ranges`, batches already checked may come as a FileRange (to sendfile) or
        as a memory store's pieces.

        Kafka serves stored bytes unchecked (the consumer's check.crcs finds a flip, if
        it is on); akfak checks each stored batch once, when it is first served, so that
        a flipped bit is never handed out as data."""
        if ranges and position + length <= self.verified_until:
            return self.store.range(position, length)
        data = self.store.read(position, length)
        if position + len(data) <= self.verified_until:
            return data
        pos = 0
        while pos + HEADER_SIZE <= len(data):
            header = parse_header(data, pos)
            size = header.batch_length + 12
            if position + pos + size > self.verified_until and (
                    header.magic != 2 or header.batch_length < MIN_BATCH_LENGTH
                    or pos + size > len(data) or crc_of(data, pos, size) != header.crc):
                self._corrupt(position + pos, header, where)
                if pos == 0:
                    raise CorruptMessage(
                        f"The record batch at offset {header.base_offset} of {where} is corrupt "
                        f"(segment {self.base_offset}, byte {position}): it fails its CRC check")
                return data[:pos]
            pos += size
        if position <= self.verified_until:
            self.verified_until = position + pos
        return data

    def _corrupt(self, position: int, header: BatchHeader, where: str) -> None:
        if position not in self._reported_corrupt:  # once, not at every fetch
            self._reported_corrupt.add(position)
            log.error("Corrupt record batch in {where} at offset {offset} (segment {base}, "
                      "byte {pos}): it fails its CRC check; fetches of it answer "
                      "CORRUPT_MESSAGE", where=where, offset=header.base_offset,
                      base=self.base_offset, pos=position)

    # -- recovery ------------------------------------------------------------------------

    def scan_valid(self) -> Iterator[tuple[int, BatchHeader]]:
        """Every batch that is whole, CRC-valid and in offset order, from byte 0."""
        size = self.store.size
        buf = b""
        buf_start = 0
        pos = 0
        expected = self.base_offset
        while pos + HEADER_SIZE <= size:
            if pos + HEADER_SIZE > buf_start + len(buf):
                buf_start, buf = pos, self.store.read(pos, min(RECOVERY_CHUNK, size - pos))
            header = parse_header(buf, pos - buf_start)
            batch_size = header.batch_length + 12
            if (header.magic != 2 or header.batch_length < MIN_BATCH_LENGTH
                    or pos + batch_size > size or header.last_offset_delta < 0
                    or header.base_offset < expected
                    or header.last_offset - self.base_offset > INT32_MAX):
                return
            if pos + batch_size > buf_start + len(buf):
                buf_start, buf = pos, self.store.read(pos, max(RECOVERY_CHUNK, batch_size))
            if crc_of(buf, pos - buf_start, batch_size) != header.crc:
                return
            yield pos, header
            expected = header.next_offset
            pos += batch_size

    def recover(self) -> tuple[int, list[tuple[int, int]]]:
        """Validate every batch, cut the log after the last valid one, rebuild both indexes.

        Returns (bytes truncated, [(leader epoch, start offset)] where the
        batches' partition leader epoch rises).
        """
        offset_entries: list[tuple[int, int]] = []
        time_entries: list[tuple[int, int]] = []
        epochs: list[tuple[int, int]] = []
        valid = 0
        last_index_entry = 0
        max_ts, offset_of_max = NO_TIMESTAMP, self.base_offset
        self.first_batch_timestamp = None
        self.next_offset = self.base_offset
        for pos, header in self.scan_valid():
            if self.first_batch_timestamp is None:
                self.first_batch_timestamp = header.max_timestamp
            if header.max_timestamp > max_ts:
                max_ts, offset_of_max = header.max_timestamp, header.last_offset
            if valid - last_index_entry > self.index_interval_bytes:
                offset_entries.append((header.last_offset, valid))
                if not time_entries or max_ts > time_entries[-1][0]:
                    time_entries.append((max_ts, offset_of_max))
                last_index_entry = valid
            epoch = header.partition_leader_epoch
            if epoch >= 0 and (not epochs or epoch > epochs[-1][0]):
                epochs.append((epoch, header.base_offset))
            valid = pos + header.size
            self.next_offset = header.next_offset
        truncated = self.store.size - valid
        if truncated:
            log.warn("Truncating {n} invalid bytes at the end of segment {base} (byte {valid}): "
                     "the batch at offset {offset} is torn or fails its CRC check",
                     n=truncated, base=self.base_offset, valid=valid, offset=self.next_offset)
            self.store.truncate(valid)
            self.dirty = True
        # Kafka's recovery ends the time index with the segment's max timestamp.
        if max_ts >= 0 and (not time_entries or max_ts > time_entries[-1][0]):
            time_entries.append((max_ts, offset_of_max))
        self.offset_index.rebuild(offset_entries)
        self.time_index.rebuild(time_entries)
        # Rebuilt from the markers by the producer-state replay that follows recovery.
        self.txn_index.reset()
        self.max_timestamp, self.offset_of_max_timestamp = max_ts, offset_of_max
        self.bytes_since_last_index_entry = valid - last_index_entry
        self.verified_until = valid
        return truncated, epochs

    def load_state(self) -> None:
        """Derive next offset and max timestamp of a segment trusted without recovery."""
        _, position = self.offset_index.lookup(self.offset_index.last_offset)
        next_offset = self.base_offset
        for _pos, header in self.headers_from(position):
            next_offset = header.next_offset
        self.next_offset = next_offset
        self.max_timestamp, self.offset_of_max_timestamp = self.time_index.last_entry()
        self.bytes_since_last_index_entry = self.size - position
        mtime = self.store.mtime_ms()
        if mtime is not None:
            self.last_modified_ms = mtime

    # -- lifecycle -----------------------------------------------------------------------

    def sync_targets(self) -> list[Syncable]:
        """What a flush must fsync (on a thread) of the segment's files."""
        targets = [self.store.sync_target(), self.offset_index.file.sync_target(),
                   self.time_index.file.sync_target(), self.txn_index.file.sync_target()]
        self.dirty = False
        return [t for t in targets if t is not None]

    def close(self) -> None:
        self.store.close()
        self.offset_index.file.close()
        self.time_index.file.close()
        self.txn_index.file.close()

    def index_files(self) -> tuple[IndexFile, ...]:
        return (self.offset_index.file, self.time_index.file, self.txn_index.file)

    def delete(self) -> None:
        self.store.delete()
        for index_file in self.index_files():
            index_file.delete()
