"""What every operation of the controller stands on: its state, its start (the metadata log
replayed, storage reconciled with it) and the plumbing each change goes through (commit,
durability, hosting partition logs).

`Controller` (metadata.py) is one class in parts, so that no module grows too large to
read: `TopicControl` (metadata_topics.py) subclasses `ControllerBase`, and `Controller`
subclasses `TopicControl` with the other operations.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak import features
from akfak.config import BrokerConfig
from akfak.errors import InvalidConfig, KafkaStorageError, NotController
from akfak.log.config import LogConfig
from akfak.log.metadata_records import (
    RESOURCE_BROKER,
    BrokerEndpoint,
    BrokerFeature,
    ConfigRecord,
    FeatureLevelRecord,
    MetadataRecord,
    PartitionChangeRecord,
    RegisterBrokerRecord,
)
from akfak.log.storage import BaseLogStorage
from akfak.metadata_image import METADATA_VERSION_FEATURE, MetadataImage

# The controller's lines keep one namespace, whichever of its parts logs them.
log = Logger(namespace="akfak.metadata")


class ControllerBase:
    """The controller's state and plumbing (see the module doc, and Controller's)."""

    def __init__(self, storage: BaseLogStorage, config: BrokerConfig, *,
                 clock: Any = None) -> None:
        self.storage = storage
        self.config = config
        self.clock = clock if clock is not None else storage.clock
        self.node_id = config.node_id
        if not storage.metadata_opened:
            storage.open_metadata()
        # A cluster of brokers over PostgreSQL (akfak/cluster.py): only the broker holding
        # the controller role writes the metadata log; the others replay it as it grows.
        snapshot = getattr(storage, "first_snapshot", None)
        self.clustered = snapshot is not None
        self.active = snapshot is None or snapshot.controller == self.node_id
        #: the ids of the live brokers (the cluster's), for placing replicas
        self.live_brokers: Callable[[], set[int]] | None = None
        self.image = MetadataImage().apply(storage.metadata_log.replay())
        if not storage.logs_loaded:
            # Partition logs load (and recover) with their topics' configs.
            storage.load_logs(self._safe_log_config)
        self._durable: _FlushOutcome | None = None
        if METADATA_VERSION_FEATURE not in self.image.features and self.active:
            self._bootstrap()
        if not self.clustered:  # a cluster's controller elects leaders (akfak/cluster.py)
            self._come_back()
            self._reconcile()

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    @property
    def directory_id(self) -> uuid.UUID:
        return self.storage.meta_properties.directory_id

    @property
    def cluster_id(self) -> str:
        return self.storage.meta_properties.cluster_id

    @property
    def metadata_version(self) -> int:
        """The finalized metadata.version: the record versions this controller writes."""
        return self.image.features.get(METADATA_VERSION_FEATURE, features.MV_3_3_IV3)

    # -- start ---------------------------------------------------------------------------

    def _bootstrap(self) -> None:
        """A new metadata log starts, as `kafka-storage format` of Kafka 4.1 makes it, with
        the finalized feature levels (metadata.version first) and, ELR being on, the
        cluster-wide min.insync.replicas that ELR elections read."""
        levels = features.bootstrap_levels()
        records: list[MetadataRecord] = [FeatureLevelRecord(name, level)
                                         for name, level in levels.items()]
        if levels.get(features.ELR_VERSION, 0) >= 1:
            records.append(ConfigRecord(RESOURCE_BROKER, "", "min.insync.replicas",
                                        str(self.config.get_int("min.insync.replicas"))))
        self._commit(records)

    def _come_back(self) -> None:
        """Do what Kafka's controller does when this broker registers again after a
        controlled shutdown: register it unfenced, and make it the leader (ISR = itself,
        eligible leader replicas cleared) of every partition it hosts that has no leader.
        A cleanly stopped Kafka leaves `leader: -1, isr: [], eligibleLeaderReplicas: [1]`;
        on one node this broker's log is the only copy, so it is the one to lead."""
        records: list[MetadataRecord] = []
        mine = self.image.brokers.get(self.node_id)
        if mine is not None and (mine.fenced or mine.in_controlled_shutdown):
            records.append(replace(self._registration(mine.endpoints, mine.rack),
                                   broker_epoch=self.storage.metadata_log.end_offset))
        elr = self.metadata_version >= features.MV_4_0_IV1
        for topic in self.image.topics_by_name.values():
            for p in topic.partitions.values():
                if p.leader != -1 or self.node_id not in p.replicas:
                    continue
                if self.node_id not in p.isr + p.eligible_leader_replicas:
                    log.warn("Electing node {node} for {t}-{p}, which it was not in the ISR "
                             "or eligible replicas of: records since it left may be missing",
                             node=self.node_id, t=topic.name, p=p.partition)
                records.append(PartitionChangeRecord(
                    p.partition, topic.topic_id, leader=self.node_id,
                    isr=None if p.isr == (self.node_id,) else [self.node_id],
                    eligible_leader_replicas=[] if elr and p.eligible_leader_replicas else None,
                    last_known_elr=[] if elr and p.last_known_elr else None))
        if records:
            log.info("Registered again and elected this node for {n} leaderless partitions",
                     n=sum(isinstance(r, PartitionChangeRecord) for r in records))
            self._commit(records)

    def _registration(self, endpoints: Sequence[BrokerEndpoint], rack: str | None
                      ) -> RegisterBrokerRecord:
        return RegisterBrokerRecord(
            broker_id=self.node_id, incarnation_id=uuid.uuid4(), broker_epoch=-1,
            end_points=list(endpoints),
            features=[BrokerFeature(f.name, f.min_level, f.max_level)
                      for f in features.SUPPORTED],
            rack=rack, fenced=False, log_dirs=[self.directory_id])

    # -- plumbing ------------------------------------------------------------------------

    def _commit(self, records: Sequence[MetadataRecord]) -> MetadataImage:
        if not self.active:
            raise NotController(f"Node {self.node_id} is not the controller")
        metadata_log = self.storage.metadata_log
        base = metadata_log.append(records, self.now_ms(), self.metadata_version)
        self.image = self.image.apply((base + i, r) for i, r in enumerate(records))
        if self.clustered:
            self.storage.mirror_leadership(records, self.image)  # type: ignore[attr-defined]
        self._durable = _FlushOutcome(metadata_log.flush())
        return self.image

    def wait_durable(self) -> Deferred[None]:
        """A Deferred that fires once every committed change is fsynced, or fails with
        KafkaStorageError when the flush of the last change failed: a second fsync after a
        failed one can succeed with the failed pages gone (Linux drops them), so a later
        flush proves nothing."""
        if self._durable is None:
            return self.storage.metadata_log.flush()
        return self._durable.wait()

    def log_config(self, topic: str) -> LogConfig:
        """The LogConfig of `topic` from its overrides and the (dynamic) broker configs."""
        return LogConfig.from_broker(self.config, self.image.configs_of_topic(topic),
                                     self.image.dynamic_broker_configs(self.node_id))

    def _reconcile(self) -> None:
        """Bring storage in line with the image: create missing logs, set aside stray ones."""
        wanted: set[tuple[str, int]] = set()
        for topic in self.image.topics_by_name.values():
            config = self._safe_log_config(topic.name)
            for p in topic.partitions.values():
                if self.node_id not in p.replicas:
                    continue
                wanted.add((topic.name, p.partition))
                if self.storage.is_offline(topic.name, p.partition):
                    continue  # left as it is on disk (Kafka: an offline log dir)
                existing = self.storage.get_log(topic.name, p.partition)
                if existing is not None and existing.topic_id not in (None, topic.topic_id):
                    log.warn("Log {t}-{p} belongs to an older topic with the same name",
                             t=topic.name, p=p.partition)
                try:
                    self._lead(topic.name, p.partition, topic.topic_id, config, p.leader_epoch)
                except Exception as e:  # one partition never stops the broker starting
                    self.storage.set_offline(topic.name, p.partition, f"cannot create its log: {e}",
                                             retry=self._retry_lead(topic.name, p.partition,
                                                                    topic.topic_id))
        for partition_log in list(self.storage.logs()):
            key = (partition_log.topic, partition_log.partition)
            if key not in wanted:
                self.storage.mark_stray(*key)

    def _lead(self, topic: str, partition: int, topic_id: uuid.UUID, config: LogConfig,
              leader_epoch: int, *, in_slices: bool = False) -> None:
        """Host a partition as its leader: its log, with the leader epoch recorded.

        `in_slices`: in the storage's bounded slices (a large CreateTopics must not hold
        the reactor), unless the partition is gone by then; a failure makes it offline.
        """
        if not in_slices:
            created = self.storage.create_log(topic, partition, topic_id, config)
            if self.clustered:
                created.fence_epoch = leader_epoch  # type: ignore[attr-defined]
            created.assign_epoch_start_offset(leader_epoch)
            return
        image = self.image

        def lead() -> None:
            nonlocal image, config
            current = self.image.topic_by_id(topic_id)
            if self.storage.closed or current is None or partition not in current.partitions:
                return
            if self.image is not image:  # configs may have changed meanwhile
                image, config = self.image, self._safe_log_config(topic)
            try:
                self._lead(topic, partition, topic_id, config, leader_epoch)
            except Exception as e:
                self.storage.set_offline(topic, partition, f"cannot create its log: {e}",
                                         retry=self._retry_lead(topic, partition, topic_id))

        self.storage.slices.add(lead)

    def _retry_lead(self, topic: str, partition: int, topic_id: uuid.UUID) -> Callable[[], None]:
        """Creating a log that failed (a full disk), again: for `set_offline`'s retries."""
        def retry() -> None:
            current = self.image.topic_by_id(topic_id)
            if current is None or partition not in current.partitions:
                return  # deleted meanwhile: nothing to create
            self._lead(topic, partition, topic_id, self._safe_log_config(topic),
                       current.partitions[partition].leader_epoch)

        return retry

    def _safe_log_config(self, topic: str) -> LogConfig:
        try:
            return self.log_config(topic)
        except InvalidConfig as e:
            log.error("Topic {topic} has an invalid config ({e}); using broker defaults",
                      topic=topic, e=e)
            return self.storage.default_log_config


class _FlushOutcome:
    """How one flush of the metadata log ended, for every request that waits on it."""

    def __init__(self, flushing: Deferred[None]) -> None:
        self._failure: Failure | None = None
        self._done = False
        self._waiters: list[Deferred[None]] = []
        flushing.addBoth(self._ended)

    def _ended(self, result: object) -> None:
        if isinstance(result, Failure):
            log.failure("Flushing the metadata log failed", result)
            self._failure = result
        self._done = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._tell(waiter)

    def wait(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if self._done:
            self._tell(waiter)
        else:
            self._waiters.append(waiter)
        return waiter

    def _tell(self, waiter: Deferred[None]) -> None:
        if self._failure is None:
            waiter.callback(None)
        else:
            waiter.errback(KafkaStorageError(
                f"The metadata log could not be flushed: {self._failure.getErrorMessage()}"))
