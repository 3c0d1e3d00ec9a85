"""InitProducerId (22), v0-v6, and DescribeProducers (61), v0.

Behavior / Version notes:
- Producer ids come in blocks of 1000 reserved from the controller (a
  ProducerIdsRecord in `__cluster_metadata`, as Kafka's controller writes), so
  an id is never handed out twice, also across restarts.  The answer waits
  until the metadata log holding the reservation is on disk.
- A null transactional id (idempotent producers): always a fresh producer id
  with epoch 0, as Kafka's TransactionCoordinator does, whatever producer id
  and epoch the request carries (KIP-360 bumps of idempotent producers get a
  new id).
- A producer id without an epoch, or the reverse (v3+): INVALID_REQUEST.
- A transactional id: akfak has no transaction coordinator (no
  AddPartitionsToTxn, EndTxn, `__transaction_state`), so it keeps, in memory
  only, each transactional id's producer id and epoch and applies Kafka's
  InitProducerId rules to them: "" is INVALID_REQUEST; a timeout outside
  (0, transaction.max.timeout.ms] INVALID_TRANSACTION_TIMEOUT; a new id gets a
  fresh producer id at epoch 0; each later call bumps the epoch (KIP-360: with
  the current producer id and epoch, or with the previous epoch as a retry of
  a bump whose answer was lost, which answers the current epoch again); any
  other producer id or epoch is PRODUCER_FENCED (INVALID_PRODUCER_EPOCH before
  v4, as Kafka maps it); an exhausted epoch (32766) rotates to a new producer
  id.  A transaction is never ongoing, so no transaction is ever aborted.
  Entries expire after transactional.id.expiration.ms without an
  InitProducerId (swept at most every
  transaction.remove.expired.transaction.cleanup.interval.ms).  After a
  restart a transactional id starts again with a fresh producer id.
- v6 Enable2Pc (KIP-939) needs transaction.two.phase.commit.enable, which akfak
  does not have: TRANSACTIONAL_ID_AUTHORIZATION_FAILED.  The ongoing-transaction
  fields of the v6 answer are always -1.
- DescribeProducers answers each partition's producer state (akfak.log.producer_state):
  producer id, epoch, last sequence, last timestamp, coordinator epoch -1,
  current transaction start offset -1; UNKNOWN_TOPIC_OR_PARTITION for a partition
  this broker does not have.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from kio.schema.errors import ErrorCode
from kio.schema.types import ProducerId
from kio.static.primitive import i16, i32, i64
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.log.producer_state import ProducerStateManager, is_epoch_exhausted
from akfak.metadata import PRODUCER_ID_BLOCK_SIZE
from akfak.protocol import RequestContext

log = Logger()

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1


def _make(cls: type, **values: Any) -> Any:
    """A kio entity from the values its version has (others are dropped)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


