"""OffsetForLeaderEpoch (key 23) v2-v4.

Behavior (as Kafka 4's Partition.lastOffsetForLeaderEpoch and LeaderEpochFileCache):
- For each partition: the largest epoch <= the requested one and the start offset of the
  next higher epoch (the log end offset when the requested epoch is the latest), or
  epoch -1 / offset -1 when the requested epoch is below every cached one or is -1.
- As a Kafka leader does, the log records the partition's leader epoch as starting at the
  log end offset when it starts leading (Controller._lead), so consumers validating their
  position on an empty partition get (epoch, log end offset), not "undefined".
- current_leader_epoch (if not -1) must be the partition's: older answers
  FENCED_LEADER_EPOCH, newer UNKNOWN_LEADER_EPOCH.  Unknown partitions answer
  UNKNOWN_TOPIC_OR_PARTITION.  replica_id (v3+) makes no difference on a single node.
- ACLs: CLUSTER_ACTION on the cluster (a follower) or DESCRIBE on each topic, else
  TOPIC_AUTHORIZATION_FAILED for its partitions, after the others.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64

from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.protocol import RequestContext
from akfak.security.acls import CLUSTER_ACTION, DESCRIBE, TOPIC
from akfak.security.checks import access

UNDEFINED = -1


class OffsetForLeaderEpochHandler(Handler):
    api_key = 23
    min_version = 2
    max_version = 4

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        topics = []
        denied = []  # answered after the others, as Kafka does
        acl = access(context)
        every = acl.cluster(CLUSTER_ACTION, log_denied=False)  # a follower's
        for topic in request.topics:
            if not every and not acl.allows(DESCRIBE, TOPIC, topic.topic):
                denied.append(module.OffsetForLeaderTopicResult(topic=topic.topic, partitions=tuple(
                    module.EpochEndOffset(error_code=ErrorCode.topic_authorization_failed,
                                          partition=p.partition, leader_epoch=i32(UNDEFINED),
                                          end_offset=i64(UNDEFINED))
                    for p in topic.partitions)))
                continue
            partitions = [self._partition(module, topic.topic, p) for p in topic.partitions]
            topics.append(module.OffsetForLeaderTopicResult(topic=topic.topic,
                                                            partitions=tuple(partitions)))
        return self.response_type(version)(throttle_time=NO_THROTTLE,
                                           topics=(*topics, *denied))

    def _partition(self, module: Any, topic: str, p: Any) -> Any:
        index = int(p.partition)

        def answer(error: ErrorCode, epoch: int = UNDEFINED, offset: int = UNDEFINED) -> Any:
            return module.EpochEndOffset(error_code=error, partition=i32(index),
                                         leader_epoch=i32(epoch), end_offset=i64(offset))

        broker = self.broker
        log = broker.get_log(topic, index)
        image = broker.image.partition(topic, index)
        if log is None or image is None:
            return answer(broker.missing_log_error(topic, index))
        current = image.leader_epoch
        requested_current = int(p.current_leader_epoch)
        if requested_current != UNDEFINED and requested_current != current:
            return answer(ErrorCode.fenced_leader_epoch if requested_current < current
                          else ErrorCode.unknown_leader_epoch)
        epoch, offset = log.end_offset_for_epoch(int(p.leader_epoch))
        return answer(ErrorCode.none, epoch, offset)


HANDLERS = (OffsetForLeaderEpochHandler,)
