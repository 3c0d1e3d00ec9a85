"""One transactional id's state, as Kafka's TransactionMetadata keeps it.

States and their ids are Kafka's (TransactionState): Empty 0, Ongoing 1,
PrepareCommit 2, PrepareAbort 3, CompleteCommit 4, CompleteAbort 5, Dead 6,
PrepareEpochFence 7.  Every change is prepared as a new `TxnTransit` (the
`pending` state while its record is written to `__transaction_state`) and
applied only once the record is in the log, so a failed write leaves the state
as it was.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import IntEnum

from akfak.log.batch import NO_PRODUCER_EPOCH, NO_PRODUCER_ID
from akfak.log.producer_state import is_epoch_exhausted
from akfak.transactions.records import TransactionLogValue

TopicPartition = tuple[str, int]


class TxnState(IntEnum):
    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def display(self) -> str:
        """The name DescribeTransactions and ListTransactions show."""
        return "".join(word.capitalize() for word in self.name.split("_"))

    @classmethod
    def from_display(cls, name: str) -> TxnState | None:
        return next((s for s in cls if s.display == name), None)

    @property
    def expiration_allowed(self) -> bool:
        return self in (TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT)


#: Kafka's validPreviousStates.
_VALID_PREVIOUS = {
    TxnState.EMPTY: {TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT},
    TxnState.ONGOING: {TxnState.ONGOING, TxnState.EMPTY, TxnState.COMPLETE_COMMIT,
                       TxnState.COMPLETE_ABORT},
    TxnState.PREPARE_COMMIT: {TxnState.ONGOING},
    TxnState.PREPARE_ABORT: {TxnState.ONGOING, TxnState.PREPARE_EPOCH_FENCE},
    TxnState.COMPLETE_COMMIT: {TxnState.PREPARE_COMMIT},
    TxnState.COMPLETE_ABORT: {TxnState.PREPARE_ABORT},
    TxnState.DEAD: {TxnState.EMPTY, TxnState.COMPLETE_COMMIT, TxnState.COMPLETE_ABORT},
    TxnState.PREPARE_EPOCH_FENCE: {TxnState.ONGOING},
}


@dataclass(frozen=True)
class TxnTransit:
    """The state a transactional id moves to once its record is written."""

    producer_id: int
    previous_producer_id: int
    next_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    timeout_ms: int
    state: TxnState
    partitions: frozenset[TopicPartition]
    start_ms: int
    last_update_ms: int
    client_transaction_version: int

    def to_value(self) -> TransactionLogValue:
        by_topic: dict[str, list[int]] = {}
        for topic, partition in sorted(self.partitions):
            by_topic.setdefault(topic, []).append(partition)
        return TransactionLogValue(
            self.producer_id, self.producer_epoch, self.timeout_ms, int(self.state),
            tuple((t, tuple(ps)) for t, ps in by_topic.items()), self.last_update_ms,
            self.start_ms, self.previous_producer_id, self.next_producer_id,
            self.client_transaction_version)


@dataclass
class TransactionMetadata:
    transactional_id: str
    producer_id: int
    previous_producer_id: int = NO_PRODUCER_ID
    next_producer_id: int = NO_PRODUCER_ID
    producer_epoch: int = NO_PRODUCER_EPOCH
    last_producer_epoch: int = NO_PRODUCER_EPOCH
    timeout_ms: int = 60_000
    state: TxnState = TxnState.EMPTY
    partitions: set[TopicPartition] = field(default_factory=set)
    start_ms: int = -1
    last_update_ms: int = -1
    client_transaction_version: int = 0
    pending: TxnState | None = None
    #: An epoch fence whose record failed to be written: the bump is not repeated.
    failed_epoch_fence: bool = False

    @classmethod
    def from_value(cls, transactional_id: str, value: TransactionLogValue) -> TransactionMetadata:
        return cls(transactional_id, value.producer_id, value.previous_producer_id,
                   value.next_producer_id, value.producer_epoch, NO_PRODUCER_EPOCH,
                   value.timeout_ms, TxnState(value.state),
                   {(t, p) for t, ps in value.partitions for p in ps}, value.start_ms,
                   value.last_update_ms, value.client_transaction_version)

    @property
    def supports_epoch_bump(self) -> bool:
        """Transaction version 2 (KIP-890): every EndTxn bumps the epoch."""
        return self.client_transaction_version >= 2

    @property
    def epoch_exhausted(self) -> bool:
        return is_epoch_exhausted(self.producer_epoch)

    @property
    def has_pending_transaction(self) -> bool:
        return self.state in (TxnState.ONGOING, TxnState.PREPARE_ABORT, TxnState.PREPARE_COMMIT)

    # -- preparing transitions (Kafka's prepare* methods) ----------------------------------

    def _transit(self, state: TxnState, *, producer_id: int | None = None,
                 next_producer_id: int = NO_PRODUCER_ID, epoch: int | None = None,
                 last_epoch: int | None = None, timeout_ms: int | None = None,
                 partitions: frozenset[TopicPartition] | None = None, start_ms: int | None = None,
                 now_ms: int, client_version: int | None = None) -> TxnTransit:
        if self.pending is not None:
            raise RuntimeError(f"{self.transactional_id}: a transition to {self.pending.display} "
                               f"is pending, cannot prepare {state.display}")
        if self.state not in _VALID_PREVIOUS[state]:
            raise RuntimeError(f"{self.transactional_id}: {self.state.display} cannot move to "
                               f"{state.display}")
        self.pending = state
        return TxnTransit(
            self.producer_id if producer_id is None else producer_id, self.producer_id,
            next_producer_id, self.producer_epoch if epoch is None else epoch,
            self.last_producer_epoch if last_epoch is None else last_epoch,
            self.timeout_ms if timeout_ms is None else timeout_ms, state,
            frozenset(self.partitions) if partitions is None else partitions,
            self.start_ms if start_ms is None else start_ms, now_ms,
            self.client_transaction_version if client_version is None else client_version)

    def prepare_fence_epoch(self, now_ms: int) -> TxnTransit:
        epoch = self.producer_epoch if self.failed_epoch_fence else self.producer_epoch + 1
        return self._transit(TxnState.PREPARE_EPOCH_FENCE, epoch=epoch,
                             last_epoch=NO_PRODUCER_EPOCH, now_ms=self.last_update_ms)

    def prepare_increment_epoch(self, timeout_ms: int, expected_epoch: int | None,
                                now_ms: int) -> TxnTransit | None:
        """None: the expected epoch is fenced (PRODUCER_FENCED)."""
        bumped = self.producer_epoch + 1
        if expected_epoch is None:
            epoch, last = bumped, NO_PRODUCER_EPOCH
        elif self.producer_epoch == NO_PRODUCER_EPOCH or expected_epoch == self.producer_epoch:
            epoch, last = bumped, self.producer_epoch
        elif expected_epoch == self.last_producer_epoch:
            epoch, last = self.producer_epoch, self.last_producer_epoch  # a retry
        else:
            return None
        return self._transit(TxnState.EMPTY, epoch=epoch, last_epoch=last, timeout_ms=timeout_ms,
                             partitions=frozenset(), start_ms=-1, now_ms=now_ms)

    def prepare_producer_id_rotation(self, producer_id: int, timeout_ms: int, now_ms: int,
                                     record_last_epoch: bool) -> TxnTransit:
        return self._transit(TxnState.EMPTY, producer_id=producer_id, epoch=0,
                             last_epoch=self.producer_epoch if record_last_epoch
                             else NO_PRODUCER_EPOCH,
                             timeout_ms=timeout_ms, partitions=frozenset(), start_ms=-1,
                             now_ms=now_ms)

    def prepare_add_partitions(self, added: set[TopicPartition], now_ms: int,
                               client_version: int | None = None) -> TxnTransit:
        start = now_ms if self.state in (TxnState.EMPTY, TxnState.COMPLETE_ABORT,
                                         TxnState.COMPLETE_COMMIT) else self.start_ms
        return self._transit(TxnState.ONGOING, partitions=frozenset(self.partitions | added),
                             start_ms=start, now_ms=now_ms, client_version=client_version)

    def prepare_abort_or_commit(self, state: TxnState, client_version: int, next_producer_id: int,
                                now_ms: int) -> TxnTransit:
        if client_version >= 2:
            epoch, last = self.producer_epoch + 1, self.producer_epoch
        else:
            epoch, last = self.producer_epoch, self.last_producer_epoch
        return self._transit(state, next_producer_id=next_producer_id, epoch=epoch,
                             last_epoch=last, now_ms=now_ms, client_version=client_version)

    def prepare_complete(self, now_ms: int) -> TxnTransit:
        state = (TxnState.COMPLETE_COMMIT if self.state is TxnState.PREPARE_COMMIT
                 else TxnState.COMPLETE_ABORT)
        self.failed_epoch_fence = False
        producer_id, epoch = self.producer_id, self.producer_epoch
        if self.supports_epoch_bump and self.next_producer_id != NO_PRODUCER_ID:
            producer_id, epoch = self.next_producer_id, 0  # the epoch overflowed: a new id
        return self._transit(state, producer_id=producer_id, epoch=epoch,
                             last_epoch=self.producer_epoch, partitions=frozenset(),
                             now_ms=now_ms)

    def prepare_dead(self) -> TxnTransit:
        return self._transit(TxnState.DEAD, partitions=frozenset(), now_ms=self.last_update_ms)

    # -- applying --------------------------------------------------------------------------

    def complete_transition(self, transit: TxnTransit) -> None:
        """The transit's record is in the log: it is the state now."""
        self.pending = None
        self.producer_id = transit.producer_id
        self.previous_producer_id = transit.previous_producer_id
        self.next_producer_id = transit.next_producer_id
        self.producer_epoch = transit.producer_epoch
        self.last_producer_epoch = transit.last_producer_epoch
        self.timeout_ms = transit.timeout_ms
        self.state = transit.state
        self.partitions = set(transit.partitions)
        self.start_ms = transit.start_ms
        self.last_update_ms = transit.last_update_ms
        self.client_transaction_version = transit.client_transaction_version

    def abort_transition(self) -> None:
        """The record could not be written: nothing changes."""
        self.pending = None

    def copy(self) -> TransactionMetadata:
        return dataclasses.replace(self, partitions=set(self.partitions))
