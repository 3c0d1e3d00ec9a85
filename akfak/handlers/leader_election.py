"""ElectLeaders (key 43) v0-v2.

Behavior (as Kafka 4's ReplicationControlManager.electLeaders, what `kafka-leader-election`
gets from a one-node cluster):
- election_type 0 (PREFERRED) or 1 (UNCLEAN); anything else answers INVALID_REQUEST "Unknown
  election type N" for the request (v1+) and for every partition named.
- Each partition named: ELECTION_NOT_NEEDED when its leader already is its preferred replica
  (PREFERRED) or it has a leader at all (UNCLEAN), which on one node is every partition;
  UNKNOWN_TOPIC_OR_PARTITION "No such topic as T" / "No such partition as T-P" otherwise.
  Partitions named twice are answered twice, as Kafka does.
- topic_partitions null means every partition of every topic: each topic is listed, but
  without the partitions whose election was not needed (so, on one node, with none).
- A partition without a leader gets PREFERRED_LEADER_NOT_AVAILABLE (or
  ELIGIBLE_LEADERS_NOT_AVAILABLE for UNCLEAN): akfak does not elect leaders on request;
  its only node leads every partition it hosts.
- ACLs: ALTER on the cluster, else CLUSTER_AUTHORIZATION_FAILED (top level and for
  every partition asked).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32

from akfak.handlers.base import NO_THROTTLE, Handler, make
from akfak.metadata_image import TopicImage
from akfak.protocol import RequestContext
from akfak.security.acls import ALTER
from akfak.security.checks import DENIED_MESSAGES, access

PREFERRED, UNCLEAN = 0, 1

#: Kafka's default messages, which its controller's ApiErrors carry on the wire.
MESSAGES = {
    ErrorCode.election_not_needed: "Leader election not needed for topic partition.",
    ErrorCode.preferred_leader_not_available: "The preferred leader was not available.",
    ErrorCode.eligible_leaders_not_available:
        "Eligible topic partition leaders are not available.",
}


class ElectLeadersHandler(Handler):
    api_key = 43
    min_version = 0
    max_version = 2

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        election = int(request.election_type) if version >= 1 else PREFERRED
        top = ErrorCode.none
        results = []
        denied = not access(context).cluster(ALTER)
        if denied or election not in (PREFERRED, UNCLEAN):
            # ALTER on the cluster (Kafka's controller), else every partition asked refused
            top = ErrorCode.cluster_authorization_failed if denied else ErrorCode.invalid_request
            message = DENIED_MESSAGES[top] if denied else f"Unknown election type {election}"
            for topic in request.topic_partitions or ():
                results.append(module.ReplicaElectionResult(topic=topic.topic, partition_result=tuple(
                    module.PartitionResult(partition_id=p, error_code=top, error_message=message)
                    for p in topic.partitions)))
        elif request.topic_partitions is None:
            image = self.broker.image
            for name, topic_image in sorted(image.topics_by_name.items()):
                partitions = []
                for index in sorted(topic_image.partitions):
                    error, message = self._elect(name, topic_image, index, election)
                    if error != ErrorCode.election_not_needed:
                        partitions.append(module.PartitionResult(
                            partition_id=i32(index), error_code=error, error_message=message))
                results.append(module.ReplicaElectionResult(topic=name,
                                                            partition_result=tuple(partitions)))
        else:
            image = self.broker.image
            for topic in request.topic_partitions:
                topic_image = image.topic(topic.topic)
                partitions = []
                for index in topic.partitions:
                    error, message = self._elect(topic.topic, topic_image, int(index), election)
                    partitions.append(module.PartitionResult(
                        partition_id=index, error_code=error, error_message=message))
                results.append(module.ReplicaElectionResult(topic=topic.topic,
                                                            partition_result=tuple(partitions)))
        return make(self.response_type(version), throttle_time=NO_THROTTLE, error_code=top,
                    replica_election_results=tuple(results))

    @staticmethod
    def _elect(name: str, topic: TopicImage | None, index: int, election: int
               ) -> tuple[ErrorCode, str | None]:
        if topic is None:
            return ErrorCode.unknown_topic_or_partition, f"No such topic as {name}"
        partition = topic.partitions.get(index)
        if partition is None:
            return ErrorCode.unknown_topic_or_partition, f"No such partition as {name}-{index}"
        preferred = partition.replicas[0] if partition.replicas else -1
        if election == PREFERRED:
            error = (ErrorCode.election_not_needed if partition.leader == preferred != -1
                     else ErrorCode.preferred_leader_not_available)
        else:
            error = (ErrorCode.election_not_needed if partition.leader != -1
                     else ErrorCode.eligible_leaders_not_available)
        return error, MESSAGES[error]


HANDLERS = (ElectLeadersHandler,)
