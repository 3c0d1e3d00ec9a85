"""The controller: akfak's single-node KRaft controller over the metadata image.

`Controller`: each operation validates as Kafka's controller does, writes the records
Kafka's controller would write (ConfigRecords, TopicRecord, PartitionRecords,
RemoveTopicRecord, ProducerIdsRecord ...) to `__cluster_metadata-0` as one batch, applies
them to the image (akfak.metadata_image), then brings the partition logs in line (create,
delete, reconfigure).  At start it replays the log and reconciles storage with it:
missing partition logs are created, logs the metadata does not know are set aside as
`-stray` (as Kafka 3.7+ does).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak import features, partition_limits, quota_control, resource_configs
from akfak.config import BrokerConfig
from akfak.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidReplicaAssignment,
    InvalidReplicationFactor,
    InvalidRequest,
    InvalidTopic,
    KafkaError,
    KafkaStorageError,
    NotController,
    TopicAlreadyExists,
    TopicDeletionDisabled,
    UnknownTopicId,
    UnknownTopicOrPartition,
)
from akfak.log.checkpoints import random_kafka_uuid
from akfak.log.config import (
    TOPIC_CONFIGS,
    LogConfig,
    ResolvedConfig,
    resolve_topic_config,
    validate_topic_config,
)
from akfak.log.metadata_records import (
    RESOURCE_BROKER,
    RESOURCE_CLIENT_METRICS,
    RESOURCE_GROUP,
    RESOURCE_TOPIC,
    AccessControlEntryRecord,
    BrokerEndpoint,
    BrokerFeature,
    ConfigRecord,
    FeatureLevelRecord,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
    RemoveAccessControlEntryRecord,
    RemoveTopicRecord,
    TopicRecord,
)
from akfak.log.storage import BaseLogStorage
from akfak.metadata_image import (
    EMPTY_CONFIGS,
    METADATA_VERSION_FEATURE,
    PRODUCER_ID_BLOCK_SIZE,
    ImageBuilder,
    MetadataImage,
    TopicImage,
    changed_configs,
    collection_paused,
    unified_topic_name,
    validate_topic_name,
)
from akfak.security import scram_control
from akfak.security.acls import Acl, AclFilter, validate_new_acl

log = Logger()


class Controller:
    """akfak's single-node KRaft controller over a storage provider.

    Give it a storage that is not opened yet (it opens the metadata log,
    replays it, then loads the partition logs with their topic configs), or an
    opened one.

    Every change is validated, written to the metadata log as one batch,
    applied to `image`, and then carried out on storage.  Methods raise
    `akfak.errors.KafkaError` subclasses with Kafka's error codes.  The
    metadata log is fsynced on a thread after each change; `wait_durable()`
    gives a Deferred for a handler that answers only once it is on disk.
    """

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

    # -- topics --------------------------------------------------------------------------

    def create_topic(self, name: str, num_partitions: int = -1, replication_factor: int = -1,
                     configs: Mapping[str, str | None] | None = None, *,
                     assignments: Mapping[int, Sequence[int]] | None = None,
                     validate_only: bool = False, in_slices: bool = False,
                     quota: Callable[[int], None] | None = None) -> TopicImage:
        """CreateTopics for one topic: validate, write ConfigRecords + TopicRecord +
        PartitionRecords, create the partition logs.

        -1 partitions / replication factor take num.partitions /
        default.replication.factor.  With `validate_only` nothing is written
        and the topic id of the result is the zero uuid.  The count is checked
        against akfak's partition limits first (partition_limits.py).
        `in_slices`: the logs are created in bounded slices (`storage.slices`).
        `quota` is given the partition count once everything else is valid, and may raise
        (controller_mutation_rate, akfak.quota_manager).
        """
        validate_topic_name(name)
        if name in self.image.topics_by_name:
            raise TopicAlreadyExists(f"Topic '{name}' already exists.")
        overrides = {k: v for k, v in (configs or {}).items() if v is not None}
        for key, value in overrides.items():
            validate_topic_config(key, value)
        self._check_partition_limits(
            len(assignments) if assignments else
            self.config.num_partitions if num_partitions == -1 else num_partitions)
        replicas = self._place(num_partitions, replication_factor, assignments)
        unified = unified_topic_name(name)
        for other in self.image.topics_by_name:
            if unified_topic_name(other) == unified:
                raise InvalidTopic(f"Topic '{name}' collides with existing topic: {other}")
        # Also check the resulting LogConfig resolves (e.g. broker synonyms are valid).
        LogConfig.from_broker(self.config, overrides,
                              self.image.dynamic_broker_configs(self.node_id))
        if quota is not None:
            quota(len(replicas))
        topic_id = uuid.UUID(int=0) if validate_only else random_kafka_uuid()
        with collection_paused(len(replicas)):
            return self._create_topic(name, topic_id, replicas, overrides, validate_only,
                                      in_slices)

    def _create_topic(self, name: str, topic_id: uuid.UUID, replicas: list[list[int]],
                      overrides: Mapping[str, str], validate_only: bool, in_slices: bool
                      ) -> TopicImage:
        directory_id = self.directory_id
        partitions = [PartitionRecord(
            partition_id=i, topic_id=topic_id, replicas=list(r), isr=list(r), leader=r[0],
            leader_epoch=0, partition_epoch=0, directories=[directory_id] * len(r))
            for i, r in enumerate(replicas)]
        if validate_only:
            builder = ImageBuilder(MetadataImage())
            builder.apply(TopicRecord(name, topic_id))
            for record in partitions:
                builder.apply(record)
            return builder.build().topics_by_name[name]
        records: list[MetadataRecord] = [
            ConfigRecord(RESOURCE_TOPIC, name, key, value)
            for key, value in sorted(overrides.items())]
        records.append(TopicRecord(name, topic_id))
        records.extend(partitions)
        image = self._commit(records)
        config = self.log_config(name)
        for record in partitions:
            if not self._hosts(record):
                continue
            try:
                self._lead(name, record.partition_id, topic_id, config, record.leader_epoch,
                           in_slices=in_slices)
            except Exception as e:  # the topic exists now: its log is created later
                self.storage.set_offline(name, record.partition_id, f"cannot create its log: {e}",
                                         retry=self._retry_lead(name, record.partition_id,
                                                                topic_id))
        return image.topics_by_name[name]

    def _hosts(self, record: PartitionRecord) -> bool:
        """Whether this broker has the log of a new partition: its replicas do, in a
        cluster its leader only (the replicas are the brokers that may lead it)."""
        if self.clustered:
            return record.leader == self.node_id
        return self.node_id in record.replicas

    def _check_partition_limits(self, added: int) -> None:
        if added <= 0:
            return  # _place answers INVALID_PARTITIONS for that
        partition_limits.check_request(self.config, added)
        existing = sum(len(t.partitions) for t in self.image.topics_by_id.values())
        partition_limits.check_broker(self.config, existing, added)

    def _place(self, num_partitions: int, replication_factor: int,
               assignments: Mapping[int, Sequence[int]] | None) -> list[list[int]]:
        brokers = ({self.node_id} | set(self.image.brokers) if self.live_brokers is None
                   else self.live_brokers())
        if assignments:
            if num_partitions != -1 or replication_factor != -1:
                raise InvalidRequest("A manual partition assignment was specified, but the "
                                     "number of partitions or replication factor was not -1.")
            if sorted(assignments) != list(range(len(assignments))):
                raise InvalidReplicaAssignment(
                    "Partitions must be consecutive and start from 0 in a manual assignment.")
            placed = []
            for index in range(len(assignments)):
                replicas = list(assignments[index])
                if not replicas or len(set(replicas)) != len(replicas):
                    raise InvalidReplicaAssignment(
                        f"The manual partition assignment for partition {index} is empty or "
                        f"specifies the same node id more than once.")
                for broker in replicas:
                    if broker not in brokers:
                        raise InvalidReplicaAssignment(
                            f"The manual partition assignment includes broker {broker}, but no "
                            f"such broker is registered.")
                placed.append(replicas)
            return placed
        if replication_factor == -1:
            replication_factor = self.config.default_replication_factor
        if num_partitions == -1:
            num_partitions = self.config.num_partitions
        if replication_factor <= 0:
            raise InvalidReplicationFactor(
                "Replication factor must be larger than 0, or -1 to use the default value.")
        if num_partitions <= 0:
            raise InvalidPartitions(
                "Number of partitions was set to an invalid non-positive value.")
        if replication_factor > len(brokers) and self.config.get_bool(
                "akfak.accept.any.replication.factor"):
            # A test broker standing in for a bigger cluster: as many replicas as there are
            # brokers, reported as they are (Metadata lists only real replicas).
            log.info("Replication factor {rf} on {n} broker(s): the topic gets {n} replica(s) "
                     "(akfak.accept.any.replication.factor)", rf=replication_factor,
                     n=len(brokers))
            replication_factor = len(brokers)
        if replication_factor > len(brokers):
            raise InvalidReplicationFactor(
                f"Unable to replicate the partition {replication_factor} time(s): The target "
                f"replication factor of {replication_factor} cannot be reached because only "
                f"{len(brokers)} broker(s) are registered.")
        ordered = sorted(brokers)
        start = ordered.index(self.node_id) if self.node_id in ordered else 0
        return [[ordered[(start + p + r) % len(ordered)] for r in range(replication_factor)]
                for p in range(num_partitions)]

    def delete_topic(self, name: str | None = None, *, topic_id: uuid.UUID | None = None,
                     quota: Callable[[int], None] | None = None) -> TopicImage:
        """DeleteTopics for one topic (by name or id): RemoveTopicRecord, delete its logs."""
        if not self.config.get_bool("delete.topic.enable"):
            raise TopicDeletionDisabled("Topic deletion is disabled.")
        if topic_id is not None:
            topic = self.image.topic_by_id(topic_id)
            if topic is None:
                raise UnknownTopicId(f"Topic id {topic_id} does not exist.")
        else:
            topic = self.image.topic(name or "")
            if topic is None:
                raise UnknownTopicOrPartition(f"Topic '{name}' does not exist.")
        if quota is not None:
            quota(topic.num_partitions)
        self._commit([RemoveTopicRecord(topic.topic_id)])
        self.storage.delete_logs(topic.name)
        return topic

    def create_partitions(self, name: str, total: int, *,
                          assignments: Sequence[Sequence[int]] | None = None,
                          validate_only: bool = False, in_slices: bool = False,
                          quota: Callable[[int], None] | None = None) -> TopicImage:
        """CreatePartitions: grow `name` to `total` partitions (PartitionRecords); the
        partition limits, `in_slices` and `quota` as for create_topic."""
        topic = self.image.topic(name)
        if topic is None:
            raise UnknownTopicOrPartition(f"Topic '{name}' does not exist.")
        current = topic.num_partitions
        if total == current:
            raise InvalidPartitions(f"Topic already has {current} partition(s).")
        if total < current:
            raise InvalidPartitions(
                f"The topic {name} currently has {current} partition(s); {total} would not be "
                f"an increase.")
        added = total - current
        self._check_partition_limits(added)
        if assignments is not None and len(assignments) != added:
            raise InvalidReplicaAssignment(
                f"Attempted to add {added} additional partition(s), but only "
                f"{len(assignments)} assignment(s) were specified.")
        if quota is not None:
            quota(added)
        if assignments is not None:
            placed = self._place(-1, -1, dict(enumerate(assignments)))
        else:
            placed = self._place(added, max(1, topic.replication_factor), None)
        records = [PartitionRecord(
            partition_id=current + i, topic_id=topic.topic_id, replicas=list(r), isr=list(r),
            leader=r[0], leader_epoch=0, partition_epoch=0,
            directories=[self.directory_id] * len(r)) for i, r in enumerate(placed)]
        if validate_only:
            return topic
        image = self._commit(list(records))
        config = self.log_config(name)
        for record in records:
            if self._hosts(record):
                self._lead(name, record.partition_id, topic.topic_id, config, record.leader_epoch,
                           in_slices=in_slices)
        return image.topics_by_name[name]

    # -- configs -------------------------------------------------------------------------

    def alter_configs(self, resource_type: int, name: str, changes: Mapping[str, str | None],
                      *, validate_only: bool = False) -> None:
        """Set (value) or delete (None) configs of a topic (2), broker (4), client-metrics
        subscription (16) or group (32) resource.

        Broker resource name "" is the cluster-wide default, else the node id.
        Only actual changes are written (ConfigRecords), as Kafka does.
        """
        if resource_type == RESOURCE_TOPIC:
            if name not in self.image.topics_by_name:  # QuorumController's words
                raise UnknownTopicOrPartition(f"The topic '{name}' does not exist.")
            for key, value in changes.items():
                validate_topic_config(key, value)
            current = self.image.configs_of_topic(name)
            LogConfig.from_broker(self.config, changed_configs(current, changes),
                                  self.image.dynamic_broker_configs(self.node_id))
        elif resource_type == RESOURCE_BROKER:
            if name not in ("", str(self.node_id)):
                raise InvalidRequest(f"Unexpected broker id, expected {self.node_id} or empty "
                                     f"string, but received {name}")
            for key in changes:
                if not key:
                    raise InvalidConfig("Empty config name")
            current = self.image.broker_configs.get(name, {})
        elif resource_type == RESOURCE_GROUP:
            if not name:
                raise InvalidRequest("Default group resources are not allowed.")
            current = self.image.group_configs.get(name, EMPTY_CONFIGS)
            resource_configs.validate_group_configs(self.config, changed_configs(current, changes))
        elif resource_type == RESOURCE_CLIENT_METRICS:
            current = self.image.client_metrics.get(name, EMPTY_CONFIGS)
            resource_configs.validate_client_metrics(name, changed_configs(current, changes))
        else:
            raise InvalidRequest(f"Unsupported resource type {resource_type}")
        records: list[MetadataRecord] = [
            ConfigRecord(resource_type, name, key, value)
            for key, value in sorted(changes.items(), key=lambda kv: kv[0])
            if current.get(key) != value]
        if validate_only or not records:
            return
        self._commit(records)
        if resource_type == RESOURCE_TOPIC:
            self.storage.reconfigure(name, self.log_config(name))
        elif resource_type == RESOURCE_BROKER:
            for topic in self.image.topics_by_name:
                self.storage.reconfigure(topic, self._safe_log_config(topic))

    def describe_topic_configs(self, name: str) -> list[ResolvedConfig]:
        """Every topic config of `name` with its effective value and source (DescribeConfigs)."""
        if name not in self.image.topics_by_name:
            raise UnknownTopicOrPartition(f"Topic '{name}' does not exist.")
        overrides = self.image.configs_of_topic(name)
        dynamic = self.image.dynamic_broker_configs(self.node_id)
        return [resolve_topic_config(key, self.config, overrides, dynamic)
                for key in TOPIC_CONFIGS]

    # -- producer ids, brokers -----------------------------------------------------------

    def allocate_producer_ids(self, count: int = PRODUCER_ID_BLOCK_SIZE) -> int:
        """Reserve `count` producer ids (ProducerIdsRecord); return the first.

        The block is recorded in the metadata log, so ids never repeat across restarts.
        """
        if count <= 0:
            raise InvalidRequest(f"Cannot allocate {count} producer ids")
        if self.clustered:  # any broker, from the database's counter
            return self.storage.allocate_producer_ids(  # type: ignore[attr-defined,no-any-return]
                count, self.image.next_producer_id)
        first = self.image.next_producer_id
        broker = self.image.brokers.get(self.node_id)
        self._commit([ProducerIdsRecord(broker_id=self.node_id,
                                        broker_epoch=broker.epoch if broker else -1,
                                        next_producer_id=first + count)])
        return first

    def register_broker(self, endpoints: Sequence[tuple[str, str, int]], *,
                        rack: str | None = None) -> int:
        """Record this broker's registration (RegisterBrokerRecord, unfenced) with its
        listeners as (name, host, port); return its broker epoch (the record's offset)."""
        epoch = self.storage.metadata_log.end_offset
        record = self._registration([BrokerEndpoint(n, h, p, 0) for n, h, p in endpoints], rack)
        self._commit([replace(record, broker_epoch=epoch)])
        return epoch

    def _registration(self, endpoints: Sequence[BrokerEndpoint], rack: str | None
                      ) -> RegisterBrokerRecord:
        return RegisterBrokerRecord(
            broker_id=self.node_id, incarnation_id=uuid.uuid4(), broker_epoch=-1,
            end_points=list(endpoints),
            features=[BrokerFeature(f.name, f.min_level, f.max_level)
                      for f in features.SUPPORTED],
            rack=rack, fenced=False, log_dirs=[self.directory_id])

    # -- ACLs ----------------------------------------------------------------------------

    def create_acls(self, acls: Sequence[Acl]) -> list[KafkaError | None]:
        """CreateAcls (Kafka's AclControlManager.createAcls): an error or None per ACL; ACLs
        that exist already (or twice in the request) are not written again."""
        results: list[KafkaError | None] = []
        existing = set(self.image.acls.values())
        records: list[MetadataRecord] = []
        for acl in acls:
            try:
                validate_new_acl(acl)
            except KafkaError as e:
                results.append(e)
                continue
            if acl not in existing:
                existing.add(acl)
                records.append(AccessControlEntryRecord(
                    uuid.uuid4(), acl.resource_type, acl.resource_name, acl.pattern_type,
                    acl.principal, acl.host, acl.operation, acl.permission))
            results.append(None)
        if records:
            self._commit(records)
        return results

    def delete_acls(self, filters: Sequence[AclFilter]) -> list[list[Acl]]:
        """DeleteAcls: for each filter the ACLs it matched, all removed in one batch."""
        removed: dict[uuid.UUID, Acl] = {}
        results = []
        for acl_filter in filters:
            matched = [(i, a) for i, a in self.image.acls.items() if acl_filter.matches(a)]
            removed.update(matched)
            results.append([a for _, a in matched])
        if removed:
            self._commit([RemoveAccessControlEntryRecord(i) for i in removed])
        return results

    # -- SCRAM credentials ---------------------------------------------------------------

    def alter_scram_credentials(self, deletions: Sequence[Any], upsertions: Sequence[Any]
                                ) -> list[tuple[str, int, str | None]]:
        """AlterUserScramCredentials (akfak.security.scram_control): (user, error code,
        message) per user; the valid changes are written as one batch."""
        records, results = scram_control.alter_credentials(
            self.image.scram_credentials, deletions, upsertions, self.metadata_version)
        if records:
            self._commit(records)
        return results

    # -- client quotas -------------------------------------------------------------------

    def alter_client_quotas(self, entries: Sequence[Any], *, validate_only: bool = False
                            ) -> list[tuple[int, str | None]]:
        """AlterClientQuotas (akfak.quota_control): (error code, message) per entry; the valid
        changes are written as one batch unless `validate_only`."""
        records, results = quota_control.alter_quotas(self.image.client_quotas, entries)
        if records and not validate_only:
            self._commit(records)
        return results

    # -- features ------------------------------------------------------------------------

    def update_features(self, updates: Mapping[str, tuple[int, int]], *,
                        validate_only: bool = False) -> None:
        """UpdateFeatures: {feature: (level, upgrade type)}, all or nothing; raises
        `InvalidUpdateVersion` as Kafka's controller answers."""
        current = dict(self.image.features)
        planned = features.plan_update(current, updates, self.node_id)
        if validate_only or not planned:
            return
        changed = {name: level for name, level in planned.items() if current.get(name, 0) != level}
        if changed:
            log.warn("Updating features: {changes}",
                     changes=", ".join(f"{n}={v}" for n, v in changed.items()))
            self._commit([FeatureLevelRecord(name, level) for name, level in changed.items()])


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
