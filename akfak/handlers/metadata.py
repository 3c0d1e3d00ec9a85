"""Metadata (key 3), v0-v13.

Behavior:
- Brokers: this node, at the address advertised for the listener the request
  came through; in a cluster over PostgreSQL (akfak/cluster.py) every live broker, and
  controller_id the one holding the controller role.  cluster_id from meta.properties.
- Topics: all of them for a null list (v1+) or an empty one (v0); else those
  named (or, v12+, by a non-zero topic id, whatever the name says (null, or "" from the
  Java client): UNKNOWN_TOPIC_ID when unknown or zero with a null name).  Before v12 a
  null name or a non-zero id is an invalid request: the connection is closed, as Kafka
  does.  Partitions
  carry leader, leader epoch, replicas and ISR from the KRaft metadata image.
- Unknown topics are created when auto.create.topics.enable and the request
  allows it (v4+; always before): num.partitions partitions, at once, so the
  answer already describes them (Kafka answers UNKNOWN_TOPIC_OR_PARTITION while
  its controller creates them asynchronously).  In a cluster, a broker that is not the
  controller asks the controller to create them (akfak/cluster.py `ask_topic`) and
  answers UNKNOWN_TOPIC_OR_PARTITION meanwhile, as Kafka does.  A name Kafka would refuse gets
  INVALID_TOPIC_EXCEPTION, with or without auto-creation; other unknown topics
  without auto-creation UNKNOWN_TOPIC_OR_PARTITION.
- With an authorizer (as Kafka's KafkaApis): all topics lists only those the principal
  may DESCRIBE; a named topic it may not DESCRIBE answers TOPIC_AUTHORIZATION_FAILED
  without saying whether it exists (by id: with its id, no name); an unknown topic that
  would be auto-created needs CREATE on the cluster or the topic, else
  TOPIC_AUTHORIZATION_FAILED.  Authorized operations (v8+, when asked) are the
  principal's: the topic's for each topic described, the cluster's (v8-v10) only with
  DESCRIBE on the cluster, else 0.  Without an authorizer everything is allowed.
"""

from __future__ import annotations

import uuid
from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32
from twisted.logger import Logger

from akfak.coordinator.log_topic import OFFSETS_TOPIC
from akfak.errors import KafkaError
from akfak.handlers.base import NO_THROTTLE, NO_TOPIC_ID, OPERATIONS_NOT_REQUESTED, Handler
from akfak.metadata_image import INTERNAL_TOPICS, TopicImage, validate_topic_name
from akfak.protocol import RequestContext
from akfak.request_check import MalformedRequest
from akfak.security.acls import CLUSTER, CLUSTER_NAME, CREATE, DESCRIBE, TOPIC
from akfak.security.checks import Everything, access

log = Logger()


