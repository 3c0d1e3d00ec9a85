"""InitProducerId (22), v0-v5, and DescribeProducers (61), v0.

Behavior / Version notes:
- Producer ids come in blocks of 1000 reserved from the controller (a
  ProducerIdsRecord in `__cluster_metadata`, as Kafka's controller writes;
  akfak.transactions.producer_ids), so an id is never handed out twice, also
  across restarts.  The answer waits until the metadata log holding the
  reservation is on disk.
- A null transactional id (idempotent producers): always a fresh producer id
  with epoch 0, as Kafka's TransactionCoordinator does, whatever producer id
  and epoch the request carries (KIP-360 bumps of idempotent producers get a
  new id).
- A producer id without an epoch, or the reverse (v3+): INVALID_REQUEST.
- A transactional id goes to the transaction coordinator (akfak.transactions):
  "" is INVALID_REQUEST; a timeout outside (0, transaction.max.timeout.ms]
  INVALID_TRANSACTION_TIMEOUT; epochs bumped and fenced as Kafka does (KIP-360),
  an ongoing transaction aborted first (CONCURRENT_TRANSACTIONS to retry);
  PRODUCER_FENCED is INVALID_PRODUCER_EPOCH before v4, as Kafka maps it.
- v6 (KIP-939 two-phase commit) is not offered: Kafka 4.1.1 does not, and it is still
  unstable in Kafka 4.3.
- DescribeProducers answers each partition's producer state (akfak.log.producer_state):
  producer id, epoch, last sequence, last timestamp, the coordinator epoch of its
  last marker and the first offset of its open transaction (-1 when none);
  UNKNOWN_TOPIC_OR_PARTITION for a partition this broker does not have.
- ACLs (before anything else): InitProducerId with a transactional id needs WRITE on it
  (and TWO_PHASE_COMMIT for Enable2Pc), else TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
  without one IDEMPOTENT_WRITE on the cluster or WRITE on some topic (Kafka's
  authorizeByResourceType), else CLUSTER_AUTHORIZATION_FAILED.  DescribeProducers needs
  READ on each topic, else TOPIC_AUTHORIZATION_FAILED for its partitions.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from kio.schema.errors import ErrorCode
from kio.schema.types import ProducerId
from kio.static.primitive import i16, i32, i64
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.handlers.base import NO_THROTTLE, Handler, make
from akfak.log.batch import NO_PRODUCER_EPOCH, NO_PRODUCER_ID
from akfak.log.producer_state import ProducerStateManager
from akfak.protocol import RequestContext
from akfak.security.acls import IDEMPOTENT_WRITE, READ, TOPIC, TRANSACTIONAL_ID, TWO_PHASE_COMMIT, WRITE
from akfak.security.checks import DENIED_MESSAGES, access

log = Logger()



class InitProducerIdError(Exception):
    """An InitProducerId answer other than success."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code


class InitProducerIdHandler(Handler):
    api_key = 22
    min_version = 0
    max_version = 5

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        denied = self._denied(request, context)
        if denied is not None:
            return self._response(version, denied, NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
        try:
            initiated = self._init(request)
        except InitProducerIdError as e:
            return self._response(version, e.code, NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
        if isinstance(initiated, Deferred):
            return initiated.addCallback(lambda r: self._durable(version, *r))
        return self._durable(version, ErrorCode.none, *initiated)

    @staticmethod
    def _denied(request: Any, context: RequestContext) -> ErrorCode | None:
        acl = access(context)
        transactional_id = request.transactional_id
        if transactional_id is not None:
            if not acl.allows(WRITE, TRANSACTIONAL_ID, transactional_id) or (
                    getattr(request, "enable2_pc", False)
                    and not acl.allows(TWO_PHASE_COMMIT, TRANSACTIONAL_ID, transactional_id)):
                return ErrorCode.transactional_id_authorization_failed
        elif not (acl.cluster(IDEMPOTENT_WRITE, log_denied=False) or acl.any_allowed(WRITE, TOPIC)):
            return ErrorCode.cluster_authorization_failed
        return None

    def _durable(self, version: int, error: ErrorCode, producer_id: int, epoch: int) -> Any:
        if error is not ErrorCode.none:
            return self._response(version, error, NO_PRODUCER_ID, NO_PRODUCER_EPOCH)

        def failed(failure: Failure) -> Any:
            log.failure("Making producer id {pid} durable failed", failure, pid=producer_id)
            return self._response(version, ErrorCode.unknown_server_error, NO_PRODUCER_ID,
                                  NO_PRODUCER_EPOCH)

        # Answer only once the reservation of the id's block is on disk.
        durable = self.broker.controller.wait_durable()
        return durable.addCallbacks(
            lambda _: self._response(version, ErrorCode.none, producer_id, epoch), failed)

    def _init(self, request: Any) -> tuple[int, int] | Deferred[tuple[ErrorCode, int, int]]:
        transactional_id = request.transactional_id
        expected_id = int(getattr(request, "producer_id", NO_PRODUCER_ID))
        expected_epoch = int(getattr(request, "producer_epoch", NO_PRODUCER_EPOCH))
        if (expected_id == NO_PRODUCER_ID) != (expected_epoch == NO_PRODUCER_EPOCH):
            raise InitProducerIdError(ErrorCode.invalid_request)
        expected = None if expected_id == NO_PRODUCER_ID else (expected_id, expected_epoch)
        if transactional_id is None:
            return self.broker.producer_ids.generate(), 0
        if transactional_id == "":
            raise InitProducerIdError(ErrorCode.invalid_request)
        coordinator = self.broker.transaction_coordinator
        if coordinator is None:
            raise InitProducerIdError(ErrorCode.coordinator_not_available)
        timeout_ms = request.transaction_timeout // timedelta(milliseconds=1)
        return coordinator.init_producer_id(str(transactional_id), timeout_ms, expected)

    def _response(self, version: int, error: ErrorCode, producer_id: int, epoch: int) -> Any:
        if version < 4 and error is ErrorCode.producer_fenced:
            error = ErrorCode.invalid_producer_epoch  # as Kafka answers clients before v4
        return make(self.response_type(version), throttle_time=NO_THROTTLE, error_code=error,
                     producer_id=ProducerId(producer_id), producer_epoch=i16(epoch),
                     ongoing_txn_producer_id=ProducerId(-1), ongoing_txn_producer_epoch=i16(-1))


class DescribeProducersHandler(Handler):
    api_key = 61
    min_version = 0
    max_version = 0

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        topics = []
        acl = access(context)
        for topic in request.topics:
            partitions = []
            allowed = acl.allows(READ, TOPIC, topic.name)
            for index in topic.partition_indexes:
                partition_log = self.broker.get_log(topic.name, int(index)) if allowed else None
                if not allowed:
                    partitions.append(module.PartitionResponse(
                        partition_index=i32(index), error_code=ErrorCode.topic_authorization_failed,
                        error_message=DENIED_MESSAGES[29], active_producers=()))
                    continue
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
