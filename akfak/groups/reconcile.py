"""Moving a member from its current assignment to its target, as Kafka's
CurrentAssignmentBuilder does (KIP-848's incremental reconciliation).

- A member keeps the partitions both assigned now and in its target.
- Partitions it holds but no longer targets are *pending revocation*: the member stays in
  its epoch (UNREVOKED_PARTITIONS) until a heartbeat's owned partitions no longer name
  them; then it moves on to the next epoch.
- Partitions it targets are given once free: a partition still held (or pending revocation)
  by another member is *unreleased*; the member moves to the target epoch without it
  (UNRELEASED_PARTITIONS) and gets it on a later heartbeat once it is released.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterable, Mapping

from akfak.groups.consumer_group import (
    STABLE,
    UNRELEASED_PARTITIONS,
    UNREVOKED_PARTITIONS,
    ConsumerMember,
)
from akfak.groups.consumer_records import Partitions

#: (topic id, partitions) as a heartbeat reports them
Owned = Iterable[tuple[uuid.UUID | None, Iterable[int]]] | None


class FencedMemberEpoch(Exception):
    pass


def owns_any(owned: Owned, partitions: Mapping[uuid.UUID, frozenset[int]]) -> bool:
    """Whether the reported owned partitions name any of `partitions`; an absent report
    (None) is taken to own them all."""
    if owned is None:
        return True
    for topic_id, parts in owned:
        pending = partitions.get(topic_id) if topic_id is not None else None
        if pending and any(p in pending for p in parts):
            return True
    return False


def is_subset(owned: Owned, assigned: Partitions) -> bool:
    if owned is None:
        return True
    for topic_id, parts in owned:
        have = assigned.get(topic_id) if topic_id is not None else None
        if any(have is None or p not in have for p in parts):
            return False
    return True


def reconcile(member: ConsumerMember, target_epoch: int, target: Partitions,
              partition_epoch: Callable[[uuid.UUID, int], int], owned: Owned) -> ConsumerMember:
    """The member's next state towards `target` at `target_epoch`."""
    if member.state == STABLE:
        if member.member_epoch != target_epoch:
            return _next(member, member.member_epoch, target_epoch, target, partition_epoch, owned)
        return member
    if member.state == UNREVOKED_PARTITIONS:
        if owns_any(owned, member.pending_revocation):
            return member
        return _next(member, member.member_epoch + 1, target_epoch, target, partition_epoch, owned)
    if member.state == UNRELEASED_PARTITIONS:
        return _next(member, member.member_epoch, target_epoch, target, partition_epoch, owned)
    if owned is None or any(True for _, parts in owned for _ in parts):
        raise FencedMemberEpoch("The consumer group member is in a unknown state. "
                                "The member must abandon all its partitions and rejoin.")
    return _next(member, target_epoch, target_epoch, target, partition_epoch, owned)


def _epoch(member: ConsumerMember, epoch: int) -> dict[str, int]:
    # Kafka's updateMemberEpoch: the previous epoch is always the one left
    return {"member_epoch": epoch, "previous_member_epoch": member.member_epoch}


def _next(member: ConsumerMember, member_epoch: int, target_epoch: int, target: Partitions,
          partition_epoch: Callable[[uuid.UUID, int], int], owned: Owned) -> ConsumerMember:
    unreleased = False
    assigned: dict[uuid.UUID, frozenset[int]] = {}
    revoking: dict[uuid.UUID, frozenset[int]] = {}
    adding: dict[uuid.UUID, frozenset[int]] = {}
    for topic_id in set(target) | set(member.assigned):
        want = target.get(topic_id, frozenset())
        have = member.assigned.get(topic_id, frozenset())
        keep = have & want
        revoke = have - keep
        add = {p for p in want - keep if partition_epoch(topic_id, p) == -1}
        unreleased = unreleased or len(add) < len(want - keep)
        if keep:
            assigned[topic_id] = frozenset(keep)
        if revoke:
            revoking[topic_id] = frozenset(revoke)
        if add:
            adding[topic_id] = frozenset(add)
    if revoking and owns_any(owned, revoking):
        return dataclasses.replace(member, state=UNREVOKED_PARTITIONS, assigned=assigned,
                                   pending_revocation=revoking, **_epoch(member, member_epoch))
    for topic_id, parts in adding.items():
        assigned[topic_id] = assigned.get(topic_id, frozenset()) | parts
    state = UNRELEASED_PARTITIONS if unreleased else STABLE
    return dataclasses.replace(member, state=state, assigned=assigned, pending_revocation={},
                               **_epoch(member, target_epoch))

