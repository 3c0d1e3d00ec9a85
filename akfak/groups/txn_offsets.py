"""Offsets committed inside transactions (TxnOffsetCommit), as Kafka's group coordinator
keeps them.

A transactional offset commit is written to the group's `__consumer_offsets`
partition in a transactional batch of the producer (its producer id and epoch)
and stays *pending*: OffsetFetch does not return it, and with `require_stable`
answers UNSTABLE_OFFSET_COMMIT for its partitions.  When the transaction
coordinator writes the producer's COMMIT marker to that partition the pending
offsets become the group's committed offsets; an ABORT marker drops them.
Loading replays the same: transactional batches are pending until the marker
that follows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.coordinator.codec import RecordFormatError
from akfak.coordinator.runtime import append_error
from akfak.groups.consumer_offsets import validate_commit
from akfak.groups.group import ClassicGroup, GroupError, GroupState
from akfak.groups.offsets import OffsetAndMetadata
from akfak.groups.records import (
    CoordinatorRecord,
    OffsetCommitKey,
    OffsetCommitValue,
    decode_record,
)
from akfak.groups.results import CommitRequestPartition
from akfak.log.records import encode_batch

if TYPE_CHECKING:
    from akfak.groups.coordinator import GroupCoordinator

log = Logger()

TopicPartition = tuple[str, int]


class PendingTxnOffsets:
    """Producer id -> group id -> (topic, partition) -> offset, until the marker."""

    def __init__(self) -> None:
        self.by_producer: dict[int, dict[str, dict[TopicPartition, OffsetAndMetadata]]] = {}

    def add(self, producer_id: int, group_id: str, offsets: dict[TopicPartition, OffsetAndMetadata]
            ) -> None:
        self.by_producer.setdefault(producer_id, {}).setdefault(group_id, {}).update(offsets)

    def is_pending(self, group_id: str, key: TopicPartition) -> bool:
        return any(key in groups.get(group_id, {}) for groups in self.by_producer.values())

    def has_group(self, group_id: str) -> bool:
        return any(group_id in groups for groups in self.by_producer.values())

    def take(self, producer_id: int, in_partition: Any) -> dict[str, dict[TopicPartition, OffsetAndMetadata]]:
        """Remove and return the producer's pending offsets of the groups for which
        `in_partition(group_id)` holds."""
        groups = self.by_producer.get(producer_id)
        if not groups:
            return {}
        taken = {g: offsets for g, offsets in groups.items() if in_partition(g)}
        for group_id in taken:
            del groups[group_id]
        if not groups:
            del self.by_producer[producer_id]
        return taken


def txn_commit_offsets(coordinator: GroupCoordinator, group_id: str, producer_id: int,
                       producer_epoch: int, generation_id: int, member_id: str,
                       group_instance_id: str | None, partitions: Sequence[CommitRequestPartition]
                       ) -> Deferred[dict[TopicPartition, ErrorCode]]:
    """Write a transactional offset commit (Kafka's doTxnCommitOffsets); fires with an
    error per (topic, partition).  The transaction coordinator has verified the
    producer's transaction already."""
    keys = [(p.topic, p.partition) for p in partitions]

    def all_(error: ErrorCode) -> Deferred[dict[TopicPartition, ErrorCode]]:
        return succeed(dict.fromkeys(keys, error))

    error = coordinator._status(group_id)
    if error is not None:
        return all_(error)
    consumer_group = coordinator.consumer.groups.get(group_id)
    if consumer_group is not None:
        # generation_id is the member epoch (KIP-848)
        error = validate_commit(consumer_group, member_id, generation_id, 0, transactional=True)
        if error is not None:
            return all_(error)
    else:
        group = coordinator.groups.get(group_id)
        if group is None:
            # Offsets without group management (generation -1): a "simple" group.
            if generation_id >= 0:
                return all_(ErrorCode.illegal_generation)
            group = coordinator.groups[group_id] = ClassicGroup(group_id, coordinator.now_ms())
        try:
            _validate(group, member_id, group_instance_id, generation_id)
        except GroupError as e:
            return all_(e.code)
    now = coordinator.now_ms()
    results: dict[TopicPartition, ErrorCode] = {}
    pending: dict[TopicPartition, OffsetAndMetadata] = {}
    entries = []
    for p in partitions:
        key = (p.topic, p.partition)
        metadata = p.metadata if p.metadata is not None else ""
        if len(metadata) > coordinator.offset_metadata_max_bytes:
            results[key] = ErrorCode.offset_metadata_too_large
            continue
        offset = OffsetAndMetadata(p.offset, p.leader_epoch, metadata, now)
        pending[key] = offset
        results[key] = ErrorCode.none
        entries.append(CoordinatorRecord(OffsetCommitKey(group_id, p.topic, p.partition),
                                         offset.to_value()).encode())
    if not entries:
        return succeed(results)
    partition = coordinator.partition_for(group_id)
    # As Kafka writes it: the producer's id and epoch, transactional, sequence 0.
    batch = encode_batch(entries, timestamp=now, transactional=True, producer_id=producer_id,
                         producer_epoch=producer_epoch, base_sequence=0)

    def written(_: Any) -> dict[TopicPartition, ErrorCode]:
        coordinator.pending.add(producer_id, group_id, pending)
        return results

    def failed(failure: Failure) -> dict[TopicPartition, ErrorCode]:
        log.warn("Transactional offset commit of group {group} failed: {error}", group=group_id,
                 error=failure.getErrorMessage())
        error = append_error(failure)
        return {k: (error if k in pending else e) for k, e in results.items()}

    appended = coordinator.ensure_topic().addCallback(
        lambda _: coordinator.store.append(partition, batch, coordinator.now_ms()))
    return appended.addCallbacks(written, failed)


def _validate(group: ClassicGroup, member_id: str, instance_id: str | None,
              generation_id: int) -> None:
    """Kafka's validateOffsetCommit for transactional commits of a classic group."""
    if group.state is GroupState.DEAD:
        raise GroupError(ErrorCode.coordinator_not_available)
    if instance_id is not None or member_id:
        group.validate_member(member_id, instance_id)
    if generation_id >= 0 and generation_id != group.generation_id:
        raise GroupError(ErrorCode.illegal_generation)


def complete_txn(coordinator: GroupCoordinator, partition: int, producer_id: int,
                 commit: bool) -> None:
    """A marker of the producer landed in `__consumer_offsets-<partition>`: its pending
    offsets of the groups there are committed, or dropped."""
    taken = coordinator.pending.take(
        producer_id, lambda group_id: coordinator.partition_for(group_id) == partition)
    if not commit:
        return
    for group_id, offsets in taken.items():
        if group_id not in coordinator.groups and group_id not in coordinator.consumer.groups:
            coordinator.groups[group_id] = ClassicGroup(group_id, coordinator.now_ms())
        coordinator.offsets.setdefault(group_id, {}).update(offsets)


def replay_txn_record(coordinator: GroupCoordinator, partition: int, producer_id: int,
                      key: bytes | None, value: bytes | None) -> None:
    """A record of a transactional batch met while loading: pending until its marker."""
    try:
        record = decode_record(key, value)
    except RecordFormatError as e:
        log.warn("Skipping an unreadable record in __consumer_offsets-{p}: {e}", p=partition, e=e)
        return
    if record is None or not isinstance(record.key, OffsetCommitKey):
        return
    if isinstance(record.value, OffsetCommitValue):
        k = record.key
        coordinator.pending.add(producer_id, k.group,
                                {(k.topic, k.partition): OffsetAndMetadata.from_value(record.value)})
