"""Consumer-group lag: each committed offset against its partition's end offset.

As kafka-consumer-groups --describe and kafka-exporter count it: the end offset is the
high watermark (what a read_uncommitted consumer can reach), lag = end - committed, never
below 0.  Only partitions with a committed offset are listed (a group that commits nothing
has no lag to show); a committed partition whose topic is gone is left out.  Dead groups
have no offsets.  Reads the coordinator's memory only: cheap enough for the reactor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from akfak.groups.group import GroupState


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    topic: str
    partition: int
    committed: int
    end_offset: int
    lag: int


def group_lags(broker: Any, group: str | None = None) -> list[GroupLag]:
    """Every group's (or `group`'s) lag per committed partition, sorted by group, topic,
    partition."""
    coordinator = broker.group_coordinator
    if coordinator is None:
        return []
    wanted = coordinator.offsets if group is None else {group: coordinator.offsets.get(group, {})}
    lags = []
    for group_id, committed in sorted(wanted.items()):
        found = coordinator.groups.get(group_id)
        if found is not None and found.state is GroupState.DEAD:
            continue
        for (topic, partition), offset in sorted(committed.items()):
            log = broker.get_log(topic, partition)
            if log is None:
                continue
            end = log.high_watermark
            lags.append(GroupLag(group_id, topic, partition, offset.offset, end,
                                 max(0, end - offset.offset)))
    return lags
