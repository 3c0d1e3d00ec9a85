"""JoinGroup and the classic rebalance, as Kafka's GroupMetadataManager runs them.

A rebalance moves a group from Stable (or Empty) through PreparingRebalance, where
members (re)join within the rebalance timeout, to CompletingRebalance, where the
leader's SyncGroup hands out the assignment.  New members get a member id first
(KIP-394) and may only then join; static members (KIP-345) keep their place across
restarts under `group.instance.id`, the old member id fenced.  The first rebalance of
an empty group waits `group.initial.rebalance.delay.ms` for more members.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.coordinator.runtime import append_error
from akfak.groups.classic_members import ClassicJoin
from akfak.groups.consumer_coordinator import ConsumerGroups
from akfak.groups.group import ClassicGroup, GroupError, GroupState, Member, Protocols
from akfak.groups.records import (
    CoordinatorRecord,
    GroupMetadataKey,
    GroupMetadataValue,
)
from akfak.groups.results import (
    JoinMember,
    JoinResult,
    SyncResult,
)

log = Logger()

#: Kafka's classic-group new-member join timeout: a JoinGroup of a new member is
#: given up after this long (its client may have gone away while it waited).
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000


class ClassicRebalance:
    """JoinGroup and the rebalance state machine (a GroupCoordinator part)."""

    # state the GroupCoordinator holds
    groups: dict[str, ClassicGroup]
    consumer: ConsumerGroups
    initial_rebalance_delay_ms: int
    min_session_timeout_ms: int
    max_session_timeout_ms: int
    max_group_size: int

    # -- JoinGroup -------------------------------------------------------------------

    def join_group(self, group_id: str, member_id: str, group_instance_id: str | None, *,
                   client_id: str, client_host: str, session_timeout_ms: int,
                   rebalance_timeout_ms: int, protocol_type: str, protocols: Protocols,
                   version: int, reason: str | None = None) -> Deferred[JoinResult]:
        error = self._status(group_id)
        if error is not None:
            return succeed(JoinResult(error, member_id))
        if not self.min_session_timeout_ms <= session_timeout_ms <= self.max_session_timeout_ms:
            return succeed(JoinResult(ErrorCode.invalid_session_timeout, member_id))
        consumer_group = self.consumer.groups.get(group_id)
        if consumer_group is not None:
            if consumer_group.members:
                # A classic member of a consumer group (classic_members.py)
                return self.consumer.classic.join(consumer_group, ClassicJoin(
                    group_id, member_id, group_instance_id, client_id, client_host, session_timeout_ms,
                    rebalance_timeout_ms, protocol_type,
                    tuple((str(name), bytes(meta)) for name, meta in protocols), version))
            self.consumer.drop_empty(consumer_group)  # an empty one becomes a classic group
        group = self.groups.get(group_id)
        is_unknown_member = member_id == ""
        is_new_group = group is None
        if group is None:
            if not is_unknown_member:
                return succeed(JoinResult(ErrorCode.unknown_member_id, member_id))
            group = ClassicGroup(group_id, self.now_ms())
            self.groups[group_id] = group
        protocols = tuple((str(name), bytes(meta)) for name, meta in protocols)
        request = _JoinRequest(member_id, group_instance_id, client_id, client_host, session_timeout_ms,
                               rebalance_timeout_ms, protocol_type, protocols, version, reason or "")
        if not self._accept_joining_member(group, member_id):
            self._remove_member_silently(group, member_id)
            result: Deferred[JoinResult] = succeed(JoinResult(ErrorCode.group_max_size_reached, ""))
        elif is_unknown_member:
            result = self._join_new_member(group, request)
        else:
            result = self._join_existing_member(group, request)
        if is_new_group:
            # Kafka commits a newly created group with an empty GroupMetadata record.
            empty = GroupMetadataValue("", 0, None, None, group.state_timestamp or -1)
            self._append(group_id, [CoordinatorRecord(GroupMetadataKey(group_id), empty)]).addErrback(
                self._log_write_failure, group_id)
        return result

    def _accept_joining_member(self, group: ClassicGroup, member_id: str) -> bool:
        if group.is_in(GroupState.EMPTY, GroupState.DEAD):
            return True
        member = group.members.get(member_id)
        if group.state is GroupState.PREPARING_REBALANCE:
            return ((member is not None and member.is_awaiting_join)
                    or group.num_awaiting_join < self.max_group_size)
        return member is not None or len(group.members) < self.max_group_size

    def _remove_member_silently(self, group: ClassicGroup, member_id: str) -> None:
        if group.remove(member_id) is not None:
            self._cancel_heartbeat(group, member_id)

    def _join_new_member(self, group: ClassicGroup, req: _JoinRequest) -> Deferred[JoinResult]:
        if group.state is GroupState.DEAD:
            return succeed(JoinResult(ErrorCode.coordinator_not_available, ""))
        if not group.supports_protocols(req.protocol_type, [n for n, _ in req.protocols]):
            return succeed(JoinResult(ErrorCode.inconsistent_group_protocol, ""))
        new_member_id = group.generate_member_id(req.client_id, req.group_instance_id)
        if req.group_instance_id is not None:
            existing = group.static_members.get(req.group_instance_id)
            if existing is not None:
                log.info("Static member {instance} of group {group} rejoins with an unknown member id "
                         "in state {state}: replacing member {old} with {new}",
                         instance=req.group_instance_id, group=group.group_id, state=group.state,
                         old=existing, new=new_member_id)
                return self._update_static_member(group, req, existing, new_member_id)
            return self._add_member_then_rebalance(group, req, new_member_id)
        if req.version >= 4:
            # KIP-394: the member must come back with the id it is given.
            group.pending_join_members.add(new_member_id)
            self._set_timer(("heartbeat", group.group_id, new_member_id), req.session_timeout_ms,
                            self._expire_heartbeat, group.group_id, new_member_id)
            return succeed(JoinResult(ErrorCode.member_id_required, new_member_id))
        return self._add_member_then_rebalance(group, req, new_member_id)

    def _join_existing_member(self, group: ClassicGroup, req: _JoinRequest) -> Deferred[JoinResult]:
        member_id = req.member_id
        if group.state is GroupState.DEAD:
            return succeed(JoinResult(ErrorCode.coordinator_not_available, member_id))
        if not group.supports_protocols(req.protocol_type, [n for n, _ in req.protocols]):
            return succeed(JoinResult(ErrorCode.inconsistent_group_protocol, member_id))
        if member_id in group.pending_join_members:
            if req.group_instance_id is not None:
                return succeed(JoinResult(ErrorCode.unknown_server_error, member_id))
            return self._add_member_then_rebalance(group, req, member_id)
        try:
            group.validate_member(member_id, req.group_instance_id)
        except GroupError as e:
            return succeed(JoinResult(e.code, member_id))
        member = group.members[member_id]
        if group.state is GroupState.PREPARING_REBALANCE:
            return self._update_member_then_rebalance(
                group, member, req, f"member {member_id} is joining during {group.state}")
        if group.state is GroupState.COMPLETING_REBALANCE:
            if member.matches(req.protocols):
                # The same metadata: it probably missed the JoinGroup response; answer again.
                return succeed(self._join_response(group, member_id, with_members=group.is_leader(member_id)))
            return self._update_member_then_rebalance(
                group, member, req, f"member {member_id} changed its metadata during {group.state}")
        if group.state is GroupState.STABLE:
            if group.is_leader(member_id) or not member.matches(req.protocols):
                # A rejoining leader forces a rebalance (topic metadata changes reach
                # the assignment this way), as does changed member metadata.
                return self._update_member_then_rebalance(
                    group, member, req, f"member {member_id} rejoins during {group.state}")
            return succeed(self._join_response(group, member_id, with_members=False))
        log.warn("Member {member} of group {group} rejoins in unexpected state {state}",
                 member=member_id, group=group.group_id, state=group.state)
        return succeed(JoinResult(ErrorCode.unknown_member_id, member_id))

    def _join_response(self, group: ClassicGroup, member_id: str, *, with_members: bool,
                       leader: str | None = None, skip_assignment: bool = False) -> JoinResult:
        members = tuple(JoinMember(*m) for m in group.current_members_metadata()) if with_members else ()
        return JoinResult(ErrorCode.none, member_id, group.generation_id, group.protocol_type,
                          group.protocol_name, (leader if leader is not None else group.leader_id) or "",
                          skip_assignment, members)

    def _add_member_then_rebalance(self, group: ClassicGroup, req: _JoinRequest,
                                   member_id: str) -> Deferred[JoinResult]:
        member = Member(member_id, req.group_instance_id, req.client_id, req.client_host,
                        req.rebalance_timeout_ms, req.session_timeout_ms, req.protocol_type,
                        req.protocols, is_new=True)
        if group.state is GroupState.PREPARING_REBALANCE and group.previous_state is GroupState.EMPTY:
            group.new_member_added = True  # lets the initial rebalance wait a little longer
        deferred: Deferred[JoinResult] = Deferred()
        group.add(member, deferred)
        # The session timeout cannot apply to a member that has no id yet to heartbeat
        # with; a long-waiting new member is dropped after this timeout instead.
        self._reschedule_heartbeat(group, member, NEW_MEMBER_JOIN_TIMEOUT_MS)
        self._maybe_prepare_rebalance_or_complete_join(
            group, f"adding new member {member_id} with group instance id {req.group_instance_id}; "
                   f"client reason: {req.reason or 'not provided'}")
        return deferred

    def _update_member_then_rebalance(self, group: ClassicGroup, member: Member, req: _JoinRequest,
                                      reason: str) -> Deferred[JoinResult]:
        deferred: Deferred[JoinResult] = Deferred()
        group.update_member(member, req.protocols, req.rebalance_timeout_ms, req.session_timeout_ms,
                            deferred)
        self._maybe_prepare_rebalance_or_complete_join(
            group, f"{reason}; client reason: {req.reason or 'not provided'}")
        return deferred

    def _update_static_member(self, group: ClassicGroup, req: _JoinRequest, old_member_id: str,
                              new_member_id: str) -> Deferred[JoinResult]:
        assert req.group_instance_id is not None
        instance_id = req.group_instance_id
        current_leader = group.leader_id
        self._cancel_heartbeat(group, old_member_id)
        member = group.replace_static_member(instance_id, old_member_id, new_member_id, self._fence)
        self._reschedule_heartbeat(group, member)
        old = (member.protocols, member.rebalance_timeout_ms, member.session_timeout_ms)
        deferred: Deferred[JoinResult] = Deferred()
        group.update_member(member, req.protocols, req.rebalance_timeout_ms, req.session_timeout_ms,
                            deferred)
        if group.state is GroupState.STABLE:
            if group.protocol_name == group.select_protocol():
                # Same protocol: no rebalance, only the new member id is persisted.
                log.info("Static member {instance} rejoins stable group {group} without a rebalance",
                         instance=instance_id, group=group.group_id)
                generation = group.generation_id
                written = self._append(group.group_id,
                                       [self._group_metadata_record(group, group.assignments())])

                def persisted(_: Any) -> None:
                    if req.version >= 9:
                        is_leader = group.is_leader(new_member_id)
                        group.complete_join(member, self._join_response(
                            group, new_member_id, with_members=is_leader, skip_assignment=is_leader))
                    else:
                        # The old leader id keeps a rejoining static leader from assigning
                        # (an assignment now would not be propagated by a stable group).
                        group.complete_join(member, self._join_response(
                            group, new_member_id, with_members=False, leader=current_leader))

                def failed(failure: Failure) -> None:
                    error = append_error(failure)
                    log.warn("Persisting static member {instance} of group {group} failed: {error}; "
                             "reverting to member id {old}", instance=instance_id, group=group.group_id,
                             error=error.name, old=old_member_id)
                    if group.members.get(new_member_id) is not member:
                        group.complete_join(member, JoinResult(error, ""))
                        return
                    group.update_member(member, old[0], old[1], old[2], None)
                    self._cancel_heartbeat(group, new_member_id)
                    restored = group.replace_static_member(instance_id, new_member_id, old_member_id,
                                                           lambda _m: None)
                    self._reschedule_heartbeat(group, restored)
                    deferred.callback(JoinResult(error, "", generation, group.protocol_type,
                                                 group.protocol_name, current_leader or ""))

                written.addCallbacks(persisted, failed)
                return deferred
            self._maybe_prepare_rebalance_or_complete_join(
                group, f"static member {new_member_id} with instance id {instance_id} joined with a "
                       f"change of protocol")
        elif group.state is GroupState.COMPLETING_REBALANCE:
            # The leader may be assigning with the old member id: start over.
            self._prepare_rebalance(group, f"static member {instance_id} rejoined with new member id "
                                           f"{new_member_id} during {group.state}")
        self._maybe_complete_join_phase(group)
        return deferred

    def _fence(self, member: Member) -> None:
        """Answer whoever still waits as a replaced static member: FENCED_INSTANCE_ID."""
        member.join_deferred, join = None, member.join_deferred
        if join is not None and not join.called:
            join.callback(JoinResult(ErrorCode.fenced_instance_id, member.member_id))
        member.sync_deferred, sync = None, member.sync_deferred
        if sync is not None and not sync.called:
            sync.callback(SyncResult(ErrorCode.fenced_instance_id))

    # -- the rebalance ---------------------------------------------------------------

    def _maybe_prepare_rebalance_or_complete_join(self, group: ClassicGroup, reason: str) -> None:
        if group.can_rebalance():
            self._prepare_rebalance(group, reason)
        else:
            self._maybe_complete_join_phase(group)

    def _maybe_complete_join_phase(self, group: ClassicGroup) -> None:
        if group.state is not GroupState.PREPARING_REBALANCE:
            return
        if group.previous_state is GroupState.EMPTY:
            return  # the initial rebalance completes on its delay timer
        if group.has_all_members_joined():
            self._complete_join(group)

    def _prepare_rebalance(self, group: ClassicGroup, reason: str) -> None:
        if group.state is GroupState.COMPLETING_REBALANCE:
            self._reset_and_propagate_assignment_error(group, ErrorCode.rebalance_in_progress)
        group.pending_sync_members.clear()
        self._cancel_timer(("sync", group.group_id))
        initial = group.state is GroupState.EMPTY
        if initial:
            delay = self.initial_rebalance_delay_ms
            remaining = max(group.rebalance_timeout_ms() - delay, 0)
            self._set_timer(("join", group.group_id), delay, self._try_complete_initial_rebalance,
                            group.group_id, delay, remaining)
        group.transition_to(GroupState.PREPARING_REBALANCE, self.now_ms())
        log.info("Preparing to rebalance group {group} with old generation {generation} "
                 "(__consumer_offsets-{partition}) (reason: {reason})", group=group.group_id,
                 generation=group.generation_id, partition=self.partition_for(group.group_id),
                 reason=reason)
        if not initial:
            if group.has_all_members_joined():
                self._complete_join(group)
            else:
                self._set_timer(("join", group.group_id), group.rebalance_timeout_ms(),
                                self._complete_join_by_id, group.group_id)

    def _try_complete_initial_rebalance(self, group_id: str, delay_ms: int, remaining_ms: int) -> None:
        group = self.groups.get(group_id)
        if group is None:
            return
        if group.new_member_added and remaining_ms != 0:
            # Members are still arriving: wait another delay (Kafka's InitialDelayedJoin).
            group.new_member_added = False
            new_delay = min(self.initial_rebalance_delay_ms, remaining_ms)
            new_remaining = max(remaining_ms - delay_ms, 0)
            self._set_timer(("join", group_id), new_delay, self._try_complete_initial_rebalance,
                            group_id, new_delay, new_remaining)
        else:
            self._complete_join(group)

    def _complete_join_by_id(self, group_id: str) -> None:
        group = self.groups.get(group_id)
        if group is not None:
            self._complete_join(group)

    def _complete_join(self, group: ClassicGroup) -> None:
        """End the join phase: drop dynamic members that did not rejoin, start the
        next generation, answer every waiting JoinGroup (the leader gets the members)."""
        self._cancel_timer(("join", group.group_id))
        gone = [m for m in group.not_yet_rejoined() if not m.is_static]
        for member in gone:
            group.remove(member.member_id)
            self._cancel_heartbeat(group, member.member_id)
        if gone:
            log.info("Group {group} removed dynamic members who did not rejoin: {members}",
                     group=group.group_id, members=[m.member_id for m in gone])
        if group.state is GroupState.DEAD:
            return
        if not group.maybe_elect_new_joined_leader() and group.members:
            # No member rejoined: wait for session timeouts to remove the silent ones.
            log.error("Group {group} could not complete rebalance because no members rejoined",
                      group=group.group_id)
            self._set_timer(("join", group.group_id), group.rebalance_timeout_ms(),
                            self._complete_join_by_id, group.group_id)
            return
        group.init_next_generation(self.now_ms())
        if group.state is GroupState.EMPTY:
            log.info("Group {group} with generation {generation} is now empty", group=group.group_id,
                     generation=group.generation_id)
            self._append(group.group_id, [self._group_metadata_record(group, {})]).addErrback(
                self._log_write_failure, group.group_id)
            return
        log.info("Stabilized group {group} generation {generation} with {n} members",
                 group=group.group_id, generation=group.generation_id, n=len(group.members))
        for member in list(group.members.values()):
            group.complete_join(member, self._join_response(
                group, member.member_id, with_members=group.is_leader(member.member_id)))
            self._reschedule_heartbeat(group, member)
            member.is_new = False
            group.pending_sync_members.add(member.member_id)
        self._set_timer(("sync", group.group_id), group.rebalance_timeout_ms(),
                        self._expire_pending_sync, group.group_id, group.generation_id)

    def _expire_pending_sync(self, group_id: str, generation_id: int) -> None:
        group = self.groups.get(group_id)
        if group is None or group.generation_id != generation_id:
            return
        if not group.is_in(GroupState.COMPLETING_REBALANCE, GroupState.STABLE):
            return
        if group.has_received_sync_from_all():
            return
        missing = sorted(group.pending_sync_members)
        for member_id in missing:
            group.remove(member_id)
            self._cancel_heartbeat(group, member_id)
        self._prepare_rebalance(group, f"removing {missing} on pending sync request expiration")

    def _reset_and_propagate_assignment_error(self, group: ClassicGroup, error: ErrorCode) -> None:
        for member in group.members.values():
            member.assignment = b""
        self._propagate_assignment(group, error)

    def _propagate_assignment(self, group: ClassicGroup, error: ErrorCode) -> None:
        ok = error is ErrorCode.none
        for member in list(group.members.values()):
            result = SyncResult(error, member.assignment,
                                group.protocol_type if ok else None, group.protocol_name if ok else None)
            if group.complete_sync(member, result):
                # Sessions restart once the assignment is out: an expiry that happened
                # while the member waited was ignored and must be rescheduled.
                self._reschedule_heartbeat(group, member)

    def _expire_heartbeat(self, group_id: str, member_id: str) -> None:
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            return
        if member_id in group.pending_join_members:
            log.info("Pending member {member} of group {group} removed after its session timeout",
                     member=member_id, group=group_id)
            group.pending_join_members.discard(member_id)
            if group.state is GroupState.PREPARING_REBALANCE and group.has_all_members_joined():
                self._complete_join(group)
            return
        member = group.members.get(member_id)
        if member is None or member.has_satisfied_heartbeat():
            return
        log.info("Member {member} of group {group} has failed (session timeout), removing it",
                 member=member_id, group=group_id)
        self._remove_member_and_update_group(group, member, f"removing member {member_id} on "
                                                            f"heartbeat expiration")

    def _remove_member_and_update_group(self, group: ClassicGroup, member: Member, reason: str) -> None:
        # A new member may still wait for its JoinGroup: answer it so a live client rejoins.
        group.complete_join(member, JoinResult(ErrorCode.unknown_member_id, ""))
        group.remove(member.member_id)
        if group.is_in(GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._maybe_prepare_rebalance_or_complete_join(group, reason)
        elif group.state is GroupState.PREPARING_REBALANCE and group.has_all_members_joined():
            self._complete_join(group)


class _JoinRequest:
    __slots__ = ("client_host", "client_id", "group_instance_id", "member_id", "protocol_type",
                 "protocols", "reason", "rebalance_timeout_ms", "session_timeout_ms", "version")

    def __init__(self, member_id: str, group_instance_id: str | None, client_id: str, client_host: str,
                 session_timeout_ms: int, rebalance_timeout_ms: int, protocol_type: str,
                 protocols: Protocols, version: int, reason: str):
        self.member_id = member_id
        self.group_instance_id = group_instance_id
        self.client_id = client_id
        self.client_host = client_host
        self.session_timeout_ms = session_timeout_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.protocol_type = protocol_type
        self.protocols = protocols
        self.version = version
        self.reason = reason
