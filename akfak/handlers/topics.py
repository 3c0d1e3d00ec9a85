"""CreateTopics (key 19) v2-v7, DeleteTopics (key 20) v1-v6, CreatePartitions (key 37) v0-v3.

Behavior (as Kafka 4's ControllerApis and ReplicationControlManager):
- CreateTopics: each topic is validated and created on its own (one failing does not stop
  the others): INVALID_TOPIC_EXCEPTION for an illegal name, TOPIC_ALREADY_EXISTS,
  INVALID_CONFIG for an unknown topic config or a bad value, INVALID_REQUEST /
  INVALID_REPLICA_ASSIGNMENT for a manual assignment with counts other than -1, repeated
  or non-consecutive partitions, INVALID_PARTITIONS / INVALID_REPLICATION_FACTOR for counts
  below 1 (other than -1, the broker defaults num.partitions / default.replication.factor)
  or more replicas than brokers.  A name given twice answers INVALID_REQUEST "Duplicate
  topic name." once, after the others; __cluster_metadata answers INVALID_REQUEST.
  validate_only checks everything and writes nothing.  v5+ answer the partition count,
  replication factor and every topic config with its value and source; v7 the topic id
  (the zero id under validate_only).
- DeleteTopics: by name (v1-v5 topic_names, v6 topics) or v6 by id.  A missing name
  answers UNKNOWN_TOPIC_OR_PARTITION, a missing id UNKNOWN_TOPIC_ID, a repeated one
  INVALID_REQUEST; with delete.topic.enable=false every topic answers
  TOPIC_DELETION_DISABLED (INVALID_REQUEST before v3).
- CreatePartitions: repeated names first (INVALID_REQUEST), then each topic:
  UNKNOWN_TOPIC_OR_PARTITION, INVALID_PARTITIONS when the count is not an increase,
  INVALID_REPLICA_ASSIGNMENT when the assignments do not match the added partitions.
- ACLs (as Kafka's ControllerApis): CreateTopics needs CREATE on the cluster or the topic,
  else TOPIC_AUTHORIZATION_FAILED "Authorization failed." (after the duplicates); a topic
  created without DESCRIBE_CONFIGS on it answers no configs, counts -1 and
  topic_config_error_code TOPIC_AUTHORIZATION_FAILED.  DeleteTopics needs DELETE on the
  cluster or the topic: a name not to DESCRIBE or DELETE answers TOPIC_AUTHORIZATION_FAILED
  (before saying whether it exists), an id whose topic may not be deleted too, with the
  name only if the topic may be described.  CreatePartitions needs ALTER on the topic
  (TOPIC_AUTHORIZATION_FAILED, before the existence check).
- Partition limits (akfak/partition_limits.py), checked before anything else: more new
  partitions in one CreateTopics / CreatePartitions than akfak.max.partitions.per.request
  answer POLICY_VIOLATION for every topic (Kafka's answer to an operation past its
  controller's 10,000-record bound); a topic that would take the broker past
  akfak.max.partitions answers INVALID_PARTITIONS.
- controller_mutation_rate (akfak.quota_manager): each topic's partitions created or
  deleted are counted once the topic is otherwise valid; strict from CreateTopics v6,
  DeleteTopics v5 and CreatePartitions v3 (THROTTLING_QUOTA_EXCEEDED for the topics past
  an exhausted quota), permissive before (done, and the response throttled). The response's
  throttle_time is what is left of the quota's throttle when it is built.
- Changes are metadata records (TopicRecord, PartitionRecord, ConfigRecord,
  RemoveTopicRecord) through the controller; the answer waits until they are on disk and
  the partition logs exist.  Creating the logs runs in bounded slices of the reactor's
  time, so thousands of them never stall other connections.
"""

from __future__ import annotations

import uuid
from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i16, i32
from twisted.logger import Logger

