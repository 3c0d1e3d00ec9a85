"""ListOffsets (key 2), v1-v11.

Behavior (timestamps in the request):
- -1 latest: the high watermark (the last stable offset for read_committed).
- -2 earliest and -4 earliest-local (v8+): the log start offset (no tiered storage).
- -3 max timestamp (v7+): the offset of the record with the largest timestamp.
- -5 latest-tiered (v9+) and -6 earliest-pending-upload (v11): nothing is tiered,
  so offset -1, as Kafka answers without remote storage.
- t >= 0: the first offset whose timestamp is >= t, or offset -1 / timestamp -1.
- Special answers carry timestamp -1; leader_epoch is the partition's epoch (v4+).
- A partition named twice: INVALID_REQUEST for it; unknown: UNKNOWN_TOPIC_OR_PARTITION;
  current_leader_epoch newer than ours UNKNOWN_LEADER_EPOCH, older FENCED_LEADER_EPOCH.
- A topic the principal may not DESCRIBE: TOPIC_AUTHORIZATION_FAILED for its partitions.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64
from twisted.internet.defer import gatherResults

from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.protocol import RequestContext
from akfak.security.acls import DESCRIBE, TOPIC
from akfak.security.checks import access

LATEST, EARLIEST, MAX_TIMESTAMP, EARLIEST_LOCAL, LATEST_TIERED, EARLIEST_PENDING_UPLOAD = (
    -1, -2, -3, -4, -5, -6)
READ_COMMITTED = 1


class ListOffsetsHandler(Handler):
    api_key = 2
    min_version = 1
    max_version = 11

    def handle(self, request: Any, context: RequestContext) -> Any:
        # A search in data the log does not hold in memory (postgres: below its cached tail)
        # runs on a thread first; the answer is built once it is done.
        waits = []
        for topic in request.topics:
            for p in topic.partitions:
                timestamp = int(p.timestamp)
                log = self.broker.get_log(topic.name, int(p.partition_index))
                if log is not None and (timestamp >= 0 or timestamp == MAX_TIMESTAMP):
                    prepare = getattr(log, "prepare_timestamp", None)
                    if prepare is not None and (waiting := prepare(timestamp)) is not None:
                        waits.append(waiting)
        if waits:
            return gatherResults(waits, consumeErrors=True).addBoth(
                lambda _: self._answer(request, context))
        return self._answer(request, context)

    def _answer(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        isolation = int(request.isolation_level) if version >= 2 else 0
        counts = Counter((t.name, int(p.partition_index)) for t in request.topics for p in t.partitions)
        topics = []
        acl = access(context)
        for topic in request.topics:
            partitions = []
            allowed = acl.allows(DESCRIBE, TOPIC, topic.name)
            for p in topic.partitions:
                index = int(p.partition_index)
                if not allowed:
                    error, offset, ts, epoch = ErrorCode.topic_authorization_failed, -1, -1, -1
                elif counts[(topic.name, index)] > 1:
                    error, offset, ts, epoch = ErrorCode.invalid_request, -1, -1, -1
                else:
                    error, offset, ts, epoch = self._lookup(
                        topic.name, index, int(p.timestamp),
                        int(p.current_leader_epoch) if version >= 4 else -1, isolation)
                fields: dict[str, Any] = {"partition_index": i32(index), "error_code": error}
                if version >= 1:
                    fields.update(timestamp=i64(ts), offset=i64(offset))
                if version >= 4:
                    fields["leader_epoch"] = i32(epoch)
                partitions.append(module.ListOffsetsPartitionResponse(**fields))
            topics.append(module.ListOffsetsTopicResponse(name=topic.name, partitions=tuple(partitions)))
        if version >= 2:
            return self.response_type(version)(throttle_time=NO_THROTTLE, topics=tuple(topics))
        return self.response_type(version)(topics=tuple(topics))

    def _lookup(self, topic: str, index: int, timestamp: int, current_epoch: int,
                isolation: int) -> tuple[ErrorCode, int, int, int]:
        broker = self.broker
        log = broker.get_log(topic, index)
        if log is None:
            return broker.missing_log_error(topic, index), -1, -1, -1
        epoch = broker.leader_epoch(topic, index)
        if current_epoch >= 0 and current_epoch != epoch:
            error = ErrorCode.unknown_leader_epoch if current_epoch > epoch else ErrorCode.fenced_leader_epoch
            return error, -1, -1, -1
        if timestamp == LATEST:
            end = log.last_stable_offset if isolation == READ_COMMITTED else log.high_watermark
            return ErrorCode.none, end, -1, epoch
        if timestamp in (EARLIEST, EARLIEST_LOCAL):
            return ErrorCode.none, log.log_start_offset, -1, epoch
        if timestamp in (LATEST_TIERED, EARLIEST_PENDING_UPLOAD):
            return ErrorCode.none, -1, -1, -1
        found = log.max_timestamp() if timestamp == MAX_TIMESTAMP else (
            log.offset_for_timestamp(timestamp) if timestamp >= 0 else None)
        if found is None:
            if timestamp < 0 and timestamp != MAX_TIMESTAMP:
                return ErrorCode.invalid_request, -1, -1, -1
            return ErrorCode.none, -1, -1, -1
        found_epoch = found.leader_epoch if found.leader_epoch is not None else -1
        return ErrorCode.none, found.offset, found.timestamp, found_epoch


HANDLERS = (ListOffsetsHandler,)
