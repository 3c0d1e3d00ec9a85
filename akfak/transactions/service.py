"""Wiring the transaction coordinator into a Broker: what `Broker.open()`/`close()` call.

On one node the coordinator writes its markers straight into the partition logs
(Kafka sends WriteTxnMarkers to each partition's leader): a marker wakes the
fetches waiting on its partition, and one in `__consumer_offsets` decides the
transaction's pending offset commits there.  Periodic tasks: the timed-out
transaction abort and the transactional-id expiry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from twisted.logger import Logger

from akfak.coordinator.log_topic import (
    OFFSETS_TOPIC,
    TRANSACTION_STATE_TOPIC,
    LogCoordinatorTopic,
    transaction_state_topic_configs,
)
from akfak.coordinator.topic import ICoordinatorTopic, MemoryCoordinatorTopic
from akfak.errors import KafkaError, UnknownTopicOrPartition
from akfak.groups.txn_offsets import complete_txn
from akfak.transactions.coordinator import TransactionCoordinator
from akfak.transactions.metadata import TopicPartition

if TYPE_CHECKING:
    from akfak.broker import Broker

log = Logger()


def transaction_state_for(broker: Broker) -> ICoordinatorTopic:
    if getattr(broker, "controller", None) is not None and getattr(broker, "storage", None):
        return LogCoordinatorTopic(TRANSACTION_STATE_TOPIC,
                                   transaction_state_topic_configs(broker.config),
                                   broker.controller, broker.storage)
    return MemoryCoordinatorTopic(TRANSACTION_STATE_TOPIC)


def write_marker(broker: Broker, producer_id: int, epoch: int, commit: bool,
                 coordinator_epoch: int, topic: str, partition: int) -> None:
    """Write one COMMIT or ABORT marker into a partition, as the partition leader handles
    WriteTxnMarkers: in `__consumer_offsets` it also decides the transaction's pending
    offsets there. Raises UnknownTopicOrPartition, or the KafkaError the log answers."""
    partition_log = broker.get_log(topic, partition)
    if partition_log is None:
        raise UnknownTopicOrPartition()
    partition_log.append_marker(
        producer_id=producer_id, producer_epoch=epoch, commit=commit,
        coordinator_epoch=coordinator_epoch, now_ms=broker.now_ms(),
        leader_epoch=broker.leader_epoch(topic, partition))
    if topic == OFFSETS_TOPIC and broker.group_coordinator is not None:
        complete_txn(broker.group_coordinator, partition, producer_id, commit)
    broker.appended(topic, partition)


def marker_writer(broker: Broker):  # type: ignore[no-untyped-def]
    def write_markers(producer_id: int, epoch: int, commit: bool, coordinator_epoch: int,
                      partitions: Iterable[TopicPartition]) -> None:
        for topic, partition in partitions:
            try:
                write_marker(broker, producer_id, epoch, commit, coordinator_epoch, topic,
                             partition)
            except UnknownTopicOrPartition:
                continue  # deleted meanwhile: nothing to decide there
            except KafkaError as e:
                # Kafka's marker handler gives up on a partition that refuses the marker
                # (a newer epoch already wrote there).
                log.warn("{kind} marker of producer {pid} refused by {topic}-{p}: {e}",
                         kind="COMMIT" if commit else "ABORT", pid=producer_id, topic=topic,
                         p=partition, e=e)

    return write_markers


def open_transaction_coordinator(broker: Broker) -> TransactionCoordinator:
    config = broker.config
    coordinator = TransactionCoordinator(config, broker.clock, transaction_state_for(broker),
                                         broker.producer_ids.generate, marker_writer(broker))
    broker.every(config.get_int("transaction.abort.timed.out.transaction.cleanup.interval.ms")
                 / 1000, coordinator.abort_timed_out_transactions)
    broker.every(config.get_int("transaction.remove.expired.transaction.cleanup.interval.ms")
                 / 1000, coordinator.expire_transactional_ids)
    coordinator.start()
    return coordinator
