"""DescribeLogDirs (key 35) v1-v4.

Behavior (as Kafka 4's KafkaApis.handleDescribeLogDirsRequest and
ReplicaManager.describeLogDirs on one node):
- One result: the log directory (its absolute path) with the partitions it holds, each with
  its size in bytes, offset lag 0 (a leader's high watermark is its log end offset, and
  there is no future replica: is_future_key false).  Topics without a listed partition are
  left out.
- topics null: every partition; otherwise the partitions asked for that exist here.  An
  unknown topic or partition is not an error: it is just not in the answer, as in Kafka.
- total_bytes / usable_bytes (v4+): the file system's size and the space left for an
  unprivileged user (statvfs, as Java's FileStore); -1 when the directory cannot be
  examined (memory storage without a directory on disk).
- ACLs: DESCRIBE on the cluster, else CLUSTER_AUTHORIZATION_FAILED (v3+) and no results.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64

from akfak.handlers.base import NO_THROTTLE, Handler
from akfak.log.partition import PartitionLog
from akfak.protocol import RequestContext
from akfak.security.acls import DESCRIBE
from akfak.security.checks import access


def disk_space(directory: Path) -> tuple[int, int]:
    """(total bytes, usable bytes) of the file system holding `directory`, or (-1, -1)."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return -1, -1
    return stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize


class DescribeLogDirsHandler(Handler):
    api_key = 35
    min_version = 1
    max_version = 4

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        if not access(context).cluster(DESCRIBE):
            fields = {"error_code": ErrorCode.cluster_authorization_failed} if version >= 3 else {}
            return self.response_type(version)(throttle_time=NO_THROTTLE, **fields, results=())
        logs = self._logs(request.topics)
        by_topic: dict[str, list[PartitionLog]] = defaultdict(list)
        for partition_log in logs:
            by_topic[partition_log.topic].append(partition_log)
        topics = tuple(
            module.DescribeLogDirsTopic(name=topic, partitions=tuple(
                module.DescribeLogDirsPartition(
                    partition_index=i32(lg.partition), partition_size=i64(lg.size_in_bytes),
                    offset_lag=i64(max(lg.high_watermark - lg.log_end_offset, 0)),
                    is_future_key=False)
                for lg in sorted(partition_logs, key=lambda lg: lg.partition)))
            for topic, partition_logs in sorted(by_topic.items()))
        directory = self.broker.config.data_dir.absolute()
        result: dict[str, Any] = {"error_code": ErrorCode.none, "log_dir": str(directory),
                                  "topics": topics}
        fields: dict[str, Any] = {"throttle_time": NO_THROTTLE}
        if version >= 3:
            fields["error_code"] = ErrorCode.none
        if version >= 4:
            total, usable = disk_space(directory)
            result.update(total_bytes=i64(total), usable_bytes=i64(usable))
        return self.response_type(version)(
            **fields, results=(module.DescribeLogDirsResult(**result),))

    def _logs(self, topics: Any) -> list[PartitionLog]:
        storage = self.broker.storage
        if topics is None:
            return list(storage.logs())
        found: dict[tuple[str, int], PartitionLog] = {}
        for topic in topics:
            for partition in topic.partitions:
                partition_log = storage.get_log(topic.topic, int(partition))
                if partition_log is not None:
                    found[(topic.topic, int(partition))] = partition_log
        return list(found.values())


HANDLERS = (DescribeLogDirsHandler,)
