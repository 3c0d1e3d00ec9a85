"""Wiring the transaction coordinator into a Broker: what `Broker.open()`/`close()` call.

On one node the coordinator writes its markers straight into the partition logs
(Kafka sends WriteTxnMarkers to each partition's leader): a marker wakes the
fetches waiting on its partition, and one in `__consumer_offsets` decides the
transaction's pending offset commits there.  Periodic tasks: the timed-out
transaction abort and the transactional-id expiry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from akfak.coordinator.log_topic import (
    OFFSETS_TOPIC,
    TRANSACTION_STATE_TOPIC,
    LogCoordinatorTopic,
    transaction_state_topic_configs,
)
from akfak.coordinator.topic import ICoordinatorTopic, MemoryCoordinatorTopic
from akfak.errors import KafkaError, NotLeaderOrFollower, UnknownTopicOrPartition
from akfak.groups.txn_offsets import complete_txn
from akfak.transactions.coordinator import TransactionCoordinator
from akfak.transactions.metadata import TopicPartition

if TYPE_CHECKING:
    from akfak.broker import Broker

log = Logger()


def transaction_state_for(broker: Broker) -> ICoordinatorTopic:
    if getattr(broker, "controller", None) is not None and getattr(broker, "storage", None):
        return LogCoordinatorTopic(
            TRANSACTION_STATE_TOPIC, transaction_state_topic_configs(broker.config),
            broker.controller, broker.storage,
            replication_factor=broker.config.get_int("transaction.state.log.replication.factor"),
            cluster=getattr(broker, "cluster", None))
    return MemoryCoordinatorTopic(TRANSACTION_STATE_TOPIC)


def write_marker(broker: Broker, producer_id: int, epoch: int, commit: bool,
                 coordinator_epoch: int, topic: str, partition: int) -> Deferred[None] | None:
    """Write one COMMIT or ABORT marker into a partition, as the partition leader handles
    WriteTxnMarkers: in `__consumer_offsets` it also decides the transaction's pending
    offsets there. Raises UnknownTopicOrPartition (NotLeaderOrFollower: another broker of
    the cluster leads it), or the KafkaError the log answers; returns the Deferred of its
    commit where the storage has one (postgres)."""
    partition_log = broker.get_log(topic, partition)
    if partition_log is None:
        if broker.missing_log_error(topic, partition) is ErrorCode.not_leader_or_follower:
            raise NotLeaderOrFollower()
        raise UnknownTopicOrPartition()
    info = partition_log.append_marker(
        producer_id=producer_id, producer_epoch=epoch, commit=commit,
        coordinator_epoch=coordinator_epoch, now_ms=broker.now_ms(),
        leader_epoch=broker.leader_epoch(topic, partition))
    if topic == OFFSETS_TOPIC and broker.group_coordinator is not None:
        complete_txn(broker.group_coordinator, partition, producer_id, commit)
    broker.appended(topic, partition)
    return info.settled()


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


#: how long a cluster's coordinator keeps trying to deliver a marker (Kafka: for ever, while
#: it coordinates the transaction)
MARKER_RETRY_S = 120.0
MARKER_BACKOFF_S = 0.2
#: errors after which a marker is sent again (to the leader as the metadata then says)
_RETRY_MARKER = {ErrorCode.not_leader_or_follower, ErrorCode.kafka_storage_error,
                 ErrorCode.unknown_topic_or_partition, ErrorCode.request_timed_out,
                 ErrorCode.not_enough_replicas, ErrorCode.coordinator_load_in_progress}


def cluster_marker_writer(broker: Broker):  # type: ignore[no-untyped-def]
    """Markers in a cluster: written here for the partitions this broker leads, sent as
    WriteTxnMarkers to the leader of each other one (Kafka's TransactionMarkerChannelManager);
    fires once every marker is committed (or given up), so Complete* is written after."""
    peers = broker.peers
    assert peers is not None
    clock = broker.clock

    def write_markers(producer_id: int, epoch: int, commit: bool, coordinator_epoch: int,
                      partitions: Iterable[TopicPartition]) -> Deferred[None]:
        deadline = clock.seconds() + MARKER_RETRY_S
        finished: Deferred[None] = Deferred()

        def attempt(todo: list[TopicPartition]) -> None:
            by_leader: dict[int, list[TopicPartition]] = {}
            for tp in todo:
                p = broker.image.partition(*tp)
                if p is None:
                    continue  # deleted: nothing to decide there
                by_leader.setdefault(p.leader, []).append(tp)
            sent = [deliver(leader, tps) for leader, tps in by_leader.items()]
            gatherResults(sent, consumeErrors=True).addCallback(retry)

        def retry(results: list[list[TopicPartition]]) -> None:
            again = [tp for failed in results for tp in failed]
            if not again:
                finished.callback(None)
            elif clock.seconds() > deadline:
                log.error("Gave up writing the {kind} markers of producer {pid} to {tps}",
                          kind="COMMIT" if commit else "ABORT", pid=producer_id, tps=again)
                finished.callback(None)
            else:
                clock.callLater(MARKER_BACKOFF_S, attempt, again)

        def deliver(leader: int, tps: list[TopicPartition]) -> Deferred[list[TopicPartition]]:
            if leader == broker.node_id:
                return local(tps)
            return remote(leader, tps)

        def local(tps: list[TopicPartition]) -> Deferred[list[TopicPartition]]:
            failed: list[TopicPartition] = []
            flushes = []
            for tp in tps:
                try:
                    flushed = write_marker(broker, producer_id, epoch, commit, coordinator_epoch,
                                           *tp)
                except KafkaError as e:
                    if ErrorCode(e.error_code) in _RETRY_MARKER:
                        failed.append(tp)
                    else:
                        _refused(producer_id, commit, tp, e)
                    continue
                if flushed is not None:
                    flushes.append(flushed.addCallbacks(lambda _: None,
                                                        lambda _, tp=tp: failed.append(tp)))
            return gatherResults(flushes).addCallback(lambda _: failed)

        def remote(leader: int, tps: list[TopicPartition]) -> Deferred[list[TopicPartition]]:
            from kio.schema.write_txn_markers.v1 import request as req
            from kio.static.primitive import i16, i32, i64

            topics: dict[str, list[int]] = {}
            for topic, index in tps:
                topics.setdefault(topic, []).append(index)
            request = req.WriteTxnMarkersRequest(markers=(req.WritableTxnMarker(
                producer_id=i64(producer_id), producer_epoch=i16(epoch),
                transaction_result=commit, coordinator_epoch=i32(coordinator_epoch),
                topics=tuple(req.WritableTxnMarkerTopic(
                    name=t, partition_indexes=tuple(i32(i) for i in ps))
                    for t, ps in topics.items())),))

            def answered(response: Any) -> list[TopicPartition]:
                failed = []
                for marker in response.markers:
                    for topic in marker.topics:
                        for p in topic.partitions:
                            error = ErrorCode(p.error_code)
                            if error in _RETRY_MARKER:
                                failed.append((topic.name, int(p.partition_index)))
                            elif error is not ErrorCode.none:
                                _refused(producer_id, commit, (topic.name, p.partition_index),
                                         error.name)
                return failed

            return peers.send(leader, request).addCallbacks(answered, lambda _: list(tps))

        attempt(sorted(partitions))
        return finished

    return write_markers


def _refused(producer_id: int, commit: bool, tp: TopicPartition, error: object) -> None:
    # Kafka's marker handler gives up on a partition that refuses the marker (a newer
    # epoch already wrote there).
    log.warn("{kind} marker of producer {pid} refused by {tp}: {e}",
             kind="COMMIT" if commit else "ABORT", pid=producer_id, tp=f"{tp[0]}-{tp[1]}",
             e=error)


def open_transaction_coordinator(broker: Broker) -> TransactionCoordinator:
    config = broker.config
    writer = (marker_writer(broker) if getattr(broker, "cluster", None) is None
              else cluster_marker_writer(broker))
    coordinator = TransactionCoordinator(config, broker.clock, transaction_state_for(broker),
                                         broker.producer_ids.generate, writer)
    broker.every(config.get_int("transaction.abort.timed.out.transaction.cleanup.interval.ms")
                 / 1000, coordinator.abort_timed_out_transactions)
    broker.every(config.get_int("transaction.remove.expired.transaction.cleanup.interval.ms")
                 / 1000, coordinator.expire_transactional_ids)
    coordinator.start(clustered=getattr(broker, "cluster", None) is not None)
    return coordinator
