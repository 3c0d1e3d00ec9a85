"""A coordinator topic on the broker's storage: an ICoordinatorTopic over partition logs.

The topic is created through the metadata controller, as Kafka creates it on
first use, with one replica (a single node) and the configs its coordinator
gives it: `__consumer_offsets` gets `cleanup.policy=compact`,
`segment.bytes=offsets.topic.segment.bytes` and `compression.type=producer` (the
coordinator's own batches are uncompressed); `__transaction_state` gets
`cleanup.policy=compact`, `segment.bytes=transaction.state.log.segment.bytes`,
`compression.type=uncompressed` and `unclean.leader.election.enable=false`.

In a cluster (akfak/cluster.py) the topic gets `offsets.topic.replication.factor` /
`transaction.state.log.replication.factor` replicas (at most as many as brokers ever
registered; COORDINATOR_NOT_AVAILABLE while fewer are live), so its partitions, and the
coordinators with them, move when a broker goes.  Only the controller
creates topics: another broker asks it through the database (`Cluster.request_topic`)
and waits for the topic to appear.
"""

from __future__ import annotations

import contextlib
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from akfak.config import BrokerConfig
from akfak.coordinator.topic import ICoordinatorTopic
from akfak.errors import CoordinatorNotAvailable, KafkaStorageError, TopicAlreadyExists

OFFSETS_TOPIC = "__consumer_offsets"
TRANSACTION_STATE_TOPIC = "__transaction_state"


def offsets_topic_configs(config: BrokerConfig) -> dict[str, str | None]:
    """The topic configs Kafka gives `__consumer_offsets` (GroupCoordinator.offsetsTopicConfigs)."""
    return {
        "cleanup.policy": "compact",
        "segment.bytes": str(config.get_int("offsets.topic.segment.bytes")),
        "compression.type": "producer",
    }


def transaction_state_topic_configs(config: BrokerConfig) -> dict[str, str | None]:
    """The topic configs Kafka gives `__transaction_state` (TransactionLog's
    transactionTopicConfigs)."""
    return {
        "cleanup.policy": "compact",
        "segment.bytes": str(config.get_int("transaction.state.log.segment.bytes")),
        "compression.type": "uncompressed",
        "unclean.leader.election.enable": "false",
    }


@implementer(ICoordinatorTopic)
class LogCoordinatorTopic:
    """A coordinator topic as partition logs of `storage`, created by `controller`."""

    def __init__(self, name: str, configs: dict[str, str | None], controller: Any, storage: Any,
                 *, replication_factor: int = 1, cluster: Any = None):
        self.name = name
        self.configs = configs
        self.controller = controller
        self.storage = storage
        self.replication_factor = replication_factor
        self.cluster = cluster

    def num_partitions(self) -> int | None:
        topic = self.controller.image.topic(self.name)
        return None if topic is None else int(topic.num_partitions)

    def create(self, num_partitions: int) -> Deferred[None] | None:
        if self.num_partitions() is not None:
            return None
        if self.cluster is None:
            with contextlib.suppress(TopicAlreadyExists):
                self.controller.create_topic(self.name, num_partitions, 1, self.configs)
            return None
        if not self.controller.active:
            return self.cluster.request_topic(self.name)
        # after a fresh look at the cluster: brokers that just registered count
        return self.cluster.fresh().addCallback(lambda _: self._create_replicated(num_partitions))

    def _create_replicated(self, num_partitions: int) -> None:
        if self.num_partitions() is not None:
            return
        if not self.controller.active:
            raise CoordinatorNotAvailable(f"Node {self.controller.node_id} is no longer the "
                                          f"controller")
        # Kafka refuses to create it with fewer live brokers than its replication factor;
        # a cluster of fewer brokers than that (ever registered) gets one replica each.
        rf = max(1, min(self.replication_factor, len(self.cluster.registered)))
        live = len(self.controller.live_brokers())
        if live < rf:
            raise CoordinatorNotAvailable(f"{self.name} needs {rf} live brokers, {live} are")
        with contextlib.suppress(TopicAlreadyExists):
            self.controller.create_topic(self.name, num_partitions, rf, self.configs)
        self.cluster.sync_coordinators()

    def _log(self, partition: int) -> Any:
        partition_log = self.storage.get_log(self.name, partition)
        if partition_log is None:
            if self.storage.is_offline(self.name, partition):  # NOT_COORDINATOR to clients
                raise KafkaStorageError(f"{self.name}-{partition} is offline")
            raise KeyError(f"{self.name}-{partition} has no log")
        return partition_log

    def end_offset(self, partition: int) -> int:
        return int(self._log(partition).log_end_offset)

    def prepare_read(self, partition: int, offset: int, max_bytes: int) -> Any:
        partition_log = self._log(partition)
        return partition_log.prepare_read(max(offset, partition_log.log_start_offset), max_bytes)

    def read(self, partition: int, offset: int, max_bytes: int) -> bytes:
        partition_log = self._log(partition)
        offset = max(offset, partition_log.log_start_offset)
        if offset >= partition_log.log_end_offset:
            return b""
        return b"".join(partition_log.read(offset, max_bytes).parts)

    def leader_epoch(self, partition: int) -> int:
        """The partition's leader epoch: the coordinator epoch of what it holds."""
        image = self.controller.image.partition(self.name, partition)
        return max(image.leader_epoch, 0) if image is not None else 0

    def append(self, partition: int, batch: bytes, now_ms: int) -> int | Deferred[int]:
        partition_log = self._log(partition)
        image = self.controller.image.partition(self.name, partition)
        epoch = image.leader_epoch if image is not None else max(partition_log.leader_epoch, 0)
        # Written as the coordinator, as Kafka's coordinator appends (not a client's produce).
        info = partition_log.append(batch, leader_epoch=epoch, now_ms=now_ms, origin="coordinator")
        settled = info.settled()
        if settled is not None:
            # Written once durable (the postgres provider: committed), as a Produce is answered.
            return settled.addCallback(lambda _: int(info.base_offset))
        return int(info.base_offset)
