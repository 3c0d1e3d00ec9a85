"""Share groups and ShareGroupHeartbeat, as Kafka 4.1's GroupMetadataManager runs them.

A member joins with epoch 0 and the topics it subscribes to (its member id is the client's
own), heartbeats with its epoch, and leaves with epoch -1.  A change of the members or of their
subscriptions (or of the subscribed topics' partition counts) bumps the group epoch; the
`simple` assignor (akfak.share.assignor) then computes the target assignment, at the next
heartbeat of any member, and each member takes its target whole at its own next heartbeat
(share groups revoke nothing: a partition may have many members), its member epoch becoming
the assignment epoch.  Only share-partitions whose state is initialized
in the share coordinator are assigned; the heartbeat initializes those it finds missing
(InitializeShareGroupState, start offset -1: decided by `share.auto.offset.reset` on the
first fetch).  A member that does not heartbeat within its session timeout
(`group.share.session.timeout.ms`, or the group's `share.session.timeout.ms`) is removed.

Errors as Kafka: an empty member id or group id, or a join without subscriptions, is
INVALID_REQUEST; a heartbeat for a group that does not exist is GROUP_ID_NOT_FOUND (also for a
group of another type); an unknown member UNKNOWN_MEMBER_ID; an epoch that is neither the
member's nor its previous one FENCED_MEMBER_EPOCH; the `group.share.max.size`+1st member
GROUP_MAX_SIZE_REACHED.

Every change is written to `__consumer_offsets` as Kafka writes it (akfak.share.group_records):
a heartbeat answers once its records are in the log, and the groups are replayed at start.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode
from twisted.logger import Logger

from akfak.share import assignor
from akfak.share import group_records as records
from akfak.share.settings import group_setting, int_setting

log = Logger()

STABLE, EMPTY = "Stable", "Empty"
#: (key, value) records for `__consumer_offsets`
Entries = list[tuple[bytes, bytes | None]]


class HeartbeatError(Exception):
    def __init__(self, error: ErrorCode, message: str | None = None) -> None:
        super().__init__(message or error.name)
        self.error = error
        self.message = message


@dataclass(slots=True)
class ShareMember:
    member_id: str
    client_id: str
    client_host: str
    rack_id: str | None = None
    subscribed: list[str] = field(default_factory=list)
    epoch: int = 0
    previous_epoch: int = -1
    #: topic id -> partitions
    assigned: dict[Hashable, set[int]] = field(default_factory=dict)
    #: the target assignment, taken on the member's next heartbeat
    target: dict[Hashable, set[int]] = field(default_factory=dict)


@dataclass(slots=True)
class ShareGroup:
    group_id: str
    epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ShareMember] = field(default_factory=dict)
    #: topic id -> partition count the last assignment saw
    metadata: dict[Hashable, int] = field(default_factory=dict)

    @property
    def state(self) -> str:
        return STABLE if self.members else EMPTY

    def subscribed_topics(self) -> set[str]:
        return {t for m in self.members.values() for t in m.subscribed}


@dataclass(slots=True)
class HeartbeatResult:
    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    #: topic id -> partitions, or None when the response carries no assignment
    assignment: dict[Hashable, list[int]] | None


class ShareGroups:
    """Every share group of this broker."""

    def __init__(self, broker: Any, initialize: Callable[[str, Any, int, int], None],
                 member_left: Callable[[str, str], None], is_classic_group: Callable[[str], bool],
                 write: Callable[[str, Entries], Any] = lambda _g, _e: None) -> None:
        self.broker = broker
        #: writes a group's records to `__consumer_offsets` (akfak.share.group_records)
        self.write = write
        self.config = broker.config
        self.clock = broker.clock
        self.initialize = initialize
        self.member_left = member_left
        self.is_classic_group = is_classic_group
        self.groups: dict[str, ShareGroup] = {}
        #: (group, topic id, partition) initialized in the share coordinator
        self.initialized: set[tuple[str, Hashable, int]] = set()
        self._timers: dict[tuple[str, str], Any] = {}

    def group_setting(self, group_id: str, name: str, broker_name: str) -> int:
        return int(group_setting(self.broker, group_id, name, broker_name))

    # -- heartbeat ---------------------------------------------------------------------

    def heartbeat(self, group_id: str, member_id: str, member_epoch: int, rack_id: str | None,
                  subscribed: list[str] | None, client_id: str, client_host: str,
                  out: Entries | None = None) -> HeartbeatResult:
        """Raises HeartbeatError; the records to write go to `out`."""
        out = [] if out is None else out
        if not member_id:
            raise HeartbeatError(ErrorCode.invalid_request, "MemberId can't be empty.")
        if not group_id:
            raise HeartbeatError(ErrorCode.invalid_request, "GroupId can't be empty.")
        if rack_id == "":
            raise HeartbeatError(ErrorCode.invalid_request, "RackId can't be empty.")
        if member_epoch == 0 and not subscribed:
            raise HeartbeatError(ErrorCode.invalid_request,
                                 "SubscribedTopicNames must be set in first request.")
        if member_epoch < -1:
            raise HeartbeatError(ErrorCode.invalid_request, "MemberEpoch is invalid.")
        group = self.groups.get(group_id)
        if group is None and (member_epoch != 0 or self.is_classic_group(group_id)):
            if self.is_classic_group(group_id):
                raise HeartbeatError(ErrorCode.group_id_not_found,
                                     f"Group {group_id} is not a share group.")
            raise HeartbeatError(ErrorCode.group_id_not_found, f"Share group {group_id} not found.")
        if member_epoch == -1:
            assert group is not None
            if member_id not in group.members:
                raise HeartbeatError(ErrorCode.unknown_member_id,
                                     f"Member {member_id} is not a member of group {group_id}.")
            self.remove_member(group, member_id, out)
            return HeartbeatResult(member_id, -1, self._interval(group_id), None)
        if group is None:
            group = self.groups[group_id] = ShareGroup(group_id)
        member = group.members.get(member_id)
        if member is None:
            if member_epoch != 0:
                raise HeartbeatError(ErrorCode.unknown_member_id,
                                     f"Member {member_id} is not a member of group {group_id}.")
            max_size = int_setting(self.config, "group.share.max.size")
            if len(group.members) >= max_size:
                raise HeartbeatError(ErrorCode.group_max_size_reached,
                                     f"The share group has reached its maximum capacity of "
                                     f"{max_size} members.")
            member = ShareMember(member_id, client_id, client_host, rack_id, list(subscribed or ()))
            group.members[member_id] = member
            changed = True
            out.append(self._subscription_record(group_id, member))
        else:
            if member_epoch > member.epoch or (member_epoch < member.epoch
                                               and member_epoch != member.previous_epoch):
                raise HeartbeatError(ErrorCode.fenced_member_epoch,
                                     "The share group member has a different member epoch than "
                                     "the one known by the group coordinator. The member must "
                                     "abandon all its partitions and rejoin.")
            changed = subscribed is not None and sorted(subscribed) != sorted(member.subscribed)
            known = (member.subscribed, member.rack_id, member.client_id, member.client_host)
            if subscribed is not None:
                member.subscribed = list(subscribed)
            if rack_id is not None:
                member.rack_id = rack_id
            member.client_id, member.client_host = client_id, client_host
            if known != (member.subscribed, member.rack_id, member.client_id, member.client_host):
                out.append(self._subscription_record(group_id, member))
        before = {t: set(p) for t, p in member.assigned.items()}
        metadata = self._metadata(group)
        epoch = group.epoch
        if changed or metadata != group.metadata:
            group.epoch += 1
        if self._uninitialized(group, metadata):
            # Kafka assigns a share-partition once its state is initialized, bumping the
            # epoch again at the next heartbeat; here that happens at once.
            self._initialize_all(group, metadata)
            group.epoch += 1
            out.append(self._state_record(group_id))
        if group.epoch != epoch:
            out.append((records.encode_key(records.GROUP_METADATA, group_id),
                        records.group_metadata(group.epoch)))
        if group.epoch > group.assignment_epoch:
            self._assign(group, metadata, out)
        if member.epoch != group.assignment_epoch:  # share groups revoke nothing: take it all
            member.previous_epoch, member.epoch = member.epoch, group.assignment_epoch
            member.assigned = {t: set(p) for t, p in member.target.items()}
            out.append((records.encode_key(records.CURRENT_MEMBER, group_id, member_id),
                        records.current_member(member.epoch, member.previous_epoch,
                                               member.assigned)))
        self._schedule_expiry(group, member_id)
        full = member_epoch == 0 or subscribed is not None or before != member.assigned
        return HeartbeatResult(member_id, member.epoch, self._interval(group_id),
                               {t: sorted(p) for t, p in member.assigned.items()} if full else None)

    def _interval(self, group_id: str) -> int:
        return self.group_setting(group_id, "share.heartbeat.interval.ms",
                                  "group.share.heartbeat.interval.ms")

    def _metadata(self, group: ShareGroup) -> dict[Hashable, int]:
        image = self.broker.image
        metadata: dict[Hashable, int] = {}
        for name in sorted(group.subscribed_topics()):
            topic = image.topics_by_name.get(name)
            if topic is not None:
                metadata[topic.topic_id] = len(topic.partitions)
        return metadata

    def _uninitialized(self, group: ShareGroup, metadata: dict[Hashable, int]) -> bool:
        return any((group.group_id, t, p) not in self.initialized
                   for t, n in metadata.items() for p in range(n))

    def _initialize_all(self, group: ShareGroup, metadata: dict[Hashable, int]) -> None:
        for topic_id, count in metadata.items():
            for p in range(count):
                key = (group.group_id, topic_id, p)
                if key not in self.initialized:
                    self.initialize(group.group_id, topic_id, p, group.epoch)
                    self.initialized.add(key)

    def _subscription_record(self, group_id: str, m: ShareMember) -> tuple[bytes, bytes | None]:
        return (records.encode_key(records.MEMBER_METADATA, group_id, m.member_id),
                records.member_metadata(m.rack_id, m.client_id, m.client_host, m.subscribed))

    def _state_record(self, group_id: str) -> tuple[bytes, bytes | None]:
        image = self.broker.image
        initialized: dict[Hashable, tuple[str, set[int]]] = {}
        for g, topic_id, p in sorted(self.initialized, key=str):
            topic = image.topic_by_id(topic_id)
            if g == group_id and topic is not None:
                initialized.setdefault(topic_id, (topic.name, set()))[1].add(p)
        return (records.encode_key(records.STATE_METADATA, group_id),
                records.state_metadata(initialized))

    def _assign(self, group: ShareGroup, metadata: dict[Hashable, int], out: Entries) -> None:
        image = self.broker.image
        names = {name: t.topic_id for name, t in image.topics_by_name.items()}
        members = list(group.members)
        subscriptions = {m: [names[t] for t in group.members[m].subscribed if t in names]
                         for m in members}
        current = {m: {(t, p) for t, ps in group.members[m].assigned.items() for p in ps}
                   for m in members}
        target = assignor.assign(members, subscriptions, metadata, current)
        for member_id, tps in target.items():
            assigned: dict[Hashable, set[int]] = {}
            for t, p in tps:
                assigned.setdefault(t, set()).add(p)
            if group.members[member_id].target != assigned:
                out.append((records.encode_key(records.TARGET_MEMBER, group.group_id, member_id),
                            records.target_member(assigned)))
            group.members[member_id].target = assigned
        group.metadata = metadata
        group.assignment_epoch = group.epoch
        out.append((records.encode_key(records.TARGET_METADATA, group.group_id),
                    records.target_metadata(group.assignment_epoch)))

    # -- leaving and expiry --------------------------------------------------------------

    def remove_member(self, group: ShareGroup, member_id: str, out: Entries) -> None:
        if group.members.pop(member_id, None) is None:
            return
        call = self._timers.pop((group.group_id, member_id), None)
        if call is not None and call.active():
            call.cancel()
        group.epoch += 1  # the next heartbeat computes the new target assignment
        out.extend((records.encode_key(kind, group.group_id, member_id), None)
                   for kind in (records.CURRENT_MEMBER, records.TARGET_MEMBER,
                                records.MEMBER_METADATA))
        out.append((records.encode_key(records.GROUP_METADATA, group.group_id),
                    records.group_metadata(group.epoch)))
        self.member_left(group.group_id, member_id)

    def _schedule_expiry(self, group: ShareGroup, member_id: str) -> None:
        key = (group.group_id, member_id)
        call = self._timers.get(key)
        if call is not None and call.active():
            call.cancel()
        timeout = self.group_setting(group.group_id, "share.session.timeout.ms",
                                     "group.share.session.timeout.ms")
        self._timers[key] = self.clock.callLater(timeout / 1000, self._expire, group.group_id,
                                                 member_id)

    def _expire(self, group_id: str, member_id: str) -> None:
        self._timers.pop((group_id, member_id), None)
        group = self.groups.get(group_id)
        if group is not None and member_id in group.members:
            log.info("Member {member} of share group {group} expired", member=member_id,
                     group=group_id)
            out: Entries = []
            self.remove_member(group, member_id, out)
            self.write(group_id, out)

    def delete(self, group_id: str) -> Any:
        """Forget an empty group; returns what writing its tombstones returns."""
        group = self.groups.pop(group_id, None)
        self.initialized = {k for k in self.initialized if k[0] != group_id}
        if group is None:
            return None
        return self.write(group_id, [(records.encode_key(kind, group_id), None) for kind in (
            records.TARGET_METADATA, records.GROUP_METADATA, records.STATE_METADATA)])

    def state_changed(self, group_id: str) -> Any:
        """The group's initialized share-partitions changed (offsets reset or deleted)."""
        return self.write(group_id, [self._state_record(group_id)])

    # -- loading ---------------------------------------------------------------------------

    def replay(self, record: records.Record) -> None:
        """Apply one record of `__consumer_offsets`, as loading does."""
        gid, value = record.group_id, record.value
        group = self.groups.get(gid)
        if value is None:
            if record.kind == records.GROUP_METADATA:
                self.groups.pop(gid, None)
            elif record.kind == records.STATE_METADATA:
                self.initialized = {k for k in self.initialized if k[0] != gid}
            elif record.kind == records.MEMBER_METADATA and group is not None:
                group.members.pop(record.member_id or "", None)
            return
        if group is None:
            group = self.groups[gid] = ShareGroup(gid)
        if record.kind == records.GROUP_METADATA:
            group.epoch = value[0]
            return
        if record.kind == records.TARGET_METADATA:
            group.assignment_epoch = value
            return
        if record.kind == records.STATE_METADATA:
            self.initialized = {k for k in self.initialized if k[0] != gid}
            self.initialized.update((gid, t, p) for t, (_name, ps) in value.items() for p in ps)
            return
        member_id = record.member_id or ""
        member = group.members.get(member_id)
        if member is None:
            member = group.members[member_id] = ShareMember(member_id, "", "")
        if record.kind == records.MEMBER_METADATA:
            member.rack_id, member.client_id, member.client_host, member.subscribed = value
        elif record.kind == records.TARGET_MEMBER:
            member.target = value
        else:
            member.epoch, member.previous_epoch, _state, member.assigned = value

    def loaded(self, of: Callable[[str], bool] = lambda _g: True) -> None:
        """Loading is done (of the groups `of` names): the members loaded must heartbeat
        within their session timeout."""
        for group in [g for g in self.groups.values() if of(g.group_id)]:
            for member_id in group.members:
                self._schedule_expiry(group, member_id)

    def forget(self, of: Callable[[str], bool]) -> None:
        """(a cluster) Drop the groups `of` names: another broker coordinates them now."""
        for group_id in [g for g in self.groups if of(g)]:
            del self.groups[group_id]
        self.initialized = {k for k in self.initialized if not of(k[0])}
        for key in [k for k in self._timers if of(k[0])]:
            call = self._timers.pop(key)
            if call.active():
                call.cancel()

    def stop(self) -> None:
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()

