"""Consumer-group lag: how far each group's committed offsets are behind the log ends.

As kafka-consumer-groups --describe and kafka_exporter compute it: per partition a group has
committed, lag = the partition's high watermark (its end for consumers) minus the committed
offset, never below 0 (a log truncated or deleted below a commit).  Only committed partitions
appear; a group that is Dead (deleted, expired) has none.  Plain reads of the coordinator's
in-memory state: call it on the reactor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from akfak.groups.group import GroupState

if TYPE_CHECKING:
    from akfak.broker import Broker


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    topic: str
    partition: int
    committed: int
    #: the partition's high watermark
    end_offset: int
    lag: int


def group_lags(broker: Broker, group: str | None = None) -> list[GroupLag]:
    """The lag of every committed partition of `group` (None: of every group), sorted by
    group, topic and partition; partitions whose log is gone are left out."""
    coordinator = broker.group_coordinator
    if coordinator is None:
        return []
    names = sorted(coordinator.offsets) if group is None else [group]
    found: list[GroupLag] = []
    for name in names:
        classic = coordinator.groups.get(name)
        if classic is not None and classic.state is GroupState.DEAD:
            continue
        for (topic, partition), committed in sorted(coordinator.offsets.get(name, {}).items()):
            log = broker.get_log(topic, partition)
            if log is None:
                continue
            end = log.high_watermark
            found.append(GroupLag(name, topic, partition, committed.offset, end,
                                  max(0, end - committed.offset)))
    return found
