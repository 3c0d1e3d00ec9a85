"""ShareGroupHeartbeat (key 76) and ShareGroupDescribe (key 77), v1 (Kafka 4.1.1's only version).

Behavior (Kafka 4.1's KafkaApis and GroupMetadataManager; akfak.share.group has the rules):
- Without share groups enabled (`share.version` < 1 finalized): UNSUPPORTED_VERSION.
- Heartbeat: READ on the group, else GROUP_AUTHORIZATION_FAILED; DESCRIBE on every subscribed
  topic, else TOPIC_AUTHORIZATION_FAILED; the assignment (topic ids and partitions) is sent on a
  join, a full request (one with subscriptions) and whenever it changed.
- Describe: DESCRIBE on each group, else GROUP_AUTHORIZATION_FAILED for it; a group that is not
  a share group (or none) is GROUP_ID_NOT_FOUND; the `simple` assignor; members' assignments
  with topic names; authorized operations when asked for.
- In a cluster the broker leading the group's partition of `__consumer_offsets` coordinates
  it (as for consumer groups); the others answer NOT_COORDINATOR, and while its records are
  replayed COORDINATOR_LOAD_IN_PROGRESS.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i32Timedelta

from akfak.handlers.base import NO_THROTTLE, OPERATIONS_NOT_REQUESTED, Handler, make
from akfak.protocol import RequestContext
from akfak.security.acls import DESCRIBE, GROUP, READ, TOPIC
from akfak.security.checks import access
from akfak.share import assignor
from akfak.share.group import HeartbeatError


def share_service(broker: Any) -> Any:
    """The broker's share service when share groups are enabled, else None."""
    service = getattr(broker, "share", None)
    return service if service is not None and service.enabled() else None


class ShareGroupHeartbeatHandler(Handler):
    api_key = 76
    min_version = 1
    max_version = 1

    def handle(self, request: Any, context: RequestContext) -> Any:
        response_type = self.response_type(context.api_version)
        module = self.response_module(context.api_version)

        def error(code: ErrorCode, message: str | None = None) -> Any:
            return response_type(throttle_time=NO_THROTTLE, error_code=code, error_message=message,
                                 member_id=None, member_epoch=i32(0),
                                 heartbeat_interval=i32Timedelta.parse(timedelta(0)),
                                 assignment=None)

        service = share_service(self.broker)
        if service is None:
            return error(ErrorCode.unsupported_version)
        acl = access(context)
        if not acl.allows(READ, GROUP, request.group_id):
            return error(ErrorCode.group_authorization_failed)
        topics = list(request.subscribed_topic_names) if request.subscribed_topic_names is not None \
            else None
        if topics and not all(acl.allows(DESCRIBE, TOPIC, t) for t in set(topics)):
            return error(ErrorCode.topic_authorization_failed)
        try:
            written = service.heartbeat(
                request.group_id, request.member_id, int(request.member_epoch), request.rack_id,
                topics, context.client_id or "", "/" + context.client_host)
        except HeartbeatError as e:
            return error(e.error, e.message)
        return written.addCallback(lambda result: respond(result, module, response_type))


def respond(result: Any, module: Any, response_type: Any) -> Any:
    """A heartbeat's answer (akfak.share.group.HeartbeatResult)."""
    assignment = None
    if result.assignment is not None:
        assignment = module.Assignment(topic_partitions=tuple(
            module.TopicPartitions(topic_id=t, partitions=tuple(i32(p) for p in ps))
            for t, ps in result.assignment.items()))
    return response_type(
        throttle_time=NO_THROTTLE, error_code=ErrorCode.none, error_message=None,
        member_id=result.member_id, member_epoch=i32(result.member_epoch),
        heartbeat_interval=i32Timedelta.parse(timedelta(milliseconds=result.heartbeat_interval_ms)),
        assignment=assignment)


class ShareGroupDescribeHandler(Handler):
    api_key = 77
    min_version = 1
    max_version = 1

    def handle(self, request: Any, context: RequestContext) -> Any:
        response_type = self.response_type(context.api_version)
        module = self.response_module(context.api_version)

        def failed(group_id: str, code: ErrorCode, message: str | None = None) -> Any:
            return module.DescribedGroup(
                error_code=code, error_message=message, group_id=group_id, group_state="",
                group_epoch=i32(0), assignment_epoch=i32(0), assignor_name="", members=(),
                authorized_operations=i32(OPERATIONS_NOT_REQUESTED))

        service = share_service(self.broker)
        if service is None:
            return response_type(throttle_time=NO_THROTTLE, groups=tuple(
                failed(g, ErrorCode.unsupported_version) for g in request.group_ids))
        acl = access(context)
        image = self.broker.image
        described = []
        allowed = []
        for group_id in request.group_ids:
            if acl.allows(DESCRIBE, GROUP, group_id):
                allowed.append(group_id)
            else:  # Kafka answers these first
                described.append(failed(group_id, ErrorCode.group_authorization_failed))
        for group_id in allowed:
            if (status := service.group_error(group_id)) is not None:
                described.append(failed(group_id, status))
                continue
            group = service.groups.groups.get(group_id)
            if group is None:
                message = (f"Group {group_id} is not a share group."
                           if service._is_classic(group_id) else f"Group {group_id} not found.")
                described.append(failed(group_id, ErrorCode.group_id_not_found, message))
                continue
            members = []
            for m in group.members.values():
                tps = []
                for topic_id, partitions in m.assigned.items():
                    topic = image.topic_by_id(topic_id)
                    tps.append(module.TopicPartitions(
                        topic_id=topic_id, topic_name=topic.name if topic else "",
                        partitions=tuple(i32(p) for p in sorted(partitions))))
                members.append(module.Member(
                    member_id=m.member_id, rack_id=m.rack_id, member_epoch=i32(m.epoch),
                    client_id=m.client_id, client_host=m.client_host,
                    subscribed_topic_names=tuple(m.subscribed),
                    assignment=module.Assignment(topic_partitions=tuple(tps))))
            described.append(make(
                module.DescribedGroup, error_code=ErrorCode.none, error_message=None,
                group_id=group_id, group_state=group.state, group_epoch=i32(group.epoch),
                assignment_epoch=i32(group.assignment_epoch), assignor_name=assignor.NAME,
                members=tuple(members),
                authorized_operations=i32(acl.operations(GROUP, group_id)
                                          if request.include_authorized_operations
                                          else OPERATIONS_NOT_REQUESTED)))
        return response_type(throttle_time=NO_THROTTLE, groups=tuple(described))


HANDLERS = (ShareGroupHeartbeatHandler, ShareGroupDescribeHandler)
