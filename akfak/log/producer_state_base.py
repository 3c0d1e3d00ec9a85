"""The state a partition keeps of its producers, and the append hook over it.

`ProducerStateManager` (producer_state.py) is the producer state of one partition log; its
fields, the checks and updates of each append (and of each stored batch replayed after a
restart) and its queries are here in `ProducerStateBase`, so that no module grows too
large to read.  The snapshots and the rebuild after a restart are producer_state.py's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.logger import Logger

from akfak.errors import InvalidProducerEpoch, OutOfOrderSequenceNumber
from akfak.log.batch import INT32_MAX, NO_PRODUCER_EPOCH, NO_SEQUENCE, BatchHeader
from akfak.log.producer_entries import (
    DEFAULT_EXPIRATION_MS,
    BatchMetadata,
    InvalidTxnState,
    ProducerStateEntry,
)
from akfak.log.records import CONTROL_ABORT, CONTROL_COMMIT
from akfak.log.txn_index import AbortedTxn

if TYPE_CHECKING:
    from akfak.log.partition import AppendInfo, PartitionLog

# The producer state's lines keep one namespace, whichever of its parts logs them.
log = Logger(namespace="akfak.log.producer_state")

# Append origins (as akfak.log.partition names them).
ORIGIN_CLIENT = "client"
ORIGIN_COORDINATOR = "coordinator"
ORIGIN_RAFT = "raft"
ORIGIN_REPLICATION = "replication"


def _in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == INT32_MAX)


class _Pending:
    """A producer's state as the batches of one append, validated in order, would leave it."""

    __slots__ = ("epoch", "last_seq", "txn_open")

    def __init__(self, entry: ProducerStateEntry | None) -> None:
        self.epoch = entry.producer_epoch if entry is not None else NO_PRODUCER_EPOCH
        #: None until a batch of this append is seen (Kafka's empty updatedEntry).
        self.last_seq: int | None = None
        self.txn_open = entry is not None and entry.current_txn_first_offset is not None


class ProducerStateBase:
    """The fields, append hook and queries of the producer state (see the module doc)."""

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
