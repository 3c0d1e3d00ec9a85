"""The share coordinator's internal API, v0: InitializeShareGroupState (83), ReadShareGroupState
(84), WriteShareGroupState (85), DeleteShareGroupState (86), ReadShareGroupStateSummary (87).

Behavior (Kafka 4.1's KafkaApis and ShareCoordinatorShard): brokers' persisters call these; akfak's
own share-partitions use the share coordinator directly (akfak.share.coordinator), these answer
whoever else asks.  CLUSTER_ACTION on the cluster, else CLUSTER_AUTHORIZATION_FAILED for every
partition.  Per partition: a null topic id or a negative partition INVALID_REQUEST; a topic
partition that does not exist UNKNOWN_TOPIC_OR_PARTITION; reading or writing a share-partition
that was never initialized INVALID_REQUEST; an older leader epoch (read, write)
FENCED_LEADER_EPOCH; an older state epoch (write, initialize) FENCED_STATE_EPOCH; while the
coordinator loads COORDINATOR_LOAD_IN_PROGRESS.  Writes answer once they are in the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i16, i32, i64
from twisted.internet.defer import Deferred, gatherResults

from akfak.errors import KafkaError
from akfak.handlers.base import Handler
from akfak.protocol import RequestContext
from akfak.security.acls import CLUSTER_ACTION
from akfak.security.checks import access
from akfak.share.records import ShareKey, StateBatch

NULL_TOPIC_ID = "The topic id cannot be null."
NEGATIVE_PARTITION = "The partition id cannot be a negative number."
UNKNOWN_PARTITION = "This server does not host this topic-partition."


class Refused(Exception):
    def __init__(self, error: ErrorCode, message: str | None = None) -> None:
        super().__init__(message)
        self.error, self.message = error, message


class _StateHandler(Handler):
    min_version = 0
    max_version = 0
    #: whether the share-partition must have been initialized (read, write)
    needs_state = False

    def check(self, key: ShareKey, partition: Any) -> Any:
        """Raise Refused, or return the key's state (or None)."""
        if key.topic_id is None:
            raise Refused(ErrorCode.invalid_request, NULL_TOPIC_ID)
        if key.partition < 0:
            raise Refused(ErrorCode.invalid_request, NEGATIVE_PARTITION)
        service = getattr(self.broker, "share", None)
        if service is None:
            raise Refused(ErrorCode.coordinator_not_available)
        try:
            state = service.coordinator.read(key)
        except KafkaError as e:
            raise Refused(ErrorCode(e.error_code)) from None
        if self.needs_state and state is None:
            operation = "Read" if self.api_key == 84 else "Write"
            raise Refused(ErrorCode.invalid_request,
                          f"{operation} operation on uninitialized share partition not allowed.")
        leader_epoch = int(getattr(partition, "leader_epoch", -1))
        if state is not None and self.api_key in (84, 85) and leader_epoch != -1 \
                and state.leader_epoch > leader_epoch:
            raise Refused(ErrorCode.fenced_leader_epoch,
                          "The leader epoch in the request is older than the epoch on the broker.")
        state_epoch = int(getattr(partition, "state_epoch", -1))
        if state is not None and self.api_key in (83, 85) and state_epoch != -1 \
                and state.state_epoch > state_epoch:
            raise Refused(ErrorCode.fenced_state_epoch,
                          "The share coordinator rejected the request because the share-group "
                          "state epoch did not match.")
        if self.broker.image.partition(self.broker.topic_name(key.topic_id) or "",
                                       key.partition) is None:
            raise Refused(ErrorCode.unknown_topic_or_partition, UNKNOWN_PARTITION)
        return state

    def each(self, request: Any, context: RequestContext, result_name: str,
             answer: Callable[[ShareKey, Any, Any], Any],
             refused: Callable[[int, ErrorCode, str | None], Any]) -> Any:
        module = self.response_module(context.api_version)
        allowed = access(context).cluster(CLUSTER_ACTION)
        results: list[Any] = []
        writes: list[Deferred[Any]] = []
        for topic in request.topics:
            partitions: list[Any] = []
            for p in topic.partitions:
                key = ShareKey(request.group_id, topic.topic_id, int(p.partition))
                if not allowed:
                    partitions.append(refused(key.partition, ErrorCode.cluster_authorization_failed,
                                              None))
                    continue
                try:
                    state = self.check(key, p)
                    done = answer(key, p, state)
                except Refused as e:
                    partitions.append(refused(key.partition, e.error, e.message))
                    continue
                if isinstance(done, Deferred):
                    writes.append(done)
                    done = refused(key.partition, ErrorCode.none, None)
                partitions.append(done)
            results.append(getattr(module, result_name)(topic_id=topic.topic_id,
                                                        partitions=tuple(partitions)))
        response = self.response_type(context.api_version)(results=tuple(results))
        if not writes:
            return response
        return gatherResults(writes, consumeErrors=True).addCallback(lambda _: response)


