"""Committed offsets: OffsetCommit, OffsetFetch, OffsetDelete and expiry, as Kafka's
OffsetMetadataManager keeps them.

Commits are OffsetCommit records in the group's `__consumer_offsets` partition,
answered once written; a generation or member epoch that does not match is refused
as Kafka refuses it.  Offsets of empty groups expire after `offsets.retention.minutes`
(tombstones); offsets of deleted topics are removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.coordinator.runtime import append_error
from akfak.groups.consumer_coordinator import ConsumerGroups
from akfak.groups.consumer_offsets import expire_offsets, validate_commit, validate_fetch
from akfak.groups.group import ClassicGroup, GroupError, GroupState
from akfak.groups.offsets import OffsetAndMetadata, TopicPartition, expiration_base, is_expired
from akfak.groups.records import (
    CoordinatorRecord,
    GroupMetadataKey,
    OffsetCommitKey,
)
from akfak.groups.results import (
    CommitRequestPartition,
    FetchedOffset,
    FetchGroupResult,
    OffsetDeleteResult,
)
from akfak.groups.txn_offsets import PendingTxnOffsets

log = Logger()


class OffsetCommits:
    """Commit, fetch, delete and expire offsets (a GroupCoordinator part)."""

    # state the GroupCoordinator holds
    groups: dict[str, ClassicGroup]
    offsets: dict[str, dict[TopicPartition, OffsetAndMetadata]]
    pending: PendingTxnOffsets
    consumer: ConsumerGroups
    offsets_retention_ms: int
    offset_metadata_max_bytes: int
    active: bool

    # -- OffsetCommit ----------------------------------------------------------------

    def commit_offsets(self, group_id: str, generation_id: int, member_id: str,
                       group_instance_id: str | None, partitions: Sequence[CommitRequestPartition], *,
                       version: int, retention_time_ms: int = -1
                       ) -> Deferred[dict[TopicPartition, ErrorCode]]:
        """Commit offsets; fires with an error per (topic, partition)."""
        keys = [(p.topic, p.partition) for p in partitions]

        def all_(error: ErrorCode) -> Deferred[dict[TopicPartition, ErrorCode]]:
            return succeed(dict.fromkeys(keys, error))

        error = self._status(group_id, allow_empty_id=True)
        if error is not None:
            return all_(error)
        group = self.groups.get(group_id)
        created = False
        consumer_group = self.consumer.groups.get(group_id)
        if consumer_group is not None:
            # generation_id is the member epoch (KIP-848)
            error = validate_commit(consumer_group, member_id, generation_id, version)
            if error is not None:
                return all_(error)
        else:
            if group is None:
                if generation_id >= 0:
                    return all_(ErrorCode.group_id_not_found if version >= 9
                                else ErrorCode.illegal_generation)
                # Offsets without group management: a "simple" group.
                group = ClassicGroup(group_id, self.now_ms())
                self.groups[group_id] = group
                created = True
            try:
                self._validate_offset_commit(group, member_id, group_instance_id, generation_id)
            except GroupError as e:
                return all_(e.code)
            if group.is_in(GroupState.STABLE, GroupState.PREPARING_REBALANCE) and member_id in group.members:
                # A commit keeps a classic member's session alive.
                self._reschedule_heartbeat(group, group.members[member_id])
        now = self.now_ms()
        expire = now + retention_time_ms if retention_time_ms != -1 else -1
        results: dict[TopicPartition, ErrorCode] = {}
        records = []
        committed: dict[TopicPartition, OffsetAndMetadata] = {}
        for p in partitions:
            key = (p.topic, p.partition)
            metadata = p.metadata if p.metadata is not None else ""
            if len(metadata) > self.offset_metadata_max_bytes:
                results[key] = ErrorCode.offset_metadata_too_large
                continue
            offset = OffsetAndMetadata(p.offset, p.leader_epoch, metadata, now, expire)
            committed[key] = offset
            results[key] = ErrorCode.none
            records.append(CoordinatorRecord(OffsetCommitKey(group_id, p.topic, p.partition),
                                             offset.to_value()))

        def written(_: Any) -> dict[TopicPartition, ErrorCode]:
            self.offsets.setdefault(group_id, {}).update(committed)
            return results

        def failed(failure: Failure) -> dict[TopicPartition, ErrorCode]:
            log.warn("Committing offsets of group {group} failed: {error}", group=group_id,
                     error=failure.getErrorMessage())
            if created and group_id not in self.offsets and self.groups.get(group_id) is group:
                del self.groups[group_id]
            error = append_error(failure)
            return {k: (error if k in committed else e) for k, e in results.items()}

        return self._append(group_id, records).addCallbacks(written, failed)

    def _validate_offset_commit(self, group: ClassicGroup, member_id: str, instance_id: str | None,
                                generation_id: int) -> None:
        if group.state is GroupState.DEAD:
            raise GroupError(ErrorCode.coordinator_not_available)
        if generation_id < 0 and group.state is GroupState.EMPTY:
            return  # an admin client or a consumer without group management
        if generation_id >= 0 or member_id or instance_id is not None:
            group.validate_member(member_id, instance_id)
            if generation_id != group.generation_id:
                raise GroupError(ErrorCode.illegal_generation)
        elif group.state is not GroupState.EMPTY:
            raise GroupError(ErrorCode.unknown_member_id)
        if group.state is GroupState.COMPLETING_REBALANCE:
            raise GroupError(ErrorCode.rebalance_in_progress)

    # -- OffsetFetch -----------------------------------------------------------------

    def fetch_offsets(self, group_id: str, partitions: Sequence[TopicPartition] | None, *,
                      require_stable: bool = False, member_id: str | None = None,
                      member_epoch: int = -1) -> FetchGroupResult:
        """Committed offsets of `partitions` (None: every committed partition).
        With `require_stable` a partition with a pending transactional commit answers
        UNSTABLE_OFFSET_COMMIT (`txn_offsets.py`).  A consumer group's member (OffsetFetch
        v9+) must give its current member epoch (STALE_MEMBER_EPOCH, UNKNOWN_MEMBER_ID)."""
        error = self._status(group_id, allow_empty_id=True)
        if error is not None:
            return FetchGroupResult(group_id, error)
        group = self.groups.get(group_id)
        consumer_group = self.consumer.groups.get(group_id)
        if consumer_group is not None:
            error = validate_fetch(consumer_group, member_id, member_epoch)
            if error is not None:
                return FetchGroupResult(group_id, error)
        committed = ({} if (group is None or group.state is GroupState.DEAD) and consumer_group is None
                     else self.offsets.get(group_id, {}))
        if partitions is None:
            wanted: Iterable[TopicPartition] = sorted(committed)
        else:
            wanted = partitions
        fetched = []
        for topic, partition in wanted:
            offset = committed.get((topic, partition))
            if require_stable and self.pending.is_pending(group_id, (topic, partition)):
                fetched.append(FetchedOffset(topic, partition, error=ErrorCode.unstable_offset_commit))
            elif offset is None:
                fetched.append(FetchedOffset(topic, partition))
            else:
                fetched.append(FetchedOffset(topic, partition, offset.offset, offset.leader_epoch,
                                             offset.metadata))
        return FetchGroupResult(group_id, ErrorCode.none, tuple(fetched))

    # -- OffsetDelete ----------------------------------------------------------------

    def delete_offsets(self, group_id: str, partitions: Sequence[TopicPartition]
                       ) -> Deferred[OffsetDeleteResult]:
        error = self._status(group_id)
        if error is not None:
            return succeed(OffsetDeleteResult(error))
        group = self.groups.get(group_id)
        consumer_group = self.consumer.groups.get(group_id)
        subscribed: Callable[[str], bool]
        if consumer_group is not None:
            subscribed = consumer_group.subscribed_topics().__contains__
        elif group is None or group.state is GroupState.DEAD:
            return succeed(OffsetDeleteResult(ErrorCode.group_id_not_found))
        elif group.state is not GroupState.EMPTY and not group.uses_consumer_protocol:
            return succeed(OffsetDeleteResult(ErrorCode.non_empty_group))
        else:
            subscribed = group.is_subscribed_to_topic
        committed = self.offsets.get(group_id, {})
        results: dict[TopicPartition, ErrorCode] = {}
        records = []
        for key in partitions:
            if subscribed(key[0]):
                results[key] = ErrorCode.group_subscribed_to_topic
                continue
            results[key] = ErrorCode.none
            if key in committed:
                records.append(CoordinatorRecord(OffsetCommitKey(group_id, key[0], key[1]), None))

        def written(_: Any) -> OffsetDeleteResult:
            for record in records:
                assert isinstance(record.key, OffsetCommitKey)
                self._remove_offset(group_id, (record.key.topic, record.key.partition))
            return OffsetDeleteResult(ErrorCode.none, results)

        def failed(failure: Failure) -> OffsetDeleteResult:
            return OffsetDeleteResult(append_error(failure))

        return self._append(group_id, records).addCallbacks(written, failed)

    def _remove_offset(self, group_id: str, key: TopicPartition) -> None:
        offsets = self.offsets.get(group_id)
        if offsets is None:
            return
        offsets.pop(key, None)
        if not offsets:
            del self.offsets[group_id]

    # -- expiry and deleted topics ----------------------------------------------------

    def cleanup_group_metadata(self) -> Deferred[int]:
        """Expire offsets past `offsets.retention.minutes` (KIP-211), and delete
        Empty groups left without offsets, classic (here) and consumer groups
        (`consumer_offsets.expire_offsets`); fires with the number of offsets removed."""
        if not self.active:
            return succeed(0)
        now = self.now_ms()
        writes = []
        expired_total = 0
        for group_id, group in list(self.groups.items()):
            if self.loading and self.partition_for(group_id) in self.loading:
                continue
            records, all_expired = self._expired_offset_records(group, now)
            expired_total += len(records)
            delete_group = (all_expired and group.state is GroupState.EMPTY
                            and not self.pending.has_group(group_id))
            if delete_group:
                records.append(CoordinatorRecord(GroupMetadataKey(group_id), None))
            if not records:
                continue
            writes.append(self._append(group_id, records).addCallbacks(
                self._apply_cleanup, self._log_write_failure, callbackArgs=(group_id, records),
                errbackArgs=(group_id,)))
        consumer_writes, consumer_expired = expire_offsets(self, now)
        writes += consumer_writes
        expired_total += consumer_expired
        if expired_total:
            log.info("Removing {n} expired offsets", n=expired_total)
        return gatherResults(writes).addCallback(lambda _: expired_total)

    def _expired_offset_records(self, group: ClassicGroup, now: int
                                ) -> tuple[list[CoordinatorRecord], bool]:
        offsets = self.offsets.get(group.group_id)
        if not offsets:
            return [], True
        base = expiration_base(group)
        if base is None:
            return [], False
        records = []
        all_expired = True
        for (topic, partition), offset in offsets.items():
            if group.is_subscribed_to_topic(topic) or self.pending.is_pending(
                    group.group_id, (topic, partition)) or not is_expired(
                    offset, base, now, self.offsets_retention_ms):
                all_expired = False
                continue
            records.append(CoordinatorRecord(OffsetCommitKey(group.group_id, topic, partition), None))
        return records, all_expired

    def _apply_cleanup(self, _: Any, group_id: str, records: list[CoordinatorRecord]) -> None:
        for record in records:
            if isinstance(record.key, OffsetCommitKey):
                self._remove_offset(group_id, (record.key.topic, record.key.partition))
            else:
                group = self.groups.get(group_id)
                # Only if nobody joined while the tombstone was written.
                if group is not None and group.state is GroupState.EMPTY:
                    del self.groups[group_id]
                    group.transition_to(GroupState.DEAD, self.now_ms())

    def on_partitions_deleted(self, partitions: Iterable[TopicPartition]) -> Deferred[None]:
        """Remove the committed offsets of deleted topic partitions (Kafka does this
        when topics are deleted)."""
        gone = set(partitions)
        writes = []
        for group_id, offsets in list(self.offsets.items()):
            records = [CoordinatorRecord(OffsetCommitKey(group_id, t, p), None)
                       for (t, p) in offsets if (t, p) in gone]
            if records:
                writes.append(self._append(group_id, records).addCallbacks(
                    self._apply_cleanup, self._log_write_failure, callbackArgs=(group_id, records),
                    errbackArgs=(group_id,)))
        return gatherResults(writes).addCallback(lambda _: None)
