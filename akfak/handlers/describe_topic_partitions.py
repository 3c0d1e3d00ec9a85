"""DescribeTopicPartitions (key 75) v0, as the original (Go) akfak served it, paginating
exactly as Kafka 4's DescribeTopicPartitionsRequestHandler and
KRaftMetadataCache.getTopicMetadataForDescribeTopicResponse.

Behavior:
- The topics named (all topics for an empty list), at or after the cursor's topic, sorted
  by name.  A named topic that does not exist answers UNKNOWN_TOPIC_OR_PARTITION (an
  illegal name INVALID_TOPIC_EXCEPTION) with the zero topic id and no partitions, and
  uses none of the partition budget.  Every topic carries the principal's authorized
  operations on it and is_internal.
- A topic the principal may not DESCRIBE is left out (when listing all topics) or
  answered TOPIC_AUTHORIZATION_FAILED after the others, without its id (when named);
  it uses none of the budget.
- The budget is min(response_partition_limit, max.request.partition.size.limit (2000)).
  The cursor's topic starts at the cursor's partition, the others at 0.  When a topic
  does not fit, it is answered with the partitions that do and next_cursor names it and
  its first partition left out; when the budget is spent exactly at a topic boundary,
  next_cursor names the next topic at partition 0 (even if it turns out not to exist).
  Otherwise next_cursor is null.  Following the cursors yields every partition once.
- A cursor whose topic is not in a non-empty topic list answers INVALID_REQUEST for every
  requested topic.
- Partitions: leader, leader epoch, replicas, ISR, the eligible-leader and last-known
  ELR lists of the metadata image (empty once this node leads), offline replicas (none on
  a live single node).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32

from akfak.errors import InvalidTopic
from akfak.handlers.base import NO_THROTTLE, NO_TOPIC_ID, OPERATIONS_NOT_REQUESTED, Handler
from akfak.metadata_image import INTERNAL_TOPICS, TopicImage, validate_topic_name
from akfak.protocol import RequestContext
from akfak.security.acls import DESCRIBE, TOPIC
from akfak.security.checks import access

DEFAULT_PARTITION_LIMIT = 2000


class DescribeTopicPartitionsHandler(Handler):
    api_key = 75
    min_version = 0
    max_version = 0

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        response_type = self.response_type(version)
        image = self.broker.image
        cursor = request.cursor
        cursor_topic = cursor.topic_name if cursor is not None else ""
        fetch_all = not request.topics
        if fetch_all:
            names = {name for name in image.topics_by_name if name >= cursor_topic}
        else:
            names = {t.name for t in request.topics if t.name >= cursor_topic}
            if cursor is not None and cursor.topic_name not in names:
                # Kafka throws InvalidRequestException: its error response names every topic.
                return response_type(throttle_time=NO_THROTTLE, next_cursor=None, topics=tuple(
                    module.DescribeTopicPartitionsResponseTopic(
                        error_code=ErrorCode.invalid_request, name=t.name, topic_id=NO_TOPIC_ID,
                        is_internal=False, partitions=(),
                        topic_authorized_operations=i32(OPERATIONS_NOT_REQUESTED))
                    for t in request.topics))
        limit = self.broker.config.get_int("max.request.partition.size.limit",
                                           DEFAULT_PARTITION_LIMIT)
        remaining = min(limit, int(request.response_partition_limit))
        topics: list[Any] = []
        denied: list[Any] = []
        next_cursor = None
        acl = access(context)
        for name in sorted(names):
            if not acl.allows(DESCRIBE, TOPIC, name):
                if not fetch_all:
                    denied.append(module.DescribeTopicPartitionsResponseTopic(
                        error_code=ErrorCode.topic_authorization_failed, name=name,
                        topic_id=NO_TOPIC_ID, is_internal=False, partitions=(),
                        topic_authorized_operations=i32(OPERATIONS_NOT_REQUESTED)))
                continue
            if remaining > 0:
                topic = image.topic(name)
                if topic is None:
                    if not fetch_all:
                        topics.append(self._missing(module, name, acl.operations(TOPIC, name)))
                    continue
                start = int(cursor.partition_index) if name == cursor_topic and cursor else 0
                upper = min(topic.num_partitions, start + remaining)
                partitions = [self._partition(module, topic, index) for index in range(start, upper)
                              if index in topic.partitions]
                topics.append(self._topic(module, topic, partitions, acl.operations(TOPIC, name)))
                if upper < topic.num_partitions:
                    next_cursor = module.Cursor(topic_name=name, partition_index=i32(upper))
                    break
                remaining -= len(partitions)
            elif remaining == 0:
                # Every earlier topic is complete: the next page starts at this one.
                next_cursor = module.Cursor(topic_name=name, partition_index=i32(0))
                break
        return response_type(throttle_time=NO_THROTTLE, topics=(*topics, *denied),
                             next_cursor=next_cursor)

    @staticmethod
    def _missing(module: Any, name: str, operations: int) -> Any:
        try:
            validate_topic_name(name)
            error = ErrorCode.unknown_topic_or_partition
        except InvalidTopic:
            error = ErrorCode.invalid_topic_exception
        return module.DescribeTopicPartitionsResponseTopic(
            error_code=error, name=name, topic_id=NO_TOPIC_ID, is_internal=name in INTERNAL_TOPICS,
            partitions=(), topic_authorized_operations=i32(operations))

    @staticmethod
    def _topic(module: Any, topic: TopicImage, partitions: list[Any], operations: int) -> Any:
        return module.DescribeTopicPartitionsResponseTopic(
            error_code=ErrorCode.none, name=topic.name, topic_id=topic.topic_id,
            is_internal=topic.name in INTERNAL_TOPICS, partitions=tuple(partitions),
            topic_authorized_operations=i32(operations))

    @staticmethod
    def _partition(module: Any, topic: TopicImage, index: int) -> Any:
        p = topic.partitions[index]
        return module.DescribeTopicPartitionsResponsePartition(
            error_code=ErrorCode.none, partition_index=i32(index), leader_id=i32(p.leader),
            leader_epoch=i32(p.leader_epoch), replica_nodes=tuple(i32(r) for r in p.replicas),
            isr_nodes=tuple(i32(r) for r in p.isr),
            eligible_leader_replicas=tuple(i32(r) for r in p.eligible_leader_replicas),
            last_known_elr=tuple(i32(r) for r in p.last_known_elr), offline_replicas=())


HANDLERS = (DescribeTopicPartitionsHandler,)
