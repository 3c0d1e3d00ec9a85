"""AlterPartitionReassignments (key 45) v0-v1 and ListPartitionReassignments (key 46) v0.

Behavior (as Kafka 4's ReplicationControlManager on a one-node cluster, what
`kafka-reassign-partitions --execute / --verify / --list` get):
- A reassignment completes at once or not at all, so none is ever in progress:
  ListPartitionReassignments always answers an empty list (whatever it names; unknown
  topics are no error).
- AlterPartitionReassignments, per partition: an unknown topic answers
  UNKNOWN_TOPIC_OR_PARTITION "Unable to find a topic named T.", an unknown partition
  "Unable to find partition T:P."; a target replica list is checked as for a manual
  assignment (INVALID_REPLICA_ASSIGNMENT: empty list, a broker named twice, a broker that
  is not registered, so any broker but this one); a valid target on one node can only be
  [this node], the current assignment: NONE, nothing changes.  (Any other target, possible
  only with other brokers registered in metadata copied from Kafka, answers
  INVALID_REPLICA_ASSIGNMENT: akfak moves no replicas.)  Cancelling (replicas null)
  answers NO_REASSIGNMENT_IN_PROGRESS.  Partitions named twice are answered twice.
- v1's allow_replication_factor_change is echoed; with one broker no valid target can
  change a partition's replication factor, so it never refuses anything.
- An empty request answers NONE with the error message "" and allow_replication_factor_change
  true, as Kafka's controller does.
- ACLs: AlterPartitionReassignments needs ALTER on the cluster, ListPartitionReassignments
  DESCRIBE, else CLUSTER_AUTHORIZATION_FAILED (top level and for every partition asked).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from akfak.errors import KafkaError
from akfak.handlers.admin_common import check_manual_assignment, registered_brokers
from akfak.handlers.base import NO_THROTTLE, Handler, make
from akfak.protocol import RequestContext
from akfak.security.acls import ALTER, DESCRIBE
from akfak.security.checks import DENIED_MESSAGES, access


class AlterPartitionReassignmentsHandler(Handler):
    api_key = 45
    min_version = 0
    max_version = 1

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        image = self.broker.image
        brokers = registered_brokers(self.broker)
        responses = []
        denied = not access(context).cluster(ALTER)
        refused = ErrorCode.cluster_authorization_failed, DENIED_MESSAGES[31]
        for topic in request.topics:
            topic_image = image.topic(topic.name)
            partitions = []
            for p in topic.partitions:
                error, message = refused if denied else self._reassign(
                    topic.name, topic_image, int(p.partition_index), p.replicas, brokers)
                partitions.append(module.ReassignablePartitionResponse(
                    partition_index=p.partition_index, error_code=error, error_message=message))
            responses.append(module.ReassignableTopicResponse(name=topic.name,
                                                              partitions=tuple(partitions)))
        # An empty request gets the defaults: allow true, message "" (as Kafka's controller).
        allow = getattr(request, "allow_replication_factor_change", True) or not request.topics
        if denied:
            return make(self.response_type(version), throttle_time=NO_THROTTLE,
                        allow_replication_factor_change=True, error_code=refused[0],
                        error_message=refused[1], responses=tuple(responses))
        return make(self.response_type(version), throttle_time=NO_THROTTLE,
                    allow_replication_factor_change=allow, error_code=ErrorCode.none,
                    error_message=None if request.topics else "", responses=tuple(responses))

    @staticmethod
    def _reassign(name: str, topic: Any, index: int, replicas: Any, brokers: set[int]
                  ) -> tuple[ErrorCode, str | None]:
        if topic is None:
            return ErrorCode.unknown_topic_or_partition, f"Unable to find a topic named {name}."
        if index not in topic.partitions:
            return ErrorCode.unknown_topic_or_partition, f"Unable to find partition {name}:{index}."
        if replicas is None:
            return ErrorCode.no_reassignment_in_progress, None
        try:
            check_manual_assignment([int(r) for r in replicas], None, brokers)
        except KafkaError as e:
            return ErrorCode(e.error_code), str(e)
        target = tuple(int(r) for r in replicas)
        if target != topic.partitions[index].replicas:
            # Only if another broker is registered (metadata from a Kafka cluster): akfak's
            # one node cannot move replicas to it.
            return ErrorCode.invalid_replica_assignment, (
                f"Cannot reassign {name}-{index} to {list(target)}: this node serves "
                f"replicas {list(topic.partitions[index].replicas)} alone.")
        return ErrorCode.none, None


class ListPartitionReassignmentsHandler(Handler):
    api_key = 46
    min_version = 0
    max_version = 0

    def handle(self, request: Any, context: RequestContext) -> Any:
        if not access(context).cluster(DESCRIBE):
            module = self.response_module(context.api_version)
            return self.response_type(context.api_version)(
                throttle_time=NO_THROTTLE, error_code=ErrorCode.cluster_authorization_failed,
                error_message=DENIED_MESSAGES[31], topics=tuple(
                    module.OngoingTopicReassignment(name=t.name, partitions=tuple(
                        module.OngoingPartitionReassignment(
                            partition_index=p, replicas=(), adding_replicas=(),
                            removing_replicas=()) for p in t.partition_indexes))
                    for t in request.topics or ()))
        return self.response_type(context.api_version)(
            throttle_time=NO_THROTTLE, error_code=ErrorCode.none, error_message=None, topics=())


HANDLERS = (AlterPartitionReassignmentsHandler, ListPartitionReassignmentsHandler)
