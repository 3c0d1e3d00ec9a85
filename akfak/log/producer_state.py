"""Idempotent-producer state of one partition, as Kafka's ProducerStateManager keeps it.

Per producer id the partition remembers the producer epoch and the last five
appended batches (sequence range, offsets, timestamp).  Before an append every
batch carrying a producer id is checked, from its header alone:

- a batch whose epoch and exact sequence range match one of the five is a
  retried duplicate: nothing is appended and the original offsets are answered;
- an epoch below the producer's is INVALID_PRODUCER_EPOCH;
- a new (higher) epoch must start at sequence 0, unless the producer is unknown;
- otherwise the first sequence must follow the last one (wrapping from
  2^31-1 to 0), else OUT_OF_ORDER_SEQUENCE_NUMBER; an unknown producer (no
  state: never seen, expired, or its data deleted) may start anywhere;
- a producer with a transaction open here may append only transactional batches
  (INVALID_TXN_STATE).  Whether the coordinator added the partition to the
  transaction is checked before the append (the Produce handler asks the
  transaction coordinator, as Kafka's KIP-890 verification does).

Transactions: a producer's first transactional batch opens its transaction at
that batch's offset; a COMMIT or ABORT marker (a control batch the coordinator
writes) closes it.  The earliest open transaction is the partition's first
unstable offset, which bounds its last stable offset; an aborted transaction is
reported as an `AbortedTxn` for the segment's `.txnindex`.

The state survives restarts in Kafka's own `<20-digit offset>.snapshot` files in
the partition directory (version 1, CRC-32C; per producer: id, epoch, last
sequence, last offset, offset delta, timestamp, coordinator epoch, open
transaction's first offset).  A snapshot holds the state as of its offset;
on load the latest readable one is read and the batch headers after it are
replayed.  A snapshot keeps only each producer's last batch, as Kafka's does,
so right after a restart from a snapshot only the last batch of each producer
is recognised as a duplicate (plus any batches replayed from the log).

The memory provider keeps the same state without snapshots.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import crc32c
from twisted.logger import Logger

from akfak.errors import InvalidProducerEpoch, KafkaError, OutOfOrderSequenceNumber
from akfak.log.batch import BatchHeader
from akfak.log.records import CONTROL_ABORT, CONTROL_COMMIT, read_marker
from akfak.log.txn_index import AbortedTxn

if TYPE_CHECKING:
    from akfak.log.partition import AppendInfo, PartitionLog
    from akfak.log.segment import LogSegment

log = Logger()

#: Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN.
NUM_BATCHES_TO_RETAIN = 5
NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
NO_TIMESTAMP = -1
INT32_MAX = 2**31 - 1
#: producer.id.expiration.ms's default (one day).
DEFAULT_EXPIRATION_MS = 86_400_000

SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOT_VERSION = 1
#: version int16, crc uint32 (CRC-32C of everything after it), entry count int32.
_SNAPSHOT_HEADER = struct.Struct(">hIi")
_CRC_START = 6
#: producer id, epoch, last sequence, last offset, offset delta, timestamp,
#: coordinator epoch, current transaction's first offset.
_SNAPSHOT_ENTRY = struct.Struct(">qhiqiqiq")

# Append origins (as akfak.log.partition names them).
ORIGIN_CLIENT = "client"
ORIGIN_COORDINATOR = "coordinator"
ORIGIN_RAFT = "raft"
ORIGIN_REPLICATION = "replication"


class InvalidTxnState(KafkaError):
    """The producer attempted a transactional operation in an invalid state."""

    error_code = 48


class CorruptSnapshot(Exception):
    """A producer-state snapshot that cannot be read (Kafka's CorruptSnapshotException)."""


def snapshot_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def snapshot_offset(path: Path) -> int | None:
    """The offset a `<20 digits>.snapshot` file is named by, None for other names."""
    stem = path.name[: -len(SNAPSHOT_SUFFIX)]
    if not path.name.endswith(SNAPSHOT_SUFFIX) or not stem.isdigit():
        return None
    return int(stem)


def _decrement_sequence(sequence: int, decrement: int) -> int:
    return (sequence - decrement) % (INT32_MAX + 1)


def _in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == INT32_MAX)


