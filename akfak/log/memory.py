"""In-memory storage: the same partition logs with segments in memory.

For embedded brokers and fast tests.  Nothing survives `close()`; flushes
complete at once.  Behaviour (offsets, rolling, retention, indexes, errors) is
the disk provider's, since both share `PartitionLog` and `LogSegment`.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from akfak.config import BrokerConfig
from akfak.interfaces import ILogStorage
from akfak.log.checkpoints import METADATA_TOPIC_ID, MetaProperties
from akfak.log.config import LogConfig
from akfak.log.handles import Syncable
from akfak.log.index import OffsetIndex, TimeIndex
from akfak.log.metadata_log import (
    METADATA_LOG_CONFIG,
    METADATA_PARTITION,
    METADATA_TOPIC,
    MetadataLog,
)
from akfak.log.partition import PartitionLog
from akfak.log.segment import Buffer, LogSegment
from akfak.log.storage import BaseLogStorage


class _Chunks:
    """Bytes kept as the list of what was appended: one immutable chunk per append.

    A bytearray grown by `+=` is copied whenever realloc has to move it, and with many
    partitions' segments growing side by side it moves often: that cost more than the
    bytes themselves (1.8 µs per 1 KiB append over 600 partitions, against 0.2 µs for a
    list).  A read of exactly one append is that chunk, not a copy (what the postgres
    provider sends on to PostgreSQL)."""

    def __init__(self, chunks: list[bytes], starts: list[int], size: int) -> None:
        self._chunks = chunks
        #: Each chunk's position in the segment.
        self._starts = starts
        self.size = size

    def read(self, position: int, length: int) -> bytes:
        pieces = self.pieces(position, length)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def pieces(self, position: int, length: int) -> list[bytes]:
        """What `read` would return as the chunks themselves (the first and last cut to
        the range): a Fetch sends them as they are (one sendmsg), no copy joins them."""
        end = min(position + length, self.size)
        if position >= end or position < 0:
            return []
        i = bisect_right(self._starts, position) - 1
        out: list[bytes] = []
        at = self._starts[i]
        while at < end:
            chunk = self._chunks[i]
            lo, hi = max(position - at, 0), min(end - at, len(chunk))
            out.append(chunk if lo == 0 and hi == len(chunk) else chunk[lo:hi])
            at += len(chunk)
            i += 1
        return out

    def close(self) -> None:
        pass


class MemoryStore(_Chunks):
    """A segment's bytes in memory (see _Chunks)."""

    def __init__(self) -> None:
        super().__init__([], [], 0)

    def append(self, parts: Sequence[Buffer]) -> None:
        chunk = parts[0] if len(parts) == 1 and type(parts[0]) is bytes else b"".join(parts)
        if chunk:
            self._starts.append(self.size)
            self._chunks.append(chunk)  # type: ignore[arg-type]
            self.size += len(chunk)

    range = _Chunks.pieces  # nothing to sendfile from

    def open_reader(self) -> _Chunks:
        # The chunks never change; the lists are the reactor's to extend or cut.
        return _Chunks(list(self._chunks), list(self._starts), self.size)

    def truncate(self, size: int) -> None:
        if size >= self.size:
            return
        i = bisect_right(self._starts, size) - 1
        if i < 0:
            self.delete()
            return
        keep = size - self._starts[i]
        del self._chunks[i + 1 :], self._starts[i + 1 :]
        if keep:
            self._chunks[i] = self._chunks[i][:keep]
        else:
            del self._chunks[i], self._starts[i]
        self.size = size

    def sync_target(self) -> Syncable | None:
        return None

    def mtime_ms(self) -> int | None:
        return None

    def delete(self) -> None:
        self._chunks, self._starts, self.size = [], [], 0


class MemoryPartitionLog(PartitionLog):
    """A partition log whose segments live in memory."""

    @classmethod
    def create(cls, topic: str, partition: int, topic_id: uuid.UUID | None, config: LogConfig,
               *, now_ms: int, reactor: Any = None) -> MemoryPartitionLog:
        partition_log = cls(topic, partition, topic_id, config, now_ms=now_ms, reactor=reactor)
        partition_log._add_segment(partition_log._new_segment(0, now_ms))
        return partition_log

    def _new_segment(self, base_offset: int, now_ms: int) -> LogSegment:
        return LogSegment(base_offset, MemoryStore(), OffsetIndex(base_offset),
                          TimeIndex(base_offset),
                          index_interval_bytes=self.config.index_interval_bytes,
                          created_ms=now_ms, jitter_ms=self.config.segment_jitter_ms)

    def _new_cleaned_segment(self, base_offset: int) -> LogSegment:
        # The swap itself is a list assignment on the reactor: nothing to make durable.
        return self._new_segment(base_offset, 0)


@implementer(ILogStorage)
class MemoryLogStorage(BaseLogStorage):
    """Every log in memory (see ILogStorage)."""

    def __init__(self, config: BrokerConfig, *, clock: Any = None) -> None:
        super().__init__(config, clock=clock)

    def open_metadata(self) -> None:
        self._meta_properties = MetaProperties.new(self.config.node_id,
                                                   self.config.get("cluster.id"))
        metadata = MemoryPartitionLog.create(METADATA_TOPIC, METADATA_PARTITION,
                                             METADATA_TOPIC_ID, METADATA_LOG_CONFIG,
                                             now_ms=self.now_ms(), reactor=self.clock)
        self._metadata = MetadataLog(metadata)

    def create_log(self, topic: str, partition: int, topic_id: uuid.UUID,
                   config: LogConfig) -> PartitionLog:
        existing = self._logs.get((topic, partition))
        if existing is not None and existing.topic_id == topic_id:
            existing.config = config
            return existing
        if existing is not None:
            existing.delete_files()
        created = MemoryPartitionLog.create(topic, partition, topic_id, config,
                                            now_ms=self.now_ms(), reactor=self.clock)
        self._logs[(topic, partition)] = created
        return created

    def mark_stray(self, topic: str, partition: int) -> None:
        """A log the metadata does not know: memory logs just go."""
        partition_log = self._logs.pop((topic, partition), None)
        if partition_log is not None:
            partition_log.delete_files()

    def close(self) -> Deferred[Any]:
        self.closed = True
        closing = self.cleaner.stop().addCallback(lambda _: self._close_logs())
        return closing.addCallback(lambda _: None)

    def abandon(self) -> None:
        self.closed = True
        self.cleaner.stop()
        for partition_log in self._all_logs():
            partition_log.abandon()
