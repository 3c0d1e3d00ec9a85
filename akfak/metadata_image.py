"""The cluster metadata image: what handlers read, replayed from the KRaft log.

`MetadataImage` holds topics by name and id with their partitions, topic and broker
configs, features, brokers, ACLs, SCRAM credentials, client quotas and the next
producer-id block.  It never changes; `apply` makes a new image from records (the
`ImageBuilder` copies only what the records touch).  The controller (akfak.metadata) writes
the records; this module only reads them.
"""

from __future__ import annotations

import contextlib
import gc
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, NamedTuple

from twisted.logger import Logger

from akfak import features, quota_control
from akfak.errors import (
    InvalidTopic,
)
from akfak.log.metadata_records import (
    RESOURCE_BROKER,
    RESOURCE_CLIENT_METRICS,
    RESOURCE_GROUP,
    RESOURCE_TOPIC,
    AccessControlEntryRecord,
    BrokerEndpoint,
    BrokerRegistrationChangeRecord,
    ClientQuotaRecord,
    ConfigRecord,
    FeatureLevelRecord,
    MetadataRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
    RemoveAccessControlEntryRecord,
    RemoveTopicRecord,
    RemoveUserScramCredentialRecord,
    TopicRecord,
    UnknownRecord,
    UnregisterBrokerRecord,
    UserScramCredentialRecord,
)
from akfak.security.acls import Acl
from akfak.security.scram import BY_TYPE as SCRAM_BY_TYPE
from akfak.security.scram import ScramCredential

log = Logger()


METADATA_VERSION_FEATURE = features.METADATA_VERSION
#: Kafka's ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE.
PRODUCER_ID_BLOCK_SIZE = 1000

MAX_TOPIC_NAME_LENGTH = 249
#: Kafka's internal topics: clients may not append to them; Metadata marks them internal.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
_LEGAL_TOPIC = re.compile(r"^[a-zA-Z0-9._-]+$")


def validate_topic_name(name: str) -> None:
    """Kafka's Topic.validate: raise InvalidTopic (17) for an illegal name, in Kafka 4.1's words."""
    if not name:
        reason = "the empty string is not allowed"
    elif name in (".", ".."):
        reason = f"'{name}' is not allowed"
    elif len(name) > MAX_TOPIC_NAME_LENGTH:
        reason = f"the length of '{name}' is longer than the max allowed length {MAX_TOPIC_NAME_LENGTH}"
    elif not _LEGAL_TOPIC.match(name):
        reason = f"'{name}' contains one or more characters other than ASCII alphanumerics, '.', '_' and '-'"
    else:
        return
    raise InvalidTopic(f"Topic name is invalid: {reason}")


