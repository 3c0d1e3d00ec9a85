"""The consumer rebalance protocol (KIP-848): ConsumerGroupHeartbeat and what hangs off it,
as Kafka 4.1's GroupMetadataManager runs it.

`ConsumerGroups` lives beside the classic GroupCoordinator (it shares its
`__consumer_offsets` partitions, timers, loading and committed offsets).  An operation
computes the records of its change from the current state, then the records are applied
(`GroupCoordinator.replay`, the same code loading runs) and written; the answer waits for
the write.

A heartbeat: (1) updates the member (its subscription, its rack, assignor, rebalance timeout)
and bumps the group epoch when a subscription, the topics a regular expression matches, or the
subscribed topics' metadata changed; (2) when the group epoch is past the target assignment's,
computes a new target with the group's assignor; (3) moves the member towards its target
(`reconcile.py`): revoke first, assign what is free.  Members leave with epoch -1, static
members pause with -2 (keeping their partitions for a rejoin with the same instance id until
their session expires); a member silent for the session timeout, or that does not revoke
within its rebalance timeout, is fenced: removed, and the group epoch bumped.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.coordinator.runtime import append_error
from akfak.groups import assignors
from akfak.groups.classic_members import ClassicMembers
from akfak.groups.consumer_group import (
    LEAVE_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_STATIC_MEMBER_EPOCH,
    UNREVOKED_PARTITIONS,
    ConsumerGroup,
    ConsumerMember,
    group_record,
    subscribed_names,
)
from akfak.groups.consumer_offsets import deletion_records
from akfak.groups.consumer_records import (
    CURRENT_MEMBER_ASSIGNMENT,
    GROUP_METADATA,
    MEMBER_METADATA,
    PARTITION_METADATA,
    REGULAR_EXPRESSION,
    TARGET_ASSIGNMENT_MEMBER,
    TARGET_ASSIGNMENT_METADATA,
    ConsumerGroupKey,
    GroupMetadataValue,
    Partitions,
    RegularExpressionValue,
    TargetAssignmentMemberValue,
    TargetAssignmentMetadataValue,
)
from akfak.groups.consumer_requests import HeartbeatError, HeartbeatRequest, HeartbeatResult, new_member_id
from akfak.groups.consumer_topics import Topics, compile_regex
from akfak.groups.consumer_writes import InFlightWrites
from akfak.groups.migration import Migration
from akfak.groups.reconcile import FencedMemberEpoch, Owned, is_subset, reconcile
from akfak.groups.records import CoordinatorRecord, GroupMetadataKey
from akfak.groups.topic_regex import syntax_error

if TYPE_CHECKING:
    from akfak.groups.coordinator import GroupCoordinator

log = Logger()

GROUP_TYPE_CONSUMER = "consumer"
PROTOCOL_TYPE = "consumer"


def member_removal_records(group_id: str, member_id: str) -> list[CoordinatorRecord]:
    """Kafka's removeMember: current assignment, target, then subscription tombstones."""
    return [group_record(t, group_id, member_id, None)
            for t in (CURRENT_MEMBER_ASSIGNMENT, TARGET_ASSIGNMENT_MEMBER, MEMBER_METADATA)]


