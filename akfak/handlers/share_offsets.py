"""DescribeShareGroupOffsets (key 90), AlterShareGroupOffsets (91), DeleteShareGroupOffsets (92), v0.

Behavior (Kafka 4.1's KafkaApis and GroupCoordinatorService; what `kafka-share-groups` uses):
- Without share groups enabled: UNSUPPORTED_VERSION (per group for Describe).
- Describe: DESCRIBE on the group (else GROUP_AUTHORIZATION_FAILED for it); null topics: every
  share-partition the group has state for, the topics the principal may DESCRIBE; named
  topics: TOPIC_AUTHORIZATION_FAILED (start offset -1) for the others, start offset -1 for a
  topic that does not exist or a partition without state, else the persisted start offset and
  leader epoch (-1 until a first acknowledgement is written, as Kafka's summary).  The
  share-partitions are those the group coordinator initialized; their state comes from each
  one's share coordinator (ReadShareGroupStateSummary to another broker in a cluster).
- Alter: READ on the group; an empty group id INVALID_GROUP_ID; a group that does not exist
  or is not a share group GROUP_ID_NOT_FOUND, one with members NON_EMPTY_GROUP; per topic READ
  (TOPIC_AUTHORIZATION_FAILED) and existence (UNKNOWN_TOPIC_OR_PARTITION, also per missing
  partition); each share-partition starts again at the offset given (a new state epoch, written
  by its share coordinator, wherever it is).
- Delete: DELETE on the group; per topic READ; the group must exist and be empty; a topic
  without state is UNKNOWN_TOPIC_OR_PARTITION ("There is no offset information to delete.");
  the others' share-partition state is deleted (DeleteShareGroupState to another broker's share
  coordinator in a cluster).
"""

from __future__ import annotations

from typing import Any, ClassVar

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64
from twisted.internet.defer import Deferred, gatherResults, succeed

from akfak.handlers.base import NO_THROTTLE, NO_TOPIC_ID, Handler
from akfak.handlers.share_groups import share_service
from akfak.protocol import RequestContext
from akfak.security.acls import DELETE, DESCRIBE, GROUP, READ, TOPIC
from akfak.security.checks import access
from akfak.share.records import ShareKey

UNKNOWN_TOPIC_MESSAGE = "This server does not host this topic-partition."
NOT_AUTHORIZED_MESSAGE = "Topic authorization failed."


def _group_error(service: Any, group_id: str) -> tuple[ErrorCode, str] | None:
    """What Alter and Delete answer for a group that is missing or not empty."""
    if not group_id:
        return ErrorCode.invalid_group_id, "The group id is invalid."
    group = service.groups.groups.get(group_id)
    if group is None:
        if service._is_classic(group_id):
            return ErrorCode.group_id_not_found, f"Group {group_id} is not a share group."
        return ErrorCode.group_id_not_found, f"Group {group_id} not found."
    if group.members:
        return ErrorCode.non_empty_group, "The group is not empty."
    return None


