"""What a partition remembers of one producer: its epoch and last batches.

`ProducerStateEntry` is kept per producer id by the producer state
(producer_state.py) and is what its snapshot files hold (producer_snapshots.py); the
sentinels here are Kafka's (RecordBatch.NO_PRODUCER_EPOCH and the rest).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from akfak.errors import KafkaError
from akfak.log.batch import INT32_MAX, NO_PRODUCER_EPOCH, NO_SEQUENCE, NO_TIMESTAMP

#: Kafka's ProducerStateEntry.NUM_BATCHES_TO_RETAIN.
NUM_BATCHES_TO_RETAIN = 5
#: producer.id.expiration.ms's default (one day).
DEFAULT_EXPIRATION_MS = 86_400_000


class InvalidTxnState(KafkaError):
    """The producer attempted a transactional operation in an invalid state."""

    error_code = 48


def _decrement_sequence(sequence: int, decrement: int) -> int:
    return (sequence - decrement) % (INT32_MAX + 1)


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


