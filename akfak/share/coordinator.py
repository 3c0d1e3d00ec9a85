"""The share coordinator: share-partition state kept in `__share_group_state`, as Kafka's
ShareCoordinatorShard keeps it, on the shared coordinator runtime (akfak.coordinator).

Each share-partition (group, topic id, partition) lives in one partition of the topic
(`records.partition_for`).  Initialize writes a ShareSnapshot (a fresh start); a write adds a
ShareUpdate (its state batches overlaid on what is known), or a ShareSnapshot of the combined
state every `share.coordinator.snapshot.update.records.per.snapshot` updates or when the state
epoch rises; delete writes a tombstone.  On start every partition is replayed (the last
snapshot plus the updates after it); meanwhile its keys answer COORDINATOR_LOAD_IN_PROGRESS.
In a cluster it owns the partitions this broker leads, loading each on election and
forgetting it on resignation (akfak.coordinator.runtime); other keys are NOT_COORDINATOR.
The topic is created on first write with Kafka's configs (`cleanup.policy=delete`,
`retention.ms=-1`).  Every `share.coordinator.state.topic.prune.interval.ms` each partition's
log start moves up to the oldest latest snapshot of its keys, as Kafka prunes the topic.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger

from akfak.config import BrokerConfig
from akfak.coordinator.codec import RecordFormatError
from akfak.coordinator.runtime import LoadingCoordinator, PartitionLoader, TopicCreator
from akfak.coordinator.topic import ICoordinatorTopic
from akfak.errors import KafkaError
from akfak.log.batch import BatchHeader
from akfak.log.records import encode_batch, iter_records
from akfak.share import records
from akfak.share.records import ShareKey, ShareState, StateBatch
from akfak.share.settings import int_setting

log = Logger()

SHARE_STATE_TOPIC = "__share_group_state"


class ShareStateError(KafkaError):
    def __init__(self, error: ErrorCode, message: str = "") -> None:
        super().__init__(message or error.name)
        self.error_code = error.value


def share_state_topic_configs(config: BrokerConfig) -> dict[str, str | None]:
    """ShareCoordinatorService.shareGroupStateTopicConfigs."""
    return {
        "cleanup.policy": "delete",
        "compression.type": "producer",
        "segment.bytes": str(int_setting(config, "share.coordinator.state.topic.segment.bytes")),
        "retention.ms": "-1",
    }


class ShareCoordinator(LoadingCoordinator):
    """Share-partition states by key, kept in `__share_group_state`."""

    LOADING = "share-partition states"

    def __init__(self, config: BrokerConfig, clock: Any, store: ICoordinatorTopic) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.num_partitions = int_setting(config, "share.coordinator.state.topic.num.partitions")
        self.updates_per_snapshot = int_setting(
            config, "share.coordinator.snapshot.update.records.per.snapshot")
        self.states: dict[ShareKey, ShareState] = {}
        #: updates written since the key's last snapshot
        self._updates: dict[ShareKey, int] = {}
        #: (partition, offset) of the key's last snapshot: what pruning keeps
        self._snapshot_offsets: dict[ShareKey, tuple[int, int]] = {}
        self.active = False
        self.loader = PartitionLoader(clock, store, self._replay_batch, lambda _p: None,
                                      lambda: self.active)
        self.creator = TopicCreator(store, lambda: self.num_partitions)
        self.loaded: Deferred[None] = Deferred()

    def stop(self) -> None:
        self.active = False

    def partition_for(self, key: ShareKey) -> int:
        return records.partition_for(key, self.store.num_partitions() or self.num_partitions)

    def ensure_topic(self) -> Deferred[None]:
        return self.creator.ensure()

    def _check(self, key: ShareKey) -> None:
        if not self.active:
            raise ShareStateError(ErrorCode.not_coordinator)
        if self.store.num_partitions() is not None:
            status = self.key_status(self.partition_for(key))
            if status is not None:
                raise ShareStateError(status)

    def _unload(self, partition: int) -> None:
        """(a cluster) Another broker coordinates `partition` now: forget its keys."""
        for key in [k for k in self.states if self.partition_for(k) == partition]:
            del self.states[key]
            self._updates.pop(key, None)
            self._snapshot_offsets.pop(key, None)

    # -- replay ------------------------------------------------------------------------

    def _replay_batch(self, partition: int, header: BatchHeader, batch: memoryview) -> None:
        if header.is_control:
            return
        for i, record in enumerate(iter_records(batch)):
            if record.key is None:
                continue
            try:
                self.replay(record.key, record.value, (partition, header.base_offset + i))
            except (RecordFormatError, ValueError) as e:
                log.warn("Skipping an unreadable record in {topic}-{p}: {e}",
                         topic=SHARE_STATE_TOPIC, p=partition, e=e)

    def replay(self, key_bytes: bytes, value: bytes | None, position: tuple[int, int]) -> None:
        record_type, key = records.decode_key(key_bytes)
        if record_type == records.SNAPSHOT_TYPE:
            if value is None:
                self.states.pop(key, None)
                self._updates.pop(key, None)
                self._snapshot_offsets.pop(key, None)
                return
            self.states[key] = records.decode_snapshot(value)
            self._updates[key] = 0
            self._snapshot_offsets[key] = position
            return
        if value is None:
            return
        _epoch, leader_epoch, start_offset, batches = records.decode_update(value)
        self._apply_update(key, leader_epoch, start_offset, batches)
        self._updates[key] = self._updates.get(key, 0) + 1

    def _apply_update(self, key: ShareKey, leader_epoch: int, start_offset: int,
                      batches: list[StateBatch]) -> None:
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = ShareState(start_offset=start_offset, leader_epoch=leader_epoch)
        if start_offset != -1:
            state.start_offset = start_offset
        if leader_epoch != -1:
            state.leader_epoch = leader_epoch
        state.batches = records.combine(state.batches, batches, state.start_offset)

    # -- the internal API (ReadShareGroupState, WriteShareGroupState, ...) -----------------

    def read(self, key: ShareKey) -> ShareState | None:
        """The key's state, or None when the coordinator has never heard of it."""
        self._check(key)
        return self.states.get(key)

    def initialize(self, key: ShareKey, state_epoch: int, start_offset: int) -> Deferred[None]:
        """A fresh start (InitializeShareGroupState): a new snapshot, nothing merged."""
        self._check(key)
        previous = self.states.get(key)
        now = self.now_ms()
        state = ShareState(previous.snapshot_epoch + 1 if previous else 0, state_epoch, -1,
                           start_offset, now, now, [])
        self.states[key] = state
        self._updates[key] = 0
        return self._append(key, records.SNAPSHOT_TYPE, records.encode_snapshot(state))

    def write(self, key: ShareKey, state_epoch: int, leader_epoch: int, start_offset: int,
              batches: list[StateBatch]) -> Deferred[None]:
        """WriteShareGroupState: an update, or a snapshot when one is due; refused with
        FENCED_STATE_EPOCH from a share-partition leader whose state epoch is older (an
        AlterShareGroupOffsets started the state again since)."""
        self._check(key)
        current = self.states.get(key)
        if current is not None and state_epoch != -1 and current.state_epoch > state_epoch:
            raise ShareStateError(ErrorCode.fenced_state_epoch,
                                  "The share coordinator rejected the request because the "
                                  "share-group state epoch did not match.")
        now = self.now_ms()
        if (current is None or self._updates.get(key, 0) >= self.updates_per_snapshot
                or state_epoch > current.state_epoch):
            base = current or ShareState()
            new_start = base.start_offset if start_offset == -1 else start_offset
            state = ShareState(
                base.snapshot_epoch + 1 if current else 0,
                base.state_epoch if state_epoch == -1 else state_epoch,
                base.leader_epoch if leader_epoch == -1 else leader_epoch,
                new_start, now, now, records.combine(base.batches, batches, new_start))
            self.states[key] = state
            self._updates[key] = 0
            return self._append(key, records.SNAPSHOT_TYPE, records.encode_snapshot(state))
        self._apply_update(key, leader_epoch, start_offset, batches)
        self._updates[key] = self._updates.get(key, 0) + 1
        value = records.encode_update(current.snapshot_epoch, leader_epoch, start_offset, batches)
        return self._append(key, records.UPDATE_TYPE, value)

    def delete(self, key: ShareKey) -> Deferred[None]:
        """DeleteShareGroupState: a tombstone."""
        self._check(key)
        if self.states.pop(key, None) is None:
            return succeed(None)
        self._updates.pop(key, None)
        self._snapshot_offsets.pop(key, None)
        return self._append(key, records.SNAPSHOT_TYPE, None)

    def _append(self, key: ShareKey, record_type: int, value: bytes | None) -> Deferred[None]:
        partition = self.partition_for(key)
        batch = encode_batch([(records.encode_key(record_type, key), value)], timestamp=self.now_ms())

        def write(_: Any) -> Any:
            if self.owned is not None and partition not in self.owned:
                # (a cluster) the topic was just created, and another broker leads it
                self._unload(partition)
                raise ShareStateError(ErrorCode.not_coordinator)
            return maybeDeferred(self.store.append, partition, batch, self.now_ms())

        def written(base_offset: Any) -> None:
            if record_type == records.SNAPSHOT_TYPE and value is not None:
                self._snapshot_offsets[key] = (partition, int(base_offset))

        return self.creator.ensure().addCallback(write).addCallback(written)

    def prunable(self) -> dict[int, int]:
        """partition -> the offset below which no key needs a record (Kafka's
        ShareCoordinatorOffsetsManager): its keys' oldest latest snapshot."""
        lowest: dict[int, int] = {}
        for key in self.states:
            place = self._snapshot_offsets.get(key)
            partition = self.partition_for(key)
            if place is None:
                lowest[partition] = -1
            elif lowest.get(partition, place[1] + 1) != -1:
                lowest[partition] = min(lowest.get(partition, place[1]), place[1])
        return {p: o for p, o in lowest.items() if o > 0}
