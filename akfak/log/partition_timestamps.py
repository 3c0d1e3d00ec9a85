"""The partition log's timestamp search: ListOffsets by timestamp, and for the record
with the largest timestamp (-3, KIP-734).  A part of PartitionLog (see partition_base.py)."""

from __future__ import annotations

from typing import NamedTuple

from twisted.logger import Logger

from akfak.errors import UnsupportedCompressionType
from akfak.log import batch as batches
from akfak.log.partition_base import PartitionLogBase
from akfak.log.records import iter_timestamps
from akfak.log.segment import LogSegment

log = Logger(namespace="akfak.log.partition")


class TimestampAndOffset(NamedTuple):
    """A ListOffsets answer: the offset, its record's timestamp and batch leader epoch."""

    offset: int
    timestamp: int
    leader_epoch: int | None


class PartitionTimestamps(PartitionLogBase):
    """Finding records by timestamp in a partition log's segments."""

    def offset_for_timestamp(self, timestamp: int) -> TimestampAndOffset | None:
        """The first offset whose record timestamp is >= `timestamp` (ListOffsets).

        As Kafka: the time index and batch max timestamps find the first batch
        that can hold such a record, then that one batch's records are read
        (decompressed if needed) for the exact offset.
        """
        self._check_open()
        start = self.log_start_offset
        for segment in self.segments:
            if segment.next_offset <= start or segment.max_timestamp < timestamp:
                continue
            found = self._search_segment(segment, timestamp, start)
            if found is not None:
                return found
        return None

    def _search_segment(self, segment: LogSegment, timestamp: int, start: int
                        ) -> TimestampAndOffset | None:
        _, indexed_offset = segment.time_index.lookup(timestamp)
        _, position = segment.offset_index.lookup(max(indexed_offset, start))
        for pos, header in segment.headers_from(position):
            if header.last_offset < start or header.max_timestamp < timestamp:
                continue
            return self._search_batch(header, segment.read(pos, header.size), timestamp, start)
        return None

    def _search_batch(self, header: batches.BatchHeader, data: bytes, timestamp: int,
                      start: int) -> TimestampAndOffset | None:
        """The first record of a batch at or after `timestamp` and `start`, or None."""
        epoch = header.partition_leader_epoch if header.partition_leader_epoch >= 0 else None
        try:
            for record_offset, record_ts in iter_timestamps(data):
                if record_ts >= timestamp and record_offset >= start:
                    return TimestampAndOffset(record_offset, record_ts, epoch)
        except UnsupportedCompressionType as e:
            # Without the codec the batch is the best answer: its first offset.
            log.warn("Timestamp search in {tp} uses batch granularity: {e}",
                     tp=f"{self.topic}-{self.partition}", e=e)
            return TimestampAndOffset(max(header.base_offset, start), header.max_timestamp,
                                      epoch)
        return None

    def max_timestamp(self) -> TimestampAndOffset | None:
        """The record with the largest timestamp (ListOffsets -3, KIP-734), or None."""
        self._check_open()
        candidates = [s for s in self.segments if s.next_offset > self.log_start_offset]
        if not candidates:
            return None
        segment = max(candidates, key=lambda s: s.max_timestamp)
        if segment.max_timestamp < 0:
            return None
        _, position = segment.offset_index.lookup(segment.offset_of_max_timestamp)
        for pos, header in segment.headers_from(position):
            if header.max_timestamp == segment.max_timestamp:
                return self._max_in_batch(header, segment.read(pos, header.size))
        return None

    @staticmethod
    def _max_in_batch(header: batches.BatchHeader, data: bytes) -> TimestampAndOffset:
        """The record of a batch that has the batch's max timestamp."""
        epoch = header.partition_leader_epoch if header.partition_leader_epoch >= 0 else None
        if header.is_log_append_time:
            return TimestampAndOffset(header.base_offset, header.max_timestamp, epoch)
        try:
            for record_offset, record_ts in iter_timestamps(data):
                if record_ts == header.max_timestamp:
                    return TimestampAndOffset(record_offset, record_ts, epoch)
        except UnsupportedCompressionType:
            pass
        return TimestampAndOffset(header.last_offset, header.max_timestamp, epoch)

