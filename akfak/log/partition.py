"""The partition log: segments, offsets, appends, reads, timestamps, retention, flushing.

One class serves both providers; a provider supplies how segments are made
(files in a partition directory, or memory) and where the leader-epoch
checkpoint goes.  Everything runs on the reactor thread except fsync, which
runs on a thread over duplicated descriptors (so closing or deleting a segment
never races a flush).

Appends and reads never look at records: offsets are assigned by patching
batch headers (see `batch.py`), and reads return whole stored batches.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from akfak.errors import (
    CorruptMessage,
    KafkaStorageError,
    OffsetOutOfRange,
    RecordListTooLarge,
    UnsupportedCompressionType,
)
from akfak.interfaces import IPartitionLog
from akfak.log import batch as batches
from akfak.log import validator
from akfak.log.batch import HEADER_SIZE
from akfak.log.cleaner import CleaningAborted
from akfak.log.config import LogConfig
from akfak.log.handles import FileRange, Syncable
from akfak.log.producer_state import ProducerStateManager
from akfak.log.records import encode_marker, iter_timestamps, read_marker
from akfak.log.segment import LogSegment
from akfak.log.threads import defer_to_thread
from akfak.log.txn_index import AbortedTxn

log = Logger()

ORIGIN_CLIENT = "client"
ORIGIN_COORDINATOR = "coordinator"
ORIGIN_RAFT = "raft"


@dataclass(frozen=True)
class BatchAppendInfo:
    """One appended batch: its assigned offsets and its producer fields (for idempotence)."""

    base_offset: int
    last_offset: int
    record_count: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    last_sequence: int
    is_transactional: bool
    is_control: bool
    #: A control batch's (control record type, coordinator epoch); None for data.
    marker: tuple[int, int] | None = None


@dataclass(frozen=True)
class AppendInfo:
    """The result of an append, as a Produce response needs it."""

    base_offset: int
    last_offset: int
    #: The broker's append time for LogAppendTime topics, else -1.
    log_append_time: int
    log_start_offset: int
    max_timestamp: int
    offset_of_max_timestamp: int
    record_count: int
    size: int
    batches: tuple[BatchAppendInfo, ...]
    #: Fires when an fsync this append triggered (flush.messages) completes, else None.
    flushed: Deferred[None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ReadResult:
    """Whole batches read from a partition, as parts to write out in sequence."""

    parts: list[bytes | FileRange]
    size: int
    high_watermark: int
    log_start_offset: int
    last_stable_offset: int
    #: Base offset of the first batch returned (None when nothing was read).
    first_offset: int | None = None
    #: The offset after the last batch returned (the fetch position to continue from).
    next_offset: int | None = None


class TimestampAndOffset(NamedTuple):
    """A ListOffsets answer: the offset, its record's timestamp and batch leader epoch."""

    offset: int
    timestamp: int
    leader_epoch: int | None


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


