"""The group coordinator: the classic group protocol as Apache Kafka runs it.

One coordinator serves every group of a single broker; in a cluster, the groups of the
`__consumer_offsets` partitions this broker leads (others: NOT_COORDINATOR; runtime.py).
It follows Kafka's GroupMetadataManager for membership (join, sync, heartbeat, leave, the
initial rebalance delay, rebalance and session timeouts, static membership) and
OffsetMetadataManager for committed offsets (commit, fetch, delete, expiry).

Its state is kept in `__consumer_offsets` as Kafka keeps it: GroupMetadata records
when a generation is assigned or a group empties, OffsetCommit records for
commits, tombstones for deletions.  At start every partition is replayed (the
latest value per key wins) in small steps on the reactor; meanwhile requests for
the groups of a partition still loading are answered COORDINATOR_LOAD_IN_PROGRESS.

Timers (rebalance, initial delay, session, pending sync) run on the broker's
clock, so tests drive them with `twisted.internet.task.Clock`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.config import BrokerConfig
from akfak.coordinator.codec import RecordFormatError
from akfak.coordinator.runtime import LoadingCoordinator, PartitionLoader, TopicCreator, append_error
from akfak.coordinator.topic import ICoordinatorTopic
from akfak.groups.classic_members import ClassicJoin
from akfak.groups.consumer_coordinator import GROUP_TYPE_CONSUMER, PROTOCOL_TYPE, ConsumerGroups
from akfak.groups.consumer_offsets import expire_offsets, validate_commit, validate_fetch
from akfak.groups.consumer_records import ConsumerGroupKey
from akfak.groups.group import ClassicGroup, GroupError, GroupState, Member, Protocols
from akfak.groups.offsets import OffsetAndMetadata, expiration_base, is_expired
from akfak.groups.records import (
    CoordinatorRecord,
    GroupMetadataKey,
    GroupMetadataValue,
    MemberMetadataValue,
    OffsetCommitKey,
    OffsetCommitValue,
    decode_record,
    partition_for,
)
from akfak.groups.results import (
    CommitRequestPartition,
    DescribedGroup,
    DescribedMember,
    FetchedOffset,
    FetchGroupResult,
    JoinMember,
    JoinResult,
    LeaveMemberResult,
    LeaveResult,
    ListedGroup,
    ListGroupsResult,
    OffsetDeleteResult,
    SyncResult,
)
from akfak.groups.txn_offsets import PendingTxnOffsets, complete_txn, replay_txn_record
from akfak.log.batch import BatchHeader
from akfak.log.records import CONTROL_ABORT, CONTROL_COMMIT, encode_batch, iter_records, read_marker

log = Logger()

#: Kafka's classic-group new-member join timeout: a JoinGroup of a new member is
#: given up after this long (its client may have gone away while it waited).
NEW_MEMBER_JOIN_TIMEOUT_MS = 5 * 60 * 1000
#: Kafka's `offset.metadata.max.bytes` default.
DEFAULT_OFFSET_METADATA_MAX_BYTES = 4096

GROUP_TYPE_CLASSIC = "classic"
TopicPartition = tuple[str, int]


class GroupCoordinator(LoadingCoordinator):
    """Classic groups and committed offsets, kept in `__consumer_offsets`."""

    LOADING = "groups and offsets"

    def __init__(self, config: BrokerConfig, clock: Any, store: ICoordinatorTopic, *,
                 image: Callable[[], Any] | None = None):
        self.config = config
        self.clock = clock
        self.store = store
        self.initial_rebalance_delay_ms = config.get_int("group.initial.rebalance.delay.ms")
        self.min_session_timeout_ms = config.get_int("group.min.session.timeout.ms")
        self.max_session_timeout_ms = config.get_int("group.max.session.timeout.ms")
        self.max_group_size = config.get_int("group.max.size")
        self.offsets_retention_ms = config.get_int("offsets.retention.minutes") * 60_000
        self.offset_metadata_max_bytes = config.get_int(
            "offset.metadata.max.bytes", DEFAULT_OFFSET_METADATA_MAX_BYTES)
        self.num_partitions = config.get_int("offsets.topic.num.partitions")
        self.groups: dict[str, ClassicGroup] = {}
        #: group id -> (topic, partition) -> committed offset
        self.offsets: dict[str, dict[TopicPartition, OffsetAndMetadata]] = {}
        #: Offsets committed in open transactions, until their markers decide them.
        self.pending = PendingTxnOffsets()
        self.active = False
        self.loader = PartitionLoader(clock, store, self._replay_batch, self._partition_loaded,
                                      lambda: self.active)
        self.creator = TopicCreator(store, lambda: self.num_partitions)
        #: fires once every partition is loaded
        self.loaded: Deferred[None] = Deferred()
        self._timers: dict[tuple[str, ...], Any] = {}
        #: the consumer groups (KIP-848); `image` gives the cluster metadata they assign from
        self.consumer = ConsumerGroups(self, image or (lambda: None))

    @property
    def loading(self) -> set[int]:
        """The partitions not loaded yet."""
        return self.loader.loading

    # -- lifecycle -------------------------------------------------------------------


    def stop(self) -> None:
        """Stop serving: cancel every timer and answer whoever still waits
        NOT_COORDINATOR, as Kafka does when it unloads a partition."""
        self.active = False
        for call in list(self._timers.values()):
            if call.active():
                call.cancel()
        self._timers.clear()
        for group in self.groups.values():
            for member in list(group.members.values()):
                group.complete_join(member, JoinResult(ErrorCode.not_coordinator, member.member_id))
                group.complete_sync(member, SyncResult(ErrorCode.not_coordinator))

    def partition_for(self, group_id: str) -> int:
        return partition_for(group_id, self.num_partitions)

    def _status(self, group_id: str, *, allow_empty_id: bool = False) -> ErrorCode | None:
        """Kafka's validateGroupStatus: INVALID_GROUP_ID, COORDINATOR_NOT_AVAILABLE,
        COORDINATOR_LOAD_IN_PROGRESS, or None when the group may be served."""
        if not group_id and not allow_empty_id:
            return ErrorCode.invalid_group_id
        return self.key_status(self.partition_for(group_id))

    def _unload(self, partition: int) -> None:
        """Forget the groups of `partition` (another broker coordinates them now): their
        timers stop and waiting joins and syncs are answered NOT_COORDINATOR."""
        def mine(group_id: str) -> bool:
            return self.partition_for(group_id) == partition

        for key in [k for k in self._timers if len(k) > 1 and mine(k[1])]:
            self._cancel_timer(key)
        for group_id in [g for g in self.groups if mine(g)]:
            group = self.groups.pop(group_id)
            for member in list(group.members.values()):
                group.complete_join(member, JoinResult(ErrorCode.not_coordinator, member.member_id))
                group.complete_sync(member, SyncResult(ErrorCode.not_coordinator))
        for group_id in [g for g in self.offsets if mine(g)]:
            del self.offsets[group_id]
        for group_id in [g for g in self.consumer.groups if mine(g)]:
            del self.consumer.groups[group_id]
            self.consumer._regexes_checked.pop(group_id, None)
        for groups in list(self.pending.by_producer.values()):
            for group_id in [g for g in groups if mine(g)]:
                del groups[group_id]
        self.pending.by_producer = {p: g for p, g in self.pending.by_producer.items() if g}

    # -- loading ---------------------------------------------------------------------

    def _replay_batch(self, partition: int, header: BatchHeader, batch: memoryview) -> None:
        if header.is_control:
            marker = read_marker(batch)
            if marker is not None and marker[0] in (CONTROL_COMMIT, CONTROL_ABORT):
                complete_txn(self, partition, header.producer_id, marker[0] == CONTROL_COMMIT)
            return
        for record in iter_records(batch):
            if header.is_transactional:
                replay_txn_record(self, partition, header.producer_id, record.key, record.value)
            else:
                self._replay_raw(partition, record.key, record.value)

    def _replay_raw(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        try:
            record = decode_record(key, value)
        except RecordFormatError as e:
            log.warn("Skipping an unreadable record in __consumer_offsets-{p}: {e}", p=partition, e=e)
            return
        if record is not None:
            self.replay(record)

    def replay(self, record: CoordinatorRecord) -> None:
        """Apply one record to the in-memory state, as loading does."""
        key, value = record.key, record.value
        if isinstance(key, ConsumerGroupKey):
            self.consumer.replay(key, value)
            return
        if isinstance(key, OffsetCommitKey):
            if value is None:
                self._remove_offset(key.group, (key.topic, key.partition))
            else:
                assert isinstance(value, OffsetCommitValue)
                if key.group not in self.groups and key.group not in self.consumer.groups:
                    # Offsets without membership: a "simple" group, empty, no protocol type.
                    self.groups[key.group] = ClassicGroup(key.group, self.now_ms())
                self.offsets.setdefault(key.group, {})[(key.topic, key.partition)] = (
                    OffsetAndMetadata.from_value(value))
            return
        if value is None:
            self.groups.pop(key.group, None)
            return
        assert isinstance(value, GroupMetadataValue)
        self.groups[key.group] = self._group_from_record(key.group, value)

    def _group_from_record(self, group_id: str, value: GroupMetadataValue) -> ClassicGroup:
        group = ClassicGroup(
            group_id, self.now_ms(),
            state=GroupState.STABLE if value.members else GroupState.EMPTY,
            generation_id=value.generation, protocol_type=value.protocol_type or None,
            protocol_name=value.protocol, leader_id=value.leader,
            state_timestamp=value.current_state_timestamp)
        if value.current_state_timestamp == -1:
            group.state_timestamp = None  # metadata from before KIP-211: expire by commit time
        for m in value.members:
            member = Member(
                m.member_id, m.group_instance_id, m.client_id, m.client_host,
                m.session_timeout if m.rebalance_timeout == -1 else m.rebalance_timeout,
                m.session_timeout, value.protocol_type, ((value.protocol or "", m.subscription),),
                m.assignment)
            group.members[m.member_id] = member
            if m.group_instance_id is not None:
                group.static_members[m.group_instance_id] = m.member_id
        if group.leader_id is not None and group.leader_id not in group.members:
            group.leader_id = next(iter(group.members), None)
        group.subscribed_topics = group.compute_subscribed_topics()
        return group

    def _partition_loaded(self, partition: int) -> None:
        self.consumer.partition_loaded(partition)
        for group in list(self.groups.values()):
            if self.partition_for(group.group_id) != partition:
                continue
            for member in group.members.values():
                self._reschedule_heartbeat(group, member)
            if len(group.members) > self.max_group_size:
                self._prepare_rebalance(group, f"freshly loaded group is over capacity "
                                               f"({len(group.members)} > {self.max_group_size})")
        if not self.loading and not self.loaded.called:
            log.info("Loaded {groups} groups and offsets of {with_offsets} groups",
                     groups=len(self.groups), with_offsets=len(self.offsets))
            self.loaded.callback(None)

    # -- persistence -----------------------------------------------------------------

    def ensure_topic(self) -> Deferred[None]:
        """Create `__consumer_offsets` if it does not exist yet (Kafka creates it on
        first use); fires once it exists."""
        return self.creator.ensure()

    def _append(self, group_id: str, records: Sequence[CoordinatorRecord]) -> Deferred[None]:
        """Write records to the group's partition; fires once they are in the log."""
        if not records:
            return succeed(None)
        partition = self.partition_for(group_id)
        batch = encode_batch([r.encode() for r in records], timestamp=self.now_ms())

        def write(_: Any) -> Any:
            return maybeDeferred(self.store.append, partition, batch, self.now_ms())

        return self.ensure_topic().addCallback(write).addCallback(lambda _: None)

    # -- timers ----------------------------------------------------------------------

    def _set_timer(self, key: tuple[str, ...], delay_ms: int, fn: Callable[..., Any], *args: Any) -> None:
        self._cancel_timer(key)
        holder: list[Any] = []

        def fire() -> None:
            if self._timers.get(key) is holder[0]:
                del self._timers[key]
            try:
                fn(*args)
            except Exception:
                log.failure("Group coordinator timer {key} failed", key=key)

        holder.append(self.clock.callLater(max(delay_ms, 0) / 1000.0, fire))
        self._timers[key] = holder[0]

    def _cancel_timer(self, key: tuple[str, ...]) -> None:
        call = self._timers.pop(key, None)
        if call is not None and call.active():
            call.cancel()

    def _reschedule_heartbeat(self, group: ClassicGroup, member: Member,
                              timeout_ms: int | None = None) -> None:
        self._set_timer(("heartbeat", group.group_id, member.member_id),
                        member.session_timeout_ms if timeout_ms is None else timeout_ms,
                        self._expire_heartbeat, group.group_id, member.member_id)

    def _cancel_heartbeat(self, group: ClassicGroup, member_id: str) -> None:
        self._cancel_timer(("heartbeat", group.group_id, member_id))

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

    # -- ListGroups, DescribeGroups, DeleteGroups -------------------------------------

    def list_groups(self, states: Iterable[str] = (), types: Iterable[str] = ()) -> ListGroupsResult:
        if not self.active:
            return ListGroupsResult(ErrorCode.coordinator_not_available)
        if self.loading:
            return ListGroupsResult(ErrorCode.coordinator_load_in_progress)
        state_filter = {s.lower() for s in states}
        type_filter = {t.lower() for t in types}
        listed = []
        for group in self.groups.values():
            if state_filter and group.state.value.lower() not in state_filter:
                continue
            if type_filter and GROUP_TYPE_CLASSIC not in type_filter:
                continue
            listed.append(ListedGroup(group.group_id, group.protocol_type or "", group.state.value))
        for cg in self.consumer.groups.values():
            if state_filter and cg.state.lower() not in state_filter:
                continue
            if type_filter and GROUP_TYPE_CONSUMER not in type_filter:
                continue
            listed.append(ListedGroup(cg.group_id, PROTOCOL_TYPE, cg.state, GROUP_TYPE_CONSUMER))
        return ListGroupsResult(ErrorCode.none, tuple(listed))

    def describe_group(self, group_id: str, *, version: int = 0) -> DescribedGroup:
        error = self._status(group_id, allow_empty_id=True)
        if error is not None:
            return DescribedGroup(group_id, error, "")
        group = self.groups.get(group_id)
        if group is None or group.state is GroupState.DEAD:
            if version >= 6:
                what = ("is not a classic group" if group_id in self.consumer.groups else "not found")
                return DescribedGroup(group_id, ErrorCode.group_id_not_found, str(GroupState.DEAD),
                                      error_message=f"Group {group_id} {what}.")
            return DescribedGroup(group_id, ErrorCode.none, str(GroupState.DEAD))
        stable = group.state is GroupState.STABLE
        members = tuple(
            DescribedMember(m.member_id, m.group_instance_id, m.client_id, m.client_host,
                            m.metadata(group.protocol_name) if stable else b"",
                            m.assignment if stable else b"")
            for m in group.members.values())
        return DescribedGroup(group_id, ErrorCode.none, str(group.state), group.protocol_type or "",
                              (group.protocol_name or "") if stable else "", members)

    def delete_groups(self, group_ids: Iterable[str]) -> Deferred[dict[str, ErrorCode]]:
        results: dict[str, ErrorCode] = {}
        writes = []
        for group_id in group_ids:
            if group_id in results:
                continue
            error = self._status(group_id, allow_empty_id=True)
            group = self.groups.get(group_id)
            consumer_group = self.consumer.groups.get(group_id)
            if error is None and consumer_group is not None:
                if consumer_group.state != "Empty":
                    results[group_id] = ErrorCode.non_empty_group
                else:
                    results[group_id] = ErrorCode.none
                    writes.append(self.consumer.delete(consumer_group).addCallback(
                        self._consumer_deleted, group_id, results))
                continue
            if error is None:
                if group is None or group.state is GroupState.DEAD:
                    error = ErrorCode.group_id_not_found
                elif group.state is not GroupState.EMPTY:
                    error = ErrorCode.non_empty_group
            if error is not None:
                results[group_id] = error
                continue
            assert group is not None
            records = [CoordinatorRecord(OffsetCommitKey(group_id, topic, partition), None)
                       for topic, partition in self.offsets.get(group_id, {})]
            records.append(CoordinatorRecord(GroupMetadataKey(group_id), None))
            results[group_id] = ErrorCode.none
            writes.append(self._append(group_id, records).addCallbacks(
                self._deleted, self._delete_failed, callbackArgs=(group_id,),
                errbackArgs=(group_id, results)))
        return gatherResults(writes).addCallback(lambda _: results)

    def _deleted(self, _: Any, group_id: str) -> None:
        group = self.groups.pop(group_id, None)
        if group is not None:
            self._cancel_timer(("join", group_id))
            self._cancel_timer(("sync", group_id))
            group.transition_to(GroupState.DEAD, self.now_ms())
        removed = self.offsets.pop(group_id, {})
        log.info("Deleted group {group} and its {n} committed offsets", group=group_id, n=len(removed))

    def _consumer_deleted(self, error: ErrorCode, group_id: str, results: dict[str, ErrorCode]) -> None:
        results[group_id] = error
        if error is ErrorCode.none:
            log.info("Deleted consumer group {group} and its committed offsets", group=group_id)

    def _delete_failed(self, failure: Failure, group_id: str, results: dict[str, ErrorCode]) -> None:
        results[group_id] = append_error(failure)
        log.failure("Deleting group {group} failed", failure, group=group_id)

    # -- records ---------------------------------------------------------------------

    def _group_metadata_record(self, group: ClassicGroup, assignment: dict[str, bytes]) -> CoordinatorRecord:
        if not assignment and group.state is GroupState.EMPTY:
            members: tuple[MemberMetadataValue, ...] = ()
            value = GroupMetadataValue(group.protocol_type or "", group.generation_id, None, None,
                                       group.state_timestamp if group.state_timestamp is not None else -1)
        else:
            members = tuple(
                MemberMetadataValue(m.member_id, m.group_instance_id, m.client_id, m.client_host,
                                    m.rebalance_timeout_ms, m.session_timeout_ms,
                                    m.metadata(group.protocol_name), assignment.get(m.member_id, b""))
                for m in group.members.values())
            value = GroupMetadataValue(
                group.protocol_type or "", group.generation_id, group.protocol_name, group.leader_id,
                group.state_timestamp if group.state_timestamp is not None else -1, members)
        return CoordinatorRecord(GroupMetadataKey(group.group_id), value)

    def _log_write_failure(self, failure: Failure, group_id: str) -> None:
        # Losing an empty-group record is harmless: a later generation rewrites it.
        log.warn("Failed to write metadata for group {group}: {error}", group=group_id,
                 error=failure.getErrorMessage())

    # -- OffsetCommit ----------------------------------------------------------------

    def commit_offsets(self, group_id: str, generation_id: int, member_id: str,
                       group_instance_id: str | None, partitions: Sequence[CommitRequestPartition], *,
                       version: int, retention_time_ms: int = -1
                       ) -> Deferred[dict[TopicPartition, ErrorCode]]:
        """Commit offsets; fires with an error per (topic, partition)."""
        keys = [(p.topic, p.partition) for p in partitions]

        def all_(error: ErrorCode) -> Deferred[dict[TopicPartition, ErrorCode]]:
            return succeed(dict.fromkeys(keys, error))

        error = self._status(group_id, allow_empty_id=True)
        if error is not None:
            return all_(error)
        group = self.groups.get(group_id)
        created = False
        consumer_group = self.consumer.groups.get(group_id)
        if consumer_group is not None:
            # generation_id is the member epoch (KIP-848)
            error = validate_commit(consumer_group, member_id, generation_id, version)
            if error is not None:
                return all_(error)
        else:
            if group is None:
                if generation_id >= 0:
                    return all_(ErrorCode.group_id_not_found if version >= 9
                                else ErrorCode.illegal_generation)
                # Offsets without group management: a "simple" group.
                group = ClassicGroup(group_id, self.now_ms())
                self.groups[group_id] = group
                created = True
            try:
                self._validate_offset_commit(group, member_id, group_instance_id, generation_id)
            except GroupError as e:
                return all_(e.code)
            if group.is_in(GroupState.STABLE, GroupState.PREPARING_REBALANCE) and member_id in group.members:
                # A commit keeps a classic member's session alive.
                self._reschedule_heartbeat(group, group.members[member_id])
        now = self.now_ms()
        expire = now + retention_time_ms if retention_time_ms != -1 else -1
        results: dict[TopicPartition, ErrorCode] = {}
        records = []
        committed: dict[TopicPartition, OffsetAndMetadata] = {}
        for p in partitions:
            key = (p.topic, p.partition)
            metadata = p.metadata if p.metadata is not None else ""
            if len(metadata) > self.offset_metadata_max_bytes:
                results[key] = ErrorCode.offset_metadata_too_large
                continue
            offset = OffsetAndMetadata(p.offset, p.leader_epoch, metadata, now, expire)
            committed[key] = offset
            results[key] = ErrorCode.none
            records.append(CoordinatorRecord(OffsetCommitKey(group_id, p.topic, p.partition),
                                             offset.to_value()))

        def written(_: Any) -> dict[TopicPartition, ErrorCode]:
            self.offsets.setdefault(group_id, {}).update(committed)
            return results

        def failed(failure: Failure) -> dict[TopicPartition, ErrorCode]:
            log.warn("Committing offsets of group {group} failed: {error}", group=group_id,
                     error=failure.getErrorMessage())
            if created and group_id not in self.offsets and self.groups.get(group_id) is group:
                del self.groups[group_id]
            error = append_error(failure)
            return {k: (error if k in committed else e) for k, e in results.items()}

        return self._append(group_id, records).addCallbacks(written, failed)

    def _validate_offset_commit(self, group: ClassicGroup, member_id: str, instance_id: str | None,
                                generation_id: int) -> None:
        if group.state is GroupState.DEAD:
            raise GroupError(ErrorCode.coordinator_not_available)
        if generation_id < 0 and group.state is GroupState.EMPTY:
            return  # an admin client or a consumer without group management
        if generation_id >= 0 or member_id or instance_id is not None:
            group.validate_member(member_id, instance_id)
            if generation_id != group.generation_id:
                raise GroupError(ErrorCode.illegal_generation)
        elif group.state is not GroupState.EMPTY:
            raise GroupError(ErrorCode.unknown_member_id)
        if group.state is GroupState.COMPLETING_REBALANCE:
            raise GroupError(ErrorCode.rebalance_in_progress)

    # -- OffsetFetch -----------------------------------------------------------------

    def fetch_offsets(self, group_id: str, partitions: Sequence[TopicPartition] | None, *,
                      require_stable: bool = False, member_id: str | None = None,
                      member_epoch: int = -1) -> FetchGroupResult:
        """Committed offsets of `partitions` (None: every committed partition).
        With `require_stable` a partition with a pending transactional commit answers
        UNSTABLE_OFFSET_COMMIT (`txn_offsets.py`).  A consumer group's member (OffsetFetch
        v9+) must give its current member epoch (STALE_MEMBER_EPOCH, UNKNOWN_MEMBER_ID)."""
        error = self._status(group_id, allow_empty_id=True)
        if error is not None:
            return FetchGroupResult(group_id, error)
        group = self.groups.get(group_id)
        consumer_group = self.consumer.groups.get(group_id)
        if consumer_group is not None:
            error = validate_fetch(consumer_group, member_id, member_epoch)
            if error is not None:
                return FetchGroupResult(group_id, error)
        committed = ({} if (group is None or group.state is GroupState.DEAD) and consumer_group is None
                     else self.offsets.get(group_id, {}))
        if partitions is None:
            wanted: Iterable[TopicPartition] = sorted(committed)
        else:
            wanted = partitions
        fetched = []
        for topic, partition in wanted:
            offset = committed.get((topic, partition))
            if require_stable and self.pending.is_pending(group_id, (topic, partition)):
                fetched.append(FetchedOffset(topic, partition, error=ErrorCode.unstable_offset_commit))
            elif offset is None:
                fetched.append(FetchedOffset(topic, partition))
            else:
                fetched.append(FetchedOffset(topic, partition, offset.offset, offset.leader_epoch,
                                             offset.metadata))
        return FetchGroupResult(group_id, ErrorCode.none, tuple(fetched))

    # -- OffsetDelete ----------------------------------------------------------------

    def delete_offsets(self, group_id: str, partitions: Sequence[TopicPartition]
                       ) -> Deferred[OffsetDeleteResult]:
        error = self._status(group_id)
        if error is not None:
            return succeed(OffsetDeleteResult(error))
        group = self.groups.get(group_id)
        consumer_group = self.consumer.groups.get(group_id)
        subscribed: Callable[[str], bool]
        if consumer_group is not None:
            subscribed = consumer_group.subscribed_topics().__contains__
        elif group is None or group.state is GroupState.DEAD:
            return succeed(OffsetDeleteResult(ErrorCode.group_id_not_found))
        elif group.state is not GroupState.EMPTY and not group.uses_consumer_protocol:
            return succeed(OffsetDeleteResult(ErrorCode.non_empty_group))
        else:
            subscribed = group.is_subscribed_to_topic
        committed = self.offsets.get(group_id, {})
        results: dict[TopicPartition, ErrorCode] = {}
        records = []
        for key in partitions:
            if subscribed(key[0]):
                results[key] = ErrorCode.group_subscribed_to_topic
                continue
            results[key] = ErrorCode.none
            if key in committed:
                records.append(CoordinatorRecord(OffsetCommitKey(group_id, key[0], key[1]), None))

        def written(_: Any) -> OffsetDeleteResult:
            for record in records:
                assert isinstance(record.key, OffsetCommitKey)
                self._remove_offset(group_id, (record.key.topic, record.key.partition))
            return OffsetDeleteResult(ErrorCode.none, results)

        def failed(failure: Failure) -> OffsetDeleteResult:
            return OffsetDeleteResult(append_error(failure))

        return self._append(group_id, records).addCallbacks(written, failed)

    def _remove_offset(self, group_id: str, key: TopicPartition) -> None:
        offsets = self.offsets.get(group_id)
        if offsets is None:
            return
        offsets.pop(key, None)
        if not offsets:
            del self.offsets[group_id]

    # -- expiry and deleted topics ----------------------------------------------------

    def cleanup_group_metadata(self) -> Deferred[int]:
        """Expire offsets past `offsets.retention.minutes` (KIP-211), and delete
        Empty groups left without offsets, classic (here) and consumer groups
        (`consumer_offsets.expire_offsets`); fires with the number of offsets removed."""
        if not self.active:
            return succeed(0)
        now = self.now_ms()
        writes = []
        expired_total = 0
        for group_id, group in list(self.groups.items()):
            if self.loading and self.partition_for(group_id) in self.loading:
                continue
            records, all_expired = self._expired_offset_records(group, now)
            expired_total += len(records)
            delete_group = (all_expired and group.state is GroupState.EMPTY
                            and not self.pending.has_group(group_id))
            if delete_group:
                records.append(CoordinatorRecord(GroupMetadataKey(group_id), None))
            if not records:
                continue
            writes.append(self._append(group_id, records).addCallbacks(
                self._apply_cleanup, self._log_write_failure, callbackArgs=(group_id, records),
                errbackArgs=(group_id,)))
        consumer_writes, consumer_expired = expire_offsets(self, now)
        writes += consumer_writes
        expired_total += consumer_expired
        if expired_total:
            log.info("Removing {n} expired offsets", n=expired_total)
        return gatherResults(writes).addCallback(lambda _: expired_total)

    def _expired_offset_records(self, group: ClassicGroup, now: int
                                ) -> tuple[list[CoordinatorRecord], bool]:
        offsets = self.offsets.get(group.group_id)
        if not offsets:
            return [], True
        base = expiration_base(group)
        if base is None:
            return [], False
        records = []
        all_expired = True
        for (topic, partition), offset in offsets.items():
            if group.is_subscribed_to_topic(topic) or self.pending.is_pending(
                    group.group_id, (topic, partition)) or not is_expired(
                    offset, base, now, self.offsets_retention_ms):
                all_expired = False
                continue
            records.append(CoordinatorRecord(OffsetCommitKey(group.group_id, topic, partition), None))
        return records, all_expired

    def _apply_cleanup(self, _: Any, group_id: str, records: list[CoordinatorRecord]) -> None:
        for record in records:
            if isinstance(record.key, OffsetCommitKey):
                self._remove_offset(group_id, (record.key.topic, record.key.partition))
            else:
                group = self.groups.get(group_id)
                # Only if nobody joined while the tombstone was written.
                if group is not None and group.state is GroupState.EMPTY:
                    del self.groups[group_id]
                    group.transition_to(GroupState.DEAD, self.now_ms())

    def on_partitions_deleted(self, partitions: Iterable[TopicPartition]) -> Deferred[None]:
        """Remove the committed offsets of deleted topic partitions (Kafka does this
        when topics are deleted)."""
        gone = set(partitions)
        writes = []
        for group_id, offsets in list(self.offsets.items()):
            records = [CoordinatorRecord(OffsetCommitKey(group_id, t, p), None)
                       for (t, p) in offsets if (t, p) in gone]
            if records:
                writes.append(self._append(group_id, records).addCallbacks(
                    self._apply_cleanup, self._log_write_failure, callbackArgs=(group_id, records),
                    errbackArgs=(group_id,)))
        return gatherResults(writes).addCallback(lambda _: None)


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

