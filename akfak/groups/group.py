"""A classic group's state: its members, generation, protocol and state machine.

This is the data the coordinator acts on (Kafka's ClassicGroup and
ClassicGroupMember); timers and persistence are the coordinator's business.
A member awaiting a JoinGroup or SyncGroup response holds the Deferred that
answers it, exactly as Kafka's member holds its response future.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred

from akfak.groups.consumer_protocol import CONSUMER_PROTOCOL_TYPE, union_of_subscriptions


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"

    def __str__(self) -> str:
        return self.value


#: state -> the states it may be entered from (Kafka's ClassicGroupState)
VALID_PREVIOUS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.PREPARING_REBALANCE: frozenset(
        {GroupState.STABLE, GroupState.COMPLETING_REBALANCE, GroupState.EMPTY}),
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.STABLE: frozenset({GroupState.COMPLETING_REBALANCE}),
    GroupState.DEAD: frozenset(GroupState),
}


class GroupError(Exception):
    """A request the group refuses, with the Kafka error code to answer."""

    def __init__(self, code: ErrorCode, message: str | None = None):
        super().__init__(message or code.name)
        self.code = code


Protocols = tuple[tuple[str, bytes], ...]


@dataclass(eq=False)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    #: (name, metadata) in the member's order of preference
    protocols: Protocols
    assignment: bytes = b""
    is_new: bool = False
    join_deferred: Deferred[Any] | None = field(default=None, repr=False)
    sync_deferred: Deferred[Any] | None = field(default=None, repr=False)

    @property
    def is_awaiting_join(self) -> bool:
        return self.join_deferred is not None

    @property
    def is_awaiting_sync(self) -> bool:
        return self.sync_deferred is not None

    @property
    def is_static(self) -> bool:
        return self.group_instance_id is not None

    def protocol_names(self) -> list[str]:
        return [name for name, _ in self.protocols]

    def metadata(self, protocol: str | None) -> bytes:
        for name, metadata in self.protocols:
            if name == protocol:
                return metadata
        return b""

    def matches(self, protocols: Protocols) -> bool:
        return tuple(protocols) == tuple(self.protocols)

    def vote(self, candidates: set[str]) -> str:
        """The member's most preferred protocol among those every member supports."""
        for name, _ in self.protocols:
            if name in candidates:
                return name
        raise ValueError(f"member {self.member_id} supports none of {sorted(candidates)}")

    def has_satisfied_heartbeat(self) -> bool:
        """Whether a session expiry should spare this member (Kafka's rule): a new
        member is never spared; one waiting for a join or sync response is."""
        if self.is_new:
            return False
        return self.is_awaiting_join or self.is_awaiting_sync


def _complete(deferred: Deferred[Any] | None, result: Any) -> bool:
    # A cancelled Deferred (the client went away) has fired already: Kafka does not
    # notice a gone client either, so the member stays and only the answer is dropped.
    if deferred is None:
        return False
    if not deferred.called:
        deferred.callback(result)
    return True