class MetadataHandler(Handler):
    api_key = 3
    min_version = 0
    max_version = 13

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        broker = self.broker
        image = broker.image
        all_topics = request.topics is None or (version == 0 and not request.topics)
        if all_topics:
            wanted = [(t.name, None) for t in sorted(image.topics_by_name.values(), key=lambda t: t.name)]
        else:
            for t in request.topics if version < 12 else ():
                # Kafka's InvalidRequestException: before v12 names are required, ids refused.
                if t.name is None:
                    raise MalformedRequest(f"Topic name can not be null for version {version}")
                if version >= 10 and t.topic_id not in (None, NO_TOPIC_ID):
                    raise MalformedRequest(
                        f"Topic IDs are not supported in requests for version {version}")
            # By id (v12+) when a non-zero id is given; the Java client then sends the name as
            # "" (Admin describeTopics by ids), others as null.  An unknown id answers a null
            # name; so does a null name with the zero id (kio reads it as None).
            wanted = [(None, t.topic_id) if version >= 12 and (
                t.topic_id not in (None, NO_TOPIC_ID) or t.name is None)
                      else (t.name, None) for t in request.topics]
        auto_create = broker.config.auto_create_topics and (
            version < 4 or bool(request.allow_auto_topic_creation))
        with_operations = version >= 8 and bool(request.include_topic_authorized_operations)
        acl = access(context)
        topics = []
        for name, topic_id in wanted:
            topic: TopicImage | None = None
            error = ErrorCode.none
            if name is None:
                topic = (image.topic_by_id(topic_id)
                         if topic_id not in (None, NO_TOPIC_ID) else None)
                if topic is None:
                    error = ErrorCode.unknown_topic_id
                elif not acl.allows(DESCRIBE, TOPIC, topic.name):
                    topic, error = None, ErrorCode.topic_authorization_failed
            elif name is not None:
                if not acl.allows(DESCRIBE, TOPIC, name, log_denied=not all_topics):
                    if not all_topics:  # unsaid whether it exists (or is internal)
                        topics.append(self._topic(module, version, name, None, None,
                                                  ErrorCode.topic_authorization_failed, None,
                                                  internal=False))
                    continue
                topic = broker.image.topic(name)
                if topic is None:
                    if auto_create and not _may_create(acl, name):
                        topics.append(self._topic(module, version, name, None, None,
                                                  ErrorCode.topic_authorization_failed, None,
                                                  internal=name in INTERNAL_TOPICS))
                        continue
                    topic, error = self._auto_create(name, auto_create)
            operations = (acl.operations(TOPIC, topic.name if topic is not None else name)
                          if with_operations and error is not ErrorCode.unknown_topic_id
                          and error is not ErrorCode.topic_authorization_failed else None)
            topics.append(self._topic(module, version, name, topic_id, topic, error, operations))
        brokers = []
        for node, host, port, rack in broker.brokers(context.listener):
            broker_fields: dict[str, Any] = {"node_id": i32(node), "host": host, "port": i32(port)}
            if version >= 1:
                broker_fields["rack"] = rack
            brokers.append(module.MetadataResponseBroker(**broker_fields))
        fields: dict[str, Any] = {
            "brokers": tuple(brokers),
            "topics": tuple(topics),
        }
        if version >= 1:
            fields["controller_id"] = i32(broker.controller_id)
        if version >= 2:
            fields["cluster_id"] = broker.cluster_id
        if version >= 3:
            fields["throttle_time"] = NO_THROTTLE
        if 8 <= version <= 10:
            fields["cluster_authorized_operations"] = i32(
                cluster_operations(acl) if request.include_cluster_authorized_operations
                else OPERATIONS_NOT_REQUESTED)
        if version >= 13:
            fields["error_code"] = ErrorCode.none
        return self.response_type(version)(**fields)

    def _auto_create(self, name: str, allowed: bool) -> tuple[TopicImage | None, ErrorCode]:
        try:
            validate_topic_name(name)
            if not allowed:
                return None, ErrorCode.unknown_topic_or_partition
            coordinator = self.broker.group_coordinator
            if name == OFFSETS_TOPIC and coordinator is not None:
                # With the coordinator's partition count and configs, as Kafka creates it.
                coordinator.ensure_topic()
                return self.broker.image.topic(name), ErrorCode.none
            cluster = self.broker.cluster
            if cluster is not None and not self.broker.controller.active:
                # Kafka's broker forwards CreateTopics to its controller and answers this
                # until the topic is there (AutoTopicCreationManager).
                cluster.ask_topic(name).addErrback(
                    lambda f: log.warn("Asking the controller to create {topic} failed: {e}",
                                       topic=name, e=f.getErrorMessage()))
                return None, ErrorCode.unknown_topic_or_partition
            topic = self.broker.controller.create_topic(name)
        except KafkaError as e:
            return None, ErrorCode(e.error_code)
        return topic, ErrorCode.none

    def _topic(self, module: Any, version: int, name: str | None, topic_id: uuid.UUID | None,
               topic: TopicImage | None, error: ErrorCode, operations: int | None, *,
               internal: bool | None = None) -> Any:
        partitions = ()
        if topic is not None:
            name, topic_id = topic.name, topic.topic_id
            partitions = tuple(self._partition(module, version, p)
                               for _, p in sorted(topic.partitions.items()))
        fields: dict[str, Any] = {"error_code": error, "name": name, "partitions": partitions}
        if version >= 1:
            fields["is_internal"] = name in INTERNAL_TOPICS if internal is None else internal
        if version >= 10:
            fields["topic_id"] = topic_id or NO_TOPIC_ID
        if version >= 8:
            fields["topic_authorized_operations"] = i32(
                OPERATIONS_NOT_REQUESTED if operations is None else operations)
        return module.MetadataResponseTopic(**fields)

    @staticmethod
    def _partition(module: Any, version: int, p: Any) -> Any:
        fields: dict[str, Any] = {
            "error_code": ErrorCode.none,
            "partition_index": i32(p.partition),
            "leader_id": i32(p.leader),
            "replica_nodes": tuple(i32(r) for r in p.replicas),
            "isr_nodes": tuple(i32(r) for r in p.isr),
        }
        if version >= 7:
            fields["leader_epoch"] = i32(p.leader_epoch)
        if version >= 5:
            fields["offline_replicas"] = ()
        return module.MetadataResponsePartition(**fields)


def _may_create(acl: Everything, name: str) -> bool:
    return acl.cluster(CREATE, log_denied=False) or acl.allows(CREATE, TOPIC, name)


def cluster_operations(acl: Everything) -> int:
    """The cluster's authorized operations, as Kafka answers them: 0 without DESCRIBE."""
    return acl.operations(CLUSTER, CLUSTER_NAME) if acl.cluster(DESCRIBE) else 0


HANDLERS = (MetadataHandler,)
