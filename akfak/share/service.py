"""Share groups on a broker: what `Broker.open()` and the share handlers use.

    broker.share = open_share_service(broker)   # in open(), after the group coordinator

`ShareService` holds the share groups (akfak.share.group), the share sessions
(akfak.share.sessions), the share coordinator over `__share_group_state`
(akfak.share.coordinator) and the share-partitions (akfak.share.partition), loaded from the
coordinator on first use: a share-partition without a start offset starts where
`share.auto.offset.reset` (a group config; `latest` by default, or `earliest`) says.  Share
groups are served when `share.version` >= 1 is finalized (or the internal `group.share.enable`
is true), as Kafka 4.1 decides.  A member leaving its group (or its session timing out) and a
connection closing with a share session on it release the member's acquired records.  The
groups are kept in `__consumer_offsets` (akfak.share.group_records) beside the classic ones.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from akfak import features
from akfak.coordinator.topic import ICoordinatorTopic, MemoryCoordinatorTopic
from akfak.groups.records import partition_for
from akfak.log.batch import parse_header, scan
from akfak.log.records import CONTROL_ABORT, read_marker
from akfak.share.coordinator import (
    SHARE_STATE_TOPIC,
    ShareCoordinator,
    ShareStateError,
    share_state_topic_configs,
)
from akfak.share.group import HeartbeatError, ShareGroups
from akfak.share.group_records import ShareGroupLog
from akfak.share.partition import Acquired, SharePartition
from akfak.share.persister import SharePersister
from akfak.share.records import ShareKey, ShareState, StateBatch
from akfak.share.sessions import ShareSessionCache
from akfak.share.settings import group_setting, int_setting, setting

if TYPE_CHECKING:
    from akfak.broker import Broker

log = Logger()

#: How much a share fetch reads from a partition log at a time.
READ_STEP = 1 << 20

_DURATION = re.compile(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?")


def share_state_for(broker: Broker) -> ICoordinatorTopic:
    if getattr(broker, "controller", None) is not None and getattr(broker, "storage", None):
        from akfak.coordinator.log_topic import LogCoordinatorTopic

        return LogCoordinatorTopic(
            SHARE_STATE_TOPIC, share_state_topic_configs(broker.config), broker.controller,
            broker.storage, cluster=getattr(broker, "cluster", None),
            replication_factor=int_setting(broker.config,
                                           "share.coordinator.state.topic.replication.factor"))
    return MemoryCoordinatorTopic(SHARE_STATE_TOPIC)


def aborted_batches(chunks: list[bytes], headers: list[tuple[int, int, int, int, int]],
                    aborted: list[Any]) -> list[tuple[int, int]]:
    """(first, last offset) of the batches of aborted transactions among those read (Kafka's
    fetchAbortedTransactionRecordBatches): a producer's batches from its aborted transaction's
    first offset until its ABORT marker."""
    if not aborted:
        return []
    pending = sorted(aborted, key=lambda a: a.first_offset)
    producers: set[int] = set()
    out: list[tuple[int, int]] = []
    for chunk, pos, base, last, size in headers:
        header = parse_header(chunks[chunk], pos)
        if header.producer_id < 0:
            continue
        while pending and pending[0].first_offset <= last:
            producers.add(pending.pop(0).producer_id)
        if header.is_control:
            marker = read_marker(memoryview(chunks[chunk])[pos:pos + size])
            if marker is not None and marker[0] == CONTROL_ABORT:
                producers.discard(header.producer_id)
        elif header.is_transactional and header.producer_id in producers:
            out.append((base, last))
    return out


class SharePartitionLoading(ShareStateError):
    """(a cluster) The share-partition's state is being read from its share coordinator."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.coordinator_load_in_progress)