class ConsumerGroups:
    """The consumer groups of one coordinator."""

    def __init__(self, coordinator: GroupCoordinator, image: Callable[[], Any]) -> None:
        self.gc = coordinator
        self.image = image
        config = coordinator.config
        self.assignor_names = [a.strip() for a in (config.get("group.consumer.assignors") or "").split(",")
                               if a.strip() in assignors.ASSIGNORS] or ["uniform"]
        self.max_size = config.get_int("group.consumer.max.size")
        self.default_session_timeout_ms = config.get_int("group.consumer.session.timeout.ms")
        self.default_heartbeat_interval_ms = config.get_int("group.consumer.heartbeat.interval.ms")
        self.groups: dict[str, ConsumerGroup] = {}
        #: group id -> metadata offset its regular expressions were last resolved at
        self.regexes_checked: dict[str, int] = {}
        self.in_flight = InFlightWrites(self, coordinator)
        self.migration = Migration(self)
        self.classic = ClassicMembers(self)

    # -- configuration ---------------------------------------------------------------

    def _group_config(self, group_id: str, key: str, default: int) -> int:
        image = self.image()
        overrides = {} if image is None else image.group_configs.get(group_id, {})
        try:
            return int(overrides[key]) if key in overrides else default
        except ValueError:
            return default

    def session_timeout_ms(self, group_id: str) -> int:
        return self._group_config(group_id, "consumer.session.timeout.ms", self.default_session_timeout_ms)

    def heartbeat_interval_ms(self, group_id: str) -> int:
        return self._group_config(group_id, "consumer.heartbeat.interval.ms",
                                  self.default_heartbeat_interval_ms)

    # -- replay ------------------------------------------------------------------------

    def replay(self, key: ConsumerGroupKey, value: Any) -> None:
        group = self.groups.get(key.group)
        if value is None and group is None:
            return
        if key.type == GROUP_METADATA and value is None:
            assert group is not None
            del self.groups[key.group]
            self.regexes_checked.pop(key.group, None)
            return
        if key.type == PARTITION_METADATA:
            return
        if group is None:
            group = self.groups[key.group] = ConsumerGroup(key.group)
            classic = self.gc.groups.get(key.group)
            if classic is not None and not classic.members:
                del self.gc.groups[key.group]  # an empty classic group became this one
        group.replay(key, value)

    def partition_loaded(self, partition: int) -> None:
        """Loaded groups get their sessions back (a full session from now)."""
        for group in self.groups.values():
            if self.gc.partition_for(group.group_id) != partition:
                continue
            for member in group.members.values():
                self.schedule_member_session(group.group_id, member)
                if member.state == UNREVOKED_PARTITIONS and not member.uses_classic_protocol:
                    self._schedule_rebalance(group.group_id, member)

    # -- writing -------------------------------------------------------------------------

    def _write(self, group_id: str, records: Sequence[CoordinatorRecord]) -> Deferred[ErrorCode]:
        """Apply `records`, then write them; undone if the write fails (`consumer_writes`)."""
        if not records:
            return succeed(ErrorCode.none)
        before = self.groups.get(group_id)
        index = self.in_flight.apply(group_id, records)
        if before is not None and any(isinstance(r.key, GroupMetadataKey) and r.value is not None
                                      for r in records):
            self.migration.downgraded(before, self.gc.groups[group_id])

        def written(_: Any) -> ErrorCode:
            self.in_flight.done(group_id, index, True)
            return ErrorCode.none

        def failed(failure: Failure) -> ErrorCode:
            log.warn("Writing consumer group {group} failed, its change undone: {error}",
                     group=group_id, error=failure.getErrorMessage())
            self.in_flight.done(group_id, index, False)
            return append_error(failure)

        return self.gc._append(group_id, records).addCallbacks(written, failed)

    # -- timers ----------------------------------------------------------------------------

    def _schedule_session(self, group_id: str, member_id: str, timeout_ms: int | None = None) -> None:
        """The member's session: `timeout_ms` for a classic member (its JoinGroup's), the
        group's session timeout otherwise."""
        self.gc._set_timer(("consumer-session", group_id, member_id),
                           self.session_timeout_ms(group_id) if timeout_ms is None else timeout_ms,
                           self._fence_by_id, group_id, member_id, None, "the member session expired")

    def schedule_member_session(self, group_id: str, member: ConsumerMember) -> None:
        self._schedule_session(group_id, member.member_id,
                               member.classic.session_timeout_ms if member.classic else None)

    def _schedule_rebalance(self, group_id: str, member: ConsumerMember) -> None:
        self.gc._set_timer(("consumer-rebalance", group_id, member.member_id),
                           member.rebalance_timeout_ms, self._fence_by_id, group_id, member.member_id,
                           member.member_epoch,
                           f"it failed to transition from epoch {member.member_epoch} within "
                           f"{member.rebalance_timeout_ms}ms")

    def _cancel_timers(self, group_id: str, member_id: str) -> None:
        for kind in ("consumer-session", "consumer-rebalance", "consumer-join", "consumer-sync"):
            self.gc._cancel_timer((kind, group_id, member_id))

    def _fence_by_id(self, group_id: str, member_id: str, epoch: int | None, reason: str) -> None:
        group = self.groups.get(group_id)
        member = None if group is None else group.members.get(member_id)
        if group is None or member is None or (epoch is not None and member.member_epoch != epoch):
            return
        log.info("[GroupId {group}] Member {member} fenced from the group because {reason}.",
                 group=group_id, member=member_id, reason=reason)
        self._write(group_id, self.fence_records(group, [member]))

    def fence_records(self, group: ConsumerGroup, members: Sequence[ConsumerMember]
                      ) -> list[CoordinatorRecord]:
        """Kafka's consumerGroupFenceMembers: remove them, drop regexes only they used,
        bump the group epoch (with the metadata hash of what the others subscribe to); or,
        when only classic members are left, the group's conversion to a classic group."""
        gone = {m.member_id for m in members}
        for m in members:
            self._cancel_timers(group.group_id, m.member_id)
        if self.migration.may_downgrade(group, gone):
            return self.migration.downgrade_records(group, gone)
        records: list[CoordinatorRecord] = []
        for m in members:
            records += member_removal_records(group.group_id, m.member_id)
        remaining = [m for m in group.members.values() if m.member_id not in gone]
        still_used = group.subscribed_regexes(remaining)
        for regex in group.resolved_regexes:
            if regex not in still_used:
                records.append(group_record(REGULAR_EXPRESSION, group.group_id, regex, None))
        resolved = {r: v.topics for r, v in group.resolved_regexes.items() if r in still_used}
        metadata_hash = Topics(self.image()).group_hash(subscribed_names(remaining, resolved))
        records.append(group_record(GROUP_METADATA, group.group_id, None,
                               GroupMetadataValue(group.group_epoch + 1, metadata_hash)))
        log.info("[GroupId {group}] Bumped group epoch to {epoch}.", group=group.group_id,
                 epoch=group.group_epoch + 1)
        return records

    # -- ConsumerGroupHeartbeat ----------------------------------------------------------

    def heartbeat(self, req: HeartbeatRequest) -> Deferred[HeartbeatResult]:
        try:
            if req.member_epoch in (LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH):
                records, result = self._leave(req)
            else:
                records, result = self._heartbeat(req)
        except HeartbeatError as e:
            return succeed(HeartbeatResult(e.code, e.message))

        def written(error: ErrorCode) -> HeartbeatResult:
            return result if error is ErrorCode.none else HeartbeatResult(error)

        return self._write(req.group_id, records).addCallback(written)

    def group_or_fail(self, group_id: str) -> ConsumerGroup:
        group = self.groups.get(group_id)
        if group is not None:
            return group
        if group_id in self.gc.groups:
            raise HeartbeatError(ErrorCode.group_id_not_found, f"Group {group_id} is not a consumer group.")
        raise HeartbeatError(ErrorCode.group_id_not_found, f"Group {group_id} not found.")

    def _get_or_create_group(self, group_id: str, create: bool, records: list[CoordinatorRecord]
                             ) -> ConsumerGroup:
        group = self.groups.get(group_id)
        if group is not None:
            return group
        classic = self.gc.groups.get(group_id)
        if classic is not None:
            if create and not classic.members:
                # Kafka's maybeDeleteEmptyClassicGroup; committed offsets stay.
                records.append(CoordinatorRecord(GroupMetadataKey(group_id), None))
                log.info("[GroupId {group}] Converted the empty classic group to a consumer group.",
                         group=group_id)
            elif create:
                return self.migration.upgrade(classic, records)
            else:
                raise HeartbeatError(ErrorCode.group_id_not_found,
                                     f"Group {group_id} is not a consumer group.")
        elif not create:
            raise HeartbeatError(ErrorCode.group_id_not_found, f"Consumer group {group_id} not found.")
        return ConsumerGroup(group_id)

    @staticmethod
    def _check_epoch(member: ConsumerMember, epoch: int, owned: Owned) -> None:
        if epoch > member.member_epoch:
            raise HeartbeatError(
                ErrorCode.fenced_member_epoch,
                f"The consumer group member has a greater member epoch ({epoch}) than the one known "
                f"by the group coordinator ({member.member_epoch}). The member must abandon all its "
                f"partitions and rejoin.")
        if epoch < member.member_epoch and (epoch != member.previous_member_epoch
                                            or not is_subset(owned, member.assigned)):
            raise HeartbeatError(
                ErrorCode.fenced_member_epoch,
                f"The consumer group member has a smaller member epoch ({epoch}) than the one known "
                f"by the group coordinator ({member.member_epoch}). The member must abandon all its "
                f"partitions and rejoin.")

    def _member(self, group: ConsumerGroup, req: HeartbeatRequest, member_id: str, create: bool,
                records: list[CoordinatorRecord]) -> tuple[ConsumerMember, ConsumerMember | None]:
        """(the member, the static member it replaces or None)."""
        gid = group.group_id
        if req.instance_id is None:
            member = group.members.get(member_id)
            if member is None:
                if not create:
                    raise HeartbeatError(ErrorCode.unknown_member_id,
                                         f"Member {member_id} is not a member of group {gid}.")
                member = ConsumerMember(member_id)
                log.info("[GroupId {group}] Member {member} joins the consumer group using the consumer "
                         "protocol.", group=gid, member=member_id)
            self._check_epoch(member, req.member_epoch, req.owned)
            return member, None
        existing = group.static_member(req.instance_id)
        if not create:
            if existing is None:
                raise HeartbeatError(ErrorCode.unknown_member_id,
                                     f"Instance id {req.instance_id} is unknown.")
            if existing.member_id != member_id:
                raise HeartbeatError(ErrorCode.fenced_instance_id,
                                     f"Static member {member_id} with instance id {req.instance_id} was "
                                     f"fenced by member {existing.member_id}.")
            self._check_epoch(existing, req.member_epoch, req.owned)
            return existing, None
        if existing is None:
            member = group.members.get(member_id) or ConsumerMember(member_id)
            log.info("[GroupId {group}] Static member {member} with instance id {instance} joins the "
                     "consumer group using the consumer protocol.", group=gid, member=member_id,
                     instance=req.instance_id)
            return member, None
        if existing.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH and not existing.uses_classic_protocol:
            raise HeartbeatError(ErrorCode.unreleased_instance_id,
                                 f"Static member {member_id} with instance id {req.instance_id} cannot "
                                 f"join the group because the instance id is owned by "
                                 f"{existing.member_id} member.")
        return self.replace_static_member(group, existing, member_id, "consumer", records), existing

    def replace_static_member(self, group: ConsumerGroup, existing: ConsumerMember, member_id: str,
                              protocol: str, records: list[CoordinatorRecord]) -> ConsumerMember:
        """Kafka's replaceMember: the new member takes over the old one's target and partitions."""
        gid = group.group_id
        member = dataclasses.replace(existing, member_id=member_id, member_epoch=0, previous_member_epoch=0)
        records += member_removal_records(gid, existing.member_id)
        records.append(group_record(MEMBER_METADATA, gid, member_id, member.subscription_value()))
        records.append(group_record(TARGET_ASSIGNMENT_MEMBER, gid, member_id, TargetAssignmentMemberValue(
            group.target_of(existing.member_id))))
        records.append(group_record(CURRENT_MEMBER_ASSIGNMENT, gid, member_id, member.assignment_value()))
        self._cancel_timers(gid, existing.member_id)
        log.info("[GroupId {group}] Static member with instance id {instance} re-joins the consumer "
                 "group using the {protocol} protocol. Created a new member {new} to replace the "
                 "existing member {old}.", group=gid, instance=existing.instance_id, protocol=protocol,
                 new=member_id, old=existing.member_id)
        return member

    def _heartbeat(self, req: HeartbeatRequest) -> tuple[list[CoordinatorRecord], HeartbeatResult]:
        gid = req.group_id
        records: list[CoordinatorRecord] = []
        create = req.member_epoch == 0
        group = self._get_or_create_group(gid, create, records)
        member_id = req.member_id or new_member_id()
        if len(group.members) >= self.max_size and member_id not in group.members:
            raise HeartbeatError(ErrorCode.group_max_size_reached,
                                 f"The consumer group has reached its maximum capacity of "
                                 f"{self.max_size} members.")
        member, replaced = self._member(group, req, member_id, create, records)
        updated = dataclasses.replace(
            member,
            instance_id=req.instance_id if req.instance_id is not None else member.instance_id,
            rack_id=req.rack_id if req.rack_id is not None else member.rack_id,
            rebalance_timeout_ms=(req.rebalance_timeout_ms if req.rebalance_timeout_ms != -1
                                  else member.rebalance_timeout_ms),
            server_assignor=(req.server_assignor if req.server_assignor is not None
                             else member.server_assignor),
            subscribed_topic_names=(tuple(sorted(set(req.subscribed_topic_names)))
                                    if req.subscribed_topic_names is not None
                                    else member.subscribed_topic_names),
            subscribed_topic_regex=(req.subscribed_topic_regex if req.subscribed_topic_regex is not None
                                    else member.subscribed_topic_regex),
            client_id=req.client_id, client_host=req.client_host,
            classic=None)  # it uses the consumer protocol now, whatever it replaced
        final = self.update_member(group, member, updated, replaced, req.owned, records)
        self._schedule_session(gid, member_id)
        full = (req.rebalance_timeout_ms != -1 and req.owned is not None
                and (req.subscribed_topic_names is not None or req.subscribed_topic_regex is not None))
        send = req.member_epoch == 0 or full or final.assigned != member.assigned
        return records, HeartbeatResult(
            ErrorCode.none, None, member_id, final.member_epoch, self.heartbeat_interval_ms(gid),
            final.assigned if send else None)

    def update_member(self, group: ConsumerGroup, member: ConsumerMember, updated: ConsumerMember,
                      replaced: ConsumerMember | None, owned: Owned, records: list[CoordinatorRecord]
                      ) -> ConsumerMember:
        """Kafka's heartbeat steps, for a ConsumerGroupHeartbeat and a classic member's
        JoinGroup alike: the member's subscription record, the group epoch (bumped when the
        subscriptions or their topics changed), a new target assignment when the group epoch
        is past it, and the member's reconciliation towards its target; the member as it ends."""
        gid = group.group_id
        member_id = updated.member_id
        topics = Topics(self.image())
        bump = group.group_epoch == 0
        if not updated.same_subscription(member) or member.member_id not in group.members:
            records.append(group_record(MEMBER_METADATA, gid, member_id, updated.subscription_value()))
            bump |= updated.subscribed_topic_names != member.subscribed_topic_names
        others = [m for m in group.members.values()
                  if m.member_id not in (member.member_id, replaced.member_id if replaced else None)]
        members_after = [*others, updated]
        resolved, regex_bump = self._update_regexes(group, member, updated, members_after, topics, records)
        bump |= regex_bump
        metadata_hash = group.metadata_hash
        if bump or group.checked_image is not topics.image:
            metadata_hash = topics.group_hash(subscribed_names(members_after, resolved))
            bump |= metadata_hash != group.metadata_hash
        group.checked_image = topics.image
        group_epoch = group.group_epoch
        if bump:
            group_epoch += 1
            records.append(group_record(GROUP_METADATA, gid, None,
                                        GroupMetadataValue(group_epoch, metadata_hash)))
            log.info("[GroupId {group}] Bumped group epoch to {epoch}.", group=gid, epoch=group_epoch)
        if group_epoch > group.target_epoch:
            target = self._new_target(group, group_epoch, members_after, resolved, topics, replaced, records)
            target_epoch = group_epoch
        else:
            target_epoch = group.target_epoch
            target = group.target_of(updated.member_id, updated.instance_id)
        final = updated
        if not updated.is_reconciled_to(target_epoch):
            try:
                final = reconcile(updated, target_epoch, target, group.current_partition_epoch, owned)
            except FencedMemberEpoch as e:
                raise HeartbeatError(ErrorCode.fenced_member_epoch, str(e)) from None
        if final.assignment_value() != member.assignment_value() or member.member_id not in group.members:
            records.append(group_record(CURRENT_MEMBER_ASSIGNMENT, gid, member_id, final.assignment_value()))
            # A classic member has join and sync timers instead (classic_members.py).
            if final.state == UNREVOKED_PARTITIONS and not final.uses_classic_protocol:
                self._schedule_rebalance(gid, final)
            else:
                self.gc._cancel_timer(("consumer-rebalance", gid, member_id))
        return final

    def _update_regexes(self, group: ConsumerGroup, member: ConsumerMember, updated: ConsumerMember,
                        members_after: Sequence[ConsumerMember], topics: Topics,
                        records: list[CoordinatorRecord]) -> tuple[dict[str, frozenset[str]], bool]:
        """The group's regexes resolved against the current topics (those a member subscribes to
        after this heartbeat), and whether the group epoch must be bumped for them.  Kafka
        resolves them off the request path at most every 10 s; akfak resolves them in the
        heartbeat whenever the topics changed, a scan of the topic names."""
        gid = group.group_id
        bump = False
        old_regex, new_regex = member.subscribed_topic_regex, updated.subscribed_topic_regex
        used = group.subscribed_regexes(members_after)
        if old_regex != new_regex:
            if old_regex and old_regex not in used and old_regex in group.resolved_regexes:
                records.append(group_record(REGULAR_EXPRESSION, gid, old_regex, None))
            if new_regex and group.regex_subscribers(new_regex) == 0 \
                    and (error := syntax_error(new_regex)) is not None:
                raise HeartbeatError(ErrorCode.invalid_regular_expression,
                                     f"SubscribedTopicRegex `{new_regex}` is not a valid regular "
                                     f"expression: {error}.")
            if new_regex and new_regex in group.resolved_regexes:
                bump = True
        resolved = {r: v.topics for r, v in group.resolved_regexes.items() if r in used}
        stale = self.regexes_checked.get(gid) != topics.version
        for regex in used:
            if regex in resolved and not stale:
                continue
            pattern = compile_regex(regex)
            matched = topics.matching(pattern) if pattern is not None else frozenset()
            if resolved.get(regex) != matched:
                bump = True
                resolved[regex] = matched
                records.append(group_record(REGULAR_EXPRESSION, gid, regex, RegularExpressionValue(
                    tuple(sorted(matched)), topics.version, self.gc.now_ms())))
        self.regexes_checked[gid] = topics.version
        return resolved, bump

    def _new_target(self, group: ConsumerGroup, epoch: int, members: Sequence[ConsumerMember],
                    resolved: Mapping[str, frozenset[str]], topics: Topics, replaced: ConsumerMember | None,
                    records: list[CoordinatorRecord]) -> Partitions:
        """Kafka's TargetAssignmentBuilder: the assignor's answer for every member; the
        members whose target changed get a record, then the target epoch."""
        gid = group.group_id
        name = group.preferred_assignor(members) or self.assignor_names[0]
        specs = []
        wanted: dict[uuid.UUID, int] = {}
        for m in members:
            names = set(m.subscribed_topic_names)
            if m.subscribed_topic_regex:
                names |= resolved.get(m.subscribed_topic_regex, frozenset())
            ids = topics.ids(names)
            for topic_id in ids:
                wanted[topic_id] = topics.num_partitions(topic_id)
            current = group.target.get(m.member_id)
            if current is None and replaced is not None and m.instance_id == replaced.instance_id:
                current = group.target.get(replaced.member_id)
            specs.append(assignors.MemberSpec(m.member_id, m.instance_id, ids, current or {}))
        result = assignors.assign(name, specs, wanted)
        for m in members:
            new = result.get(m.member_id, {})
            if m.member_id not in group.target or group.target[m.member_id] != new:
                records.append(group_record(TARGET_ASSIGNMENT_MEMBER, gid, m.member_id,
                                       TargetAssignmentMemberValue(new)))
        records.append(group_record(TARGET_ASSIGNMENT_METADATA, gid, None,
                                    TargetAssignmentMetadataValue(epoch)))
        log.info("[GroupId {group}] Computed a new target assignment for epoch {epoch} with '{name}' "
                 "assignor.", group=gid, epoch=epoch, name=name)
        return result.get(members[-1].member_id, {})

    def _leave(self, req: HeartbeatRequest) -> tuple[list[CoordinatorRecord], HeartbeatResult]:
        group = self.group_or_fail(req.group_id)
        result = HeartbeatResult(ErrorCode.none, None, req.member_id, req.member_epoch)
        if req.instance_id is None:
            member = group.members.get(req.member_id)
            if member is None:
                raise HeartbeatError(ErrorCode.unknown_member_id,
                                     f"Member {req.member_id} is not a member of group {req.group_id}.")
            log.info("[GroupId {group}] Member {member} left the consumer group.", group=req.group_id,
                     member=req.member_id)
            return self.fence_records(group, [member]), result
        member = group.static_member(req.instance_id)
        if member is None:
            raise HeartbeatError(ErrorCode.unknown_member_id, f"Instance id {req.instance_id} is unknown.")
        if member.member_id != req.member_id:
            raise HeartbeatError(ErrorCode.fenced_instance_id,
                                 f"Static member {req.member_id} with instance id {req.instance_id} was "
                                 f"fenced by member {member.member_id}.")
        if req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH:
            log.info("[GroupId {group}] Static member {member} with instance id {instance} temporarily "
                     "left the consumer group.", group=req.group_id, member=req.member_id,
                     instance=req.instance_id)
            leaving = dataclasses.replace(member, member_epoch=LEAVE_GROUP_STATIC_MEMBER_EPOCH,
                                          pending_revocation={})
            return ([group_record(CURRENT_MEMBER_ASSIGNMENT, req.group_id, member.member_id,
                             leaving.assignment_value())],
                    HeartbeatResult(ErrorCode.none, None, member.member_id, LEAVE_GROUP_STATIC_MEMBER_EPOCH))
        log.info("[GroupId {group}] Static member {member} with instance id {instance} left the consumer "
                 "group.", group=req.group_id, member=req.member_id, instance=req.instance_id)
        return self.fence_records(group, [member]), result

    # -- deletion ----------------------------------------------------------------------------

    def delete(self, group: ConsumerGroup) -> Deferred[ErrorCode]:
        """DeleteGroups of an Empty group: its offsets and records go."""
        return self._write(group.group_id, deletion_records(group, self.gc.offsets.get(group.group_id, {})))

    def drop_empty(self, group: ConsumerGroup) -> None:
        """Kafka's maybeDeleteEmptyConsumerGroup: a classic join replaces an Empty consumer
        group (its committed offsets stay)."""
        self._write(group.group_id, deletion_records(group, {}))
        log.info("[GroupId {group}] Converted the empty consumer group to a classic group.",
                 group=group.group_id)
