"""Committed offsets: OffsetCommit (8), OffsetFetch (9), OffsetDelete (47).

Behavior / Version notes:
- OffsetCommit v2-10 (Kafka 4's range).  Topics this broker does not have, or
  partitions beyond a topic's count, get UNKNOWN_TOPIC_OR_PARTITION before the
  coordinator sees them (as KafkaApis checks); v10 names topics by id and an
  unknown id gets UNKNOWN_TOPIC_ID.  The coordinator checks the group: a commit
  with generation -1 to an Empty (or unknown) group is a "simple" commit without
  membership; otherwise member id, group.instance.id and generation must match
  (UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, ILLEGAL_GENERATION; REBALANCE_IN_PROGRESS
  while CompletingRebalance).  A generation >= 0 for an unknown group is
  ILLEGAL_GENERATION below v9 and GROUP_ID_NOT_FOUND from v9.  v2-v4 retention_time
  (-1: the broker's) sets an explicit expiry.  Leader epoch (v6+) and metadata
  (null stored as "") round-trip; metadata above offset.metadata.max.bytes is
  OFFSET_METADATA_TOO_LARGE.
- OffsetFetch v1-7 ask for one group, v8+ for several (each with its own error);
  topics null (v2+) means every committed partition; an uncommitted partition is
  offset -1, leader epoch -1, metadata "".  Group-level errors: v1 puts them on
  every partition, v2-v7 at the top level.  v10 names topics by id (committed
  topics with no id now are left out of "all").  `require_stable` (v7+) only
  matters with pending transactional commits, which this broker does not have.
- OffsetDelete v0: only for Empty groups, or "consumer" groups on topics they do
  not subscribe to (GROUP_SUBSCRIBED_TO_TOPIC); NON_EMPTY_GROUP otherwise,
  GROUP_ID_NOT_FOUND for an unknown group.
- ACLs (as KafkaApis): OffsetCommit needs READ on the group (else every partition
  GROUP_AUTHORIZATION_FAILED) and READ on each topic (else TOPIC_AUTHORIZATION_FAILED
  for its partitions); OffsetFetch DESCRIBE on each group (else its GROUP_AUTHORIZATION_FAILED)
  and DESCRIBE on each topic: a named one answers TOPIC_AUTHORIZATION_FAILED, "all"
  leaves it out; OffsetDelete DELETE on the group (else the top-level error) and READ on
  each topic.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64
from twisted.internet.defer import Deferred, succeed

from akfak.groups.results import (
    CommitRequestPartition,
    FetchedOffset,
    FetchGroupResult,
    OffsetDeleteResult,
)
from akfak.handlers.base import NO_THROTTLE, Handler, make
from akfak.handlers.groups import coordinator_of, millis
from akfak.protocol import RequestContext
from akfak.security.acls import DELETE, DESCRIBE, GROUP, READ, TOPIC
from akfak.security.checks import Everything, access

if TYPE_CHECKING:
    from akfak.broker import Broker

TopicPartition = tuple[str, int]


class TopicLookup:
    """What the offsets APIs need of the cluster metadata: which topics and
    partitions exist, and topic ids.  Without metadata every topic is taken to exist."""

    def __init__(self, broker: Broker):
        controller = getattr(broker, "controller", None)
        self.image = getattr(controller, "image", None)

    def partition_exists(self, topic: str, partition: int) -> ErrorCode:
        if self.image is None:
            return ErrorCode.none
        image = self.image.topic(topic)
        if image is None or partition not in image.partitions:
            return ErrorCode.unknown_topic_or_partition
        return ErrorCode.none

    def name_of(self, topic_id: uuid.UUID | None) -> str | None:
        if self.image is None or topic_id is None:
            return None
        image = self.image.topic_by_id(topic_id)
        return None if image is None else str(image.name)

    def id_of(self, topic: str) -> uuid.UUID | None:
        if self.image is None:
            return None
        image = self.image.topic(topic)
        return None if image is None else image.topic_id


class OffsetCommitHandler(Handler):
    api_key = 8
    min_version = 2
    max_version = 10

    def handle(self, request: Any, context: RequestContext) -> Deferred[Any]:
        version = context.api_version
        topics = TopicLookup(self.broker)
        # (response topic key, topic name or None, partition) in request order
        order: list[tuple[Any, int]] = []
        errors: dict[tuple[Any, int], ErrorCode] = {}
        wanted: list[CommitRequestPartition] = []
        names: dict[Any, str | None] = {}
        acl = access(context)
        group_denied = not acl.allows(READ, GROUP, request.group_id)
        for topic in request.topics:
            key = topic.topic_id if version >= 10 else topic.name
            name = topics.name_of(topic.topic_id) if version >= 10 else topic.name
            names[key] = name
            denied = not group_denied and name is not None and not acl.allows(READ, TOPIC, name)
            for p in topic.partitions:
                order.append((key, p.partition_index))
                if group_denied:
                    errors[(key, p.partition_index)] = ErrorCode.group_authorization_failed
                    continue
                if name is None:
                    errors[(key, p.partition_index)] = ErrorCode.unknown_topic_id
                    continue
                if denied:
                    errors[(key, p.partition_index)] = ErrorCode.topic_authorization_failed
                    continue
                error = topics.partition_exists(name, p.partition_index)
                if error is not ErrorCode.none:
                    errors[(key, p.partition_index)] = error
                    continue
                wanted.append(CommitRequestPartition(
                    name, p.partition_index, p.committed_offset,
                    getattr(p, "committed_leader_epoch", -1), p.committed_metadata))
        coordinator = coordinator_of(self.broker)
        if not wanted:
            answer: Deferred[dict[TopicPartition, ErrorCode]] = succeed({})
        elif coordinator is None:
            answer = succeed({(w.topic, w.partition): ErrorCode.coordinator_not_available for w in wanted})
        else:
            retention = getattr(request, "retention_time", None)
            answer = coordinator.commit_offsets(
                request.group_id, request.generation_id_or_member_epoch, request.member_id,
                getattr(request, "group_instance_id", None), wanted, version=version,
                retention_time_ms=millis(retention) if retention is not None else -1)

        def respond(committed: dict[TopicPartition, ErrorCode]) -> Any:
            topic_type = self.response_module(version).OffsetCommitResponseTopic
            partition_type = self.response_module(version).OffsetCommitResponsePartition
            by_topic: dict[Any, list[Any]] = {}
            for key, partition in order:
                error = errors.get((key, partition))
                if error is None:
                    error = committed.get((names[key] or "", partition), ErrorCode.none)
                by_topic.setdefault(key, []).append(
                    make(partition_type, partition_index=i32(partition), error_code=error))
            return make(self.response_type(version), throttle_time=NO_THROTTLE, topics=tuple(
                make(topic_type, name=key, topic_id=key, partitions=tuple(parts))
                for key, parts in by_topic.items()))

        return answer.addCallback(respond)


class OffsetFetchHandler(Handler):
    api_key = 9
    min_version = 1
    max_version = 10

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        topics = TopicLookup(self.broker)
        coordinator = coordinator_of(self.broker)
        require_stable = bool(getattr(request, "require_stable", False))
        acl = access(context)
        if version < 8:
            result = self._fetch(coordinator, topics, request.group_id, request.topics, version,
                                 require_stable, acl)
            return self._single_response(result, version, topics)
        group_type = self.response_module(version).OffsetFetchResponseGroup
        groups = []
        for group in request.groups:
            result = self._fetch(coordinator, topics, group.group_id, group.topics, version,
                                 require_stable, acl, getattr(group, "member_id", None),
                                 getattr(group, "member_epoch", -1))
            groups.append(make(group_type, group_id=group.group_id, error_code=result.error,
                               topics=self._topics(result, version, topics)))
        return make(self.response_type(version), throttle_time=NO_THROTTLE, groups=tuple(groups))

    def _fetch(self, coordinator: Any, topics: TopicLookup, group_id: str, requested: Any, version: int,
               require_stable: bool, acl: Everything, member_id: str | None = None,
               member_epoch: int = -1) -> FetchGroupResult:
        wanted: list[TopicPartition] | None = None
        refused: list[FetchedOffset] = []  # unknown ids, topics not to DESCRIBE
        group_denied = not acl.allows(DESCRIBE, GROUP, group_id)
        if requested is not None:
            wanted = []
            for topic in requested:
                name = topics.name_of(topic.topic_id) if version >= 10 else topic.name
                denied = not group_denied and name is not None and not acl.allows(
                    DESCRIBE, TOPIC, name)
                for partition in topic.partition_indexes:
                    if name is None:
                        refused.append(FetchedOffset(str(topic.topic_id), partition,
                                                     error=ErrorCode.unknown_topic_id))
                    elif denied:
                        refused.append(FetchedOffset(name, partition,
                                                     error=ErrorCode.topic_authorization_failed))
                    else:
                        wanted.append((name, partition))
        if group_denied:
            result = FetchGroupResult(group_id, ErrorCode.group_authorization_failed)
        elif coordinator is None:
            result = FetchGroupResult(group_id, ErrorCode.coordinator_not_available)
        else:
            result = coordinator.fetch_offsets(group_id, wanted, require_stable=require_stable,
                                               member_id=member_id, member_epoch=member_epoch)
            if wanted is None and acl.enabled:  # "all": only the topics it may DESCRIBE
                result = FetchGroupResult(group_id, result.error, tuple(
                    f for f in result.offsets if acl.allows(DESCRIBE, TOPIC, f.topic)))
        if result.error is ErrorCode.none and refused:
            result = FetchGroupResult(group_id, result.error, result.offsets + tuple(refused))
        if result.error is not ErrorCode.none and version < 2 and wanted is not None:
            # v1 has no group-level error: every partition carries it.
            result = FetchGroupResult(group_id, result.error, tuple(
                FetchedOffset(t, p, error=result.error) for t, p in wanted))
        return result

    def _topics(self, result: FetchGroupResult, version: int, topics: TopicLookup) -> tuple[Any, ...]:
        suffix = "s" if version >= 8 else ""
        topic_type = getattr(self.response_module(version), f"OffsetFetchResponseTopic{suffix}")
        partition_type = getattr(self.response_module(version), f"OffsetFetchResponsePartition{suffix}")
        by_topic: dict[str, list[Any]] = {}
        for f in result.offsets:
            by_topic.setdefault(f.topic, []).append(make(
                partition_type, partition_index=i32(f.partition), committed_offset=i64(f.offset),
                committed_leader_epoch=i32(f.leader_epoch), metadata=f.metadata, error_code=f.error))
        out = []
        for name, parts in by_topic.items():
            topic_id: uuid.UUID | None = None
            if version >= 10:
                topic_id = topics.id_of(name)
                if topic_id is None:
                    try:
                        topic_id = uuid.UUID(name)  # an unknown id asked for, echoed back
                    except ValueError:
                        continue  # a committed topic that no longer exists
            out.append(make(topic_type, name=name, topic_id=topic_id, partitions=tuple(parts)))
        return tuple(out)

    def _single_response(self, result: FetchGroupResult, version: int, topics: TopicLookup) -> Any:
        error = result.error
        offsets = result if version < 2 or error is ErrorCode.none else FetchGroupResult(result.group_id)
        return make(self.response_type(version), throttle_time=NO_THROTTLE, error_code=error,
                    topics=self._topics(offsets, version, topics))


class OffsetDeleteHandler(Handler):
    api_key = 47
    min_version = 0
    max_version = 0

    def handle(self, request: Any, context: RequestContext) -> Deferred[Any]:
        version = context.api_version
        topics = TopicLookup(self.broker)
        order: list[TopicPartition] = []
        errors: dict[TopicPartition, ErrorCode] = {}
        wanted: list[TopicPartition] = []
        acl = access(context)
        if not acl.allows(DELETE, GROUP, request.group_id):
            return succeed(make(self.response_type(version), throttle_time=NO_THROTTLE, topics=(),
                                error_code=ErrorCode.group_authorization_failed))
        for topic in request.topics:
            allowed = acl.allows(READ, TOPIC, topic.name)
            for p in topic.partitions:
                key = (topic.name, p.partition_index)
                order.append(key)
                error = (topics.partition_exists(*key) if allowed
                         else ErrorCode.topic_authorization_failed)
                if error is ErrorCode.none:
                    wanted.append(key)
                else:
                    errors[key] = error
        coordinator = coordinator_of(self.broker)
        if coordinator is None:
            answer: Deferred[OffsetDeleteResult] = succeed(
                OffsetDeleteResult(ErrorCode.coordinator_not_available))
        else:
            answer = coordinator.delete_offsets(request.group_id, wanted)

        def respond(result: OffsetDeleteResult) -> Any:
            response_type = self.response_type(version)
            if result.error is not ErrorCode.none:
                return make(response_type, error_code=result.error, throttle_time=NO_THROTTLE, topics=())
            topic_type = self.response_module(version).OffsetDeleteResponseTopic
            partition_type = self.response_module(version).OffsetDeleteResponsePartition
            by_topic: dict[str, list[Any]] = {}
            for key in order:
                error = errors[key] if key in errors else result.partitions.get(key, ErrorCode.none)
                by_topic.setdefault(key[0], []).append(
                    make(partition_type, partition_index=i32(key[1]), error_code=error))
            return make(response_type, error_code=ErrorCode.none, throttle_time=NO_THROTTLE, topics=tuple(
                make(topic_type, name=name, partitions=tuple(parts)) for name, parts in by_topic.items()))

        return answer.addCallback(respond)


HANDLERS = (OffsetCommitHandler, OffsetFetchHandler, OffsetDeleteHandler)
