"""DeleteRecords (key 21) v0-v2.

Behavior (as Kafka 4's ReplicaManager.deleteRecords and Partition.deleteRecordsOnLeader):
- Each partition's log start offset moves up to the requested offset (-1: the high
  watermark); the answer's low_watermark is the new log start offset.  Whole segments
  below it go with the next retention pass; reads below it are already out of range.
- An offset beyond the high watermark, or negative but -1, answers OFFSET_OUT_OF_RANGE;
  an unknown topic or partition UNKNOWN_TOPIC_OR_PARTITION; a topic whose cleanup.policy
  lacks "delete" POLICY_VIOLATION; an internal topic INVALID_TOPIC_EXCEPTION.  Failed
  partitions answer low_watermark -1.
- A single replica has nothing to wait for, so the answer is immediate.
- A topic the principal may not DELETE: TOPIC_AUTHORIZATION_FAILED (low_watermark -1) for
  its partitions, before the existence check.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64

from akfak.errors import InvalidTopic, OffsetOutOfRange, PolicyViolation, UnknownTopicOrPartition
from akfak.handlers.admin_common import run_or_error
from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.metadata_image import INTERNAL_TOPICS
from akfak.protocol import RequestContext
from akfak.security.acls import DELETE, TOPIC
from akfak.security.checks import access

HIGH_WATERMARK = -1


class DeleteRecordsHandler(Handler):
    api_key = 21
    min_version = 0
    max_version = 2

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        topics = []
        acl = access(context)
        for topic in request.topics:
            partitions = []
            allowed = acl.allows(DELETE, TOPIC, topic.name)
            for p in topic.partitions:
                index = int(p.partition_index)
                if not allowed:
                    partitions.append(module.DeleteRecordsPartitionResult(
                        partition_index=i32(index), low_watermark=i64(-1),
                        error_code=ErrorCode.topic_authorization_failed))
                    continue
                low, error, _message = run_or_error(
                    lambda topic=topic, index=index, offset=int(p.offset): self._delete(
                        topic.name, index, offset),
                    f"deleting records of {topic.name}-{index}")
                partitions.append(module.DeleteRecordsPartitionResult(
                    partition_index=i32(index), low_watermark=i64(-1 if low is None else low),
                    error_code=error))
            topics.append(module.DeleteRecordsTopicResult(name=topic.name,
                                                          partitions=tuple(partitions)))
        return self.response_type(version)(throttle_time=NO_THROTTLE, topics=tuple(topics))

    def _delete(self, topic: str, partition: int, offset: int) -> int:
        log = self.broker.get_log(topic, partition)
        if log is None:
            raise UnknownTopicOrPartition()
        if topic in INTERNAL_TOPICS:
            raise InvalidTopic(f"Cannot delete records of internal topic {topic}")
        if not log.config.delete_enabled:
            raise PolicyViolation(f"Records of partition {topic}-{partition} can not be deleted "
                                  f"due to the configured policy")
        target = log.high_watermark if offset == HIGH_WATERMARK else offset
        if target < 0:
            raise OffsetOutOfRange(f"The offset {target} for partition {topic}-{partition} is "
                                   f"not valid")
        return log.advance_log_start_offset(target)


HANDLERS = (DeleteRecordsHandler,)
