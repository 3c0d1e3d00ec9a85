"""What every part of the partition log stands on: its segments and offsets, leader
epochs, flushing and closing, and the hooks a provider fills in.

`PartitionLog` (partition.py) is one class made of parts, each in a module of its own so
that none grows too large to read: the timestamp search (partition_timestamps.py),
retention (partition_retention.py) and what the log cleaner calls (partition_compaction.py)
each subclass `PartitionLogBase`, and `PartitionLog` joins them with appends and reads.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.errors import KafkaStorageError
from akfak.log.config import LogConfig
from akfak.log.handles import Syncable
from akfak.log.producer_state import ProducerStateManager
from akfak.log.segment import LogSegment
from akfak.log.threads import defer_to_thread

# The partition log's lines keep one namespace, whichever of its parts logs them.
log = Logger(namespace="akfak.log.partition")


def _fsync_all(targets: Sequence[Syncable], abandoned: Callable[[], bool]) -> None:
    """fsync (on a thread) each target; errors once the log was abandoned do not count
    (its directory went with a deleted topic)."""
    error: OSError | None = None
    for target in targets:
        try:
            target.fsync()
        except OSError as e:
            if not abandoned():
                error = error or e
    if error is not None:
        raise KafkaStorageError(f"fsync failed: {error}")


class PartitionLogBase:
    """The state of a partition log and what every part of it uses (see the module doc)."""

    def __init__(self, topic: str, partition: int, topic_id: uuid.UUID | None,
                 config: LogConfig, *, now_ms: int, reactor: Any = None) -> None:
        self.topic = topic
        #: The reactor whose thread pool runs fsyncs (None: the global reactor).
        self.reactor = reactor
        self.partition = partition
        self.topic_id = topic_id
        self.segments: list[LogSegment] = []
        self._config = config
        self._bases: list[int] = []
        self.log_start_offset = 0
        #: Offsets below this are known to be on disk (fsynced).
        self.recovery_point = 0
        #: (leader epoch, start offset) whenever the epoch of appended batches rises.
        self.epochs: list[tuple[int, int]] = []
        #: Idempotent-producer state, consulted before and after each append (None: none).
        self.producer_state: Any = self._new_producer_state()
        self._unflushed_messages = 0
        self._last_flush_ms = now_ms
        self._flush_waiters: list[Deferred[None]] = []
        self._flushing = False
        self.closed = False
        #: Closed without a flush (deleted, set aside, killed): its fsyncs no longer matter.
        self._abandoned = False
        #: Why the last append could not be written (None: it could).
        self.storage_error: str | None = None

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.topic}-{self.partition} "
                f"[{self.log_start_offset}, {self.log_end_offset})>")

    @property
    def config(self) -> LogConfig:
        return self._config

    @config.setter
    def config(self, config: LogConfig) -> None:
        """Reconfigure (AlterConfigs): takes effect from the next append, roll or retention run."""
        self._config = config
        for segment in self.segments:
            segment.index_interval_bytes = config.index_interval_bytes

    # -- provider hooks ------------------------------------------------------------------

    def _new_segment(self, base_offset: int, now_ms: int) -> LogSegment:
        raise NotImplementedError

    def _new_producer_state(self) -> ProducerStateManager:
        """The producer state (disk: with snapshots in the partition directory)."""
        return ProducerStateManager(self.topic, self.partition)

    def _persist_leader_epochs(self) -> None:
        """Record the epoch cache (disk: leader-epoch-checkpoint)."""

    def _roll_bytes(self) -> int:
        """The size at which the active segment rolls (postgres: smaller while it caches)."""
        return self.config.segment_bytes

    def prepare_read(self, offset: int, max_bytes: int) -> Deferred[None] | None:
        """Get ready, off the reactor, for a `read` of data that is not in memory; a
        Deferred to wait for before reading, or None when there is nothing to wait for
        (always here: the postgres provider reads its old batches back)."""
        return None

    def prepare_timestamp(self, timestamp: int) -> Deferred[None] | None:
        """As prepare_read, for `offset_for_timestamp` (or `max_timestamp` for -3)."""
        return None

    def read_back_bytes(self, offset: int, max_bytes: int) -> int:
        """About how many bytes a read of max_bytes from `offset` would take from outside
        memory (what prepare_read reads; 0: none, always here)."""
        return 0

    def _sync_extra_targets(self) -> list[Syncable]:
        """What besides segments a flush must fsync (disk: snapshots, the directory)."""
        return []

    def _close_extra(self) -> None:
        """Release provider resources after the segments are closed."""

    # -- segments ------------------------------------------------------------------------

    def _set_segments(self, segments: list[LogSegment]) -> None:
        self.segments = sorted(segments, key=lambda s: s.base_offset)
        self._bases = [s.base_offset for s in self.segments]

    def _add_segment(self, segment: LogSegment) -> None:
        self.segments.append(segment)
        self._bases.append(segment.base_offset)

    @property
    def active(self) -> LogSegment:
        return self.segments[-1]

    def _segment_index(self, offset: int) -> int:
        return max(0, bisect_right(self._bases, offset) - 1)

    def roll(self, now_ms: int) -> LogSegment:
        """Start a new active segment at the log end offset (and fsync the old one)."""
        self._check_open()
        active = self.active
        if active.size == 0:
            return active
        active.on_inactive()
        segment = self._new_segment(self.log_end_offset, now_ms)
        self._add_segment(segment)
        state = self._producer_state_manager()
        if state is not None:
            # A snapshot at the new segment's base lets recovery of that segment start
            # from it; the flush below fsyncs it (Kafka: takeSnapshot(sync=false)).
            state.update_map_end_offset(segment.base_offset)
            state.take_snapshot()
        # Kafka flushes the segments before a new one in the background.
        self.flush().addErrback(self._log_flush_failure)
        return segment

    # -- offsets -------------------------------------------------------------------------

    @property
    def log_end_offset(self) -> int:
        return self.active.next_offset

    @property
    def high_watermark(self) -> int:
        # A single replica: everything appended is committed.
        return self.active.next_offset

    @property
    def last_stable_offset(self) -> int:
        """The first offset of the earliest open transaction, else the high watermark."""
        state = self.producer_state
        first = state.first_unstable_offset() if state is not None else None
        hw = self.high_watermark
        return hw if first is None else min(first, hw)

    @property
    def size_in_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    @property
    def leader_epoch(self) -> int:
        """The latest leader epoch stamped on appended batches (-1 if none)."""
        return self.epochs[-1][0] if self.epochs else -1

    def _check_open(self) -> None:
        if self.closed:
            raise KafkaStorageError(f"The log of {self.topic}-{self.partition} is closed")

    # -- leader epochs -------------------------------------------------------------------

    def assign_epoch_start_offset(self, epoch: int) -> None:
        """A leader records its epoch as starting at the log end offset (Kafka's
        maybeAssignEpochStartOffset), so OffsetForLeaderEpoch knows it before any batch
        carries it."""
        if epoch > self.leader_epoch:
            self.epochs.append((epoch, self.log_end_offset))
            self._persist_leader_epochs()

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """Kafka's OffsetForLeaderEpoch answer: (epoch, end offset), (-1, -1) if unknown."""
        if epoch < 0 or not self.epochs:
            return -1, -1
        latest = self.epochs[-1][0]
        if epoch == latest:
            return latest, self.log_end_offset
        higher = next(((e, o) for e, o in self.epochs if e > epoch), None)
        if higher is None:
            return -1, -1
        floor = None
        for e, o in self.epochs:
            if e <= epoch:
                floor = (e, o)
        if floor is None:
            return epoch, higher[1]
        return floor[0], higher[1]

    def _truncate_epochs_from_start(self, start: int) -> None:
        removed = [(e, o) for e, o in self.epochs if o <= start]
        if not removed:
            return
        kept = [(e, o) for e, o in self.epochs if o > start]
        self.epochs = [(removed[-1][0], start), *kept]
        self._persist_leader_epochs()

    # -- producer state ------------------------------------------------------------------

    def _producer_state_manager(self) -> ProducerStateManager | None:
        state = self.producer_state
        return state if isinstance(state, ProducerStateManager) else None

    # -- flushing ------------------------------------------------------------------------

    def flush(self) -> Deferred[None]:
        """fsync everything appended so far, on a thread; fires when it is on disk."""
        waiter: Deferred[None] = Deferred()
        self._flush_waiters.append(waiter)
        if not self._flushing:
            self._start_flush()
        return waiter

    def flush_due(self, now_ms: int) -> Deferred[None] | None:
        """Flush if flush.ms has passed since the last flush and data is unflushed."""
        if self.closed or self._unflushed_messages == 0:
            return None
        if now_ms - self._last_flush_ms < self.config.flush_ms:
            return None
        self._last_flush_ms = now_ms
        return self.flush()

    def _start_flush(self) -> None:
        waiters, self._flush_waiters = self._flush_waiters, []
        target = self.log_end_offset
        self._unflushed_messages = 0
        targets: list[Syncable] = []
        for segment in self.segments:
            if segment.dirty:
                targets.extend(segment.sync_targets())
        targets.extend(self._sync_extra_targets())
        if not targets:
            self._finish_flush(None, target, waiters)
            return
        self._flushing = True
        defer_to_thread(self.reactor, _fsync_all, targets, lambda: self._abandoned).addBoth(
            self._finish_flush, target, waiters)

    def _finish_flush(self, result: Failure | None, target: int,
                      waiters: list[Deferred[None]]) -> None:
        self._flushing = False
        if isinstance(result, Failure):
            # The recovery point stays where it was: what this flush covered is recovered
            # (checked) at the next start after a crash.
            log.error("Flushing {tp} failed: {e}", tp=f"{self.topic}-{self.partition}",
                      e=result.getErrorMessage())
            for waiter in waiters:
                waiter.errback(result)
        else:
            self.recovery_point = max(self.recovery_point, target)
            for waiter in waiters:
                waiter.callback(None)
        if self._flush_waiters:
            self._start_flush()

    def _log_flush_failure(self, failure: Failure) -> None:
        if not failure.check(KafkaStorageError):  # those were logged by _finish_flush
            log.failure("Background flush of {tp} failed", failure,
                        tp=f"{self.topic}-{self.partition}")

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """Flush (on a thread), then close every file.  Appends fail from now on."""
        if self.closed:
            return succeed(None)
        for segment in self.segments:
            segment.on_inactive()
        state = self._producer_state_manager()
        if state is not None:
            # Kafka snapshots at the log end on close, so a restart need not replay the log.
            state.update_map_end_offset(self.log_end_offset)
            state.take_snapshot()
        d = self.flush()
        self.closed = True

        def close_files(result: object) -> object:
            self.abandon()
            return result

        return d.addBoth(close_files)

    def abandon(self) -> None:
        """Close every file now, without flushing (what a kill -9 leaves)."""
        self.closed = True
        self._abandoned = True
        for segment in self.segments:
            segment.close()
        self._close_extra()

    def delete_files(self) -> None:
        """Close and delete every segment (the topic is being deleted)."""
        self.closed = True
        self._abandoned = True
        for segment in self.segments:
            segment.delete()
        self._close_extra()
