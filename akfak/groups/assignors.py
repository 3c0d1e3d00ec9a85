"""Server-side partition assignors of consumer groups: `uniform` and `range`, as Kafka's
group coordinator names them (`group.consumer.assignors`, the client's
`group.remote.assignor`).

An assignor sees the members (id, instance id, subscribed topic ids, current target
partitions) and the topics (id -> partition count), and answers member id -> partitions.

- `uniform` (Kafka's UniformAssignor): every partition of the subscribed topics goes to a
  member subscribed to its topic, the counts differing by at most one among members with the
  same subscription, and sticky: a member keeps what it had as far as balance allows, so a
  member joining or leaving moves only the partitions it must.  Kafka's homogeneous and
  heterogeneous builders reach the same kind of answer, not always the same one.
- `range` (Kafka's RangeAssignor): per topic, members sorted by instance id (static
  members first) then member id take consecutive ranges, the first `count % members` one
  partition more; members with the same subscription get co-partitioned assignments.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Assignment = dict[uuid.UUID, frozenset[int]]


@dataclass(frozen=True, slots=True)
class MemberSpec:
    member_id: str
    instance_id: str | None
    topics: frozenset[uuid.UUID]
    current: Mapping[uuid.UUID, frozenset[int]]


class UnknownAssignor(KeyError):
    pass


def _freeze(parts: dict[uuid.UUID, set[int]]) -> Assignment:
    return {t: frozenset(p) for t, p in parts.items() if p}


def uniform(members: Sequence[MemberSpec], topics: Mapping[uuid.UUID, int]) -> dict[str, Assignment]:
    """Balanced and sticky, per group of topics subscribed alike."""
    out: dict[str, dict[uuid.UUID, set[int]]] = {m.member_id: {} for m in members}
    load = dict.fromkeys(out, 0)
    # Partitions in a deterministic order; each goes to one of its topic's subscribers.
    subscribers: dict[uuid.UUID, list[str]] = {}
    for m in sorted(members, key=lambda m: m.member_id):
        for t in m.topics:
            if t in topics:
                subscribers.setdefault(t, []).append(m.member_id)
    total = sum(topics[t] for t in subscribers)
    # Each member's fair share of all the partitions it could take (a homogeneous group:
    # exactly total / members, rounded up for the first `total % members`).
    n = len([m for m in members if any(t in subscribers for t in m.topics)]) or 1
    quota_floor, extra = divmod(total, n)
    quota = quota_floor + (1 if extra else 0)
    unassigned: list[tuple[uuid.UUID, int]] = []
    kept: set[tuple[uuid.UUID, int]] = set()
    # 1. Stickiness: keep current partitions up to the quota.
    for m in sorted(members, key=lambda m: m.member_id):
        for t in sorted(m.current):
            if t not in subscribers or m.member_id not in subscribers[t]:
                continue
            for p in sorted(m.current[t]):
                if p >= topics[t] or (t, p) in kept or load[m.member_id] >= quota:
                    continue
                out[m.member_id].setdefault(t, set()).add(p)
                load[m.member_id] += 1
                kept.add((t, p))
    for t in sorted(subscribers):
        for p in range(topics[t]):
            if (t, p) not in kept:
                unassigned.append((t, p))
    # 2. Everything else to the least-loaded subscriber.
    for t, p in unassigned:
        target = min(subscribers[t], key=lambda mid: (load[mid], mid))
        out[target].setdefault(t, set()).add(p)
        load[target] += 1
    # 3. Only `extra` members may hold quota partitions: move the surplus off the others.
    if extra:
        full = [mid for mid in sorted(load) if load[mid] >= quota]
        for mid in full[extra:]:
            while load[mid] > quota_floor:
                moved = _move_one(mid, out, load, subscribers, quota_floor)
                if not moved:
                    break
    return {mid: _freeze(parts) for mid, parts in out.items()}


def _move_one(source: str, out: dict[str, dict[uuid.UUID, set[int]]], load: dict[str, int],
              subscribers: Mapping[uuid.UUID, list[str]], floor: int) -> bool:
    for t in sorted(out[source]):
        for mid in subscribers[t]:
            if mid != source and load[mid] < floor:
                p = max(out[source][t])
                out[source][t].discard(p)
                out[mid].setdefault(t, set()).add(p)
                load[source] -= 1
                load[mid] += 1
                return True
    return False


def _sort_key(m: MemberSpec) -> tuple[int, str]:
    return (0, m.instance_id) if m.instance_id is not None else (1, m.member_id)


def range_(members: Sequence[MemberSpec], topics: Mapping[uuid.UUID, int]) -> dict[str, Assignment]:
    ordered = sorted(members, key=_sort_key)
    out: dict[str, dict[uuid.UUID, set[int]]] = {m.member_id: {} for m in members}
    for t in sorted(topics):
        subscribed = [m for m in ordered if t in m.topics]
        if not subscribed:
            continue
        base, extra = divmod(topics[t], len(subscribed))
        start = 0
        for i, m in enumerate(subscribed):
            size = base + (1 if i < extra else 0)
            if size:
                out[m.member_id][t] = set(range(start, start + size))
            start += size
    return {mid: _freeze(parts) for mid, parts in out.items()}


ASSIGNORS = {"uniform": uniform, "range": range_}


def assign(name: str, members: Sequence[MemberSpec], topics: Mapping[uuid.UUID, int]
           ) -> dict[str, Assignment]:
    try:
        assignor = ASSIGNORS[name]
    except KeyError:
        raise UnknownAssignor(name) from None
    return assignor(members, topics)
