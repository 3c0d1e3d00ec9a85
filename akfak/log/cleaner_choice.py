"""Which compacted logs the cleaner cleans, and which part of each (Kafka's
LogCleanerManager: cleanableOffsets, calculateCleanableBytes, maxCompactionDelay); the
rules are in cleaner.py's module doc.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.logger import Logger

from akfak.log.segment import LogSegment

if TYPE_CHECKING:
    from akfak.log.partition import PartitionLog

# The log cleaner's lines keep one namespace, whichever of its modules logs them.
log = Logger(namespace="akfak.log.cleaner")


def segments_between(partition_log: PartitionLog, start: int, end: int) -> list[LogSegment]:
    """Kafka's logSegments(from, to): the segment holding `start` through those below `end`."""
    if start >= end:
        return []
    floor = max((s.base_offset for s in partition_log.segments if s.base_offset <= start),
                default=start)
    return [s for s in partition_log.segments if floor <= s.base_offset < end]


def non_active_segments_from(partition_log: PartitionLog, start: int) -> list[LogSegment]:
    """Kafka's nonActiveLogSegmentsFrom: the segment holding `start` up to the active one."""
    return segments_between(partition_log, start, partition_log.active.base_offset)


@dataclass
class LogToClean:
    """A compacted log and the part of it a round would clean (Kafka's LogToClean)."""

    log: PartitionLog
    first_dirty_offset: int
    #: The end (exclusive) of the cleanable part: a segment's base offset.
    first_uncleanable_offset: int
    clean_bytes: int
    cleanable_bytes: int
    need_compaction_now: bool
    #: The checkpointed offset was invalid and reset to the log start.
    reset_checkpoint: bool = False

    @property
    def total_bytes(self) -> int:
        return self.clean_bytes + self.cleanable_bytes

    @property
    def cleanable_ratio(self) -> float:
        return self.cleanable_bytes / self.total_bytes if self.total_bytes else 0.0


def log_to_clean(partition_log: PartitionLog, checkpoint: int | None, now_ms: int) -> LogToClean:
    """Kafka's cleanableOffsets, calculateCleanableBytes and maxCompactionDelay."""
    config = partition_log.config
    start = partition_log.log_start_offset
    dirty = start if checkpoint is None else checkpoint
    reset = False
    if dirty < start or dirty > partition_log.log_end_offset:
        if checkpoint is not None and not (dirty < start and config.delete_enabled):
            log.warn("Resetting the first dirty offset of {log} to its log start offset {start}: "
                     "the checkpointed {dirty} is outside the log", log=partition_log, start=start,
                     dirty=dirty)
        dirty, reset = start, True

    candidates = [partition_log.last_stable_offset, partition_log.active.base_offset]
    min_lag = max(config.min_compaction_lag_ms, 0)
    if min_lag > 0:
        for segment in non_active_segments_from(partition_log, dirty):
            if segment.largest_timestamp > now_ms - min_lag:
                candidates.append(segment.base_offset)
                break
    uncleanable = max(dirty, min(candidates))

    following = non_active_segments_from(partition_log, uncleanable)
    first_uncleanable = (following[0] if following else partition_log.active).base_offset
    cleanable_bytes = sum(s.size for s in segments_between(
        partition_log, min(dirty, first_uncleanable), first_uncleanable))
    clean_bytes = sum(s.size for s in partition_log.segments if s.base_offset < dirty)

    first_timestamps = [t for s in non_active_segments_from(partition_log, dirty)
                        if (t := s.first_timestamp()) is not None and t > 0]
    clean_until = now_ms - max(config.max_compaction_lag_ms, 0)
    need_now = bool(first_timestamps) and min(first_timestamps) < clean_until
    return LogToClean(partition_log, dirty, first_uncleanable, clean_bytes, cleanable_bytes,
                      need_now, reset)
