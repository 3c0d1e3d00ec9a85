"""Committed offsets of consumer groups (KIP-848): the checks of commits and fetches, the
records that delete a group, and expiry, as Kafka's ConsumerGroup and OffsetMetadataManager.

- OffsetCommit and TxnOffsetCommit carry the member epoch where the classic protocol has the
  generation: a commit is accepted from the member at its current epoch (UNKNOWN_MEMBER_ID,
  STALE_MEMBER_EPOCH; TxnOffsetCommit answers a stale epoch ILLEGAL_GENERATION, as Kafka does
  for transactional producers), or with epoch -1 while the group has no members (an admin
  client or a consumer without group management).  A classic member of the group commits with
  its generation (= its member epoch), any OffsetCommit version, ILLEGAL_GENERATION when stale.
  A consumer-protocol member must use OffsetCommit v9+ (UNSUPPORTED_VERSION).
- Offsets expire `offsets.retention.minutes` after their commit (or at the expire timestamp an
  old OffsetCommit gave), but never for a topic a member subscribes to, nor while a
  transaction of the group has offsets pending.  An Empty group whose offsets are all gone is
  deleted by the same pass, as Kafka's cleanupGroupMetadata does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred

from akfak.groups.consumer_group import ConsumerGroup, GroupState, group_record
from akfak.groups.consumer_records import (
    CURRENT_MEMBER_ASSIGNMENT,
    GROUP_METADATA,
    MEMBER_METADATA,
    PARTITION_METADATA,
    REGULAR_EXPRESSION,
    TARGET_ASSIGNMENT_MEMBER,
    TARGET_ASSIGNMENT_METADATA,
)
from akfak.groups.offsets import OffsetAndMetadata, is_expired
from akfak.groups.records import CoordinatorRecord, OffsetCommitKey

if TYPE_CHECKING:
    from akfak.groups.coordinator import GroupCoordinator
    from akfak.groups.txn_offsets import PendingTxnOffsets

TopicPartition = tuple[str, int]


def validate_commit(group: ConsumerGroup, member_id: str, member_epoch: int, version: int, *,
                    transactional: bool = False) -> ErrorCode | None:
    """Kafka's ConsumerGroup.validateOffsetCommit (and the ILLEGAL_GENERATION that
    validateTransactionalOffsetCommit makes of a stale epoch)."""
    if member_epoch < 0 and not group.members:
        return None
    member = group.members.get(member_id)
    if member is None:
        return ErrorCode.unknown_member_id
    if not transactional and version < 9 and not member.uses_classic_protocol:
        return ErrorCode.unsupported_version
    if member_epoch != member.member_epoch:
        return (ErrorCode.illegal_generation if transactional or member.uses_classic_protocol
                else ErrorCode.stale_member_epoch)
    return None


def validate_fetch(group: ConsumerGroup, member_id: str | None, member_epoch: int) -> ErrorCode | None:
    """Kafka's ConsumerGroup.validateOffsetFetch."""
    if member_id is None and member_epoch < 0:
        return None
    member = group.members.get(member_id or "")
    if member is None:
        return ErrorCode.unknown_member_id
    if member_epoch != member.member_epoch:
        return ErrorCode.illegal_generation if member.uses_classic_protocol else ErrorCode.stale_member_epoch
    return None


def deletion_records(group: ConsumerGroup, offsets: Mapping[TopicPartition, OffsetAndMetadata]
                     ) -> list[CoordinatorRecord]:
    """Tombstones of `offsets`, then Kafka's createGroupTombstoneRecords."""
    gid = group.group_id
    records = [CoordinatorRecord(OffsetCommitKey(gid, t, p), None) for t, p in offsets]
    records += [group_record(CURRENT_MEMBER_ASSIGNMENT, gid, m, None) for m in group.members]
    records += [group_record(TARGET_ASSIGNMENT_MEMBER, gid, m, None) for m in group.members]
    records.append(group_record(TARGET_ASSIGNMENT_METADATA, gid, None, None))
    records += [group_record(MEMBER_METADATA, gid, m, None) for m in group.members]
    records += [group_record(REGULAR_EXPRESSION, gid, r, None) for r in group.resolved_regexes]
    records.append(group_record(PARTITION_METADATA, gid, None, None))
    records.append(group_record(GROUP_METADATA, gid, None, None))
    return records


def expire_offsets(coordinator: GroupCoordinator, now_ms: int) -> tuple[list[Deferred[Any]], int]:
    """The expiry pass over the consumer groups of loaded partitions: the writes, and the
    number of offsets they expire."""
    writes: list[Deferred[Any]] = []
    expired = 0
    for group_id, group in list(coordinator.consumer.groups.items()):
        if coordinator.loading and coordinator.partition_for(group_id) in coordinator.loading:
            continue
        records = expiry_records(group, coordinator.offsets.get(group_id, {}), coordinator.pending,
                                 now_ms, coordinator.offsets_retention_ms)
        expired += sum(isinstance(r.key, OffsetCommitKey) for r in records)
        writes.append(coordinator.consumer._write(group_id, records))
    return writes, expired


def expiry_records(group: ConsumerGroup, offsets: Mapping[TopicPartition, OffsetAndMetadata],
                   pending: PendingTxnOffsets, now_ms: int, retention_ms: int
                   ) -> list[CoordinatorRecord]:
    """Kafka's cleanupExpiredOffsets then maybeDeleteGroup for a consumer group: tombstones of
    the expired offsets, then the group's own if it is Empty and nothing else is left."""
    gid = group.group_id
    subscribed = group.subscribed_topics()
    records = []
    all_expired = True
    for (topic, partition), offset in offsets.items():
        if (topic in subscribed or pending.is_pending(gid, (topic, partition))
                or not is_expired(offset, lambda o: o.commit_timestamp, now_ms, retention_ms)):
            all_expired = False
            continue
        records.append(CoordinatorRecord(OffsetCommitKey(gid, topic, partition), None))
    if all_expired and not pending.has_group(gid) and group.state == GroupState.EMPTY:
        records += deletion_records(group, {})
    return records
