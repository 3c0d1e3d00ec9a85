"""The classic group protocol: JoinGroup (11), SyncGroup (14), Heartbeat (12),
LeaveGroup (13), ListGroups (16), DescribeGroups (15), DeleteGroups (42).

Behavior / Version notes:
- The broker's GroupCoordinator (akfak.groups) decides; these handlers only
  translate between wire versions and its answers.  Without a coordinator (the
  broker not open) every request gets COORDINATOR_NOT_AVAILABLE.
- JoinGroup v0-9 (v0 as Kafka 4.1 restored it).  v0 has no rebalance timeout: the
  session timeout stands in for it.  From v4 a first join without a member id is
  answered MEMBER_ID_REQUIRED with the id to rejoin with (KIP-394).  v5+ carry
  group.instance.id (static membership, KIP-345).  Below v7 a missing protocol
  name is "" (not null); from v7 "" is sent as null.  v9 answers skip_assignment
  to a static leader rejoining a stable group (KIP-814).
- JoinGroup and SyncGroup answers wait on Deferreds (the rebalance); the protocol
  layer keeps later responses on the connection behind them.
- SyncGroup v5 checks protocol_type/protocol_name (INCONSISTENT_GROUP_PROTOCOL) and
  echoes them; while the coordinator loads it answers REBALANCE_IN_PROGRESS (the
  rebalance was lost), as Kafka does.  Heartbeat while loading answers NONE.
- LeaveGroup v0-2 name one member and carry its error at the top level; v3+ batch
  members (by member id, or by group.instance.id with an empty member id); v5 reasons.
- ListGroups v4+ filters by state (case-insensitive), v5 by type ("classic").
- DescribeGroups: a group that does not exist is "Dead"; from v6 also
  GROUP_ID_NOT_FOUND with a message.  Member metadata and assignments only for a
  Stable group.  v3+ authorized operations: the principal's on the group when asked
  for, else INT32_MIN.
- DeleteGroups: only Empty groups (NON_EMPTY_GROUP otherwise, GROUP_ID_NOT_FOUND when
  unknown); their committed offsets go too.
- ACLs (as KafkaApis): Join, Sync, Heartbeat and Leave need READ on the group (else
  GROUP_AUTHORIZATION_FAILED, SyncGroup v5 after its protocol check); DescribeGroups
  DESCRIBE (refused groups come first, GROUP_AUTHORIZATION_FAILED); ListGroups lists every
  group with DESCRIBE on the cluster, else those the principal may DESCRIBE; DeleteGroups
  DELETE (refused groups last).
- Share groups (akfak.share.admin): listed with type "share"; described as a group that is
  not classic; deleted with their share-partition state when empty.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32
from twisted.internet.defer import Deferred, succeed

from akfak.groups.results import JoinResult, LeaveResult, SyncResult
from akfak.handlers.base import NO_THROTTLE, OPERATIONS_NOT_REQUESTED, Handler, make
from akfak.protocol import RequestContext
from akfak.security.acls import CLUSTER, CLUSTER_NAME, DELETE, DESCRIBE, GROUP, READ
from akfak.security.checks import access
from akfak.share.admin import delete_share_groups, describe_if_share_group, listed_share_groups

if TYPE_CHECKING:
    from akfak.broker import Broker
    from akfak.groups.coordinator import GroupCoordinator


def coordinator_of(broker: Broker) -> GroupCoordinator | None:
    coordinator = getattr(broker, "group_coordinator", None)
    return coordinator if coordinator is not None and coordinator.active else None


def millis(value: timedelta) -> int:
    return value // timedelta(milliseconds=1)


def may_read(context: RequestContext, group_id: str) -> bool:
    """READ on the group, what every classic-protocol member request needs."""
    return access(context).allows(READ, GROUP, group_id)


def client_host(context: RequestContext) -> str:
    # Kafka reports InetAddress.toString(): "/127.0.0.1".
    host = context.peer.rsplit(":", 1)[0]
    return f"/{host}"


class JoinGroupHandler(Handler):
    api_key = 11
    min_version = 0
    max_version = 9

    def handle(self, request: Any, context: RequestContext) -> Deferred[Any]:
        version = context.api_version
        coordinator = coordinator_of(self.broker)
        if not may_read(context, request.group_id):
            answer: Deferred[JoinResult] = succeed(JoinResult(ErrorCode.group_authorization_failed))
        elif coordinator is None:
            answer = succeed(JoinResult(ErrorCode.coordinator_not_available, request.member_id))
        else:
            session = millis(request.session_timeout)
            answer = coordinator.join_group(
                request.group_id, request.member_id, getattr(request, "group_instance_id", None),
                client_id=context.client_id or "", client_host=client_host(context),
                session_timeout_ms=session,
                rebalance_timeout_ms=millis(request.rebalance_timeout) if version >= 1 else session,
                protocol_type=request.protocol_type,
                protocols=tuple((p.name, p.metadata) for p in request.protocols),
                version=version, reason=getattr(request, "reason", None))
        return answer.addCallback(self._response, version)

    def _response(self, result: JoinResult, version: int) -> Any:
        member_type = self.response_module(version).JoinGroupResponseMember
        protocol_name = result.protocol_name
        if version < 7 and protocol_name is None:
            protocol_name = ""
        elif version >= 7 and protocol_name == "":
            protocol_name = None
        return make(
            self.response_type(version), throttle_time=NO_THROTTLE, error_code=result.error,
            generation_id=i32(result.generation_id), protocol_type=result.protocol_type,
            protocol_name=protocol_name, leader=result.leader, skip_assignment=result.skip_assignment,
            member_id=result.member_id,
            members=tuple(make(member_type, member_id=m.member_id, group_instance_id=m.group_instance_id,
                               metadata=m.metadata) for m in result.members))


class SyncGroupHandler(Handler):
    api_key = 14
    min_version = 0
    max_version = 5

    def handle(self, request: Any, context: RequestContext) -> Deferred[Any]:
        version = context.api_version
        coordinator = coordinator_of(self.broker)
        # Kafka's protocol check (v5: both named) comes first; the coordinator makes it here.
        checked = version < 5 or (request.protocol_type is not None
                                  and request.protocol_name is not None)
        if checked and not may_read(context, request.group_id):
            answer: Deferred[SyncResult] = succeed(SyncResult(ErrorCode.group_authorization_failed))
        elif coordinator is None:
            answer = succeed(SyncResult(ErrorCode.coordinator_not_available))
        else:
            answer = coordinator.sync_group(
                request.group_id, request.generation_id, request.member_id,
                getattr(request, "group_instance_id", None),
                [(a.member_id, a.assignment) for a in request.assignments],
                protocol_type=getattr(request, "protocol_type", None),
                protocol_name=getattr(request, "protocol_name", None))
        return answer.addCallback(self._response, version)

    def _response(self, result: SyncResult, version: int) -> Any:
        return make(self.response_type(version), throttle_time=NO_THROTTLE, error_code=result.error,
                    protocol_type=result.protocol_type, protocol_name=result.protocol_name,
                    assignment=result.assignment)


class HeartbeatHandler(Handler):
    api_key = 12
    min_version = 0
    max_version = 4

    def handle(self, request: Any, context: RequestContext) -> Any:
        coordinator = coordinator_of(self.broker)
        if not may_read(context, request.group_id):
            error = ErrorCode.group_authorization_failed
        elif coordinator is None:
            error = ErrorCode.coordinator_not_available
        else:
            error = coordinator.heartbeat(request.group_id, request.generation_id, request.member_id,
                                          getattr(request, "group_instance_id", None))
        return make(self.response_type(context.api_version), throttle_time=NO_THROTTLE, error_code=error)


class LeaveGroupHandler(Handler):
    api_key = 13
    min_version = 0
    max_version = 5

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        if version < 3:
            members = [(request.member_id, None, None)]
        else:
            members = [(m.member_id, m.group_instance_id, getattr(m, "reason", None))
                       for m in request.members]
        coordinator = coordinator_of(self.broker)
        if not may_read(context, request.group_id):
            result = LeaveResult(ErrorCode.group_authorization_failed)
        elif coordinator is None:
            result = LeaveResult(ErrorCode.coordinator_not_available)
        else:
            result = coordinator.leave_group(request.group_id, members)
        if isinstance(result, Deferred):
            return result.addCallback(self._response, version)
        return self._response(result, version)

    def _response(self, result: LeaveResult, version: int) -> Any:
        response_type = self.response_type(version)
        if version < 3:
            # One member, whose error is the response's (Kafka's LeaveGroupResponse).
            error = result.error
            if error is ErrorCode.none:
                error = next((m.error for m in result.members if m.error is not ErrorCode.none),
                             ErrorCode.none)
            return make(response_type, throttle_time=NO_THROTTLE, error_code=error)
        member_type = self.response_module(version).MemberResponse
        return make(response_type, throttle_time=NO_THROTTLE, error_code=result.error,
                    members=tuple(make(member_type, member_id=m.member_id,
                                       group_instance_id=m.group_instance_id, error_code=m.error)
                                  for m in result.members))


class ListGroupsHandler(Handler):
    api_key = 16
    min_version = 0
    max_version = 5

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        coordinator = getattr(self.broker, "group_coordinator", None)
        response_type = self.response_type(version)
        if coordinator is None:
            return make(response_type, throttle_time=NO_THROTTLE,
                        error_code=ErrorCode.coordinator_not_available, groups=())
        states, types = getattr(request, "states_filter", ()), getattr(request, "types_filter", ())
        result = coordinator.list_groups(states, types)
        if result.error is ErrorCode.none:  # and the share groups (akfak.share)
            result = replace(result, groups=result.groups + tuple(
                listed_share_groups(self.broker, states, types)))
        acl = access(context)
        every = acl.allows(DESCRIBE, CLUSTER, CLUSTER_NAME, log_denied=False)
        group_type = self.response_module(version).ListedGroup
        return make(response_type, throttle_time=NO_THROTTLE, error_code=result.error,
                    groups=tuple(make(group_type, group_id=g.group_id, protocol_type=g.protocol_type,
                                      group_state=g.state, group_type=g.group_type)
                                 for g in result.groups
                                 if every or acl.allows(DESCRIBE, GROUP, g.group_id, log_denied=False)))


class DescribeGroupsHandler(Handler):
    api_key = 15
    min_version = 0
    max_version = 6

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        coordinator = coordinator_of(self.broker)
        group_type = self.response_module(version).DescribedGroup
        member_type = self.response_module(version).DescribedGroupMember
        with_operations = bool(getattr(request, "include_authorized_operations", False))
        acl = access(context)
        groups = []
        allowed = []
        for group_id in request.groups:
            if acl.allows(DESCRIBE, GROUP, group_id):
                allowed.append(group_id)
            else:  # Kafka answers these first
                groups.append(make(
                    group_type, error_code=ErrorCode.group_authorization_failed, error_message=None,
                    group_id=group_id, group_state="", protocol_type="", protocol_data="", members=(),
                    authorized_operations=i32(OPERATIONS_NOT_REQUESTED)))
        for group_id in allowed:
            if coordinator is None:
                groups.append(make(
                    group_type, error_code=ErrorCode.coordinator_not_available, error_message=None,
                    group_id=group_id, group_state="", protocol_type="", protocol_data="", members=(),
                    authorized_operations=i32(OPERATIONS_NOT_REQUESTED)))
                continue
            described = (describe_if_share_group(self.broker, group_id, version)
                         or coordinator.describe_group(group_id, version=version))
            groups.append(make(
                group_type, error_code=described.error, error_message=described.error_message,
                group_id=group_id, group_state=described.state, protocol_type=described.protocol_type,
                protocol_data=described.protocol_data,
                members=tuple(make(member_type, member_id=m.member_id, group_instance_id=m.group_instance_id,
                                   client_id=m.client_id, client_host=m.client_host,
                                   member_metadata=m.metadata, member_assignment=m.assignment)
                              for m in described.members),
                authorized_operations=i32(
                    acl.operations(GROUP, group_id) if with_operations
                    and described.error is ErrorCode.none else OPERATIONS_NOT_REQUESTED)))
        return make(self.response_type(version), throttle_time=NO_THROTTLE, groups=tuple(groups))


class DeleteGroupsHandler(Handler):
    api_key = 42
    min_version = 0
    max_version = 2

    def handle(self, request: Any, context: RequestContext) -> Deferred[Any]:
        version = context.api_version
        asked = list(dict.fromkeys(request.groups_names))
        acl = access(context)
        names = [name for name in asked if acl.allows(DELETE, GROUP, name)]
        refused = [name for name in asked if name not in names]  # answered last, as Kafka does
        coordinator = coordinator_of(self.broker)
        if not names:
            answer: Deferred[dict[str, ErrorCode]] = succeed({})
        elif coordinator is None:
            answer = succeed(dict.fromkeys(names, ErrorCode.coordinator_not_available))
        else:
            classic, shared = delete_share_groups(self.broker, names)
            answer = coordinator.delete_groups(classic) if classic else succeed({})
            answer.addCallback(lambda results: shared.addCallback(lambda s: {**results, **s}))
        result_type = self.response_module(version).DeletableGroupResult

        def respond(results: dict[str, ErrorCode]) -> Any:
            return make(self.response_type(version), throttle_time=NO_THROTTLE,
                        results=tuple(make(result_type, group_id=name, error_code=results[name])
                                      for name in names) + tuple(
                            make(result_type, group_id=name,
                                 error_code=ErrorCode.group_authorization_failed)
                            for name in refused))

        return answer.addCallback(respond)


HANDLERS = (JoinGroupHandler, SyncGroupHandler, HeartbeatHandler, LeaveGroupHandler, ListGroupsHandler,
            DescribeGroupsHandler, DeleteGroupsHandler)
