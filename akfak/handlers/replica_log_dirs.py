"""AlterReplicaLogDirs (key 34) v1-v2: move replicas between a broker's log directories.

Behavior (as Kafka 4's ReplicaManager.alterReplicaLogDirs on a broker with one log
directory, akfak's data directory):
- Each partition of each directory entry answers on its own, in the request's order, grouped
  by topic:
  - a topic name too long for a future replica's directory name (over 255 characters)
    INVALID_TOPIC_EXCEPTION;
  - a path that is not the data directory's absolute path (as DescribeLogDirs names it)
    LOG_DIR_NOT_FOUND;
  - a partition the cluster does not have UNKNOWN_TOPIC_OR_PARTITION;
  - one it has without a local replica REPLICA_NOT_AVAILABLE (Kafka's NotLeaderOrFollower,
    kept as REPLICA_NOT_AVAILABLE for this API);
  - otherwise NONE: the replica already lives in that directory, nothing moves.
- ACLs: ALTER on the cluster, else every partition CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32

from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.protocol import RequestContext
from akfak.security.acls import ALTER
from akfak.security.checks import access

#: a future replica's directory: TOPIC-PARTITION.<32 hex digits>-future, at most 255 bytes
FUTURE_DIR_EXTRA = len(".") + 32 + len("-future")


class AlterReplicaLogDirsHandler(Handler):
    api_key = 34
    min_version = 1
    max_version = 2

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        allowed = access(context).cluster(ALTER)
        results: dict[str, list[Any]] = {}
        for entry in request.dirs:
            for topic in entry.topics:
                for partition in topic.partitions:
                    error = (self._error(entry.path, topic.name, int(partition)) if allowed
                             else ErrorCode.cluster_authorization_failed)
                    results.setdefault(topic.name, []).append(module.AlterReplicaLogDirPartitionResult(
                        partition_index=i32(partition), error_code=error))
        return self.response_type(context.api_version)(throttle_time=NO_THROTTLE, results=tuple(
            module.AlterReplicaLogDirTopicResult(topic_name=name, partitions=tuple(partitions))
            for name, partitions in results.items()))

    def _error(self, path: str, topic: str, partition: int) -> ErrorCode:
        broker = self.broker
        if len(f"{topic}-{partition}") + FUTURE_DIR_EXTRA > 255:
            return ErrorCode.invalid_topic_exception
        if path != str(broker.config.data_dir.absolute()):
            return ErrorCode.log_dir_not_found
        image = broker.image.topic(topic)
        if image is None or partition not in image.partitions:
            return ErrorCode.unknown_topic_or_partition
        if broker.get_log(topic, partition) is None:
            return ErrorCode.replica_not_available
        return ErrorCode.none


HANDLERS = (AlterReplicaLogDirsHandler,)
