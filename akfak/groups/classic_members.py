"""Classic-protocol members of a consumer group: JoinGroup, SyncGroup, Heartbeat and
LeaveGroup served by the consumer group's state machine, as Kafka 4.1's GroupMetadataManager
does (classicGroupJoinToConsumerGroup and its siblings).

- JoinGroup: the member joins (or updates) like a ConsumerGroupHeartbeat carrying the
  subscription of its first protocol (topics, owned partitions, rack): the group epoch is
  bumped when its topics changed, a new target is computed, and the member is reconciled
  with the partitions it reports owning, so a partition it must give up is kept out of its
  new assignment and it stays in its epoch until a later JoinGroup no longer owns it.  The
  answer (after the write): its member id, generation = its member epoch, protocol type
  `consumer`, its first protocol's name, no leader and no members (the broker assigns).
  GROUP_MAX_SIZE_REACHED when the group is full, INCONSISTENT_GROUP_PROTOCOL when no protocol
  is shared by all classic members, MEMBER_ID_REQUIRED for a first v4+ dynamic join.
- SyncGroup: its current assignment, encoded in its subscription's version;
  REBALANCE_IN_PROGRESS when the group epoch is past its epoch (unless it is revoking).
- Heartbeat: REBALANCE_IN_PROGRESS when the group epoch is past its epoch, it has partitions
  to revoke, or partitions it waited for were released.
- LeaveGroup: the members are fenced as by a ConsumerGroupHeartbeat leave (which may
  convert the group back to a classic group, `migration.py`).
- Errors as Kafka: UNKNOWN_MEMBER_ID for an unknown member or one using the consumer
  protocol, FENCED_INSTANCE_ID, ILLEGAL_GENERATION when the generation is not its epoch,
  INCONSISTENT_GROUP_PROTOCOL for another protocol type or name in SyncGroup.
- Timers: the session (its JoinGroup's session timeout), a join timeout (rebalance timeout,
  started when it is told to rejoin) and a sync timeout (rebalance timeout, from its join);
  each fences the member when it fires.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from akfak.groups import consumer_protocol
from akfak.groups.consumer_group import (
    UNRELEASED_PARTITIONS,
    UNREVOKED_PARTITIONS,
    ConsumerGroup,
    ConsumerMember,
)
from akfak.groups.consumer_protocol import MalformedSubscription
from akfak.groups.consumer_records import ClassicMemberMetadata
from akfak.groups.consumer_requests import HeartbeatError, new_member_id
from akfak.groups.consumer_topics import Topics
from akfak.groups.records import CoordinatorRecord
from akfak.groups.results import JoinResult, LeaveMemberResult, LeaveResult, SyncResult

if TYPE_CHECKING:
    from akfak.groups.consumer_coordinator import ConsumerGroups

log = Logger()

PROTOCOL_TYPE = "consumer"


@dataclasses.dataclass(frozen=True, slots=True)
class ClassicJoin:
    group_id: str
    member_id: str
    instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: tuple[tuple[str, bytes], ...]
    version: int


def supports_classic_protocols(group: ConsumerGroup, protocol_type: str, names: Sequence[str]) -> bool:
    """Kafka's ConsumerGroup.supportsClassicProtocols: the `consumer` type, and a protocol
    every classic member supports."""
    if protocol_type != PROTOCOL_TYPE:
        return False
    classic = [m.classic for m in group.members.values() if m.classic is not None]
    if not group.members:
        return bool(names)
    return any(all(any(n == name for n, _ in c.protocols) for c in classic) for name in names)


def waiting_on_unreleased_partition(group: ConsumerGroup, member: ConsumerMember) -> bool:
    """Whether a member has target partitions another member still holds."""
    if member.state != UNRELEASED_PARTITIONS:
        return False
    for topic_id, parts in group.target_of(member.member_id).items():
        have = member.assigned.get(topic_id, frozenset())
        if any(p not in have and group.current_partition_epoch(topic_id, p) != -1 for p in parts):
            return True
    return False


class ClassicMembers:
    def __init__(self, groups: ConsumerGroups) -> None:
        self.cg = groups
        self.gc = groups.gc

    # -- timers ----------------------------------------------------------------------

    def _schedule_join_timeout_if_absent(self, group_id: str, member: ConsumerMember) -> None:
        key = ("consumer-join", group_id, member.member_id)
        if key not in self.gc._timers:
            self.gc._set_timer(key, member.rebalance_timeout_ms, self.cg._fence_by_id, group_id,
                               member.member_id, None,
                               "the classic member failed to join within the rebalance timeout")

    # -- JoinGroup -------------------------------------------------------------------

    def join(self, group: ConsumerGroup, req: ClassicJoin) -> Deferred[JoinResult]:
        try:
            records: list[CoordinatorRecord] = []
            member = self._join(group, req, records)
        except HeartbeatError as e:
            return succeed(JoinResult(e.code, e.message if e.code is ErrorCode.member_id_required
                                      else req.member_id))
        gid = group.group_id
        result = JoinResult(ErrorCode.none, member.member_id, member.member_epoch, PROTOCOL_TYPE,
                            req.protocols[0][0])

        def written(error: ErrorCode) -> JoinResult:
            if error is not ErrorCode.none:
                return JoinResult(error, req.member_id)
            self.gc._cancel_timer(("consumer-join", gid, member.member_id))
            if gid in self.cg.groups:
                self.cg._schedule_session(gid, member.member_id, req.session_timeout_ms)
                self.gc._set_timer(("consumer-sync", gid, member.member_id), req.rebalance_timeout_ms,
                                   self.cg._fence_by_id, gid, member.member_id, None,
                                   "the member failed to sync within timeout")
            return result

        return self.cg._write(gid, records).addCallback(written)

    def _join(self, group: ConsumerGroup, req: ClassicJoin, records: list[CoordinatorRecord]
              ) -> ConsumerMember:
        gid = group.group_id
        unknown = req.member_id == ""
        member_id = new_member_id() if unknown else req.member_id
        if len(group.members) >= self.cg.max_size and member_id not in group.members:
            raise HeartbeatError(ErrorCode.group_max_size_reached)
        if not supports_classic_protocols(group, req.protocol_type, [n for n, _ in req.protocols]):
            raise HeartbeatError(ErrorCode.inconsistent_group_protocol)
        if unknown and req.instance_id is None and req.version >= 4:
            log.info("[GroupId {group}] Dynamic member with unknown member id joins the consumer group. "
                     "Created a new member id {member} and requesting the member to rejoin with this id.",
                     group=gid, member=member_id)
            raise HeartbeatError(ErrorCode.member_id_required, member_id)
        replaced = None
        if req.instance_id is None:
            member = group.members.get(member_id)
            if member is None:
                member = ConsumerMember(member_id)
                log.info("[GroupId {group}] Member {member} joins the consumer group using the classic "
                         "protocol.", group=gid, member=member_id)
        else:
            existing = group.static_member(req.instance_id)
            if not unknown:
                if existing is None:
                    raise HeartbeatError(ErrorCode.unknown_member_id)
                if existing.member_id != member_id:
                    raise HeartbeatError(ErrorCode.fenced_instance_id)
                member = existing
            elif existing is None:
                member = ConsumerMember(member_id)
                log.info("[GroupId {group}] Static member {member} with instance id {instance} joins the "
                         "consumer group using the classic protocol.", group=gid, member=member_id,
                         instance=req.instance_id)
            else:
                member = self.cg.replace_static_member(group, existing, member_id, "classic", records)
                replaced = existing
        try:
            subscription = consumer_protocol.parse_subscription(req.protocols[0][1])
        except MalformedSubscription:
            raise HeartbeatError(ErrorCode.unknown_server_error) from None
        topics = Topics(self.cg.image())
        owned = tuple((topic_id, parts) for topic_id, parts in
                      ((topics.id_of(t), ps) for t, ps in subscription.owned) if topic_id is not None)
        updated = dataclasses.replace(
            member,
            instance_id=req.instance_id if req.instance_id is not None else member.instance_id,
            rack_id=subscription.rack_id if subscription.rack_id is not None else member.rack_id,
            rebalance_timeout_ms=(req.rebalance_timeout_ms if req.rebalance_timeout_ms != -1
                                  else member.rebalance_timeout_ms),
            subscribed_topic_names=tuple(sorted(set(subscription.topics))),
            client_id=req.client_id, client_host=req.client_host,
            classic=ClassicMemberMetadata(req.session_timeout_ms, req.protocols))
        return self.cg.update_member(group, member, updated, replaced, owned, records)

    # -- SyncGroup, Heartbeat ----------------------------------------------------------

    def _validate(self, group: ConsumerGroup, member_id: str, instance_id: str | None,
                  generation_id: int) -> ConsumerMember:
        """Kafka's validateConsumerGroupMember, then the classic-protocol and generation checks."""
        if instance_id is None:
            member = group.members.get(member_id)
            if member is None:
                raise HeartbeatError(ErrorCode.unknown_member_id)
        else:
            member = group.static_member(instance_id)
            if member is None:
                raise HeartbeatError(ErrorCode.unknown_member_id)
            if member.member_id != member_id:
                raise HeartbeatError(ErrorCode.fenced_instance_id)
        if member.classic is None:
            raise HeartbeatError(ErrorCode.unknown_member_id)
        if generation_id != member.member_epoch:
            raise HeartbeatError(ErrorCode.illegal_generation)
        return member

    def sync(self, group: ConsumerGroup, generation_id: int, member_id: str, instance_id: str | None,
             protocol_type: str | None, protocol_name: str | None) -> SyncResult:
        gid = group.group_id
        try:
            member = self._validate(group, member_id, instance_id, generation_id)
        except HeartbeatError as e:
            return SyncResult(e.code)
        assert member.classic is not None
        name, metadata = member.classic.protocols[0]
        if ((protocol_type is not None and protocol_type != PROTOCOL_TYPE)
                or (protocol_name is not None and protocol_name != name)):
            return SyncResult(ErrorCode.inconsistent_group_protocol)
        if group.group_epoch > member.member_epoch and member.state != UNREVOKED_PARTITIONS:
            self._schedule_join_timeout_if_absent(gid, member)
            return SyncResult(ErrorCode.rebalance_in_progress)
        self.gc._cancel_timer(("consumer-sync", gid, member.member_id))
        self.cg.schedule_member_session(gid, member)
        topics = Topics(self.cg.image())
        try:
            version = consumer_protocol.version_of(metadata)
        except MalformedSubscription:
            return SyncResult(ErrorCode.unknown_server_error)  # Kafka's IllegalStateException
        return SyncResult(ErrorCode.none, consumer_protocol.encode_assignment(topics.named(member.assigned),
                                                                               version),
                          protocol_type, protocol_name)

    def heartbeat(self, group: ConsumerGroup, generation_id: int, member_id: str,
                  instance_id: str | None) -> ErrorCode:
        gid = group.group_id
        try:
            member = self._validate(group, member_id, instance_id, generation_id)
        except HeartbeatError as e:
            return e.code
        self.cg.schedule_member_session(gid, member)
        if (member.member_epoch < group.group_epoch or member.state == UNREVOKED_PARTITIONS
                or (member.state == UNRELEASED_PARTITIONS
                    and not waiting_on_unreleased_partition(group, member))):
            self._schedule_join_timeout_if_absent(gid, member)
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    # -- LeaveGroup --------------------------------------------------------------------

    def leave(self, group: ConsumerGroup, members: Sequence[tuple[str, str | None, str | None]]
              ) -> Deferred[LeaveResult]:
        """`members`: (member id, group instance id, reason)."""
        gid = group.group_id
        results = []
        leaving: dict[str, ConsumerMember] = {}
        for member_id, instance_id, reason in members:
            reason = reason or "not provided"
            member: Any
            if instance_id is None:
                member = group.members.get(member_id)
                error = ErrorCode.unknown_member_id if member is None else ErrorCode.none
            else:
                member = group.static_member(instance_id)
                if member is None:
                    error = ErrorCode.unknown_member_id
                elif member_id and member.member_id != member_id:
                    error = ErrorCode.fenced_instance_id
                else:
                    error = ErrorCode.none
            if error is ErrorCode.none:
                log.info("[GroupId {group}] Member {member} (instance id {instance}) has left group through "
                         "explicit `LeaveGroup` request; client reason: {reason}", group=gid,
                         member=member.member_id, instance=instance_id, reason=reason)
                leaving[member.member_id] = member
            results.append(LeaveMemberResult(member_id, instance_id, error))
        result = LeaveResult(ErrorCode.none, tuple(results))
        if not leaving:
            return succeed(result)
        records = self.cg.fence_records(group, list(leaving.values()))
        return self.cg._write(gid, records).addCallback(
            lambda error: result if error is ErrorCode.none else LeaveResult(error))
