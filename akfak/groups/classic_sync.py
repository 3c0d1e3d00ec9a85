"""SyncGroup, Heartbeat and LeaveGroup of classic groups, as Kafka answers them.

SyncGroup's leader hands out the assignment, written as the group's GroupMetadata
record before anyone is answered; followers wait for it.  A Heartbeat keeps a
member's session and tells it to rejoin while its group rebalances; LeaveGroup
removes members (by member id or, v3+, by group instance id) and starts a rebalance.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.coordinator.runtime import append_error
from akfak.groups.consumer_coordinator import ConsumerGroups
from akfak.groups.group import ClassicGroup, GroupError, GroupState
from akfak.groups.results import (
    JoinResult,
    LeaveMemberResult,
    LeaveResult,
    SyncResult,
)

log = Logger()


class ClassicSync:
    """SyncGroup, Heartbeat and LeaveGroup (a GroupCoordinator part)."""

    # state the GroupCoordinator holds
    groups: dict[str, ClassicGroup]
    consumer: ConsumerGroups

    # -- SyncGroup -------------------------------------------------------------------

    def sync_group(self, group_id: str, generation_id: int, member_id: str,
                   group_instance_id: str | None, assignments: Iterable[tuple[str, bytes]], *,
                   protocol_type: str | None = None,
                   protocol_name: str | None = None) -> Deferred[SyncResult]:
        error = self._status(group_id)
        if error is ErrorCode.coordinator_load_in_progress:
            # The rebalance in progress was lost with the old state: make the member rejoin.
            return succeed(SyncResult(ErrorCode.rebalance_in_progress))
        if error is not None:
            return succeed(SyncResult(error))
        consumer_group = self.consumer.groups.get(group_id)
        if consumer_group is not None:
            if not consumer_group.members:
                return succeed(SyncResult(ErrorCode.unknown_member_id))
            return succeed(self.consumer.classic.sync(consumer_group, generation_id, member_id,
                                                      group_instance_id, protocol_type, protocol_name))
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.EMPTY:
            return succeed(SyncResult(ErrorCode.unknown_member_id))
        try:
            group.validate_member(member_id, group_instance_id)
        except GroupError as e:
            return succeed(SyncResult(e.code))
        if generation_id != group.generation_id:
            return succeed(SyncResult(ErrorCode.illegal_generation))
        if ((protocol_type is not None and protocol_type != group.protocol_type)
                or (protocol_name is not None and protocol_name != group.protocol_name)):
            return succeed(SyncResult(ErrorCode.inconsistent_group_protocol))
        if group.state is GroupState.PREPARING_REBALANCE:
            return succeed(SyncResult(ErrorCode.rebalance_in_progress))
        member = group.members[member_id]
        if group.state is GroupState.STABLE:
            self._remove_pending_sync_member(group, member_id)
            return succeed(SyncResult(ErrorCode.none, member.assignment, group.protocol_type,
                                      group.protocol_name))
        # CompletingRebalance: wait for the leader's assignment.
        deferred: Deferred[SyncResult] = Deferred()
        if member.sync_deferred is not None:
            group.complete_sync(member, SyncResult(ErrorCode.rebalance_in_progress))
        member.sync_deferred = deferred
        self._remove_pending_sync_member(group, member_id)
        if group.is_leader(member_id):
            assignment = {str(m): bytes(a) for m, a in assignments}
            missing = [m for m in group.members if m not in assignment]
            for m in missing:
                assignment[m] = b""
            if missing:
                log.warn("Setting empty assignments for members {members} of group {group} for "
                         "generation {generation}", members=missing, group=group_id,
                         generation=group.generation_id)
            log.info("Assignment received from leader {leader} for group {group} for generation "
                     "{generation}", leader=member_id, group=group_id, generation=generation_id)

            def written(result: Any) -> None:
                # Another member may have joined while the record was written.
                if group.state is not GroupState.COMPLETING_REBALANCE or group.generation_id != generation_id:
                    return
                if isinstance(result, Failure):
                    write_error = append_error(result)
                    self._reset_and_propagate_assignment_error(group, write_error)
                    self._maybe_prepare_rebalance_or_complete_join(
                        group, f"error {write_error.name} storing the group assignment")
                    return
                for m in group.members.values():
                    m.assignment = assignment.get(m.member_id, b"")
                self._propagate_assignment(group, ErrorCode.none)
                group.transition_to(GroupState.STABLE, self.now_ms())

            self._append(group_id, [self._group_metadata_record(group, assignment)]).addBoth(written)
        return deferred

    def _remove_pending_sync_member(self, group: ClassicGroup, member_id: str) -> None:
        group.pending_sync_members.discard(member_id)
        if (group.is_in(GroupState.DEAD, GroupState.EMPTY, GroupState.PREPARING_REBALANCE)
                or group.has_received_sync_from_all()):
            self._cancel_timer(("sync", group.group_id))

    # -- Heartbeat -------------------------------------------------------------------

    def heartbeat(self, group_id: str, generation_id: int, member_id: str,
                  group_instance_id: str | None) -> ErrorCode:
        error = self._status(group_id)
        if error is ErrorCode.coordinator_load_in_progress:
            return ErrorCode.none  # the group is still loading: answer blindly, as Kafka does
        if error is not None:
            return error
        consumer_group = self.consumer.groups.get(group_id)
        if consumer_group is not None:
            return self.consumer.classic.heartbeat(consumer_group, generation_id, member_id,
                                                   group_instance_id)
        group = self.groups.get(group_id)
        if group is None:
            return ErrorCode.unknown_member_id
        if group.state is GroupState.DEAD:
            return ErrorCode.coordinator_not_available
        try:
            group.validate_member(member_id, group_instance_id)
        except GroupError as e:
            return e.code
        if generation_id != group.generation_id:
            return ErrorCode.illegal_generation
        if group.state is GroupState.EMPTY:
            return ErrorCode.unknown_member_id
        self._reschedule_heartbeat(group, group.members[member_id])
        if group.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.rebalance_in_progress
        return ErrorCode.none

    # -- LeaveGroup ------------------------------------------------------------------

    def leave_group(self, group_id: str, members: Sequence[tuple[str, str | None, str | None]]
                    ) -> LeaveResult | Deferred[LeaveResult]:
        """`members`: (member id, group instance id, reason).  Fires once written for a
        consumer group's classic members."""
        error = self._status(group_id)
        if error is not None:
            return LeaveResult(error)
        consumer_group = self.consumer.groups.get(group_id)
        if consumer_group is not None:
            return self.consumer.classic.leave(consumer_group, members)
        group = self.groups.get(group_id)
        if group is None:
            return LeaveResult(ErrorCode.none, tuple(
                LeaveMemberResult(m, i, ErrorCode.unknown_member_id) for m, i, _ in members))
        if group.state is GroupState.DEAD:
            return LeaveResult(ErrorCode.coordinator_not_available)
        results = []
        for member_id, instance_id, reason in members:
            reason = reason or "not provided"
            if member_id == "":
                # Administrative removal of a static member by its instance id.
                if instance_id is not None and instance_id in group.static_members:
                    self._remove_current_member(group, group.static_members[instance_id], reason)
                    results.append(LeaveMemberResult(member_id, instance_id, ErrorCode.none))
                else:
                    results.append(LeaveMemberResult(member_id, instance_id, ErrorCode.unknown_member_id))
            elif member_id in group.pending_join_members:
                group.pending_join_members.discard(member_id)
                self._cancel_heartbeat(group, member_id)
                log.info("Pending member {member} has left group {group}; client reason: {reason}",
                         member=member_id, group=group_id, reason=reason)
                results.append(LeaveMemberResult(member_id, instance_id, ErrorCode.none))
            else:
                try:
                    group.validate_member(member_id, instance_id)
                except GroupError as e:
                    results.append(LeaveMemberResult(member_id, instance_id, e.code))
                    continue
                self._remove_current_member(group, member_id, reason)
                results.append(LeaveMemberResult(member_id, instance_id, ErrorCode.none))
        left = [r.member_id for r in results if r.error is ErrorCode.none]
        if left:
            reason = f"explicit LeaveGroup request for ({', '.join(left)}) members"
            if group.is_in(GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
                self._maybe_prepare_rebalance_or_complete_join(group, reason)
            elif group.state is GroupState.PREPARING_REBALANCE:
                self._maybe_complete_join_phase(group)
        return LeaveResult(ErrorCode.none, tuple(results))

    def _remove_current_member(self, group: ClassicGroup, member_id: str, reason: str) -> None:
        member = group.members[member_id]
        self._cancel_heartbeat(group, member_id)
        log.info("Member {member} has left group {group} through LeaveGroup; client reason: {reason}",
                 member=member_id, group=group.group_id, reason=reason)
        group.complete_join(member, JoinResult(ErrorCode.unknown_member_id, ""))
        group.complete_sync(member, SyncResult(ErrorCode.unknown_member_id))
        group.remove(member_id)