@implementer(IPartitionLog)
class PartitionLog:
    """A topic partition's log (see IPartitionLog).  Providers subclass it."""

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

    # -- append --------------------------------------------------------------------------

    def append(self, records: bytes | bytearray | memoryview, *, leader_epoch: int, now_ms: int,
               origin: str = ORIGIN_CLIENT) -> AppendInfo:
        """Validate and append the batches in `records`; see IPartitionLog.append."""
        self._check_open()
        config = self.config
        view = memoryview(records)
        client = origin == ORIGIN_CLIENT
        headers = batches.validate(view, max_message_bytes=config.max_message_bytes,
                                   client=client)
        total = len(view)
        if total > config.segment_bytes:
            raise RecordListTooLarge(
                f"Message batch size is {total} bytes in append to partition "
                f"{self.topic}-{self.partition} which exceeds the maximum configured segment "
                f"size of {config.segment_bytes}.")
        log_append_time = now_ms if config.log_append_time else None
        if client:
            rules = validator.Rules.of(f"{self.topic}-{self.partition}", config)
            headers = validator.validate(view, headers, rules, now_ms)
        if self.producer_state is not None:
            duplicate = self.producer_state.before_append(self, [h for _, h in headers],
                                                          origin=origin)
            if duplicate is not None:
                return duplicate  # type: ignore[no-any-return]

        count = sum(h.last_offset_delta + 1 for _, h in headers)
        incoming_max_ts = (log_append_time if log_append_time is not None
                           else max(h.max_timestamp for _, h in headers))
        next_offset = self.log_end_offset
        try:
            if self.active.should_roll(
                    segment_bytes=self._roll_bytes(), segment_ms=config.segment_ms,
                    incoming_size=total, max_timestamp_in_messages=incoming_max_ts,
                    last_offset_in_messages=next_offset + count - 1, now_ms=now_ms,
                    max_index_entries=config.max_index_entries):
                self.roll(now_ms)
        except KafkaStorageError as e:
            self._append_failed(e)
            raise

        parts: list[bytes | memoryview] = []
        infos: list[BatchAppendInfo] = []
        offset = next_offset
        max_ts, offset_of_max = batches.NO_TIMESTAMP, next_offset
        for pos, h in headers:
            parts.append(batches.patched_header(view, pos, h, base_offset=offset,
                                                leader_epoch=leader_epoch,
                                                log_append_time=log_append_time))
            if h.size > HEADER_SIZE:
                parts.append(view[pos + HEADER_SIZE : pos + h.size])
            last = offset + h.last_offset_delta
            batch_ts = log_append_time if log_append_time is not None else h.max_timestamp
            if batch_ts > max_ts:
                max_ts, offset_of_max = batch_ts, last
            infos.append(BatchAppendInfo(
                base_offset=offset, last_offset=last, record_count=h.record_count,
                max_timestamp=batch_ts, producer_id=h.producer_id,
                producer_epoch=h.producer_epoch, base_sequence=h.base_sequence,
                last_sequence=h.last_sequence, is_transactional=h.is_transactional,
                is_control=h.is_control,
                marker=(read_marker(view[pos : pos + h.size]) or (-1, -1)) if h.is_control
                else None))
            offset = last + 1

        try:
            self.active.append(parts, total, last_offset=offset - 1, max_timestamp=max_ts,
                               offset_of_max_timestamp=offset_of_max, now_ms=now_ms)
        except KafkaStorageError as e:
            self._append_failed(e)
            raise
        # From here on the batches are in the log: nothing may fail the append any more
        # (index, checkpoint and snapshot writes log their failures and are made good later).
        if self.storage_error is not None:
            log.info("Appends to {tp} succeed again", tp=f"{self.topic}-{self.partition}")
            self.storage_error = None
        if leader_epoch >= 0 and leader_epoch > self.leader_epoch:
            self.epochs.append((leader_epoch, next_offset))
            self._persist_leader_epochs()

        flushed = None
        self._unflushed_messages += count
        if self._unflushed_messages >= config.flush_messages:
            self._last_flush_ms = now_ms
            flushed = self.flush()
        info = AppendInfo(
            base_offset=next_offset, last_offset=offset - 1,
            log_append_time=-1 if log_append_time is None else log_append_time,
            log_start_offset=self.log_start_offset, max_timestamp=max_ts,
            offset_of_max_timestamp=offset_of_max, record_count=count, size=total,
            batches=tuple(infos), flushed=flushed)
        if self.producer_state is not None:
            for abort in self.producer_state.after_append(self, info):
                self.active.txn_index.append(abort)
        return info

    def _append_failed(self, error: KafkaStorageError) -> None:
        """An append could not be written (disk full, I/O error): the log is as it was
        before it, and each later append tries again.  One ERROR line per episode."""
        if self.storage_error is None:
            log.error("Cannot append to {tp}: {e}; answering KAFKA_STORAGE_ERROR to its "
                      "produce requests until a write succeeds again",
                      tp=f"{self.topic}-{self.partition}", e=error)
        self.storage_error = str(error)

    def append_marker(self, *, producer_id: int, producer_epoch: int, commit: bool,
                      coordinator_epoch: int, leader_epoch: int, now_ms: int) -> AppendInfo:
        """Write a COMMIT or ABORT marker for a producer's transaction (the transaction
        coordinator's WriteTxnMarkers, in-process)."""
        marker = encode_marker(commit=commit, producer_id=producer_id,
                               producer_epoch=producer_epoch,
                               coordinator_epoch=coordinator_epoch, timestamp=now_ms)
        return self.append(marker, leader_epoch=leader_epoch, now_ms=now_ms,
                           origin=ORIGIN_COORDINATOR)

    def collect_aborted(self, fetch_offset: int, upper_bound: int) -> list[AbortedTxn]:
        """The aborted transactions overlapping [fetch_offset, upper_bound), for a
        read_committed fetch (Kafka's collectAbortedTransactions)."""
        found: list[AbortedTxn] = []
        for segment in self.segments[self._segment_index(fetch_offset):]:
            entries, complete = segment.txn_index.collect(fetch_offset, upper_bound)
            found.extend(entries)
            if complete:
                break
        return found

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

    # -- read ----------------------------------------------------------------------------

    def read(self, offset: int, max_bytes: int, *, min_one: bool = True,
             max_offset: int | None = None, ranges: bool = False) -> ReadResult:
        """Whole batches from the one holding `offset`; see IPartitionLog.read.  With
        `ranges`, parts may be FileRanges (akfak.log.handles) rather than bytes."""
        self._check_open()
        hw = self.high_watermark
        # Between the high watermark and the log end (not committed yet: postgres) a read
        # is empty, as on a Kafka leader; beyond the end it is out of range.
        if offset < self.log_start_offset or offset > self.log_end_offset:
            raise OffsetOutOfRange(
                f"Offset {offset} is out of range for partition {self.topic}-{self.partition}: "
                f"[{self.log_start_offset}, {self.log_end_offset}]")
        limit = hw if max_offset is None else min(max_offset, hw)
        parts: list[bytes | FileRange] = []
        total = 0
        first: int | None = None
        next_offset: int | None = None
        want = offset
        i = self._segment_index(offset)
        while i < len(self.segments) and want < limit:
            segment = self.segments[i]
            found = segment.find(want)
            if found is None:
                i += 1
                continue
            start, header = found
            if header.base_offset >= limit:
                break
            if limit >= segment.next_offset:
                max_position = segment.size
            else:
                stop = segment.find(limit, start)
                max_position = stop[0] if stop is not None else segment.size
            budget = max_bytes - total
            end = segment.end_within(start, min(max_position, start + max(budget, 0)))
            if first is None and min_one:
                end = max(end, start + header.size)  # KIP-74: the first batch, whatever its size
            if end <= start:
                break
            try:
                data = segment.read_batches(start, end - start, f"{self.topic}-{self.partition}",
                                            ranges=ranges)
            except CorruptMessage:
                if first is None:
                    raise
                break  # what came before it is served; a fetch from it gets the error
            if isinstance(data, list):  # a memory store's pieces: all of [start, end)
                parts.extend(data)
                size = end - start
            else:
                parts.append(data)
                size = len(data)
            total += size
            if first is None:
                first = header.base_offset
            if size < end - start:
                # A corrupt batch follows: the next fetch starts at it (and gets the error).
                next_offset = batches.parse_header(segment.read(start + size,
                                                                HEADER_SIZE)).base_offset
                break
            if end < max_position:
                # Stopped by max_bytes: the batch starting at `end` is where to continue.
                next_offset = batches.parse_header(segment.read(end, HEADER_SIZE)).base_offset
                break
            next_offset = segment.next_offset if max_position == segment.size else limit
            want = segment.next_offset
            i += 1
        return ReadResult(parts=parts, size=total, high_watermark=hw,
                          log_start_offset=self.log_start_offset,
                          last_stable_offset=self.last_stable_offset, first_offset=first,
                          next_offset=next_offset)

    def iter_batches(self, offset: int | None = None) -> Iterator[bytes]:
        """Every stored batch from `offset` (default: the log start) to the end, one by one.

        For internal consumers of small logs (the metadata log); fetches use `read`.
        """
        position = self.log_start_offset if offset is None else offset
        while position < self.high_watermark:
            result = self.read(position, 4 * 1024 * 1024)
            if not result.parts or result.next_offset is None:
                return
            data = b"".join(result.parts)
            for pos, header in batches.scan(data):
                yield data[pos : pos + header.size]
            position = result.next_offset

    # -- timestamps ----------------------------------------------------------------------

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

    # -- log start, retention ------------------------------------------------------------

    def _producer_state_manager(self) -> ProducerStateManager | None:
        state = self.producer_state
        return state if isinstance(state, ProducerStateManager) else None

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

    # -- compaction (akfak.log.cleaner) ---------------------------------------------------

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