class InitProducerIdError(Exception):
    """An InitProducerId answer other than success."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code


class ProducerIdManager:
    """Hands out producer ids from blocks the controller reserves (Kafka's
    RPCProducerIdManager, with the controller in the same process)."""

    def __init__(self, allocate: Callable[[int], int], block_size: int = PRODUCER_ID_BLOCK_SIZE):
        self._allocate = allocate
        self.block_size = block_size
        self._next = 0
        self._end = 0  # an empty block: the first id reserves one

    def generate(self) -> int:
        if self._next >= self._end:
            first = self._allocate(self.block_size)
            self._next, self._end = first, first + self.block_size
            log.info("Reserved producer ids {first}..{last}", first=first, last=self._end - 1)
        producer_id = self._next
        self._next += 1
        return producer_id


@dataclass
class TransactionalIdState:
    """What akfak keeps per transactional id (a slice of Kafka's TransactionMetadata)."""

    producer_id: int
    producer_epoch: int
    last_producer_id: int
    last_producer_epoch: int
    timeout_ms: int
    last_update_ms: int


class TransactionalIds:
    """Kafka's InitProducerId rules for transactional ids, without transactions (see the
    module doc): every id is always in the Empty state."""

    def __init__(self, new_producer_id: Callable[[], int], *, expiration_ms: int,
                 cleanup_interval_ms: int) -> None:
        self._new_producer_id = new_producer_id
        self.expiration_ms = expiration_ms
        self.cleanup_interval_ms = cleanup_interval_ms
        self.states: dict[str, TransactionalIdState] = {}
        self._last_cleanup_ms: int | None = None

    def init(self, transactional_id: str, timeout_ms: int, expected: tuple[int, int] | None,
             now_ms: int) -> tuple[int, int]:
        """(producer id, epoch) for an InitProducerId; raises InitProducerIdError."""
        self.maybe_expire(now_ms)
        state = self.states.get(transactional_id)
        if state is None:
            state = TransactionalIdState(self._new_producer_id(), NO_PRODUCER_EPOCH,
                                         NO_PRODUCER_ID, NO_PRODUCER_EPOCH, timeout_ms, now_ms)
            self.states[transactional_id] = state
        if expected is not None and not self._valid_producer_id(state, *expected):
            raise InitProducerIdError(ErrorCode.producer_fenced)
        if (is_epoch_exhausted(state.producer_epoch)
                and (expected is None or expected[1] == state.producer_epoch)):
            # Kafka's prepareProducerIdRotation: a new id; the old one stays recognisable.
            new_id = self._new_producer_id()
            state.last_producer_epoch = state.producer_epoch if expected is not None else -1
            state.last_producer_id, state.producer_id = state.producer_id, new_id
            state.producer_epoch = 0
        else:
            epoch, last = self._bumped_epoch(state, None if expected is None else expected[1])
            state.producer_epoch, state.last_producer_epoch = epoch, last
        state.timeout_ms = timeout_ms
        state.last_update_ms = now_ms
        return state.producer_id, state.producer_epoch

    @staticmethod
    def _valid_producer_id(state: TransactionalIdState, producer_id: int, epoch: int) -> bool:
        # Kafka's isValidProducerId: a just-created id, the current producer id, or the
        # previous one asking again after a rotation it did not hear about.
        return (state.producer_epoch == NO_PRODUCER_EPOCH
                or producer_id == state.producer_id
                or (producer_id == state.last_producer_id and is_epoch_exhausted(epoch)))

    @staticmethod
    def _bumped_epoch(state: TransactionalIdState, expected_epoch: int | None) -> tuple[int, int]:
        """Kafka's prepareIncrementProducerEpoch: (new epoch, last epoch)."""
        bumped = state.producer_epoch + 1
        if expected_epoch is None:
            return bumped, NO_PRODUCER_EPOCH
        if state.producer_epoch == NO_PRODUCER_EPOCH or expected_epoch == state.producer_epoch:
            return bumped, state.producer_epoch
        if expected_epoch == state.last_producer_epoch:
            # A retry of a bump whose answer was lost: the same answer again.
            return state.producer_epoch, state.last_producer_epoch
        raise InitProducerIdError(
            ErrorCode.producer_fenced,
            f"Expected producer epoch {expected_epoch} does not match current producer epoch "
            f"{state.producer_epoch} or previous producer epoch {state.last_producer_epoch}")

    def maybe_expire(self, now_ms: int) -> int:
        """Remove ids idle for transactional.id.expiration.ms, at most once per cleanup
        interval; return how many went."""
        if (self._last_cleanup_ms is not None
                and now_ms - self._last_cleanup_ms < self.cleanup_interval_ms):
            return 0
        self._last_cleanup_ms = now_ms
        expired = [t for t, s in self.states.items()
                   if s.last_update_ms <= now_ms - self.expiration_ms]
        for transactional_id in expired:
            del self.states[transactional_id]
        return len(expired)


class InitProducerIdHandler(Handler):
    api_key = 22
    min_version = 0
    max_version = 6

    def __init__(self, broker: Any) -> None:
        super().__init__(broker)
        config = broker.config
        # The controller exists once the broker is open; ids are only asked for after that.
        self.producer_ids = ProducerIdManager(
            lambda count: int(self.broker.controller.allocate_producer_ids(count)))
        self.transactional_ids = TransactionalIds(
            self.producer_ids.generate,
            expiration_ms=config.get_int("transactional.id.expiration.ms"),
            cleanup_interval_ms=config.get_int(
                "transaction.remove.expired.transaction.cleanup.interval.ms", 3_600_000))
        self.max_timeout_ms = config.get_int("transaction.max.timeout.ms", 900_000)

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        try:
            producer_id, epoch = self._init(request)
        except InitProducerIdError as e:
            return self._response(version, e.code, NO_PRODUCER_ID, NO_PRODUCER_EPOCH)

        def failed(failure: Failure) -> Any:
            log.failure("Making producer id {pid} durable failed", failure, pid=producer_id)
            return self._response(version, ErrorCode.unknown_server_error, NO_PRODUCER_ID,
                                  NO_PRODUCER_EPOCH)

        # Answer only once the reservation of the id's block is on disk.
        durable = self.broker.controller.wait_durable()
        return durable.addCallbacks(
            lambda _: self._response(version, ErrorCode.none, producer_id, epoch), failed)

    def _init(self, request: Any) -> tuple[int, int]:
        transactional_id = request.transactional_id
        expected_id = int(getattr(request, "producer_id", NO_PRODUCER_ID))
        expected_epoch = int(getattr(request, "producer_epoch", NO_PRODUCER_EPOCH))
        if (expected_id == NO_PRODUCER_ID) != (expected_epoch == NO_PRODUCER_EPOCH):
            raise InitProducerIdError(ErrorCode.invalid_request)
        expected = None if expected_id == NO_PRODUCER_ID else (expected_id, expected_epoch)
        if getattr(request, "enable2_pc", False):
            raise InitProducerIdError(ErrorCode.transactional_id_authorization_failed)
        if transactional_id is None:
            return self.producer_ids.generate(), 0
        if transactional_id == "":
            raise InitProducerIdError(ErrorCode.invalid_request)
        timeout_ms = request.transaction_timeout // timedelta(milliseconds=1)
        if not 0 < timeout_ms <= self.max_timeout_ms:
            raise InitProducerIdError(ErrorCode.invalid_transaction_timeout)
        return self.transactional_ids.init(str(transactional_id), timeout_ms, expected,
                                           self.broker.now_ms())

    def _response(self, version: int, error: ErrorCode, producer_id: int, epoch: int) -> Any:
        if version < 4 and error is ErrorCode.producer_fenced:
            error = ErrorCode.invalid_producer_epoch  # as Kafka answers clients before v4
        return _make(self.response_type(version), throttle_time=NO_THROTTLE, error_code=error,
                     producer_id=ProducerId(producer_id), producer_epoch=i16(epoch),
                     ongoing_txn_producer_id=ProducerId(-1), ongoing_txn_producer_epoch=i16(-1))


class DescribeProducersHandler(Handler):
    api_key = 61
    min_version = 0
    max_version = 0

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        topics = []
        for topic in request.topics:
            partitions = []
            for index in topic.partition_indexes:
                partition_log = self.broker.get_log(topic.name, int(index))
                if partition_log is None:
                    partitions.append(module.PartitionResponse(
                        partition_index=i32(index), error_code=ErrorCode.unknown_topic_or_partition,
                        active_producers=()))
                    continue
                state = partition_log.producer_state
                entries = (state.active_producers() if isinstance(state, ProducerStateManager)
                           else [])
                producers = tuple(module.ProducerState(
                    producer_id=ProducerId(e.producer_id), producer_epoch=i32(e.producer_epoch),
                    last_sequence=i32(e.last_seq), last_timestamp=i64(e.last_timestamp),
                    coordinator_epoch=i32(e.coordinator_epoch),
                    current_txn_start_offset=i64(-1 if e.current_txn_first_offset is None
                                                 else e.current_txn_first_offset))
                    for e in entries)
                partitions.append(module.PartitionResponse(
                    partition_index=i32(index), error_code=ErrorCode.none,
                    active_producers=producers))
            topics.append(module.TopicResponse(name=topic.name, partitions=tuple(partitions)))
        return self.response_type(context.api_version)(throttle_time=NO_THROTTLE,
                                                       topics=tuple(topics))


HANDLERS = (InitProducerIdHandler, DescribeProducersHandler)
