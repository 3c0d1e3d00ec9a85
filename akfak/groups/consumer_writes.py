"""Writing a consumer group's records: applied first, undone if the write fails.

A consumer-group operation applies its records to the in-memory state at once (the next
heartbeat must see them) and then appends them to `__consumer_offsets`.  Kafka's coordinator
runtime keeps the state in timeline structures and reverts to the last written offset when an
append fails; akfak keeps, per group with writes in flight, a snapshot of the group from before
the first of them and the records of each.  When one fails, the group goes back to the snapshot
and the records of the other writes (done or still in flight) are applied again: the state is
what loading the log would build.  The failed write's caller gets the error, never success.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from akfak.groups.records import CoordinatorRecord, GroupMetadataKey, OffsetCommitKey

if TYPE_CHECKING:
    from akfak.groups.consumer_coordinator import ConsumerGroups
    from akfak.groups.consumer_group import ConsumerGroup
    from akfak.groups.coordinator import GroupCoordinator
    from akfak.groups.group import ClassicGroup
    from akfak.groups.offsets import OffsetAndMetadata


@dataclass
class _Snapshot:
    """What a group's records can change: the consumer group, a classic group of the same id
    (an empty one is replaced), its committed offsets (deletion drops them)."""

    consumer: ConsumerGroup | None
    classic: ClassicGroup | None
    offsets: dict[tuple[str, int], OffsetAndMetadata] | None
    regexes_checked: int | None
    #: the records of every write in flight since the snapshot, None once failed
    writes: list[Sequence[CoordinatorRecord] | None] = field(default_factory=list)
    finished: set[int] = field(default_factory=set)


def _copy_group(group: ConsumerGroup | None) -> ConsumerGroup | None:
    if group is None:
        return None
    copied = copy.copy(group)
    for name in ("members", "static_members", "target", "partition_epochs", "resolved_regexes"):
        setattr(copied, name, dict(getattr(group, name)))
    return copied


class InFlightWrites:
    """The snapshots of the groups with writes in flight."""

    def __init__(self, groups: ConsumerGroups, coordinator: GroupCoordinator) -> None:
        self.consumer = groups
        self.gc = coordinator
        self._snapshots: dict[str, _Snapshot] = {}

    def apply(self, group_id: str, records: Sequence[CoordinatorRecord]) -> int:
        """Apply `records` (snapshotting the group first if nothing is in flight); returns the
        write's index for `done`."""
        snapshot = self._snapshots.get(group_id)
        if snapshot is None:
            offsets = self.gc.offsets.get(group_id)
            snapshot = self._snapshots[group_id] = _Snapshot(
                _copy_group(self.consumer.groups.get(group_id)), self.gc.groups.get(group_id),
                None if offsets is None else dict(offsets), self.consumer.regexes_checked.get(group_id))
        snapshot.writes.append(records)
        for record in records:
            self.gc.replay(record)
        return len(snapshot.writes) - 1

    def done(self, group_id: str, index: int, ok: bool) -> None:
        """Write `index` of the group ended; a failed one is undone."""
        snapshot = self._snapshots[group_id]
        snapshot.finished.add(index)
        if not ok:
            failed = snapshot.writes[index]
            snapshot.writes[index] = None
            self._restore(group_id, snapshot, failed or ())
        if len(snapshot.finished) == len(snapshot.writes):
            del self._snapshots[group_id]

    def _restore(self, group_id: str, snapshot: _Snapshot, failed: Sequence[CoordinatorRecord]) -> None:
        if snapshot.classic is None and any(isinstance(r.key, GroupMetadataKey) and r.value is not None
                                            for r in failed):
            self.gc.groups.pop(group_id, None)  # a failed downgrade: its classic group goes
        consumer = _copy_group(snapshot.consumer)
        if consumer is None:
            self.consumer.groups.pop(group_id, None)
        elif snapshot.classic is None and group_id in self.gc.groups:
            # A classic group took the id meanwhile (a JoinGroup after the consumer group
            # was dropped): its members stay; the consumer group comes back at the next load.
            self.consumer.groups.pop(group_id, None)
        else:
            self.consumer.groups[group_id] = consumer
        if snapshot.classic is not None and group_id not in self.gc.groups:
            self.gc.groups[group_id] = snapshot.classic  # the records had replaced it
        # Offsets commits are applied once written (not here): the snapshot's offsets are put
        # back only when these writes deleted some, lest a commit made meanwhile be lost.
        if any(isinstance(r.key, OffsetCommitKey) for w in (failed, *snapshot.writes) for r in w or ()):
            if snapshot.offsets is None:
                self.gc.offsets.pop(group_id, None)
            else:
                self.gc.offsets[group_id] = dict(snapshot.offsets)
        if snapshot.regexes_checked is None:
            self.consumer.regexes_checked.pop(group_id, None)
        else:
            self.consumer.regexes_checked[group_id] = snapshot.regexes_checked
        for records in snapshot.writes:
            for record in records or ():
                self.gc.replay(record)
