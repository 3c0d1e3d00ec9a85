"""The `simple` share-group assignor, as Kafka 4.1's SimpleAssignor.

Share groups let several members consume one partition, so the assignor spreads members over
partitions rather than partitions over members.  With one subscription for everyone
(homogeneous): every member first gets the partition its member id hashes to
(`abs(hashCode % n)`), keeps what it had up to ceil(partitions / members) partitions, and the
partitions nobody has go round-robin, so with fewer partitions than members every partition
has several members, and with more each member has about its share.  With different
subscriptions each member gets its hashed partition among those it subscribes to, and the
partitions nobody has (and nobody had) go round-robin over their topic's subscribers.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from akfak.groups.records import java_string_hash

#: (topic id, partition)
TopicPartition = tuple[Hashable, int]
Assignment = dict[str, set[TopicPartition]]

NAME = "simple"


def _java_mod_abs(member_id: str, n: int) -> int:
    h = java_string_hash(member_id)
    r = abs(h) % n  # Java's % keeps the dividend's sign; abs of it is abs(h) % n
    return r


def assign(members: Sequence[str], subscriptions: Mapping[str, Sequence[Hashable]],
           partitions: Mapping[Hashable, int], current: Mapping[str, set[TopicPartition]]
           ) -> Assignment:
    """members in join order; subscriptions: member -> topic ids; partitions: topic id ->
    partition count; current: member -> what it has now."""
    if not members:
        return {}
    subscribed = {m: [t for t in subscriptions.get(m, ()) if t in partitions] for m in members}
    if len({tuple(sorted(map(str, v))) for v in subscribed.values()}) == 1:
        return _homogeneous(members, subscribed[members[0]], partitions, current)
    return _heterogeneous(members, subscribed, partitions, current)


def _targets(topics: Sequence[Hashable], partitions: Mapping[Hashable, int]) -> list[TopicPartition]:
    return [(t, p) for t in topics for p in range(partitions[t])]


def _homogeneous(members: Sequence[str], topics: Sequence[Hashable],
                 partitions: Mapping[Hashable, int], current: Mapping[str, set[TopicPartition]]
                 ) -> Assignment:
    targets = _targets(topics, partitions)
    result: Assignment = {m: set() for m in members}
    if not targets:
        return result
    desired = -(-len(targets) // len(members))
    hashed: dict[TopicPartition, list[str]] = {}
    for m in members:
        tp = targets[_java_mod_abs(m, len(targets))]
        hashed.setdefault(tp, []).append(m)
        result[m].add(tp)
    taken = set(hashed)
    target_set = set(targets)
    for m in members:
        for tp in sorted(current.get(m, ()), key=str):
            if tp in target_set and tp not in hashed and len(result[m]) < desired:
                result[m].add(tp)
                taken.add(tp)
    unassigned = [tp for tp in targets if tp not in taken]
    order = list(members)
    i = 0
    while unassigned and order:
        m = order[i % len(order)]
        if len(result[m]) <= desired:
            result[m].add(unassigned.pop(0))
            i += 1
        else:
            order.remove(m)
    return result


def _heterogeneous(members: Sequence[str], subscribed: Mapping[str, list[Hashable]],
                   partitions: Mapping[Hashable, int], current: Mapping[str, set[TopicPartition]]
                   ) -> Assignment:
    result: Assignment = {m: set() for m in members}
    by_partition: dict[TopicPartition, list[str]] = {}
    subscribers: dict[Hashable, list[str]] = {}
    for m in members:
        targets = _targets(subscribed[m], partitions)
        for t in subscribed[m]:
            subscribers.setdefault(t, []).append(m)
        if targets:
            by_partition.setdefault(targets[_java_mod_abs(m, len(targets))], []).append(m)
    had = {tp for m in members for tp in current.get(m, ())}
    unassigned: dict[Hashable, list[TopicPartition]] = {}
    for m in members:
        for tp in _targets(subscribed[m], partitions):
            if tp not in by_partition and tp not in had and tp not in unassigned.get(tp[0], []):
                unassigned.setdefault(tp[0], []).append(tp)
    for topic, tps in unassigned.items():
        subs = subscribers[topic]
        for i, tp in enumerate(tps):
            by_partition.setdefault(tp, []).append(subs[i % len(subs)])
    for tp, ms in by_partition.items():
        for m in ms:
            result[m].add(tp)
    for m in members:
        for tp in current.get(m, ()):
            if tp[0] in subscribed[m] and tp not in by_partition and tp[1] < partitions.get(tp[0], 0):
                result[m].add(tp)
    return result