class DescribeShareGroupOffsetsHandler(Handler):
    api_key = 90
    min_version = 0
    max_version = 0

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        service = share_service(self.broker)
        acl = access(context)
        image = self.broker.image

        def partition(index: int, start: int = -1, epoch: int = 0, error: ErrorCode = ErrorCode.none,
                      message: str | None = None) -> Any:
            return module.DescribeShareGroupOffsetsResponsePartition(
                partition_index=i32(index), start_offset=i64(start), leader_epoch=i32(epoch),
                error_code=error, error_message=message)

        reads: list[Deferred[Any]] = []

        def state_of(group_id: str, topic_id: Any, index: int) -> list[Any]:
            """[the partition's answer], filled once its share coordinator (maybe another
            broker's) answered."""
            cell: list[Any] = [partition(index)]

            def found(state: Any) -> None:
                if state is not None:
                    cell[0] = partition(index, state.start_offset, max(state.leader_epoch, 0))

            def failed(f: Any) -> None:
                cell[0] = partition(index, error=ErrorCode(getattr(
                    f.value, "error_code", ErrorCode.unknown_server_error.value)))

            reads.append(service.persister.summary(ShareKey(group_id, topic_id, index))
                         .addCallbacks(found, failed))
            return cell

        groups: list[Any] = []
        for g in request.groups:
            def failed(code: ErrorCode, g: Any = g) -> Any:
                return module.DescribeShareGroupOffsetsResponseGroup(
                    group_id=g.group_id, topics=(), error_code=code, error_message=None)

            if service is None:
                groups.append(failed(ErrorCode.unsupported_version))
                continue
            if not acl.allows(DESCRIBE, GROUP, g.group_id):
                groups.append(failed(ErrorCode.group_authorization_failed))
                continue
            topics = []
            if g.topics is None:
                for topic_id, indexes in service.topic_partitions_of(g.group_id).items():
                    topic = image.topic_by_id(topic_id)
                    if topic is None or not acl.allows(DESCRIBE, TOPIC, topic.name,
                                                       log_denied=False):
                        continue
                    topics.append((topic.name, topic_id, [
                        state_of(g.group_id, topic_id, i) for i in sorted(indexes)]))
            else:
                refused = []
                for t in g.topics:
                    if not acl.allows(DESCRIBE, TOPIC, t.topic_name):
                        refused.append(module.DescribeShareGroupOffsetsResponseTopic(
                            topic_name=t.topic_name, topic_id=NO_TOPIC_ID, partitions=tuple(
                                partition(int(i), error=ErrorCode.topic_authorization_failed,
                                          message=NOT_AUTHORIZED_MESSAGE) for i in t.partitions)))
                        continue
                    topic = image.topics_by_name.get(t.topic_name)
                    topics.append((
                        t.topic_name, topic.topic_id if topic is not None else NO_TOPIC_ID, [
                            state_of(g.group_id, topic.topic_id, int(i)) if topic is not None
                            else [partition(int(i))] for i in t.partitions]))
                topics.extend(refused)
            groups.append((g.group_id, topics))

        def respond(_: object = None) -> Any:
            def topic_answer(topic: Any) -> Any:
                if not isinstance(topic, tuple):
                    return topic  # refused as a whole
                name, topic_id, cells = topic
                return module.DescribeShareGroupOffsetsResponseTopic(
                    topic_name=name, topic_id=topic_id, partitions=tuple(c[0] for c in cells))

            return self.response_type(context.api_version)(throttle_time=NO_THROTTLE, groups=tuple(
                group if not isinstance(group, tuple) else
                module.DescribeShareGroupOffsetsResponseGroup(
                    group_id=group[0], topics=tuple(topic_answer(t) for t in group[1]),
                    error_code=ErrorCode.none, error_message=None)
                for group in groups))

        if not reads:
            return respond()
        return gatherResults(reads, consumeErrors=True).addCallback(respond)


class _GroupOffsetsHandler(Handler):
    """Alter and Delete: one group per request, refused as a whole by a top-level error."""

    min_version = 0
    max_version = 0
    #: what the principal needs on the group
    operation: ClassVar[int]

    def error(self, context: RequestContext, code: ErrorCode, message: str | None = None) -> Any:
        return self.response_type(context.api_version)(
            throttle_time=NO_THROTTLE, error_code=code, error_message=message, responses=())

    def refused(self, request: Any, context: RequestContext) -> Any | None:
        """The answer when share groups are off or the group is not the principal's to touch."""
        if share_service(self.broker) is None:
            return self.error(context, ErrorCode.unsupported_version)
        if not access(context).allows(self.operation, GROUP, request.group_id):
            return self.error(context, ErrorCode.group_authorization_failed)
        return None