def changed_configs(current: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    """`current` with `changes` applied (None deletes)."""
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def unified_topic_name(name: str) -> str:
    # Kafka metric names map '.' to '_', so topics differing only there collide.
    return name.replace(".", "_")


# -- the image ----------------------------------------------------------------------------


class PartitionImage(NamedTuple):
    """One partition's registration (a tuple: a CreateTopics makes thousands of them at once)."""

    partition: int
    leader: int
    leader_epoch: int
    partition_epoch: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    directories: tuple[uuid.UUID, ...] = ()
    removing_replicas: tuple[int, ...] = ()
    adding_replicas: tuple[int, ...] = ()
    leader_recovery_state: int = 0
    #: KIP-966: replicas that may lead though out of the ISR (Kafka's controlled shutdown
    #: moves the last ISR member here), and the last known such set.
    eligible_leader_replicas: tuple[int, ...] = ()
    last_known_elr: tuple[int, ...] = ()


@dataclass(frozen=True)
class TopicImage:
    name: str
    topic_id: uuid.UUID
    partitions: Mapping[int, PartitionImage] = field(default_factory=dict)

    @property
    def num_partitions(self) -> int:
        return len(self.partitions)

    @property
    def replication_factor(self) -> int:
        first = self.partitions.get(0)
        return len(first.replicas) if first is not None else 0


@dataclass(frozen=True)
class BrokerImage:
    broker_id: int
    incarnation_id: uuid.UUID
    epoch: int
    endpoints: tuple[BrokerEndpoint, ...]
    rack: str | None
    fenced: bool
    in_controlled_shutdown: bool = False
    log_dirs: tuple[uuid.UUID, ...] = ()


EMPTY_CONFIGS: Mapping[Any, Any] = MappingProxyType({})


def _empty() -> Mapping[Any, Any]:
    return EMPTY_CONFIGS


@dataclass(frozen=True)
class MetadataImage:
    """The cluster metadata as of metadata-log offset `offset` (-1: nothing applied)."""

    offset: int = -1
    topics_by_name: Mapping[str, TopicImage] = field(default_factory=_empty)
    topics_by_id: Mapping[uuid.UUID, TopicImage] = field(default_factory=_empty)
    #: topic name -> {config key: value}, only the topic's own overrides.
    topic_configs: Mapping[str, Mapping[str, str]] = field(default_factory=_empty)
    #: "" (cluster default) or a broker id -> {config key: value}, dynamic broker configs.
    broker_configs: Mapping[str, Mapping[str, str]] = field(default_factory=_empty)
    #: group id -> {config key: value}, groups' dynamic configs.
    group_configs: Mapping[str, Mapping[str, str]] = field(default_factory=_empty)
    #: subscription name -> {config key: value}, client-metrics subscriptions.
    client_metrics: Mapping[str, Mapping[str, str]] = field(default_factory=_empty)
    features: Mapping[str, int] = field(default_factory=_empty)
    brokers: Mapping[int, BrokerImage] = field(default_factory=_empty)
    #: The first producer id of the next block to hand out.
    next_producer_id: int = 0
    #: ACL id -> ACL (AccessControlEntryRecords), what the authorizer decides by.
    acls: Mapping[uuid.UUID, Acl] = field(default_factory=_empty)
    #: (user, mechanism name) -> SCRAM credential (UserScramCredentialRecords)
    scram_credentials: Mapping[tuple[str, str], ScramCredential] = field(default_factory=_empty)
    #: quota entity ((type, name or None), ... sorted by type) -> {quota key: value}
    client_quotas: Mapping[quota_control.Entity, Mapping[str, float]] = field(default_factory=_empty)

    def topic(self, name: str) -> TopicImage | None:
        return self.topics_by_name.get(name)

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicImage | None:
        return self.topics_by_id.get(topic_id)

    def partition(self, topic: str, partition: int) -> PartitionImage | None:
        image = self.topics_by_name.get(topic)
        return None if image is None else image.partitions.get(partition)

    def configs_of_topic(self, name: str) -> Mapping[str, str]:
        return self.topic_configs.get(name, EMPTY_CONFIGS)

    def dynamic_broker_configs(self, node_id: int) -> dict[str, str]:
        """Dynamic broker configs for `node_id`: per-broker over cluster-wide defaults."""
        merged = dict(self.broker_configs.get("", {}))
        merged.update(self.broker_configs.get(str(node_id), {}))
        return merged

    def apply(self, records: Iterable[tuple[int, MetadataRecord | UnknownRecord]]
              ) -> MetadataImage:
        """A new image with (offset, record) pairs applied in order."""
        builder = ImageBuilder(self)
        for offset, record in records:
            builder.apply(record)
            builder.offset = offset
        return builder.build()


@contextlib.contextmanager
def collection_paused(objects: int) -> Iterator[None]:
    """No garbage collection while thousands of partitions' records and images are made at
    once: Python's collector would traverse the whole heap several times meanwhile, tens of
    ms of the reactor's time; it runs once afterwards instead."""
    if objects < 1000 or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _read_only(parts: Mapping[int, PartitionImage]) -> Mapping[int, PartitionImage]:
    return MappingProxyType(parts) if isinstance(parts, dict) else parts


class ImageBuilder:
    """Mutable copies of an image's collections while records are applied."""

    def __init__(self, image: MetadataImage) -> None:
        self.offset = image.offset
        self.topics = {tid: t for tid, t in image.topics_by_id.items()}
        # a topic's partitions are copied when first changed (_writable): applying a record
        # costs what it changes, not the size of the cluster
        self.partitions: dict[uuid.UUID, Mapping[int, PartitionImage]] = {
            tid: t.partitions for tid, t in image.topics_by_id.items()}
        self._copied: set[uuid.UUID] = set()
        self._last: tuple[uuid.UUID | None, dict[int, PartitionImage]] = (None, {})
        self.topic_configs = {k: dict(v) for k, v in image.topic_configs.items()}
        self.broker_configs = {k: dict(v) for k, v in image.broker_configs.items()}
        self.group_configs = {k: dict(v) for k, v in image.group_configs.items()}
        self.client_metrics = {k: dict(v) for k, v in image.client_metrics.items()}
        self.features = dict(image.features)
        self.brokers = dict(image.brokers)
        self.next_producer_id = image.next_producer_id
        self.acls = dict(image.acls)
        self.scram = dict(image.scram_credentials)
        self.quotas = {k: dict(v) for k, v in image.client_quotas.items()}

    def apply(self, record: MetadataRecord | UnknownRecord) -> None:
        if isinstance(record, TopicRecord):
            self.topics[record.topic_id] = TopicImage(record.name, record.topic_id)
            self.partitions[record.topic_id] = {}
            self._copied.add(record.topic_id)
            self._last = (None, {})
        elif isinstance(record, PartitionRecord):
            if record.topic_id is not self._last[0] and record.topic_id not in self.topics:
                log.warn("PartitionRecord for unknown topic id {id}", id=record.topic_id)
                return
            self._writable(record.topic_id)[record.partition_id] = PartitionImage(
                partition=record.partition_id, leader=record.leader,
                leader_epoch=record.leader_epoch, partition_epoch=record.partition_epoch,
                replicas=tuple(record.replicas), isr=tuple(record.isr),
                directories=tuple(record.directories),
                removing_replicas=tuple(record.removing_replicas),
                adding_replicas=tuple(record.adding_replicas),
                leader_recovery_state=record.leader_recovery_state,
                eligible_leader_replicas=tuple(record.eligible_leader_replicas or ()),
                last_known_elr=tuple(record.last_known_elr or ()))
        elif isinstance(record, PartitionChangeRecord):
            self._change_partition(record)
        elif isinstance(record, RemoveTopicRecord):
            self._last = (None, {})
            topic = self.topics.pop(record.topic_id, None)
            self.partitions.pop(record.topic_id, None)
            if topic is not None:
                self.topic_configs.pop(topic.name, None)
        elif isinstance(record, ConfigRecord):
            self._config(record)
        elif isinstance(record, FeatureLevelRecord):
            if record.feature_level == 0 and record.name != METADATA_VERSION_FEATURE:
                self.features.pop(record.name, None)
            else:
                self.features[record.name] = record.feature_level
        elif isinstance(record, ProducerIdsRecord):
            self.next_producer_id = record.next_producer_id
        elif isinstance(record, RegisterBrokerRecord):
            self.brokers[record.broker_id] = BrokerImage(
                broker_id=record.broker_id, incarnation_id=record.incarnation_id,
                epoch=record.broker_epoch, endpoints=tuple(record.end_points), rack=record.rack,
                fenced=record.fenced, in_controlled_shutdown=record.in_controlled_shutdown,
                log_dirs=tuple(record.log_dirs))
        elif isinstance(record, BrokerRegistrationChangeRecord):
            broker = self.brokers.get(record.broker_id)
            if broker is None:
                return
            changes: dict[str, Any] = {}
            if record.fenced:
                changes["fenced"] = record.fenced > 0
            if record.in_controlled_shutdown:
                changes["in_controlled_shutdown"] = record.in_controlled_shutdown > 0
            if record.log_dirs is not None:
                changes["log_dirs"] = tuple(record.log_dirs)
            self.brokers[record.broker_id] = replace(broker, **changes)
        elif isinstance(record, UnregisterBrokerRecord):
            self.brokers.pop(record.broker_id, None)
        elif isinstance(record, AccessControlEntryRecord):
            self.acls[record.id] = Acl(record.resource_type, record.resource_name,
                                       record.pattern_type, record.principal, record.host,
                                       record.operation, record.permission_type)
        elif isinstance(record, RemoveAccessControlEntryRecord):
            self.acls.pop(record.id, None)
        elif isinstance(record, UserScramCredentialRecord):
            if record.mechanism in SCRAM_BY_TYPE:
                self.scram[(record.name, SCRAM_BY_TYPE[record.mechanism])] = ScramCredential(
                    record.salt, record.stored_key, record.server_key, record.iterations)
        elif isinstance(record, RemoveUserScramCredentialRecord):
            self.scram.pop((record.name, SCRAM_BY_TYPE.get(record.mechanism, "")), None)
        elif isinstance(record, ClientQuotaRecord):
            entity = tuple(sorted((e.entity_type, e.entity_name) for e in record.entity))
            values = self.quotas.setdefault(entity, {})
            if record.remove:
                values.pop(record.key, None)
                if not values:
                    del self.quotas[entity]
            else:
                values[record.key] = record.value
        # UnknownRecord and types akfak does not model: nothing to do.

    def _writable(self, topic_id: uuid.UUID) -> dict[int, PartitionImage]:
        if topic_id is self._last[0]:  # a topic's records come together: no hashing
            return self._last[1]
        parts = self.partitions[topic_id]
        if topic_id not in self._copied:
            parts = self.partitions[topic_id] = dict(parts)
            self._copied.add(topic_id)
        self._last = (topic_id, parts)  # type: ignore[assignment]
        return parts  # type: ignore[return-value]

    def _change_partition(self, record: PartitionChangeRecord) -> None:
        parts = self.partitions.get(record.topic_id)
        current = parts.get(record.partition_id) if parts is not None else None
        if parts is None or current is None:
            log.warn("PartitionChangeRecord for unknown partition {id}/{p}", id=record.topic_id,
                     p=record.partition_id)
            return
        # As Kafka's PartitionRegistration.merge: a leader change bumps the leader epoch,
        # every change bumps the partition epoch.
        changes: dict[str, Any] = {"partition_epoch": current.partition_epoch + 1}
        if record.leader != -2:
            changes["leader"] = record.leader
            changes["leader_epoch"] = current.leader_epoch + 1
        for name in ("isr", "replicas", "removing_replicas", "adding_replicas", "directories",
                     "eligible_leader_replicas", "last_known_elr"):
            value = getattr(record, name)
            if value is not None:
                changes[name] = tuple(value)
        if record.leader_recovery_state != -1:
            changes["leader_recovery_state"] = record.leader_recovery_state
        self._writable(record.topic_id)[record.partition_id] = current._replace(**changes)

    def _config(self, record: ConfigRecord) -> None:
        if record.resource_type == RESOURCE_TOPIC:
            target = self.topic_configs
        elif record.resource_type == RESOURCE_BROKER:
            target = self.broker_configs
        elif record.resource_type == RESOURCE_GROUP:
            target = self.group_configs
        elif record.resource_type == RESOURCE_CLIENT_METRICS:
            target = self.client_metrics
        else:
            return  # broker loggers are not kept in the metadata log
        configs = target.setdefault(record.resource_name, {})
        if record.value is None:
            configs.pop(record.name, None)
            if not configs:
                del target[record.resource_name]
        else:
            configs[record.name] = record.value

    def build(self) -> MetadataImage:
        topics = {tid: TopicImage(t.name, tid, _read_only(self.partitions.get(tid, {})))
                  for tid, t in self.topics.items()}
        return MetadataImage(
            offset=self.offset,
            topics_by_name=MappingProxyType({t.name: t for t in topics.values()}),
            topics_by_id=MappingProxyType(topics),
            topic_configs=MappingProxyType({k: MappingProxyType(v)
                                            for k, v in self.topic_configs.items()}),
            broker_configs=MappingProxyType({k: MappingProxyType(v)
                                             for k, v in self.broker_configs.items()}),
            group_configs=MappingProxyType({k: MappingProxyType(v)
                                            for k, v in self.group_configs.items()}),
            client_metrics=MappingProxyType({k: MappingProxyType(v)
                                             for k, v in self.client_metrics.items()}),
            features=MappingProxyType(self.features),
            brokers=MappingProxyType(self.brokers),
            next_producer_id=self.next_producer_id,
            acls=MappingProxyType(self.acls),
            scram_credentials=MappingProxyType(self.scram),
            client_quotas=MappingProxyType({k: MappingProxyType(v) for k, v in self.quotas.items()}),
        )


# -- the controller -----------------------------------------------------------------------


