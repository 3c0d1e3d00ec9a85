"""DescribeQuorum (key 55) v0-v2.

Behavior (as Kafka 4's KafkaRaftClient.handleDescribeQuorumRequest on a one-voter quorum,
what `kafka-metadata-quorum describe --status / --replication` shows):
- The request must name exactly `__cluster_metadata` partition 0; anything else answers each
  partition it names UNKNOWN_TOPIC_OR_PARTITION ("This server does not host this
  topic-partition."), leader 0, epoch 0, high watermark 0, no voters and no nodes, under a
  top-level NONE.
- This node is the leader and the only voter, with the metadata log's epoch; its high
  watermark and log end offset are the metadata log's end (a single voter commits what it
  writes).  No observers: akfak is one combined node.
- v1+: the leader's last fetch and caught-up timestamps are the current time, as Kafka
  reports them for the leader.  v2+: the voter's directory id (meta.properties) and the node
  with its listeners; akfak has no separate controller listener, so these are the broker
  listeners clients reach it on.
- ACLs: DESCRIBE on the cluster, else CLUSTER_AUTHORIZATION_FAILED at the top level.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64, u16

from akfak.errors import UnknownTopicOrPartition
from akfak.handlers.base import Handler, make
from akfak.log.metadata_log import METADATA_PARTITION, METADATA_TOPIC
from akfak.protocol import RequestContext
from akfak.security.acls import DESCRIBE
from akfak.security.checks import DENIED_MESSAGES, access


class DescribeQuorumHandler(Handler):
    api_key = 55
    min_version = 0
    max_version = 2

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        top: dict[str, Any] = {"error_code": ErrorCode.none, "error_message": ""}
        if not access(context).cluster(DESCRIBE):
            return make(self.response_type(version), error_code=ErrorCode.cluster_authorization_failed,
                        error_message=DENIED_MESSAGES[31], topics=(), nodes=())
        if not self._is_metadata_partition(request):
            message = UnknownTopicOrPartition.default_message()
            topics = tuple(
                module.TopicData(topic_name=t.topic_name, partitions=tuple(
                    make(module.PartitionData, partition_index=p.partition_index,
                         error_code=ErrorCode.unknown_topic_or_partition, error_message=message,
                         leader_id=i32(0), leader_epoch=i32(0), high_watermark=i64(0),
                         current_voters=(), observers=())
                    for p in t.partitions))
                for t in request.topics)
            return make(self.response_type(version), **top, topics=topics, nodes=())
        broker = self.broker
        metadata_log = broker.storage.metadata_log
        end = metadata_log.end_offset
        now = broker.now_ms()
        voter = make(module.ReplicaState, replica_id=i32(broker.node_id),
                     replica_directory_id=broker.controller.directory_id,
                     log_end_offset=i64(end), last_fetch_timestamp=i64(now),
                     last_caught_up_timestamp=i64(now))
        partition = make(module.PartitionData, partition_index=i32(METADATA_PARTITION),
                         error_code=ErrorCode.none, error_message="",
                         leader_id=i32(broker.node_id), leader_epoch=i32(metadata_log.epoch),
                         high_watermark=i64(end), current_voters=(voter,), observers=())
        nodes: tuple[Any, ...] = ()
        if version >= 2:
            listeners = tuple(module.Listener(name=name, host=host, port=u16(port))
                              for name, (host, port) in sorted(broker.advertised.items()))
            nodes = (module.Node(node_id=i32(broker.node_id), listeners=listeners),)
        return make(self.response_type(version), **top, nodes=nodes, topics=(
            module.TopicData(topic_name=METADATA_TOPIC, partitions=(partition,)),))

    @staticmethod
    def _is_metadata_partition(request: Any) -> bool:
        topics = request.topics
        return (len(topics) == 1 and topics[0].topic_name == METADATA_TOPIC
                and len(topics[0].partitions) == 1
                and int(topics[0].partitions[0].partition_index) == METADATA_PARTITION)


HANDLERS = (DescribeQuorumHandler,)