class InitializeShareGroupStateHandler(_StateHandler):
    api_key = 83

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        coordinator = self.broker.share.coordinator
        return self.each(
            request, context, "InitializeStateResult",
            lambda key, p, _state: coordinator.initialize(key, int(p.state_epoch),
                                                          int(p.start_offset)),
            lambda index, error, message: module.PartitionResult(
                partition=i32(index), error_code=error, error_message=message))


class ReadShareGroupStateHandler(_StateHandler):
    api_key = 84
    needs_state = True

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)

        def read(_key: ShareKey, _p: Any, state: Any) -> Any:
            return module.PartitionResult(
                partition=i32(_key.partition), error_code=ErrorCode.none, error_message=None,
                state_epoch=i32(state.state_epoch), start_offset=i64(state.start_offset),
                state_batches=tuple(module.StateBatch(
                    first_offset=i64(b.first_offset), last_offset=i64(b.last_offset),
                    delivery_state=i8(b.delivery_state), delivery_count=i16(b.delivery_count))
                    for b in state.batches))

        return self.each(request, context, "ReadStateResult", read,
                         lambda index, error, message: module.PartitionResult(
                             partition=i32(index), error_code=error, error_message=message,
                             state_epoch=i32(0), start_offset=i64(-1), state_batches=()))


class WriteShareGroupStateHandler(_StateHandler):
    api_key = 85
    needs_state = True

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        coordinator = self.broker.share.coordinator
        return self.each(
            request, context, "WriteStateResult",
            lambda key, p, _state: coordinator.write(
                key, int(p.state_epoch), int(p.leader_epoch), int(p.start_offset),
                [StateBatch(int(b.first_offset), int(b.last_offset), int(b.delivery_state),
                            int(b.delivery_count)) for b in p.state_batches]),
            lambda index, error, message: module.PartitionResult(
                partition=i32(index), error_code=error, error_message=message))


class DeleteShareGroupStateHandler(_StateHandler):
    api_key = 86

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        coordinator = self.broker.share.coordinator
        return self.each(
            request, context, "DeleteStateResult",
            lambda key, _p, _state: coordinator.delete(key),
            lambda index, error, message: module.PartitionResult(
                partition=i32(index), error_code=error, error_message=message))


class ReadShareGroupStateSummaryHandler(_StateHandler):
    api_key = 87

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)

        def summary(key: ShareKey, _p: Any, state: Any) -> Any:
            if state is None:
                raise Refused(ErrorCode.unknown_topic_or_partition, UNKNOWN_PARTITION)
            return module.PartitionResult(
                partition=i32(key.partition), error_code=ErrorCode.none, error_message=None,
                state_epoch=i32(state.state_epoch), leader_epoch=i32(state.leader_epoch),
                start_offset=i64(state.start_offset))

        return self.each(
            request, context, "ReadStateSummaryResult", summary,
            lambda index, error, message: module.PartitionResult(
                partition=i32(index), error_code=error, error_message=message,
                state_epoch=i32(0), leader_epoch=i32(0), start_offset=i64(-1)))


HANDLERS = (InitializeShareGroupStateHandler, ReadShareGroupStateHandler,
            WriteShareGroupStateHandler, DeleteShareGroupStateHandler,
            ReadShareGroupStateSummaryHandler)
