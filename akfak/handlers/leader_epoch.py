"""OffsetForLeaderEpoch (key 23) v2-v4.

Behavior (as Kafka 4's Partition.lastOffsetForLeaderEpoch and LeaderEpochFileCache):
- For each partition: the largest epoch <= the requested one and the start offset of the
  next higher epoch (the log end offset when the requested epoch is the latest), or
  epoch -1 / offset -1 when the requested epoch is below every cached one or is -1.
- As a Kafka leader records its epoch in the epoch cache when it becomes leader, the
  partition's current leader epoch counts as starting at the log end offset when no batch
  has carried it yet: consumers validating their position after a restart or on an empty
  partition get (epoch, log end offset), not "undefined", which would reset them.
- current_leader_epoch (if not -1) must be the partition's: older answers
  FENCED_LEADER_EPOCH, newer UNKNOWN_LEADER_EPOCH.  Unknown partitions answer
  UNKNOWN_TOPIC_OR_PARTITION.  replica_id (v3+) makes no difference on a single node.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64

from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.protocol import RequestContext

UNDEFINED = -1


def end_offset_for_epoch(epochs: Sequence[tuple[int, int]], requested: int,
                         log_end_offset: int) -> tuple[int, int]:
    """Kafka's LeaderEpochFileCache.endOffsetFor over (epoch, start offset) entries."""
    if requested == UNDEFINED or not epochs:
        return UNDEFINED, UNDEFINED
    if epochs[-1][0] == requested:
        return requested, log_end_offset
    higher = next(((e, o) for e, o in epochs if e > requested), None)
    if higher is None:
        return UNDEFINED, UNDEFINED
    floor = None
    for epoch, offset in epochs:
        if epoch <= requested:
            floor = (epoch, offset)
    return (requested if floor is None else floor[0]), higher[1]


class OffsetForLeaderEpochHandler(Handler):
    api_key = 23
    min_version = 2
    max_version = 4

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        topics = []
        for topic in request.topics:
            partitions = [self._partition(module, topic.topic, p) for p in topic.partitions]
            topics.append(module.OffsetForLeaderTopicResult(topic=topic.topic,
                                                            partitions=tuple(partitions)))
        return self.response_type(version)(throttle_time=NO_THROTTLE, topics=tuple(topics))

    def _partition(self, module: Any, topic: str, p: Any) -> Any:
        index = int(p.partition)

        def answer(error: ErrorCode, epoch: int = UNDEFINED, offset: int = UNDEFINED) -> Any:
            return module.EpochEndOffset(error_code=error, partition=i32(index),
                                         leader_epoch=i32(epoch), end_offset=i64(offset))

        broker = self.broker
        log = broker.get_log(topic, index)
        image = broker.image.partition(topic, index)
        if log is None or image is None:
            return answer(ErrorCode.unknown_topic_or_partition)
        current = image.leader_epoch
        requested_current = int(p.current_leader_epoch)
        if requested_current != UNDEFINED and requested_current != current:
            return answer(ErrorCode.fenced_leader_epoch if requested_current < current
                          else ErrorCode.unknown_leader_epoch)
        epochs = list(log.epochs)
        if not epochs or epochs[-1][0] < current:
            epochs.append((current, log.log_end_offset))
        epoch, offset = end_offset_for_epoch(epochs, int(p.leader_epoch), log.log_end_offset)
        return answer(ErrorCode.none, epoch, offset)


HANDLERS = (OffsetForLeaderEpochHandler,)