class ShareService:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        config = broker.config
        self.coordinator = ShareCoordinator(config, broker.clock, share_state_for(broker))
        groups = broker.group_coordinator
        self.groups = ShareGroups(broker, self._initialize, self._member_left, self._is_classic,
                                  self._write_group)
        #: the share groups' records in __consumer_offsets (the group coordinator's topic)
        self.group_log = None if groups is None else ShareGroupLog(
            broker.clock, groups.store, groups.ensure_topic, lambda: groups.num_partitions,
            self.groups.replay, lambda p: self.groups.forget(self._in_partition(p)),
            lambda p: self.groups.loaded(self._in_partition(p)))
        self.persister = SharePersister(broker, self.coordinator)
        #: (a cluster) share-partitions whose state is being read from the share coordinator
        self._reading: set[ShareKey] = set()
        self.sessions = ShareSessionCache(int_setting(config, "group.share.max.share.sessions"))
        self.max_delivery = int_setting(config, "group.share.delivery.count.limit")
        self.max_locks = int_setting(config, "group.share.partition.max.record.locks")
        self.partitions: dict[ShareKey, SharePartition] = {}

    # -- state -------------------------------------------------------------------------

    def start(self) -> None:
        clustered = getattr(self.broker, "cluster", None) is not None
        self.coordinator.start(clustered=clustered)
        if self.group_log is not None:
            self.group_log.start(clustered=clustered)
            self.group_log.loaded.addCallback(lambda _: self.groups.loaded())

    def _in_partition(self, partition: int) -> Callable[[str], bool]:
        """Whether a group id falls in `partition` of `__consumer_offsets`."""
        store = self.group_log.store if self.group_log is not None else None
        return lambda group_id: store is not None and partition_for(
            group_id, store.num_partitions() or 1) == partition

    def group_error(self, group_id: str) -> ErrorCode | None:
        """NOT_COORDINATOR (a cluster: another broker coordinates the group) or
        COORDINATOR_LOAD_IN_PROGRESS (its records are being replayed), else None."""
        return None if self.group_log is None else self.group_log.status(group_id)

    def _write_group(self, group_id: str, entries: list[tuple[bytes, bytes | None]]
                     ) -> Deferred[None]:
        if self.group_log is None or not entries:
            return succeed(None)

        def failed(f: Any) -> None:
            log.failure("Writing share group {group} to __consumer_offsets failed", f,
                        group=group_id)

        return self.group_log.append(group_id, entries).addErrback(failed)

    def heartbeat(self, group_id: str, member_id: str, member_epoch: int, rack_id: str | None,
                  subscribed: list[str] | None, client_id: str, client_host: str
                  ) -> Deferred[Any]:
        """ShareGroupHeartbeat: fires with its result once its records are written (raises
        HeartbeatError)."""
        error = self.group_error(group_id)
        if error is not None:
            raise HeartbeatError(error)
        out: list[tuple[bytes, bytes | None]] = []
        result = self.groups.heartbeat(group_id, member_id, member_epoch, rack_id, subscribed,
                                       client_id, client_host, out)
        return self._write_group(group_id, out).addCallback(lambda _: result)

    def enabled(self) -> bool:
        if setting(self.broker.config, "group.share.enable").lower() == "true":
            return True
        return self.broker.image.features.get(features.SHARE_VERSION, 0) >= 1

    def _is_classic(self, group_id: str) -> bool:
        coordinator = getattr(self.broker, "group_coordinator", None)
        return coordinator is not None and group_id in coordinator.groups

    def group_config(self, group_id: str, name: str, broker_name: str | None) -> str:
        return group_setting(self.broker, group_id, name, broker_name)

    def lock_duration_ms(self, group_id: str) -> int:
        return int(self.group_config(group_id, "share.record.lock.duration.ms",
                                     "group.share.record.lock.duration.ms"))

    def _initialize(self, group_id: str, topic_id: Any, partition: int, epoch: int) -> None:
        key = ShareKey(group_id, topic_id, partition)

        def initialize(state: ShareState | None) -> Any:
            if state is None:
                return self.persister.initialize(key, epoch, -1)
            return None

        self.persister.read(key, -1).addCallback(initialize).addErrback(
            lambda f: log.warn("Cannot initialize {key}: {e}", key=key, e=f.getErrorMessage()))

    def partition(self, group_id: str, topic_id: uuid.UUID, topic: str, index: int,
                  partition_log: Any) -> SharePartition:
        """The share-partition, loaded on first use (raises ShareStateError while the
        coordinator loads)."""
        key = ShareKey(group_id, topic_id, index)
        sp = self.partitions.get(key)
        if sp is not None:
            return sp
        if getattr(self.broker, "cluster", None) is None:
            return self._open(key, topic, partition_log, self.coordinator.read(key))
        # a cluster: the share coordinator may be another broker's; meanwhile, loading
        if key not in self._reading:
            self._reading.add(key)
            epoch = self.broker.leader_epoch(topic, index)

            def read(state: ShareState | None) -> None:
                # not initialized yet (the group coordinator's initialization is on its way):
                # a later fetch reads again
                if state is not None and (self.broker.get_log(topic, index) is partition_log
                        and self.broker.leader_epoch(topic, index) == epoch):
                    self._open(key, topic, partition_log, state)
                    self.broker.waiters.notify((topic, index))

            self.persister.read(key, epoch).addCallbacks(read, lambda f: log.warn(
                "Reading the state of {key} failed: {e}", key=key, e=f.getErrorMessage())
            ).addBoth(lambda _: self._reading.discard(key))
        raise SharePartitionLoading()

    def _open(self, key: ShareKey, topic: str, partition_log: Any, state: ShareState | None
              ) -> SharePartition:
        group_id, topic_id, index = key.group_id, key.topic_id, key.partition
        state = state or ShareState(start_offset=-1)
        start = state.start_offset
        if start < 0:
            reset = self.group_config(group_id, "share.auto.offset.reset", None)
            start = (partition_log.log_start_offset if reset == "earliest"
                     else self._by_duration(reset, partition_log))
        sp = SharePartition(group_id, topic_id, topic, index, state, start, self.broker.clock,
                            self.max_delivery, self.max_locks,
                            lambda: self.lock_duration_ms(group_id), self._persist,
                            lambda: self.broker.waiters.notify((topic, index)))
        self.partitions[key] = sp
        return sp

    def _by_duration(self, reset: str, partition_log: Any) -> int:
        """`latest`, or `by_duration:<ISO-8601 duration>`: the first offset not older."""
        match = _DURATION.fullmatch(reset[len("by_duration:"):]) \
            if reset.startswith("by_duration:") else None
        if match is None:
            return int(partition_log.high_watermark)
        days, hours, minutes, seconds = (float(g or 0) for g in match.groups())
        ms = int((((days * 24 + hours) * 60 + minutes) * 60 + seconds) * 1000)
        found = partition_log.offset_for_timestamp(self.broker.now_ms() - ms)
        return int(found.offset) if found is not None else int(partition_log.high_watermark)

    def _persist(self, sp: SharePartition, start_offset: int, batches: list[StateBatch]
                 ) -> Deferred[int | None]:
        """Write a change; fires with None once written, or with the error code that refused
        it (what the acknowledgements it held answer)."""
        key = ShareKey(sp.group_id, sp.topic_id, sp.partition)
        written = self.persister.write(key, sp.state_epoch,
                                       self.broker.leader_epoch(sp.topic, sp.partition),
                                       start_offset, batches)

        def failed(f: Any) -> int:
            code = getattr(f.value, "error_code", ErrorCode.unknown_server_error.value)
            log.warn("Writing the state of {key} failed: {e}", key=key, e=f.getErrorMessage())
            if code in (ErrorCode.fenced_state_epoch.value, ErrorCode.fenced_leader_epoch.value) \
                    and self.partitions.get(key) is sp:
                # as Kafka's SharePartitionManager: a fenced share-partition is read again
                self.partitions.pop(key).close()
            return int(code)

        return written.addCallbacks(lambda _: None, failed)

    # -- reading and acquiring -----------------------------------------------------------

    def acquire(self, sp: SharePartition, partition_log: Any, member_id: str, limit: int,
                min_one: bool, max_records: int, read_committed: bool
                ) -> tuple[list[Acquired], list[Any], int]:
        """Read from the next fetch offset and acquire: (acquired ranges, batches to send,
        their size).  Only record batch headers are looked at, and only about as much is read
        as `max_records` needs (a step of READ_STEP bytes at a time)."""
        if sp.start_offset < partition_log.log_start_offset:
            sp.move_start(partition_log.log_start_offset)
        offset = sp.next_fetch_offset()
        upper = partition_log.last_stable_offset if read_committed else partition_log.high_watermark
        if offset >= upper or (limit <= 0 and not min_one) or not sp.can_acquire(offset):
            return [], [], 0
        chunks: list[bytes] = []
        headers: list[tuple[int, int, int, int, int]] = []  # chunk, position, first, last, size
        at, size = offset, 0
        while at < upper and size < limit:
            step = min(limit - size, READ_STEP)
            read = partition_log.read(at, step, min_one=min_one and not chunks,
                                      max_offset=upper if read_committed else None)
            if not read.size and limit - size > step:  # a batch larger than a step
                read = partition_log.read(at, limit - size, min_one=False,
                                          max_offset=upper if read_committed else None)
            if not read.size:
                break
            data = read.parts[0] if len(read.parts) == 1 else b"".join(read.parts)
            for pos, h in scan(data):
                if h.last_offset >= offset:
                    headers.append((len(chunks), pos, h.base_offset, h.last_offset, h.size))
            chunks.append(data)
            size += read.size
            at = read.next_offset if read.next_offset is not None else upper
            if headers and headers[-1][3] - offset + 1 >= max_records:
                break
        if not headers:
            return [], [], 0
        acquired = sp.acquire(member_id, [(h[2], h[3]) for h in headers], max_records)
        if acquired and read_committed:
            aborted = aborted_batches(chunks, headers, partition_log.collect_aborted(
                offset, headers[-1][3] + 1))
            if aborted:
                acquired = sp.archive_acquired(aborted, acquired)
        if not acquired:
            return [], [], 0
        first, last = acquired[0].first_offset, acquired[-1].last_offset
        parts: list[Any] = []
        total = 0
        for chunk, pos, base, last_offset, batch_size in headers:
            if last_offset >= first and base <= last:
                parts.append(memoryview(chunks[chunk])[pos:pos + batch_size])
                total += batch_size
        return acquired, parts, total

    def available_bytes(self, sp: SharePartition, partition_log: Any, limit: int,
                        read_committed: bool) -> int:
        """About how much a fetch would find (for min_bytes), without acquiring anything."""
        offset = sp.next_fetch_offset()
        upper = partition_log.last_stable_offset if read_committed else partition_log.high_watermark
        if offset >= upper:
            return 0
        if offset < sp.end_offset:
            return limit  # released or timed-out records wait: enough
        return int(partition_log.read(offset, limit, min_one=True, ranges=True,
                                      max_offset=upper if read_committed else None).size)

    # -- members and sessions ------------------------------------------------------------

    def _member_left(self, group_id: str, member_id: str) -> None:
        self.sessions.remove(group_id, member_id)
        self.release(group_id, member_id)

    def release(self, group_id: str, member_id: str) -> None:
        for key, sp in self.partitions.items():
            if key.group_id == group_id:
                sp.release_member(member_id)

    def connection_lost(self, connection: object) -> None:
        for session in self.sessions.of_connection(connection):
            self.sessions.remove(session.group_id, session.member_id)
            self.release(session.group_id, session.member_id)

    def forget_partition(self, topic: str, index: int) -> None:
        """(a cluster) This broker no longer leads the partition (or leads it in a new
        epoch): its share-partitions go; what they had acquired was never written, so the
        leader's share-partitions, read from the share coordinator, have it available."""
        for key in [k for k, sp in self.partitions.items()
                    if sp.topic == topic and k.partition == index]:
            self.partitions.pop(key).close()

    def delete_group(self, group_id: str) -> Deferred[Any]:
        """DeleteGroups of an empty share group: its state goes from its share coordinators
        (wherever they are, as the group's initialized share-partitions say)."""
        keys = [ShareKey(group_id, topic_id, p)
                for topic_id, ps in self.topic_partitions_of(group_id).items() for p in ps]
        writes = [self.groups.delete(group_id)]
        for key in [k for k in self.partitions if k.group_id == group_id]:
            self.partitions.pop(key).close()
        writes.extend(self.persister.delete(key) for key in keys)
        return gatherResults(writes, consumeErrors=True)

    def reset_offset(self, group_id: str, topic_id: uuid.UUID, index: int, start_offset: int,
                     state_epoch: int) -> Deferred[None]:
        """AlterShareGroupOffsets of an empty group: the share-partition starts again there,
        in a new state epoch (a share-partition another broker leads is fenced by it at its
        next write, and reads the new state)."""
        key = ShareKey(group_id, topic_id, index)
        sp = self.partitions.pop(key, None)
        if sp is not None:
            sp.close()
        self.groups.initialized.add((group_id, topic_id, index))

        def initialize(current: ShareState | None) -> Deferred[None]:
            epoch = max(state_epoch, current.state_epoch + 1 if current is not None else 0)
            return self.persister.initialize(key, epoch, start_offset)

        return gatherResults([self.persister.summary(key).addCallback(initialize),
                              self.groups.state_changed(group_id)], consumeErrors=True)

    def delete_offsets(self, group_id: str, topic_id: uuid.UUID) -> Deferred[Any]:
        """DeleteShareGroupOffsets of an empty group: the topic's share-partitions go."""
        writes = []
        for partition in sorted(self.topic_partitions_of(group_id).get(topic_id, ())):
            key = ShareKey(group_id, topic_id, partition)
            sp = self.partitions.pop(key, None)
            if sp is not None:
                sp.close()
            self.groups.initialized.discard((group_id, topic_id, partition))
            writes.append(self.persister.delete(key))
        writes.append(self.groups.state_changed(group_id))
        return gatherResults(writes, consumeErrors=True)

    def topic_partitions_of(self, group_id: str) -> dict[Hashable, set[int]]:
        """topic id -> the group's initialized share-partitions (what the group coordinator
        records; their state may be another broker's share coordinator's)."""
        out: dict[Hashable, set[int]] = {}
        for group, topic_id, partition in self.groups.initialized:
            if group == group_id:
                out.setdefault(topic_id, set()).add(partition)
        return out

    def prune(self) -> None:
        """Move each `__share_group_state` partition's log start up to what its keys need."""
        storage = getattr(self.broker, "storage", None)
        if storage is None:
            return
        for partition, offset in self.coordinator.prunable().items():
            partition_log = storage.get_log(SHARE_STATE_TOPIC, partition)
            if partition_log is not None and offset > partition_log.log_start_offset:
                partition_log.advance_log_start_offset(offset)

    def stop(self) -> None:
        if self.group_log is not None:
            self.group_log.stop()
        self.groups.stop()
        for sp in self.partitions.values():
            sp.close()
        self.coordinator.stop()


def open_share_service(broker: Broker) -> ShareService:
    service = ShareService(broker)
    interval_ms = int_setting(broker.config, "share.coordinator.state.topic.prune.interval.ms")
    broker.every(interval_ms / 1000,
                 service.prune)
    service.start()
    return service
