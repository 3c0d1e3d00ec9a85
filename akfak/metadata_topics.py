"""The controller's topic operations: CreateTopics, DeleteTopics and CreatePartitions, with
the checks Kafka's controller makes and the placement of replicas.  A part of Controller
(see metadata_base.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence

from twisted.logger import Logger

from akfak import partition_limits
from akfak.errors import (
    InvalidPartitions,
    InvalidReplicaAssignment,
    InvalidReplicationFactor,
    InvalidRequest,
    InvalidTopic,
    TopicAlreadyExists,
    TopicDeletionDisabled,
    UnknownTopicId,
    UnknownTopicOrPartition,
)
from akfak.log.checkpoints import random_kafka_uuid
from akfak.log.config import LogConfig, validate_topic_config
from akfak.log.metadata_records import (
    RESOURCE_TOPIC,
    ConfigRecord,
    MetadataRecord,
    PartitionRecord,
    RemoveTopicRecord,
    TopicRecord,
)
from akfak.metadata_base import ControllerBase
from akfak.metadata_image import (
    ImageBuilder,
    MetadataImage,
    TopicImage,
    collection_paused,
    unified_topic_name,
    validate_topic_name,
)

log = Logger(namespace="akfak.metadata")


class TopicControl(ControllerBase):
    """Creating and deleting topics, and adding partitions to them."""

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