class AlterShareGroupOffsetsHandler(_GroupOffsetsHandler):
    api_key = 91
    operation = READ

    def handle(self, request: Any, context: RequestContext) -> Any:
        refused = self.refused(request, context)
        if refused is not None:
            return refused
        module = self.response_module(context.api_version)
        response_type = self.response_type(context.api_version)
        service, acl, group_id = share_service(self.broker), access(context), request.group_id
        if not request.topics:
            return self.error(context, ErrorCode.none)
        failure = _group_error(service, group_id)
        if failure is not None:
            return self.error(context, *failure)
        image = self.broker.image
        group = service.groups.groups[group_id]
        responses = []
        writes: list[Deferred[Any]] = []
        for t in request.topics:
            topic = image.topics_by_name.get(t.topic_name)
            refused = (ErrorCode.topic_authorization_failed
                       if not acl.allows(READ, TOPIC, t.topic_name)
                       else ErrorCode.unknown_topic_or_partition if topic is None else None)
            partitions = []
            for p in t.partitions:
                index = int(p.partition_index)
                code = refused
                if code is None and index not in topic.partitions:  # type: ignore[union-attr]
                    code = ErrorCode.unknown_topic_or_partition
                if code is None:
                    assert topic is not None
                    writes.append(service.reset_offset(group_id, topic.topic_id, index,
                                                       int(p.start_offset), group.epoch))
                partitions.append(module.AlterShareGroupOffsetsResponsePartition(
                    partition_index=i32(index), error_code=code or ErrorCode.none,
                    error_message=None if code is None else (
                        UNKNOWN_TOPIC_MESSAGE if code is ErrorCode.unknown_topic_or_partition
                        else NOT_AUTHORIZED_MESSAGE)))
            responses.append(module.AlterShareGroupOffsetsResponseTopic(
                topic_name=t.topic_name,
                topic_id=topic.topic_id if topic is not None and refused is None else NO_TOPIC_ID,
                partitions=tuple(partitions)))
        result = response_type(throttle_time=NO_THROTTLE, error_code=ErrorCode.none,
                               error_message=None, responses=tuple(responses))
        if not writes:
            return result
        return gatherResults(writes, consumeErrors=True).addCallback(lambda _: result)


class DeleteShareGroupOffsetsHandler(_GroupOffsetsHandler):
    api_key = 92
    operation = DELETE

    def handle(self, request: Any, context: RequestContext) -> Any:
        refused = self.refused(request, context)
        if refused is not None:
            return refused
        module = self.response_module(context.api_version)
        response_type = self.response_type(context.api_version)
        service, acl, group_id = share_service(self.broker), access(context), request.group_id
        responses = []
        allowed = []
        for t in request.topics:
            if acl.allows(READ, TOPIC, t.topic_name):
                allowed.append(t.topic_name)
            else:
                responses.append(module.DeleteShareGroupOffsetsResponseTopic(
                    topic_name=t.topic_name, topic_id=NO_TOPIC_ID,
                    error_code=ErrorCode.topic_authorization_failed,
                    error_message=NOT_AUTHORIZED_MESSAGE))
        if not allowed:
            return response_type(throttle_time=NO_THROTTLE, error_code=ErrorCode.none,
                                 error_message=None, responses=tuple(responses))
        failure = _group_error(service, group_id)
        if failure is not None:
            return self.error(context, *failure)
        image = self.broker.image
        with_state = service.topic_partitions_of(group_id)
        deleted = []
        writes: list[Deferred[Any]] = []
        for name in allowed:
            topic = image.topics_by_name.get(name)
            if topic is None:
                deleted.append(module.DeleteShareGroupOffsetsResponseTopic(
                    topic_name=name, topic_id=NO_TOPIC_ID,
                    error_code=ErrorCode.unknown_topic_or_partition,
                    error_message=UNKNOWN_TOPIC_MESSAGE))
            elif topic.topic_id not in with_state:
                deleted.append(module.DeleteShareGroupOffsetsResponseTopic(
                    topic_name=name, topic_id=NO_TOPIC_ID,
                    error_code=ErrorCode.unknown_topic_or_partition,
                    error_message="There is no offset information to delete."))
            else:
                writes.append(service.delete_offsets(group_id, topic.topic_id))
                deleted.append(module.DeleteShareGroupOffsetsResponseTopic(
                    topic_name=name, topic_id=topic.topic_id, error_code=ErrorCode.none,
                    error_message=None))
        # As Kafka: the topics refused, those deleted, then those that could not be.
        ordered = [d for d in deleted if d.error_code is ErrorCode.none] + [
            d for d in deleted if d.error_code is not ErrorCode.none]
        result = response_type(throttle_time=NO_THROTTLE, error_code=ErrorCode.none,
                               error_message=None, responses=tuple(responses + ordered))
        done = gatherResults(writes, consumeErrors=True) if writes else succeed(None)
        return done.addCallback(lambda _: result)


HANDLERS = (DescribeShareGroupOffsetsHandler, AlterShareGroupOffsetsHandler,
            DeleteShareGroupOffsetsHandler)
