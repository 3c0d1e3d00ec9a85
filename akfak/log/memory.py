"""In-memory storage: the same partition logs with segments in bytearrays.

For embedded brokers and fast tests.  Nothing survives `close()`; flushes
complete at once.  Behaviour (offsets, rolling, retention, indexes, errors) is
the disk provider's, since both share `PartitionLog` and `LogSegment`.
"""

from __future__ import annotations

import uuid
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


class _BufferReader:
    """A memory segment's bytes, for the log cleaner's thread."""

    def __init__(self, data: bytearray, size: int) -> None:
        self._data = data
        self.size = size

    def read(self, position: int, length: int) -> bytes:
        end = min(position + length, self.size)
        return bytes(self._data[position:end])

    def close(self) -> None:
        pass


class MemoryStore:
    """A segment's bytes in a bytearray."""

    def __init__(self) -> None:
        self.data = bytearray()

    @property
    def size(self) -> int:
        return len(self.data)

    def append(self, parts: Sequence[Buffer]) -> None:
        for part in parts:
            self.data += part

    def read(self, position: int, length: int) -> bytes:
        # One copy (a bytearray slice would be a second); the view is gone on return, so
        # the bytearray can grow again.
        with memoryview(self.data) as view:
            return bytes(view[position : position + length])

    range = read  # nothing to sendfile from

    def open_reader(self) -> _BufferReader:
        # An inactive segment's bytearray is never changed again (delete binds a new one),
        # so a thread may read it while the reactor goes on.
        return _BufferReader(self.data, self.size)

    def truncate(self, size: int) -> None:
        del self.data[size:]

    def sync_target(self) -> Syncable | None:
        return None

    def mtime_ms(self) -> int | None:
        return None

    def close(self) -> None:
        pass

    def delete(self) -> None:
        self.data = bytearray()


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