from akfak import partition_limits
from akfak.broker_configs import topic_config_entries
from akfak.errors import (
    InvalidReplicaAssignment,
    InvalidRequest,
    InvalidTopic,
    TopicAlreadyExists,
    TopicDeletionDisabled,
    UnknownTopicId,
    UnknownTopicOrPartition,
)
from akfak.handlers.admin_common import (
    CLUSTER_METADATA_TOPIC,
    after_durable,
    check_manual_assignment,
    duplicates,
    registered_brokers,
    run_or_error,
)
from akfak.handlers.base import NO_THROTTLE, NO_TOPIC_ID, Handler, throttle_time
from akfak.log.config import validate_topic_config
from akfak.metadata_image import TopicImage, validate_topic_name
from akfak.protocol import RequestContext
from akfak.quota_manager import MutationQuota
from akfak.security.acls import ALTER, CREATE, DELETE, DESCRIBE, DESCRIBE_CONFIGS, TOPIC
from akfak.security.checks import DENIED_MESSAGES, access

log = Logger()



def _unify(name: str) -> str:
    # Kafka's Topic.unifyCollisionChars: metric names map '.' to '_'.
    return name.replace(".", "_")


class CreateTopicsHandler(Handler):
    api_key = 19
    min_version = 2
    max_version = 7

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        too_large = _request_error(self.broker, sum(
            self._count(t) for t in request.topics), "CreateTopics")
        if too_large is not None:
            results = [self._result(module, version, topic, None, *too_large)
                       for topic in request.topics]
            return self.response_type(version)(throttle_time=NO_THROTTLE, topics=tuple(results))
        repeated = duplicates(t.name for t in request.topics)
        validate_only = bool(request.validate_only)
        results = []
        changed = False
        acl = access(context)
        names = {t.name for t in request.topics} - repeated - {CLUSTER_METADATA_TOPIC}
        creatable = names if acl.cluster(CREATE, log_denied=False) else acl.allowed(
            CREATE, TOPIC, names)
        describable = acl.allowed(DESCRIBE_CONFIGS, TOPIC, names, log_denied=False)
        quota = self.broker.quotas.mutation_quota(context, strict_since=6)
        for topic in request.topics:
            if topic.name not in creatable:
                continue
            created, error, message = run_or_error(
                lambda topic=topic: self._create(topic, validate_only, quota),
                f"creating {topic.name}")
            changed = changed or (created is not None and not validate_only)
            results.append(self._result(module, version, topic, created, error, message,
                                        describable=topic.name in describable))
        answered: set[str] = set()
        for topic in request.topics:
            if topic.name in repeated and topic.name not in answered:
                answered.add(topic.name)
                results.append(self._result(module, version, topic, None,
                                            ErrorCode.invalid_request, "Duplicate topic name."))
        for topic in request.topics:
            if topic.name == CLUSTER_METADATA_TOPIC and topic.name not in repeated:
                log.info("Rejecting creation of internal topic {name}", name=topic.name)
                results.append(self._result(
                    module, version, topic, None, ErrorCode.invalid_request,
                    f"Creation of internal topic {CLUSTER_METADATA_TOPIC} is prohibited."))
            elif (topic.name in names and topic.name not in creatable
                  and topic.name not in answered):
                answered.add(topic.name)
                results.append(self._result(module, version, topic, None,
                                            ErrorCode.topic_authorization_failed,
                                            "Authorization failed."))
        response = self.response_type(version)(throttle_time=_throttle(context, quota),
                                               topics=tuple(results))
        return after_durable(self.broker, response, changed)

    def _create(self, topic: Any, validate_only: bool, quota: MutationQuota | None) -> TopicImage:
        controller = self.broker.controller
        # Kafka's order: the name, existence, collision, configs, then the assignment.
        validate_topic_name(topic.name)
        if controller.image.topic(topic.name) is not None:
            raise TopicAlreadyExists(f"Topic '{topic.name}' already exists.")
        unified = _unify(topic.name)
        for other in sorted(controller.image.topics_by_name):
            if _unify(other) == unified:
                raise InvalidTopic(f"Topic '{topic.name}' collides with existing topic: {other}")
        configs = {c.name: c.value for c in topic.configs}
        for key, value in configs.items():
            validate_topic_config(key, value)
        assignments = None
        if topic.assignments:
            assignments = self._assignments(topic)
        return controller.create_topic(
            topic.name, int(topic.num_partitions), int(topic.replication_factor), configs,
            assignments=assignments, validate_only=validate_only, in_slices=True,
            quota=quota.record if quota is not None else None)

    def _count(self, topic: Any) -> int:
        """The partitions a topic of the request asks for."""
        if topic.assignments:
            return len(topic.assignments)
        count = int(topic.num_partitions)
        return self.broker.config.num_partitions if count == -1 else max(count, 0)

    def _assignments(self, topic: Any) -> dict[int, list[int]]:
        if int(topic.replication_factor) != -1:
            raise InvalidRequest("A manual partition assignment was specified, but replication "
                                 "factor was not set to -1.")
        if int(topic.num_partitions) != -1:
            raise InvalidRequest("A manual partition assignment was specified, but numPartitions "
                                 "was not set to -1.")
        brokers = registered_brokers(self.broker)
        placed: dict[int, list[int]] = {}
        replication_factor = None
        for assignment in topic.assignments:
            index = int(assignment.partition_index)
            if index in placed:
                raise InvalidReplicaAssignment(
                    f"Found multiple manual partition assignments for partition {index}")
            replicas = [int(b) for b in assignment.broker_ids]
            check_manual_assignment(replicas, replication_factor, brokers)
            replication_factor = len(replicas)
            placed[index] = replicas
        if sorted(placed) != list(range(len(placed))):
            raise InvalidReplicaAssignment(
                "partitions should be a consecutive 0-based integer sequence")
        return placed

    def _result(self, module: Any, version: int, topic: Any, created: TopicImage | None,
                error: ErrorCode, message: str | None, *, describable: bool = True) -> Any:
        fields: dict[str, Any] = {"name": topic.name, "error_code": error,
                                  "error_message": message}
        if version >= 7:
            fields["topic_id"] = created.topic_id if created is not None else NO_TOPIC_ID
        if version >= 5:
            if created is None or not describable:
                fields.update(num_partitions=i32(-1), replication_factor=i16(-1), configs=())
                if created is not None:  # created, but its configs are not to be described
                    fields["topic_config_error_code"] = ErrorCode.topic_authorization_failed
            else:
                fields.update(
                    num_partitions=i32(created.num_partitions),
                    replication_factor=i16(created.replication_factor),
                    configs=self._configs(module, topic))
        return module.CreatableTopicResult(**fields)

    def _configs(self, module: Any, topic: Any) -> tuple[Any, ...]:
        broker = self.broker
        image = broker.image
        overrides = {c.name: c.value for c in topic.configs if c.value is not None}
        entries = topic_config_entries(
            broker.config, overrides, image.broker_configs.get(str(broker.node_id), {}),
            image.broker_configs.get("", {}))
        return tuple(module.CreatableTopicConfigs(
            name=e.name, value=e.value, read_only=e.read_only, config_source=i8(e.source),
            is_sensitive=e.sensitive) for e in entries)