class ClassicGroup:
    def __init__(self, group_id: str, now_ms: int, *, state: GroupState = GroupState.EMPTY,
                 generation_id: int = 0, protocol_type: str | None = None,
                 protocol_name: str | None = None, leader_id: str | None = None,
                 state_timestamp: int | None = None):
        self.group_id = group_id
        self.state = state
        self.previous_state = state
        self.state_timestamp: int | None = now_ms if state_timestamp is None else state_timestamp
        self.generation_id = generation_id
        self.protocol_type = protocol_type
        self.protocol_name = protocol_name
        self.leader_id = leader_id
        self.members: dict[str, Member] = {}
        self.static_members: dict[str, str] = {}  # group.instance.id -> member id
        self.pending_join_members: set[str] = set()
        self.pending_sync_members: set[str] = set()
        self.new_member_added = False
        self.subscribed_topics: set[str] | None = None
        # The coordinator's timers for this group (IDelayedCall or None).
        self.join_timer: Any = None
        self.sync_timer: Any = None

    def __repr__(self) -> str:
        return (f"ClassicGroup({self.group_id!r}, {self.state}, generation={self.generation_id}, "
                f"members={list(self.members)})")

    # -- state ---------------------------------------------------------------------

    def is_in(self, *states: GroupState) -> bool:
        return self.state in states

    def transition_to(self, target: GroupState, now_ms: int) -> None:
        if self.state not in VALID_PREVIOUS[target]:
            raise RuntimeError(f"group {self.group_id} cannot go from {self.state} to {target}")
        self.previous_state = self.state
        self.state = target
        self.state_timestamp = now_ms

    def can_rebalance(self) -> bool:
        return self.state in VALID_PREVIOUS[GroupState.PREPARING_REBALANCE]

    @property
    def uses_consumer_protocol(self) -> bool:
        return self.protocol_type == CONSUMER_PROTOCOL_TYPE

    # -- members -------------------------------------------------------------------

    def is_leader(self, member_id: str) -> bool:
        return self.leader_id is not None and self.leader_id == member_id

    def add(self, member: Member, join_deferred: Deferred[Any] | None = None) -> None:
        if member.group_instance_id is not None:
            if member.group_instance_id in self.static_members:
                raise RuntimeError(f"static member {member.group_instance_id} is already a member")
            self.static_members[member.group_instance_id] = member.member_id
        if not self.members:
            self.protocol_type = member.protocol_type
        self.members[member.member_id] = member
        if self.leader_id is None:
            self.leader_id = member.member_id
        member.join_deferred = join_deferred
        self.pending_join_members.discard(member.member_id)

    def remove(self, member_id: str) -> Member | None:
        member = self.members.pop(member_id, None)
        if member is not None and member.group_instance_id is not None:
            self.static_members.pop(member.group_instance_id, None)
        if self.is_leader(member_id):
            self.leader_id = next(iter(self.members), None)
        self.pending_join_members.discard(member_id)
        self.pending_sync_members.discard(member_id)
        return member

    def validate_member(self, member_id: str, group_instance_id: str | None) -> None:
        """UNKNOWN_MEMBER_ID for an unknown member; FENCED_INSTANCE_ID when the
        instance id belongs to another member id."""
        if group_instance_id is not None:
            existing = self.static_members.get(group_instance_id)
            if existing is None:
                raise GroupError(ErrorCode.unknown_member_id)
            if existing != member_id:
                raise GroupError(ErrorCode.fenced_instance_id)
        if member_id not in self.members:
            raise GroupError(ErrorCode.unknown_member_id)

    def replace_static_member(self, group_instance_id: str, old_member_id: str,
                              new_member_id: str, fenced: Any) -> Member:
        """Give a static member a new member id, fencing whoever still waits as the
        old one (`fenced(member)` answers its pending join and sync)."""
        old = self.members.pop(old_member_id)
        fenced(old)
        new = Member(new_member_id, old.group_instance_id, old.client_id, old.client_host,
                     old.rebalance_timeout_ms, old.session_timeout_ms, old.protocol_type,
                     old.protocols, old.assignment)
        self.members[new_member_id] = new
        if self.is_leader(old_member_id):
            self.leader_id = new_member_id
        self.static_members[group_instance_id] = new_member_id
        self.pending_sync_members.discard(old_member_id)
        return new

    def update_member(self, member: Member, protocols: Protocols, rebalance_timeout_ms: int,
                      session_timeout_ms: int, join_deferred: Deferred[Any] | None) -> None:
        member.protocols = tuple(protocols)
        member.rebalance_timeout_ms = rebalance_timeout_ms
        member.session_timeout_ms = session_timeout_ms
        member.join_deferred = join_deferred

    def complete_join(self, member: Member, result: Any) -> bool:
        deferred, member.join_deferred = member.join_deferred, None
        return _complete(deferred, result)

    def complete_sync(self, member: Member, result: Any) -> bool:
        deferred, member.sync_deferred = member.sync_deferred, None
        return _complete(deferred, result)

    def maybe_elect_new_joined_leader(self) -> bool:
        """Keep the leader if it rejoined, else pick a member that did; False when
        no member rejoined (or there is no leader)."""
        if self.leader_id is None:
            return False
        leader = self.members.get(self.leader_id)
        if leader is not None and leader.is_awaiting_join:
            return True
        for member in self.members.values():
            if member.is_awaiting_join:
                self.leader_id = member.member_id
                return True
        return False

    def not_yet_rejoined(self) -> list[Member]:
        return [m for m in self.members.values() if not m.is_awaiting_join]

    @property
    def num_awaiting_join(self) -> int:
        return sum(1 for m in self.members.values() if m.is_awaiting_join)

    def has_all_members_joined(self) -> bool:
        return self.num_awaiting_join == len(self.members) and not self.pending_join_members

    def has_received_sync_from_all(self) -> bool:
        return not self.pending_sync_members

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    @staticmethod
    def generate_member_id(client_id: str, group_instance_id: str | None) -> str:
        return f"{group_instance_id if group_instance_id is not None else client_id}-{uuid.uuid4()}"

    # -- protocols -----------------------------------------------------------------

    def _support_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for member in self.members.values():
            for name in set(member.protocol_names()):
                counts[name] = counts.get(name, 0) + 1
        return counts

    def candidate_protocols(self) -> set[str]:
        total = len(self.members)
        return {name for name, count in self._support_counts().items() if count == total}

    def supports_protocols(self, protocol_type: str, names: list[str]) -> bool:
        """Whether a member with these protocols could join: any non-empty type and
        protocol list for an empty group, else the group's type and a protocol every
        member supports."""
        if self.state is GroupState.EMPTY:
            return protocol_type != "" and bool(names)
        if self.protocol_type != protocol_type:
            return False
        counts = self._support_counts()
        return any(counts.get(name, 0) == len(self.members) for name in names)

    def select_protocol(self) -> str:
        """The protocol with the most votes among those all members support; each
        member votes for its most preferred candidate."""
        if not self.members:
            raise RuntimeError(f"cannot select a protocol for empty group {self.group_id}")
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for member in self.members.values():
            choice = member.vote(candidates)
            votes[choice] = votes.get(choice, 0) + 1
        best = max(votes.values())
        return next(name for name, count in votes.items() if count == best)

    def compute_subscribed_topics(self) -> set[str] | None:
        """The topics a "consumer" group subscribes to; None when unknown."""
        if self.protocol_type != CONSUMER_PROTOCOL_TYPE:
            return None
        if not self.members:
            return set()
        if self.protocol_name is None:
            return None
        return union_of_subscriptions(m.metadata(self.protocol_name) for m in self.members.values())

    def is_subscribed_to_topic(self, topic: str) -> bool:
        if self.subscribed_topics is not None:
            return topic in self.subscribed_topics
        return self.uses_consumer_protocol

    def init_next_generation(self, now_ms: int) -> None:
        self.generation_id += 1
        if self.members:
            self.protocol_name = self.select_protocol()
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition_to(GroupState.COMPLETING_REBALANCE, now_ms)
        else:
            self.protocol_name = None
            self.subscribed_topics = self.compute_subscribed_topics()
            self.transition_to(GroupState.EMPTY, now_ms)
        self.pending_sync_members.clear()

    def current_members_metadata(self) -> list[tuple[str, str | None, bytes]]:
        """(member id, instance id, metadata for the selected protocol), for the leader."""
        return [(m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
                for m in self.members.values()]

    def assignments(self) -> dict[str, bytes]:
        return {m.member_id: m.assignment for m in self.members.values()}
