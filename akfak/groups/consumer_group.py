"""A consumer group of the consumer rebalance protocol (KIP-848): its state and members.

As Kafka's `modern/consumer/ConsumerGroup` and `ConsumerGroupMember`, the state is exactly
what the group's records say: `replay()` applies one record (when it is written and when
`__consumer_offsets` is loaded), and nothing else changes it.

- the group epoch, bumped when a subscription, a member set or the subscribed topics'
  metadata changes, and the hash of that metadata;
- the target assignment (member id -> partitions) and its epoch: the assignor's answer for
  some group epoch;
- the members, each with its member epoch and current assignment, moving towards the
  target (`reconcile.py`);
- the owner epoch of every partition assigned (or pending revocation): a partition is free
  to hand to another member only once its owner has released it;
- the resolved regular expressions: regex -> the topics it matched.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from akfak.groups.consumer_records import (
    CURRENT_MEMBER_ASSIGNMENT,
    GROUP_METADATA,
    MEMBER_METADATA,
    REGULAR_EXPRESSION,
    TARGET_ASSIGNMENT_MEMBER,
    TARGET_ASSIGNMENT_METADATA,
    ClassicMemberMetadata,
    ConsumerGroupKey,
    ConsumerGroupValue,
    CurrentMemberAssignmentValue,
    GroupMetadataValue,
    MemberMetadataValue,
    Partitions,
    RegularExpressionValue,
    TargetAssignmentMemberValue,
    TargetAssignmentMetadataValue,
)
from akfak.groups.records import CoordinatorRecord

# MemberState (Kafka's modern/MemberState)
STABLE = 0
UNREVOKED_PARTITIONS = 1
UNRELEASED_PARTITIONS = 2
UNKNOWN_STATE = 127

LEAVE_GROUP_MEMBER_EPOCH = -1
LEAVE_GROUP_STATIC_MEMBER_EPOCH = -2

EMPTY_PARTITIONS: Mapping[uuid.UUID, frozenset[int]] = {}


def group_record(t: int, group_id: str, sub: str | None, value: Any) -> CoordinatorRecord:
    """A consumer-group record: type `t`, of the group (and member or regex `sub`)."""
    return CoordinatorRecord(ConsumerGroupKey(t, group_id, sub), value)


def subscribed_names(members: Iterable[ConsumerMember], resolved: Mapping[str, Iterable[str]]
                     ) -> set[str]:
    """The topics `members` subscribe to, by name or by a regex `resolved` maps to topics."""
    names: set[str] = set()
    for m in members:
        names.update(m.subscribed_topic_names)
        if m.subscribed_topic_regex and m.subscribed_topic_regex in resolved:
            names.update(resolved[m.subscribed_topic_regex])
    return names


class GroupState:
    EMPTY = "Empty"
    ASSIGNING = "Assigning"
    RECONCILING = "Reconciling"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class ConsumerMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    subscribed_topic_names: tuple[str, ...] = ()
    subscribed_topic_regex: str | None = None
    rebalance_timeout_ms: int = -1
    server_assignor: str | None = None
    member_epoch: int = 0
    previous_member_epoch: int = 0
    state: int = STABLE
    assigned: Partitions = field(default_factory=dict)
    pending_revocation: Partitions = field(default_factory=dict)
    #: set for a member that joined with JoinGroup (the classic protocol)
    classic: ClassicMemberMetadata | None = None

    @property
    def uses_classic_protocol(self) -> bool:
        return self.classic is not None

    def with_subscription(self, value: MemberMetadataValue) -> ConsumerMember:
        return dataclasses.replace(
            self, instance_id=value.instance_id, rack_id=value.rack_id, client_id=value.client_id,
            client_host=value.client_host, subscribed_topic_names=value.subscribed_topic_names,
            subscribed_topic_regex=value.subscribed_topic_regex,
            rebalance_timeout_ms=value.rebalance_timeout_ms, server_assignor=value.server_assignor,
            classic=value.classic)

    def with_assignment(self, value: CurrentMemberAssignmentValue) -> ConsumerMember:
        return dataclasses.replace(
            self, member_epoch=value.member_epoch, previous_member_epoch=value.previous_member_epoch,
            state=value.state, assigned=dict(value.assigned),
            pending_revocation=dict(value.pending_revocation))

    def subscription_value(self) -> MemberMetadataValue:
        return MemberMetadataValue(self.instance_id, self.rack_id, self.client_id, self.client_host,
                                   self.subscribed_topic_names, self.subscribed_topic_regex,
                                   self.rebalance_timeout_ms, self.server_assignor, self.classic)

    def assignment_value(self) -> CurrentMemberAssignmentValue:
        return CurrentMemberAssignmentValue(self.member_epoch, self.previous_member_epoch,
                                            self.state, self.assigned, self.pending_revocation)

    def same_subscription(self, other: ConsumerMember) -> bool:
        return self.subscription_value() == other.subscription_value()

    def is_reconciled_to(self, target_epoch: int) -> bool:
        return self.state == STABLE and self.member_epoch == target_epoch


@dataclass(frozen=True, slots=True)
class ResolvedRegex:
    topics: frozenset[str]
    version: int
    timestamp: int


class ConsumerGroup:
    """One consumer group, as its records built it."""

    def __init__(self, group_id: str) -> None:
        self.group_id = group_id
        self.group_epoch = 0
        self.metadata_hash = 0
        self.members: dict[str, ConsumerMember] = {}
        self.static_members: dict[str, str] = {}
        self.target_epoch = 0
        self.target: dict[str, Partitions] = {}
        #: (topic id, partition) -> epoch of the member that holds it
        self.partition_epochs: dict[tuple[uuid.UUID, int], int] = {}
        self.resolved_regexes: dict[str, ResolvedRegex] = {}
        #: the metadata image the hash was last checked against (see the coordinator)
        self.checked_image: object = None

    # -- state ---------------------------------------------------------------------

    @property
    def state(self) -> str:
        if not self.members:
            return GroupState.EMPTY
        if self.group_epoch > self.target_epoch:
            return GroupState.ASSIGNING
        if any(not m.is_reconciled_to(self.target_epoch) for m in self.members.values()):
            return GroupState.RECONCILING
        return GroupState.STABLE

    def current_partition_epoch(self, topic_id: uuid.UUID, partition: int) -> int:
        return self.partition_epochs.get((topic_id, partition), -1)

    def static_member(self, instance_id: str) -> ConsumerMember | None:
        member_id = self.static_members.get(instance_id)
        return None if member_id is None else self.members.get(member_id)

    def target_of(self, member_id: str, instance_id: str | None = None) -> Partitions:
        if member_id in self.target:
            return self.target[member_id]
        if instance_id is not None and instance_id in self.static_members:
            return self.target.get(self.static_members[instance_id], EMPTY_PARTITIONS)
        return EMPTY_PARTITIONS

    def regex_subscribers(self, regex: str) -> int:
        return sum(1 for m in self.members.values() if m.subscribed_topic_regex == regex)

    def subscribed_regexes(self, members: Iterable[ConsumerMember] | None = None) -> Counter[str]:
        return Counter(m.subscribed_topic_regex for m in (self.members.values() if members is None
                                                          else members)
                       if m.subscribed_topic_regex)

    def subscribed_topics(self) -> set[str]:
        """The topics the members subscribe to, by name or by regular expression."""
        return subscribed_names(self.members.values(),
                                {r: v.topics for r, v in self.resolved_regexes.items()})

    def preferred_assignor(self, members: Iterable[ConsumerMember]) -> str | None:
        counts = Counter(m.server_assignor for m in members if m.server_assignor)
        return counts.most_common(1)[0][0] if counts else None

    # -- replay ----------------------------------------------------------------------

    def replay(self, key: ConsumerGroupKey, value: ConsumerGroupValue | None) -> None:
        t = key.type
        if t == GROUP_METADATA:
            if isinstance(value, GroupMetadataValue):
                self.group_epoch, self.metadata_hash = value.epoch, value.metadata_hash
        elif t == MEMBER_METADATA:
            assert key.sub is not None
            if isinstance(value, MemberMetadataValue):
                old = self.members.get(key.sub) or ConsumerMember(key.sub)
                if old.instance_id is not None and self.static_members.get(old.instance_id) == key.sub:
                    del self.static_members[old.instance_id]
                self.members[key.sub] = old.with_subscription(value)
                if value.instance_id is not None:
                    self.static_members[value.instance_id] = key.sub
            else:
                gone = self.members.pop(key.sub, None)
                if gone is not None:
                    self._drop_partition_epochs(gone)
                    if (gone.instance_id is not None
                            and self.static_members.get(gone.instance_id) == key.sub):
                        del self.static_members[gone.instance_id]
        elif t == TARGET_ASSIGNMENT_METADATA:
            if isinstance(value, TargetAssignmentMetadataValue):
                self.target_epoch = value.assignment_epoch
            else:
                self.target_epoch = -1
        elif t == TARGET_ASSIGNMENT_MEMBER:
            assert key.sub is not None
            if isinstance(value, TargetAssignmentMemberValue):
                self.target[key.sub] = dict(value.partitions)
            else:
                self.target.pop(key.sub, None)
        elif t == CURRENT_MEMBER_ASSIGNMENT:
            assert key.sub is not None
            old = self.members.get(key.sub) or ConsumerMember(key.sub)
            self._drop_partition_epochs(old)
            if isinstance(value, CurrentMemberAssignmentValue):
                member = old.with_assignment(value)
            else:
                member = dataclasses.replace(old, member_epoch=0, previous_member_epoch=0,
                                             state=STABLE, assigned={}, pending_revocation={})
            if key.sub in self.members or isinstance(value, CurrentMemberAssignmentValue):
                self.members[key.sub] = member
                self._add_partition_epochs(member)
        elif t == REGULAR_EXPRESSION:
            assert key.sub is not None
            if isinstance(value, RegularExpressionValue):
                self.resolved_regexes[key.sub] = ResolvedRegex(frozenset(value.topics), value.version,
                                                               value.timestamp)
            else:
                self.resolved_regexes.pop(key.sub, None)

    def _drop_partition_epochs(self, member: ConsumerMember) -> None:
        for assignment in (member.assigned, member.pending_revocation):
            for topic_id, partitions in assignment.items():
                for p in partitions:
                    if self.partition_epochs.get((topic_id, p)) == member.member_epoch:
                        del self.partition_epochs[(topic_id, p)]

    def _add_partition_epochs(self, member: ConsumerMember) -> None:
        for assignment in (member.assigned, member.pending_revocation):
            for topic_id, partitions in assignment.items():
                for p in partitions:
                    self.partition_epochs[(topic_id, p)] = member.member_epoch
