"""The partition log's retention: segments deleted by retention.ms, retention.bytes and the
log start offset (DeleteRecords moves it), and the producer snapshots no longer worth
keeping.  A part of PartitionLog (see partition_base.py)."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from akfak.errors import OffsetOutOfRange
from akfak.log.partition_base import PartitionLogBase
from akfak.log.segment import LogSegment

log = Logger(namespace="akfak.log.partition")


class PartitionRetention(PartitionLogBase):
    """Moving a partition log's start offset up and deleting the segments below it."""

    def min_snapshot_offset_to_retain(self) -> int:
        """Kafka's minSnapshotsOffsetToRetain: keep the snapshots of the last two segments
        and of every segment from the one before the recovery point on."""
        def lower_base(offset: int) -> int | None:
            below = [b for b in self._bases if b < offset]
            return below[-1] if below else None

        active = self.active.base_offset
        two_segments = lower_base(active)
        recovery = lower_base(self.recovery_point)
        return min(self.recovery_point if recovery is None else recovery,
                   active if two_segments is None else two_segments)

    def obsolete_snapshots(self) -> list[Any]:
        """Forget producer snapshots no longer worth keeping (after a recovery-point
        checkpoint); return their paths for the caller to delete."""
        state = self._producer_state_manager()
        if state is None:
            return []
        return state.remove_snapshots_before(self.min_snapshot_offset_to_retain())

    def remove_expired_producers(self, now_ms: int, expiration_ms: int | None = None) -> int:
        """Forget producers idle for producer.id.expiration.ms; return how many."""
        state = self._producer_state_manager()
        if state is None or self.closed:
            return 0
        return state.remove_expired(now_ms, expiration_ms)

    def advance_log_start_offset(self, offset: int) -> int:
        """DeleteRecords: move the log start offset up to `offset`; return the new one.

        Whole segments below it are deleted by the next retention pass.
        """
        self._check_open()
        if offset < 0 or offset > self.high_watermark:
            raise OffsetOutOfRange(
                f"Cannot increment the log start offset to {offset} of partition "
                f"{self.topic}-{self.partition} since it is larger than the high watermark "
                f"{self.high_watermark}")
        if offset > self.log_start_offset:
            self.log_start_offset = offset
            self._truncate_epochs_from_start(offset)
            state = self._producer_state_manager()
            if state is not None:
                state.on_log_start_offset_incremented(offset)
        return self.log_start_offset

    def run_retention(self, now_ms: int) -> int:
        """Delete old segments per retention.ms / retention.bytes / log start offset.

        Returns how many segments were deleted.  As Kafka: only whole segments,
        oldest first, stopping at the first one that must stay; if every segment
        goes, a new empty active segment is rolled first.
        """
        if self.closed:
            return 0
        config = self.config
        deleted = 0
        if config.delete_enabled:
            if config.retention_ms >= 0:
                deleted += self._delete_old(
                    lambda seg, _next: now_ms - seg.largest_timestamp > config.retention_ms,
                    now_ms)
            if config.retention_bytes >= 0 and self.size_in_bytes >= config.retention_bytes:
                excess = [self.size_in_bytes - config.retention_bytes]

                def over_size(seg: LogSegment, _next: LogSegment | None) -> bool:
                    if excess[0] - seg.size >= 0:
                        excess[0] -= seg.size
                        return True
                    return False

                deleted += self._delete_old(over_size, now_ms)
        deleted += self._delete_old(
            lambda _seg, nxt: nxt is not None and nxt.base_offset <= self.log_start_offset,
            now_ms)
        return deleted

    def _delete_old(self, predicate: Any, now_ms: int) -> int:
        deletable: list[LogSegment] = []
        hw = self.high_watermark
        for i, segment in enumerate(self.segments):
            following = self.segments[i + 1] if i + 1 < len(self.segments) else None
            upper = following.base_offset if following is not None else self.log_end_offset
            last_and_empty = following is None and segment.size == 0
            if hw >= upper and not last_and_empty and predicate(segment, following):
                deletable.append(segment)
            else:
                break
        if not deletable:
            return 0
        if len(deletable) == len(self.segments):
            self.roll(now_ms)
        state = self._producer_state_manager()
        for segment in deletable:
            log.info("Deleting segment {base} of {tp} (retention)", base=segment.base_offset,
                     tp=f"{self.topic}-{self.partition}")
            segment.delete()
            if state is not None:
                state.delete_snapshot(segment.base_offset)  # as Kafka deletes it with its segment
        self._set_segments(self.segments[len(deletable):])
        if self.segments[0].base_offset > self.log_start_offset:
            self.log_start_offset = self.segments[0].base_offset
            self._truncate_epochs_from_start(self.log_start_offset)
            if state is not None:
                state.on_log_start_offset_incremented(self.log_start_offset)
        return len(deletable)

