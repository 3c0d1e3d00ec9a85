"""The consumer group protocol (KIP-848): ConsumerGroupHeartbeat (68) and
ConsumerGroupDescribe (69).

Behavior / Version notes:
- Both v0-1, Kafka 4.1's range.  The coordinator (akfak.groups.consumer_coordinator)
  decides; these handlers translate.  Without a coordinator: COORDINATOR_NOT_AVAILABLE;
  while the group's `__consumer_offsets` partition loads: COORDINATOR_LOAD_IN_PROGRESS.
- The protocol needs the finalized `group.version` >= 1 (a new cluster finalizes 1, as
  Kafka 4.1 does) and `consumer` in `group.coordinator.rebalance.protocols`; otherwise
  ConsumerGroupHeartbeat answers UNSUPPORTED_VERSION, and ConsumerGroupDescribe so for
  every group, as KafkaApis does (isConsumerGroupProtocolEnabled).  ApiVersions lists
  both APIs whatever the finalized level, as Kafka 4.1.1 does (checked against it:
  `kafka-features downgrade --feature group.version=0` leaves ConsumerGroupHeartbeat
  and ConsumerGroupDescribe 0 to 1 in its ApiVersions).
- ConsumerGroupHeartbeat v1 requires the member id (the client generates it); v0 may
  leave it empty on a first heartbeat and gets one.  Request validation (INVALID_REQUEST,
  UNSUPPORTED_ASSIGNOR) and every error's message are Kafka's.  The assignment is sent when
  the member joins, sends a full request, or its assigned partitions changed.
- ConsumerGroupDescribe: an unknown group, or a classic one, is GROUP_ID_NOT_FOUND with
  Kafka's message; an empty group id INVALID_GROUP_ID.  v1 adds each member's type
  (0: a classic member, joined with JoinGroup; 1: consumer protocol).
- ACLs (as KafkaApis): heartbeat needs READ on the group (else GROUP_AUTHORIZATION_FAILED)
  and DESCRIBE on every topic named in the subscription (else TOPIC_AUTHORIZATION_FAILED
  naming them); describe needs DESCRIBE on the group, and on the topics of its assignments
  (else TOPIC_AUTHORIZATION_FAILED for that group).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i32, i32Timedelta
from twisted.internet.defer import Deferred, succeed

from akfak.features import GROUP_VERSION
from akfak.groups.consumer_group import ConsumerGroup, ConsumerMember
from akfak.groups.consumer_records import Partitions
from akfak.groups.consumer_requests import HeartbeatRequest, HeartbeatResult, validate
from akfak.groups.consumer_topics import Topics
from akfak.handlers.base import NO_THROTTLE, OPERATIONS_NOT_REQUESTED, Handler, make
from akfak.handlers.groups import client_host, coordinator_of, millis
from akfak.protocol import RequestContext
from akfak.security.acls import DESCRIBE, GROUP, READ, TOPIC
from akfak.security.checks import access

if TYPE_CHECKING:
    from akfak.groups.coordinator import GroupCoordinator

MEMBER_TYPE_CLASSIC = 0
MEMBER_TYPE_CONSUMER = 1


def protocol_enabled(broker: Any) -> bool:
    config = getattr(broker, "config", None)
    if config is not None and "consumer" not in rebalance_protocols(config):
        return False
    image = getattr(getattr(broker, "controller", None), "image", None)
    return image is None or image.features.get(GROUP_VERSION, 0) >= 1


def rebalance_protocols(config: Any) -> set[str]:
    value = config.get("group.coordinator.rebalance.protocols") or ""
    return {p.strip().lower() for p in value.split(",") if p.strip()}


class ConsumerGroupHeartbeatHandler(Handler):
    api_key = 68
    min_version = 0
    max_version = 1

    def handle(self, request: Any, context: RequestContext) -> Deferred[Any]:
        version = context.api_version
        coordinator = coordinator_of(self.broker)
        names = request.subscribed_topic_names
        acl = access(context)
        if not protocol_enabled(self.broker):
            answer = succeed(HeartbeatResult(ErrorCode.unsupported_version))
        elif not acl.allows(READ, GROUP, request.group_id):
            answer = succeed(HeartbeatResult(ErrorCode.group_authorization_failed))
        elif names and (denied := sorted(n for n in set(names) if not acl.allows(DESCRIBE, TOPIC, n))):
            answer = succeed(HeartbeatResult(ErrorCode.topic_authorization_failed,
                                             f"The client is not authorized to describe topics: "
                                             f"{', '.join(denied)}."))
        elif coordinator is None:
            answer = succeed(HeartbeatResult(ErrorCode.coordinator_not_available))
        else:
            answer = self._heartbeat(coordinator, request, context, version)
        return answer.addCallback(self._response, version)

    def _heartbeat(self, coordinator: GroupCoordinator, request: Any, context: RequestContext,
                   version: int) -> Deferred[HeartbeatResult]:
        owned = request.topic_partitions
        req = HeartbeatRequest(
            group_id=request.group_id, member_id=request.member_id, member_epoch=request.member_epoch,
            instance_id=request.instance_id, rack_id=request.rack_id,
            rebalance_timeout_ms=millis(request.rebalance_timeout),
            subscribed_topic_names=(None if request.subscribed_topic_names is None
                                    else tuple(request.subscribed_topic_names)),
            subscribed_topic_regex=getattr(request, "subscribed_topic_regex", None),
            server_assignor=request.server_assignor,
            owned=None if owned is None else tuple((t.topic_id, tuple(t.partitions)) for t in owned),
            client_id=context.client_id or "", client_host=client_host(context))
        invalid = validate(req, version, coordinator.consumer.assignor_names)
        if invalid is not None:
            return succeed(invalid)
        error = coordinator._status(req.group_id)
        if error is not None:
            return succeed(HeartbeatResult(error))
        return coordinator.consumer.heartbeat(req)

    def _response(self, result: HeartbeatResult, version: int) -> Any:
        module = self.response_module(version)
        assignment = None
        if result.assignment is not None:
            assignment = module.Assignment(topic_partitions=_topic_partitions(module, result.assignment))
        return make(self.response_type(version), throttle_time=NO_THROTTLE, error_code=result.error,
                    error_message=result.message, member_id=result.member_id,
                    member_epoch=i32(result.member_epoch),
                    heartbeat_interval=i32Timedelta.parse(timedelta(milliseconds=result.heartbeat_interval_ms)),
                    assignment=assignment)


def _topic_partitions(module: Any, partitions: Partitions) -> tuple[Any, ...]:
    return tuple(module.TopicPartitions(topic_id=t, partitions=tuple(i32(p) for p in sorted(parts)))
                 for t, parts in sorted(partitions.items()))


class ConsumerGroupDescribeHandler(Handler):
    api_key = 69
    min_version = 0
    max_version = 1

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        coordinator = coordinator_of(self.broker)
        acl = access(context)
        with_operations = bool(request.include_authorized_operations)
        groups = []
        if not protocol_enabled(self.broker):  # every group, before any ACL check, as Kafka
            return make(self.response_type(version), throttle_time=NO_THROTTLE, groups=tuple(
                _error(module, g, ErrorCode.unsupported_version) for g in request.group_ids))
        for group_id in request.group_ids:
            if not acl.allows(DESCRIBE, GROUP, group_id):
                groups.append(_error(module, group_id, ErrorCode.group_authorization_failed))
                continue
            if not group_id:
                groups.append(_error(module, group_id, ErrorCode.invalid_group_id))
                continue
            if coordinator is None:
                groups.append(_error(module, group_id, ErrorCode.coordinator_not_available))
                continue
            error = coordinator._status(group_id)
            if error is not None:
                groups.append(_error(module, group_id, error))
                continue
            group = coordinator.consumer.groups.get(group_id)
            if group is None:
                what = "is not a consumer group" if group_id in coordinator.groups else "not found"
                groups.append(_error(module, group_id, ErrorCode.group_id_not_found,
                                     f"Group {group_id} {what}."))
                continue
            topics = Topics(coordinator.consumer.image())
            described = self._describe(module, coordinator, group, topics)
            names = {t.topic_name for m in described.members
                     for t in (*m.assignment.topic_partitions, *m.target_assignment.topic_partitions)}
            if any(not acl.allows(DESCRIBE, TOPIC, n) for n in names):
                groups.append(_error(module, group_id, ErrorCode.topic_authorization_failed,
                                     "The group has described topic(s) that the client is not "
                                     "authorized to describe."))
                continue
            operations = acl.operations(GROUP, group_id) if with_operations else OPERATIONS_NOT_REQUESTED
            groups.append(make(type(described), **{f: getattr(described, f) for f in (
                "error_code", "error_message", "group_id", "group_state", "group_epoch",
                "assignment_epoch", "assignor_name", "members")}, authorized_operations=i32(operations)))
        return make(self.response_type(version), throttle_time=NO_THROTTLE, groups=tuple(groups))

    def _describe(self, module: Any, coordinator: GroupCoordinator, group: ConsumerGroup,
                  topics: Topics) -> Any:
        consumer = coordinator.consumer
        assignor = group.preferred_assignor(group.members.values()) or consumer.assignor_names[0]
        return make(module.DescribedGroup, error_code=ErrorCode.none, error_message=None,
                    group_id=group.group_id, group_state=group.state, group_epoch=i32(group.group_epoch),
                    assignment_epoch=i32(group.target_epoch), assignor_name=assignor,
                    members=tuple(self._member(module, m, group.target_of(m.member_id), topics)
                                  for m in group.members.values()),
                    authorized_operations=i32(OPERATIONS_NOT_REQUESTED))

    def _member(self, module: Any, m: ConsumerMember, target: Partitions, topics: Topics) -> Any:
        return make(module.Member, member_id=m.member_id, instance_id=m.instance_id, rack_id=m.rack_id,
                    member_epoch=i32(m.member_epoch), client_id=m.client_id, client_host=m.client_host,
                    subscribed_topic_names=m.subscribed_topic_names,
                    subscribed_topic_regex=m.subscribed_topic_regex,
                    assignment=module.Assignment(topic_partitions=_named(module, m.assigned, topics)),
                    target_assignment=module.Assignment(topic_partitions=_named(module, target, topics)),
                    member_type=i8(MEMBER_TYPE_CLASSIC if m.uses_classic_protocol else MEMBER_TYPE_CONSUMER))


def _named(module: Any, partitions: Partitions, topics: Topics) -> tuple[Any, ...]:
    out = []
    for topic_id, parts in sorted(partitions.items()):
        name = topics.name_of(topic_id)
        if name is not None:  # a deleted topic's partitions are left out, as Kafka does
            out.append(module.TopicPartitions(topic_id=topic_id, topic_name=name,
                                              partitions=tuple(i32(p) for p in sorted(parts))))
    return tuple(out)


def _error(module: Any, group_id: str, error: ErrorCode, message: str | None = None) -> Any:
    return make(module.DescribedGroup, error_code=error, error_message=message, group_id=group_id,
                group_state="", group_epoch=i32(0), assignment_epoch=i32(0), assignor_name="",
                members=(), authorized_operations=i32(OPERATIONS_NOT_REQUESTED))



HANDLERS = (ConsumerGroupHeartbeatHandler, ConsumerGroupDescribeHandler)
