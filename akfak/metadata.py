"""The controller: akfak's single-node KRaft controller over the metadata image.

`Controller`: each operation validates as Kafka's controller does, writes the records
Kafka's controller would write (ConfigRecords, TopicRecord, PartitionRecords,
RemoveTopicRecord, ProducerIdsRecord ...) to `__cluster_metadata-0` as one batch, applies
them to the image (akfak.metadata_image), then brings the partition logs in line (create,
delete, reconfigure).  At start it replays the log and reconciles storage with it:
missing partition logs are created, logs the metadata does not know are set aside as
`-stray` (as Kafka 3.7+ does).

The controller is one class in parts, so that no module grows too large to read: its state,
start and plumbing (metadata_base.py), its topic operations (metadata_topics.py), and here
the rest (configs, producer ids, broker registration, ACLs, SCRAM credentials, client quotas,
features).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from twisted.logger import Logger

from akfak import features, quota_control, resource_configs
from akfak.errors import InvalidConfig, InvalidRequest, KafkaError, UnknownTopicOrPartition
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
    ConfigRecord,
    FeatureLevelRecord,
    MetadataRecord,
    ProducerIdsRecord,
    RemoveAccessControlEntryRecord,
)
from akfak.metadata_image import EMPTY_CONFIGS, PRODUCER_ID_BLOCK_SIZE, changed_configs
from akfak.metadata_topics import TopicControl
from akfak.security import scram_control
from akfak.security.acls import Acl, AclFilter, validate_new_acl

log = Logger()


class Controller(TopicControl):
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
