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

The coordinator is assembled from parts: classic_rebalance.py (JoinGroup and the
rebalance), classic_sync.py (SyncGroup, Heartbeat, LeaveGroup) and offset_commits.py
(committed offsets); this module holds loading, persistence, timers, and listing,
describing and deleting groups.
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
from akfak.groups.classic_rebalance import ClassicRebalance
from akfak.groups.classic_sync import ClassicSync
from akfak.groups.consumer_coordinator import GROUP_TYPE_CONSUMER, PROTOCOL_TYPE, ConsumerGroups
from akfak.groups.consumer_records import ConsumerGroupKey
from akfak.groups.group import ClassicGroup, GroupState, Member
from akfak.groups.offset_commits import OffsetCommits
from akfak.groups.offsets import OffsetAndMetadata, TopicPartition
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
    DescribedGroup,
    DescribedMember,
    JoinResult,
    ListedGroup,
    ListGroupsResult,
    SyncResult,
)
from akfak.groups.txn_offsets import PendingTxnOffsets, complete_txn, replay_txn_record
from akfak.log.batch import BatchHeader
from akfak.log.records import CONTROL_ABORT, CONTROL_COMMIT, encode_batch, iter_records, read_marker

log = Logger()

#: Kafka's `offset.metadata.max.bytes` default.
DEFAULT_OFFSET_METADATA_MAX_BYTES = 4096

GROUP_TYPE_CLASSIC = "classic"


class GroupCoordinator(ClassicRebalance, ClassicSync, OffsetCommits, LoadingCoordinator):
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