class DeleteTopicsHandler(Handler):
    api_key = 20
    min_version = 1
    max_version = 6

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        # (name, topic id) as the request gives them; v6 may give either.
        if version >= 6:
            wanted = [(t.name, t.topic_id or NO_TOPIC_ID) for t in request.topics]
        else:
            wanted = [(name, NO_TOPIC_ID) for name in request.topic_names]
        if not self.broker.config.get_bool("delete.topic.enable"):
            code = (ErrorCode.invalid_request if version < 3
                    else ErrorCode.topic_deletion_disabled)
            message = TopicDeletionDisabled.default_message() if version < 3 else None
            results = [self._result(module, version, name, topic_id, code, message)
                       for name, topic_id in wanted]
            return self.response_type(version)(throttle_time=NO_THROTTLE, responses=tuple(results))
        # First resolve every entry against one image, as Kafka resolves names and ids
        # before deleting anything; then delete what resolved.
        image = self.broker.image
        repeated_names = duplicates(n for n, i in wanted if n is not None and i == NO_TOPIC_ID)
        repeated_ids = duplicates(i for n, i in wanted if n is None and i != NO_TOPIC_ID)
        answered: set[tuple[str | None, uuid.UUID]] = set()
        # per entry: (name, id, error, message), error None meaning "to delete"
        entries: list[tuple[str | None, uuid.UUID, ErrorCode | None, str | None]] = []
        acl = access(context)
        every = acl.cluster(DELETE, log_denied=False)

        def may(operation: int, name: str) -> bool:
            return every or acl.allows(operation, TOPIC, name)

        denied = ErrorCode.topic_authorization_failed, DENIED_MESSAGES[29]
        for name, topic_id in wanted:
            if name is None and topic_id == NO_TOPIC_ID:
                entries.append((None, NO_TOPIC_ID, ErrorCode.invalid_request,
                                "Neither topic name nor id were specified."))
            elif name is not None and topic_id != NO_TOPIC_ID:
                entries.append((name, topic_id, ErrorCode.invalid_request,
                                "You may not specify both topic name and topic id."))
            elif name in repeated_names or (name is None and topic_id in repeated_ids):
                if (name, topic_id) not in answered:
                    answered.add((name, topic_id))
                    entries.append((name, topic_id, ErrorCode.invalid_request,
                                    "Duplicate topic name." if name is not None
                                    else "Duplicate topic id."))
            elif name is None:
                topic = image.topic_by_id(topic_id)
                if topic is None:
                    entries.append((None, topic_id, ErrorCode.unknown_topic_id,
                                    UnknownTopicId.default_message()))
                elif not may(DELETE, topic.name):  # named only to those who may describe it
                    entries.append((topic.name if may(DESCRIBE, topic.name) else None, topic_id,
                                    *denied))
                else:
                    entries.append((topic.name, topic_id, None, None))
            elif not may(DESCRIBE, name):  # before saying whether it exists
                entries.append((name, NO_TOPIC_ID, *denied))
            else:
                topic = image.topic(name)
                if topic is None:
                    entries.append((name, NO_TOPIC_ID, ErrorCode.unknown_topic_or_partition,
                                    UnknownTopicOrPartition.default_message()))
                elif not may(DELETE, name):
                    entries.append((name, NO_TOPIC_ID, *denied))
                else:
                    entries.append((name, topic.topic_id, None, None))
        # A topic given both by id and by name is deleted neither way.
        named_twice = duplicates(i for _, i, error, _ in entries if error is None)
        results = []
        changed = False
        quota = self.broker.quotas.mutation_quota(context, strict_since=5)
        record = quota.record if quota is not None else None
        for name, topic_id, error, message in entries:
            if error is None and topic_id in named_twice:
                error, message = ErrorCode.invalid_request, (
                    "The provided topic name maps to an ID that was already supplied.")
            elif error is None:
                _, error, message = run_or_error(
                    lambda topic_id=topic_id: self.broker.delete_topic(topic_id, record),
                    f"deleting {name}")
                if error == ErrorCode.none:
                    changed = True
                    log.info("Deleted topic {name} ({id})", name=name, id=topic_id)
            results.append(self._result(module, version, name, topic_id, error, message))
        response = self.response_type(version)(throttle_time=_throttle(context, quota),
                                               responses=tuple(results))
        return after_durable(self.broker, response, changed)

    @staticmethod
    def _result(module: Any, version: int, name: str | None, topic_id: uuid.UUID,
                error: ErrorCode, message: str | None) -> Any:
        fields: dict[str, Any] = {"name": name, "error_code": error}
        if version >= 5:
            fields["error_message"] = message
        if version >= 6:
            fields["topic_id"] = topic_id
        return module.DeletableTopicResult(**fields)