def is_epoch_exhausted(epoch: int) -> bool:
    """Kafka's TransactionMetadata.isEpochExhausted: no room left for a bump."""
    return epoch >= 32767 - 1


class BatchMetadata:
    """One remembered batch: its last sequence and offset, their span, its max timestamp."""

    __slots__ = ("last_offset", "last_seq", "offset_delta", "timestamp")

    def __init__(self, last_seq: int, last_offset: int, offset_delta: int, timestamp: int) -> None:
        self.last_seq = last_seq
        self.last_offset = last_offset
        self.offset_delta = offset_delta
        self.timestamp = timestamp

    @property
    def first_seq(self) -> int:
        return _decrement_sequence(self.last_seq, self.offset_delta)

    @property
    def first_offset(self) -> int:
        return self.last_offset - self.offset_delta

    def __repr__(self) -> str:
        return (f"BatchMetadata(seq {self.first_seq}..{self.last_seq}, "
                f"offsets {self.first_offset}..{self.last_offset}, ts {self.timestamp})")


class ProducerStateEntry:
    """What a partition knows about one producer id."""

    __slots__ = ("batches", "coordinator_epoch", "current_txn_first_offset", "last_timestamp",
                 "producer_epoch", "producer_id")

    def __init__(self, producer_id: int, producer_epoch: int = NO_PRODUCER_EPOCH, *,
                 coordinator_epoch: int = -1, last_timestamp: int = NO_TIMESTAMP,
                 current_txn_first_offset: int | None = None,
                 batches: Iterable[BatchMetadata] = ()) -> None:
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.coordinator_epoch = coordinator_epoch
        self.last_timestamp = last_timestamp
        self.current_txn_first_offset = current_txn_first_offset
        self.batches: deque[BatchMetadata] = deque(batches, NUM_BATCHES_TO_RETAIN)

    def __repr__(self) -> str:
        return (f"ProducerStateEntry(id={self.producer_id}, epoch={self.producer_epoch}, "
                f"batches={list(self.batches)}, last_timestamp={self.last_timestamp}, "
                f"txn={self.current_txn_first_offset})")

    @property
    def is_empty(self) -> bool:
        return not self.batches

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else NO_SEQUENCE

    @property
    def last_data_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1

    @property
    def last_offset_delta(self) -> int:
        return self.batches[-1].offset_delta if self.batches else 0

    def maybe_update_epoch(self, epoch: int) -> None:
        # A new epoch starts a new sequence space: the old batches can never be retried.
        if epoch != self.producer_epoch:
            self.batches.clear()
            self.producer_epoch = epoch

    def add_batch(self, epoch: int, last_seq: int, last_offset: int, offset_delta: int,
                  timestamp: int) -> None:
        self.maybe_update_epoch(epoch)
        self.batches.append(BatchMetadata(last_seq, last_offset, offset_delta, timestamp))
        self.last_timestamp = timestamp

    def find_duplicate(self, epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        if epoch != self.producer_epoch:
            return None
        for batch in self.batches:
            if batch.first_seq == first_seq and batch.last_seq == last_seq:
                return batch
        return None


# -- snapshot files ------------------------------------------------------------------------


def encode_snapshot(entries: Iterable[ProducerStateEntry]) -> bytes:
    """Kafka's producer snapshot (version 1) of `entries`."""
    items = list(entries)
    body = bytearray(_SNAPSHOT_HEADER.size + _SNAPSHOT_ENTRY.size * len(items))
    _SNAPSHOT_HEADER.pack_into(body, 0, SNAPSHOT_VERSION, 0, len(items))
    pos = _SNAPSHOT_HEADER.size
    for e in items:
        _SNAPSHOT_ENTRY.pack_into(
            body, pos, e.producer_id, e.producer_epoch, e.last_seq, e.last_data_offset,
            e.last_offset_delta, e.last_timestamp, e.coordinator_epoch,
            -1 if e.current_txn_first_offset is None else e.current_txn_first_offset)
        pos += _SNAPSHOT_ENTRY.size
    struct.pack_into(">I", body, 2, crc32c.crc32c(memoryview(body)[_CRC_START:]))
    return bytes(body)


def decode_snapshot(data: bytes) -> list[ProducerStateEntry]:
    """The entries of a producer snapshot; CorruptSnapshot if it is not a valid one."""
    if len(data) < _SNAPSHOT_HEADER.size:
        raise CorruptSnapshot(f"Snapshot is {len(data)} bytes, shorter than its header")
    version, crc, count = _SNAPSHOT_HEADER.unpack_from(data)
    if version != SNAPSHOT_VERSION:
        raise CorruptSnapshot(f"Snapshot contained an unknown file version {version}")
    computed = crc32c.crc32c(memoryview(data)[_CRC_START:])
    if crc != computed:
        raise CorruptSnapshot(f"Snapshot is corrupt (CRC is no longer valid). Stored crc: {crc}. "
                              f"Computed crc: {computed}")
    if count < 0 or len(data) != _SNAPSHOT_HEADER.size + count * _SNAPSHOT_ENTRY.size:
        raise CorruptSnapshot(f"Snapshot of {len(data)} bytes cannot hold {count} entries")
    entries = []
    for i in range(count):
        (pid, epoch, seq, offset, delta, timestamp, coordinator_epoch,
         txn_first) = _SNAPSHOT_ENTRY.unpack_from(data, _SNAPSHOT_HEADER.size + i * _SNAPSHOT_ENTRY.size)
        batches = [BatchMetadata(seq, offset, delta, timestamp)] if offset >= 0 else []
        entries.append(ProducerStateEntry(
            pid, epoch, coordinator_epoch=coordinator_epoch, last_timestamp=timestamp,
            current_txn_first_offset=txn_first if txn_first >= 0 else None, batches=batches))
    return entries


def write_snapshot(path: Path, entries: Iterable[ProducerStateEntry]) -> None:
    """Write a snapshot (no fsync: the log's next flush syncs it, on a thread)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(encode_snapshot(entries))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk: leave nothing half-written
            tmp.unlink(missing_ok=True)
        raise


def read_snapshot(path: Path) -> list[ProducerStateEntry]:
    return decode_snapshot(path.read_bytes())


# -- the manager ---------------------------------------------------------------------------


class _Pending:
    """A producer's state as the batches of one append, validated in order, would leave it."""

    __slots__ = ("epoch", "last_seq", "txn_open")

    def __init__(self, entry: ProducerStateEntry | None) -> None:
        self.epoch = entry.producer_epoch if entry is not None else NO_PRODUCER_EPOCH
        #: None until a batch of this append is seen (Kafka's empty updatedEntry).
        self.last_seq: int | None = None
        self.txn_open = entry is not None and entry.current_txn_first_offset is not None


class ProducerStateManager:
    """The producer state of one partition log (see the module doc).

    Used as the log's `producer_state` hook: `before_append` validates (and
    answers duplicates), `after_append` records what was appended.
    """

    def __init__(self, topic: str, partition: int, directory: Path | None = None, *,
                 expiration_ms: int = DEFAULT_EXPIRATION_MS) -> None:
        self.topic = topic
        self.partition = partition
        #: Where snapshots go; None keeps the state in memory only.
        self.directory = directory
        self.expiration_ms = expiration_ms
        self.producers: dict[int, ProducerStateEntry] = {}
        #: Producer id -> first offset of its open transaction.
        self.ongoing: dict[int, int] = {}
        #: The state reflects the log up to (excluding) this offset.
        self.map_end_offset = 0
        self.last_snap_offset = 0
        self.snapshots: dict[int, Path] = {}
        #: Snapshots written since the last flush picked them up for fsync.
        self._unsynced: list[Path] = []

    def __repr__(self) -> str:
        return (f"<ProducerStateManager {self.topic}-{self.partition} producers="
                f"{len(self.producers)} end={self.map_end_offset}>")

    @property
    def _tp(self) -> str:
        return f"{self.topic}-{self.partition}"

    # -- the append hook -----------------------------------------------------------------

    def before_append(self, partition_log: PartitionLog, headers: Sequence[BatchHeader], *,
                      origin: str = ORIGIN_CLIENT) -> AppendInfo | None:
        """Validate the producer fields of the batches about to be appended.

        Returns the original append's result when a client retries a batch it
        already appended (nothing is appended then), raises the KafkaError Kafka
        answers for a bad epoch or sequence, or returns None to go ahead.
        """
        pending: dict[int, _Pending] = {}
        offset = partition_log.log_end_offset
        for h in headers:
            pid = h.producer_id
            if pid < 0:
                offset += h.last_offset_delta + 1
                continue
            entry = self.producers.get(pid)
            if origin == ORIGIN_CLIENT and entry is not None:
                duplicate = entry.find_duplicate(h.producer_epoch, h.base_sequence,
                                                 h.last_sequence)
                if duplicate is not None:
                    return self._duplicate_result(partition_log, duplicate)
            state = pending.get(pid)
            if state is None:
                state = pending[pid] = _Pending(entry)
            self._validate(pid, h, entry, state, offset, origin)
            if not h.is_control:
                state.last_seq = h.last_sequence
                if state.txn_open and not h.is_transactional:
                    raise InvalidTxnState(
                        f"Expected transactional write from producer {pid} at offset {offset} "
                        f"in partition {self._tp}")
                state.txn_open = state.txn_open or h.is_transactional
            else:
                state.txn_open = False
            state.epoch = h.producer_epoch
            offset += h.last_offset_delta + 1
        return None

    def _validate(self, pid: int, h: BatchHeader, entry: ProducerStateEntry | None,
                  state: _Pending, offset: int, origin: str) -> None:
        """Kafka's ProducerAppendInfo checks: the epoch, then (for clients) the sequence."""
        epoch = h.producer_epoch
        if epoch < state.epoch:
            message = (f"Epoch of producer {pid} at offset {offset} in {self._tp} is {epoch}, "
                       f"which is smaller than the last seen epoch {state.epoch}")
            if origin == ORIGIN_REPLICATION:
                log.warn(message)
                return
            raise InvalidProducerEpoch(message)
        if origin != ORIGIN_CLIENT or h.is_control:
            return
        first_seq = h.base_sequence
        current_epoch = entry.producer_epoch if entry is not None else NO_PRODUCER_EPOCH
        if epoch != state.epoch:
            if first_seq != 0 and state.epoch != NO_PRODUCER_EPOCH:
                raise OutOfOrderSequenceNumber(
                    f"Invalid sequence number for new epoch of producer {pid} at offset {offset} "
                    f"in partition {self._tp}: {epoch} (request epoch), {first_seq} (seq. "
                    f"number), {state.epoch} (current producer epoch)")
            return
        if state.last_seq is not None:
            last_seq = state.last_seq
        elif entry is not None and epoch == current_epoch:
            last_seq = entry.last_seq
        else:
            last_seq = NO_SEQUENCE
        # An unknown producer (no epoch: never seen, expired, or its data deleted) may
        # start at any sequence.
        if current_epoch != NO_PRODUCER_EPOCH and not _in_sequence(last_seq, first_seq):
            raise OutOfOrderSequenceNumber(
                f"Out of order sequence number for producer {pid} at offset {offset} in "
                f"partition {self._tp}: {first_seq} (incoming seq. number), {last_seq} "
                f"(current end sequence number)")

    @staticmethod
    def _duplicate_result(partition_log: PartitionLog, duplicate: BatchMetadata) -> AppendInfo:
        from akfak.log.partition import AppendInfo

        # As Kafka: the original offsets, and the batch's timestamp as the append time.
        return AppendInfo(
            base_offset=duplicate.first_offset, last_offset=duplicate.last_offset,
            log_append_time=duplicate.timestamp, log_start_offset=partition_log.log_start_offset,
            max_timestamp=duplicate.timestamp, offset_of_max_timestamp=duplicate.last_offset,
            record_count=duplicate.offset_delta + 1, size=0, batches=())

    def after_append(self, partition_log: PartitionLog, info: AppendInfo) -> list[AbortedTxn]:
        """Record the batches an append stored (their offsets are known now); return the
        transactions it aborted, for the segment's `.txnindex`."""
        aborted = []
        for b in info.batches:
            if b.producer_id < 0:
                continue
            abort = self._apply(b.producer_id, b.producer_epoch, b.last_sequence, b.base_offset,
                                b.last_offset, b.max_timestamp, b.is_transactional, b.marker)
            if abort is not None:
                aborted.append(abort)
        self.map_end_offset = info.last_offset + 1
        return aborted

    def first_unstable_offset(self) -> int | None:
        """The first offset of the earliest open transaction, None when none is open."""
        return min(self.ongoing.values(), default=None)

    def _apply(self, pid: int, epoch: int, last_seq: int, base_offset: int, last_offset: int,
               timestamp: int, transactional: bool, marker: tuple[int, int] | None
               ) -> AbortedTxn | None:
        """Apply one stored batch; `marker` is (control type, coordinator epoch) for a
        control batch, None for data.  Returns the transaction an ABORT marker ended."""
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerStateEntry(pid)
        if marker is not None:
            kind, coordinator_epoch = marker
            entry.maybe_update_epoch(epoch)
            entry.last_timestamp = timestamp
            if kind not in (CONTROL_ABORT, CONTROL_COMMIT):
                return None  # another control record (Kafka's LEADER_CHANGE, ...)
            entry.coordinator_epoch = coordinator_epoch
            first = entry.current_txn_first_offset
            entry.current_txn_first_offset = None
            self.ongoing.pop(pid, None)
            if kind != CONTROL_ABORT or first is None:
                return None
            # Kafka's lastStableOffset(completedTxn): the LSO once this one is decided.
            lso = self.first_unstable_offset()
            return AbortedTxn(pid, first, last_offset, last_offset + 1 if lso is None else lso)
        entry.add_batch(epoch, last_seq, last_offset, last_offset - base_offset, timestamp)
        if transactional and entry.current_txn_first_offset is None:
            entry.current_txn_first_offset = base_offset
            self.ongoing[pid] = base_offset
        return None

    def _replay(self, h: BatchHeader, marker: tuple[int, int] | None) -> AbortedTxn | None:
        """Apply a stored batch while rebuilding (Kafka's replication origin: no checks
        beyond a warning for an epoch going backwards)."""
        if h.producer_id < 0:
            return None
        entry = self.producers.get(h.producer_id)
        if entry is not None and h.producer_epoch < entry.producer_epoch:
            log.warn("Epoch of producer {pid} at offset {offset} in {tp} is {epoch}, which is "
                     "smaller than the last seen epoch {current}", pid=h.producer_id,
                     offset=h.base_offset, tp=self._tp, epoch=h.producer_epoch,
                     current=entry.producer_epoch)
        return self._apply(h.producer_id, h.producer_epoch, h.last_sequence, h.base_offset,
                           h.last_offset, h.max_timestamp, h.is_transactional, marker)

    # -- queries, expiry -----------------------------------------------------------------

    def last_entry(self, producer_id: int) -> ProducerStateEntry | None:
        return self.producers.get(producer_id)

    def active_producers(self) -> list[ProducerStateEntry]:
        """Every producer this partition knows, by producer id (DescribeProducers)."""
        return [self.producers[pid] for pid in sorted(self.producers)]

    def _is_expired(self, now_ms: int, entry: ProducerStateEntry, expiration_ms: int) -> bool:
        return (entry.current_txn_first_offset is None
                and now_ms - entry.last_timestamp >= expiration_ms)

    def remove_expired(self, now_ms: int, expiration_ms: int | None = None) -> int:
        """Forget producers idle for producer.id.expiration.ms; return how many."""
        limit = self.expiration_ms if expiration_ms is None else expiration_ms
        expired = [pid for pid, e in self.producers.items() if self._is_expired(now_ms, e, limit)]
        for pid in expired:
            del self.producers[pid]
        return len(expired)

    def _set_producers(self, entries: Iterable[ProducerStateEntry]) -> None:
        self.producers = {e.producer_id: e for e in entries}
        self.ongoing = {e.producer_id: e.current_txn_first_offset for e in self.producers.values()
                        if e.current_txn_first_offset is not None}

    # -- snapshots -----------------------------------------------------------------------

    def update_map_end_offset(self, offset: int) -> None:
        self.map_end_offset = offset

    def latest_snapshot_offset(self) -> int | None:
        return max(self.snapshots, default=None)

    def oldest_snapshot_offset(self) -> int | None:
        return min(self.snapshots, default=None)

    def load_snapshot_files(self) -> None:
        """Find the snapshot files in the partition directory."""
        self.snapshots = {}
        if self.directory is None:
            return
        for path in self.directory.iterdir():
            offset = snapshot_offset(path)
            if offset is not None and path.is_file():
                self.snapshots[offset] = path

    def take_snapshot(self) -> Path | None:
        """Write a snapshot at the map end offset, unless one is there already.

        The file is a plain write; the log's next flush fsyncs it (on a thread).
        """
        if self.directory is None or self.map_end_offset <= self.last_snap_offset:
            return None
        path = self.directory / snapshot_name(self.map_end_offset)
        try:
            write_snapshot(path, self.producers.values())
        except OSError as e:
            # A snapshot only shortens the replay of a recovery: without it, the replay
            # starts from an earlier one.  Tried again at the next roll or close.
            log.error("Cannot write producer snapshot {path}: {e}", path=str(path), e=e)
            return None
        self.snapshots[self.map_end_offset] = path
        self.last_snap_offset = self.map_end_offset
        self._unsynced.append(path)
        return path

    def take_unsynced(self) -> list[Path]:
        """Snapshots written since the last call, for the log's flush to fsync."""
        paths, self._unsynced = self._unsynced, []
        return paths

    @property
    def has_unsynced(self) -> bool:
        return bool(self._unsynced)

    def _delete_snapshot(self, offset: int) -> None:
        path = self.snapshots.pop(offset, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def delete_snapshot(self, offset: int) -> None:
        """Remove the snapshot at `offset` (a deleted segment's base offset), if any."""
        self._delete_snapshot(offset)

    def remove_snapshots_before(self, offset: int) -> list[Path]:
        """Forget the snapshots below `offset`; return their paths for the caller to delete."""
        doomed = sorted(o for o in self.snapshots if o < offset)
        return [self.snapshots.pop(o) for o in doomed]

    def remove_stray_snapshots(self, segment_bases: Iterable[int]) -> None:
        """Kafka's LogLoader step: delete snapshots that match no segment base offset,
        except the largest one above every segment (what a clean shutdown left)."""
        bases = set(segment_bases)
        latest_stray: int | None = None
        for offset in sorted(self.snapshots):
            if offset in bases:
                continue
            if latest_stray is not None:
                self._delete_snapshot(latest_stray)
            latest_stray = offset
        if latest_stray is not None and bases and latest_stray < max(bases):
            self._delete_snapshot(latest_stray)

    def on_log_start_offset_incremented(self, log_start_offset: int) -> None:
        # Producers are kept (as Kafka 2.8+ does); only the bookkeeping moves.
        if self.map_end_offset < log_start_offset:
            self.map_end_offset = log_start_offset
        latest = self.latest_snapshot_offset()
        self.last_snap_offset = latest if latest is not None else log_start_offset

    def truncate_and_reload(self, log_start_offset: int, log_end_offset: int, now_ms: int) -> None:
        """Drop snapshots outside (log start, log end]; reload from the latest if the
        state does not already end at the log end."""
        for offset in list(self.snapshots):
            if offset > log_end_offset or offset <= log_start_offset:
                self._delete_snapshot(offset)
        if log_end_offset != self.map_end_offset:
            self._set_producers(())
            self._load_latest_snapshot(log_start_offset, now_ms)
        else:
            self.on_log_start_offset_incremented(log_start_offset)

    def _load_latest_snapshot(self, log_start_offset: int, now_ms: int) -> None:
        while self.snapshots:
            offset = max(self.snapshots)
            path = self.snapshots[offset]
            try:
                entries = read_snapshot(path)
            except (CorruptSnapshot, OSError) as e:
                log.warn("Failed to load producer snapshot from {path}: {e}", path=str(path), e=e)
                self._delete_snapshot(offset)
                continue
            self._set_producers(e for e in entries
                                if not self._is_expired(now_ms, e, self.expiration_ms))
            self.last_snap_offset = self.map_end_offset = offset
            return
        self.last_snap_offset = self.map_end_offset = log_start_offset

    def rebuild(self, segments: Sequence[LogSegment], log_start_offset: int, last_offset: int,
                *, clean: bool, now_ms: int, txn_index_from: int | None = None) -> None:
        """Kafka's rebuildProducerState: load the latest snapshot, then replay the batch
        headers from its offset to `last_offset`; snapshot at the start of the last two
        segments on the way and at the end.

        `txn_index_from` is where recovery rebuilt segments (their `.txnindex` was
        reset): their aborts are listed again first (`relist_aborts`)."""
        if txn_index_from is not None:
            self.relist_aborts(segments, txn_index_from, log_start_offset, last_offset, now_ms)
        to_snapshot: list[int] = []
        if segments:
            if len(segments) > 1:
                to_snapshot.append(segments[-2].base_offset)
            to_snapshot.append(segments[-1].base_offset)
        to_snapshot.append(last_offset)
        if self.latest_snapshot_offset() is None and clean:
            # A clean shutdown without snapshots: data written before producer state
            # existed (as after Kafka's upgrade from a version without it).  Nothing is
            # replayed; empty snapshots avoid a full scan next time.
            for offset in to_snapshot:
                self.update_map_end_offset(offset)
                self.take_snapshot()
            return
        was_empty = not self.producers and self.map_end_offset >= last_offset
        self.truncate_and_reload(log_start_offset, last_offset, now_ms)
        if last_offset > self.map_end_offset and not was_empty:
            for i, segment in enumerate(segments):
                following = segments[i + 1].base_offset if i + 1 < len(segments) else None
                if following is not None and following <= self.map_end_offset:
                    continue
                if segment.base_offset >= last_offset:
                    break
                start = max(segment.base_offset, self.map_end_offset, log_start_offset)
                self.update_map_end_offset(start)
                if segment.base_offset in to_snapshot:
                    self.take_snapshot()
                for header, marker in _headers_between(segment, start, last_offset):
                    self._replay(header, marker)
        self.update_map_end_offset(last_offset)
        self.take_snapshot()

    def relist_aborts(self, segments: Sequence[LogSegment], from_offset: int,
                      log_start_offset: int, last_offset: int, now_ms: int) -> None:
        """List in the `.txnindex` of their segments the aborts whose markers are at or
        after `from_offset`, replaying the log from the latest snapshot at or before it
        (as Kafka's recovery rebuilds a segment's index from the producer state at its
        base) in a scratch state; this state is left as it is."""
        scratch = ProducerStateManager(self.topic, self.partition, expiration_ms=self.expiration_ms)
        scratch.snapshots = {o: p for o, p in self.snapshots.items() if o <= from_offset}
        scratch._load_latest_snapshot(log_start_offset, now_ms)
        start = scratch.map_end_offset
        for i, segment in enumerate(segments):
            following = segments[i + 1].base_offset if i + 1 < len(segments) else None
            if following is not None and following <= start:
                continue
            for header, marker in _headers_between(segment, max(start, segment.base_offset),
                                                    last_offset):
                abort = scratch._replay(header, marker)
                if (abort is not None and abort.last_offset >= from_offset
                        and abort not in segment.txn_index.entries):
                    segment.txn_index.append(abort)


def _headers_between(segment: LogSegment, start: int, end: int
                     ) -> Iterator[tuple[BatchHeader, tuple[int, int] | None]]:
    """Headers of the segment's batches holding offsets in [start, end), each with its
    marker (control type, coordinator epoch) when it is a control batch."""
    _, position = segment.offset_index.lookup(start)
    for pos, header in segment.headers_from(position):
        if header.base_offset >= end:
            return
        if header.last_offset >= start:
            marker = None
            if header.is_control:
                marker = read_marker(segment.read(pos, header.size)) or (-1, -1)
            yield header, marker

