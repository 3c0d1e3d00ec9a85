"""The partition log: appends and reads, and the class that joins its other parts.

One class serves every provider; a provider supplies how segments are made
(files in a partition directory, memory, or memory over PostgreSQL rows) and where
the leader-epoch checkpoint goes.  Everything runs on the reactor thread except fsync, which
runs on a thread over duplicated descriptors (so closing or deleting a segment
never races a flush).

Appends and reads never look at records: offsets are assigned by patching
batch headers (see `batch.py`), and reads return whole stored batches.

The other parts have modules of their own, so that none grows too large to read:
segments, offsets, leader epochs, flushing and closing (partition_base.py), the
timestamp search (partition_timestamps.py), retention (partition_retention.py) and what
the log cleaner calls (partition_compaction.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from akfak.errors import CorruptMessage, KafkaStorageError, OffsetOutOfRange, RecordListTooLarge
from akfak.interfaces import IPartitionLog
from akfak.log import batch as batches
from akfak.log import validator
from akfak.log.batch import HEADER_SIZE
from akfak.log.handles import FileRange
from akfak.log.partition_compaction import PartitionCompaction
from akfak.log.partition_retention import PartitionRetention
from akfak.log.partition_timestamps import PartitionTimestamps, TimestampAndOffset
from akfak.log.producer_state_base import ORIGIN_CLIENT, ORIGIN_COORDINATOR, ORIGIN_RAFT
from akfak.log.records import encode_marker, read_marker
from akfak.log.txn_index import AbortedTxn

# TimestampAndOffset is the timestamp search's, and importable here with the rest.
__all__ = [
    "ORIGIN_CLIENT",
    "ORIGIN_COORDINATOR",
    "ORIGIN_RAFT",
    "AppendInfo",
    "BatchAppendInfo",
    "PartitionLog",
    "ReadResult",
    "TimestampAndOffset",
]

log = Logger()



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


class Commit:
    """What an append waits for before it is acknowledged where that is a commit (the
    postgres provider): the writer's `barrier()`, then `check()`, which raises if the append
    was refused (a deposed leader's).  Produce waits on one barrier for every partition of a
    request: a Deferred per partition, with its callbacks and the gathering, costs about 4 µs
    each (measured in isolation).  The log's own bookkeeping after the commit does not wait for
    anyone (the writer runs it)."""

    __slots__ = ("barrier", "check")

    def __init__(self, barrier: Callable[[], Deferred[None]], check: Callable[[], None]) -> None:
        self.barrier = barrier
        self.check = check

    def wait(self) -> Deferred[None]:
        return self.barrier().addCallback(lambda _: self.check())


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
    #: The commit it is acknowledged after (the postgres provider), else None.
    commit: Commit | None = field(default=None, compare=False, repr=False)

    def settled(self) -> Deferred[None] | None:
        """Fires once the append is as durable as it is acknowledged (its fsync or its
        commit); None: it is already."""
        return self.commit.wait() if self.commit is not None else self.flushed


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


@implementer(IPartitionLog)
class PartitionLog(PartitionTimestamps, PartitionRetention, PartitionCompaction):
    """A topic partition's log (see IPartitionLog).  Providers subclass it."""

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