class CreatePartitionsHandler(Handler):
    api_key = 37
    min_version = 0
    max_version = 3

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        image = self.broker.image
        too_large = _request_error(self.broker, sum(
            max(0, int(t.count) - existing.num_partitions) for t in request.topics
            if (existing := image.topic(t.name)) is not None), "CreatePartitions")
        if too_large is not None:
            error, message = too_large
            results = tuple(module.CreatePartitionsTopicResult(
                name=t.name, error_code=error, error_message=message) for t in request.topics)
            return self.response_type(version)(throttle_time=NO_THROTTLE, results=results)
        repeated = duplicates(t.name for t in request.topics)
        validate_only = bool(request.validate_only)
        results = [module.CreatePartitionsTopicResult(
            name=name, error_code=ErrorCode.invalid_request, error_message="Duplicate topic name.")
            for name in sorted(repeated)]
        acl = access(context)
        alterable = acl.allowed(ALTER, TOPIC, {t.name for t in request.topics} - repeated)
        results.extend(module.CreatePartitionsTopicResult(
            name=t.name, error_code=ErrorCode.topic_authorization_failed, error_message=None)
            for t in request.topics if t.name not in repeated and t.name not in alterable)
        changed = False
        quota = self.broker.quotas.mutation_quota(context, strict_since=3)
        for topic in request.topics:
            if topic.name not in alterable:
                continue
            grown, error, message = run_or_error(
                lambda topic=topic: self._grow(topic, validate_only, quota),
                f"creating partitions of {topic.name}")
            if error == ErrorCode.unknown_topic_or_partition:
                message = None  # Kafka's controller throws it without a message
            changed = changed or (grown is not None and not validate_only)
            results.append(module.CreatePartitionsTopicResult(
                name=topic.name, error_code=error, error_message=message))
        response = self.response_type(version)(throttle_time=_throttle(context, quota),
                                               results=tuple(results))
        return after_durable(self.broker, response, changed)

    def _grow(self, topic: Any, validate_only: bool, quota: MutationQuota | None) -> TopicImage:
        controller = self.broker.controller
        assignments = None
        if topic.assignments is not None:
            assignments = [[int(b) for b in a.broker_ids] for a in topic.assignments]
            existing = controller.image.topic(topic.name)
            added = int(topic.count) - (existing.num_partitions if existing else 0)
            # The controller checks existence, the count and the number of assignments;
            # each assignment must then be valid and as wide as the topic's partitions.
            if existing is not None and added > 0 and len(assignments) == added:
                brokers = registered_brokers(self.broker)
                for replicas in assignments:
                    check_manual_assignment(replicas, existing.replication_factor, brokers)
        return controller.create_partitions(topic.name, int(topic.count), assignments=assignments,
                                            validate_only=validate_only, in_slices=True,
                                            quota=quota.record if quota is not None else None)


def _throttle(context: RequestContext, quota: MutationQuota | None) -> Any:
    """The response's throttle_time for the controller mutation quota, the connection not
    read for it (request_percentage is added when the response is sent)."""
    throttle_ms = quota.throttle_ms if quota is not None else 0
    context.broker.quotas.throttle(context.connection, throttle_ms)
    return throttle_time(throttle_ms)


def _request_error(broker: Any, added: int, api: str) -> tuple[ErrorCode, str | None] | None:
    """Kafka's answer to a request creating too many partitions at once, for every topic."""
    _, error, message = run_or_error(
        lambda: partition_limits.check_request(broker.config, added), api)
    if error == ErrorCode.none:
        return None
    log.warn("Refusing {api} creating {n} partitions: {message}", api=api, n=added,
             message=message)
    return error, message


HANDLERS = (CreateTopicsHandler, DeleteTopicsHandler, CreatePartitionsHandler)
