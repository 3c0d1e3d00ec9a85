"""What the log cleaner (cleaner.py) calls on a partition log, and the provider hooks
under it: a cleaned segment is made and written on the cleaner's thread, then swapped in on
the reactor for the segments it replaces.  A part of PartitionLog (see partition_base.py)."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred, succeed

from akfak.log.cleaner import CleaningAborted
from akfak.log.partition_base import PartitionLogBase
from akfak.log.segment import LogSegment


class PartitionCompaction(PartitionLogBase):
    """A partition log's side of compaction (akfak.log.cleaner)."""

    # -- provider hooks ------------------------------------------------------------------

    def _new_cleaned_segment(self, base_offset: int) -> LogSegment:
        """An empty segment for the log cleaner to write (disk: `.cleaned` files)."""
        raise NotImplementedError

    def _sync_cleaned_segment(self, segment: LogSegment) -> None:
        """Make a written cleaned segment durable (on the cleaner's thread)."""

    def _swap_files(self, new: LogSegment, old: Sequence[LogSegment]) -> None:
        """Put a cleaned segment's files in place of the old segments' (on the reactor)."""

    def _remove_replaced(self, old: Sequence[LogSegment]) -> Deferred[None]:
        """Delete the replaced segments; fires once the swap is durable."""
        for segment in old:
            segment.delete()
        return succeed(None)

    # -- compaction (akfak.log.cleaner) --------------------------------------------------

    def new_cleaned_segment(self, base_offset: int) -> LogSegment:
        """A new segment at `base_offset` for the cleaner to fill (callable on a thread:
        nothing of the log is touched until `replace_segments`)."""
        return self._new_cleaned_segment(base_offset)

    def finish_cleaned_segment(self, segment: LogSegment) -> None:
        """The cleaner has written `segment`: make it durable before it is swapped in
        (Kafka flushes the cleaned segment first).  On the cleaner's thread."""
        self._sync_cleaned_segment(segment)
        segment.dirty = False

    def discard_cleaned_segment(self, segment: LogSegment) -> None:
        """Drop a cleaned segment that will not be swapped in (its files go)."""
        segment.delete()

    def check_replaceable(self, new: LogSegment, old: Sequence[LogSegment]) -> None:
        """Raise CleaningAborted unless `old` is still a run of this log's inactive
        segments starting at `new`'s base offset: the re-check before a swap, since the
        log went on while the cleaner worked (retention, deletion, a restart of it)."""
        if self.closed:
            raise CleaningAborted("the log is closed")
        if not old or new.base_offset != old[0].base_offset:
            raise CleaningAborted("the cleaned segment does not start the group")
        start = next((i for i, s in enumerate(self.segments) if s is old[0]), None)
        if start is None or start + len(old) >= len(self.segments):
            raise CleaningAborted(f"segment {old[0].base_offset} is gone or active")
        if any(a is not b for a, b in zip(self.segments[start : start + len(old)], old,
                                             strict=True)):
            raise CleaningAborted("the segments changed meanwhile")

    def replace_segments(self, new: LogSegment, old: Sequence[LogSegment]) -> Deferred[None]:
        """Swap the cleaned segment `new` in for the run `old` (Kafka's replaceSegments);
        on the reactor thread.  Offsets stay as they were, so readers and appends carry
        on; fires once the swap is durable (disk: renames and directory fsynced)."""
        self.check_replaceable(new, old)
        start = next(i for i, s in enumerate(self.segments) if s is old[0])
        self._swap_files(new, old)
        self._set_segments([*self.segments[:start], new, *self.segments[start + len(old):]])
        state = self._producer_state_manager()
        if state is not None:
            # Kafka deletes the snapshots of segments that were removed, not replaced.
            for segment in old:
                if segment.base_offset != new.base_offset:
                    state.delete_snapshot(segment.base_offset)
        return self._remove_replaced(old)

