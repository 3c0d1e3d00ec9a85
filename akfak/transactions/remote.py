"""KIP-890 verification with a transactional id's coordinator on another broker of the
cluster, as Kafka's AddPartitionsToTxnManager does it for a partition leader (Produce) and
for a group coordinator (TxnOffsetCommit): AddPartitionsToTxn v5 over the inter-broker
connection (akfak/peers.py), `verify_only` unless the partitions are to be added
(transaction version 2).

The answer is an error code per partition, as the coordinator gave it (the response's
top-level error for every partition), COORDINATOR_NOT_AVAILABLE while no other live
broker leads the id's `__transaction_state` partition, and NETWORK_EXCEPTION when the
request could not be answered; each caller maps those as Kafka's handler does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i16, i32, i64
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from akfak.groups.records import partition_for

if TYPE_CHECKING:
    from akfak.broker import Broker

TopicPartition = tuple[str, int]

log = Logger()


def remote_coordinator(broker: Broker, transactional_id: str) -> int | None:
    """The node leading the id's `__transaction_state` partition, if it is another one."""
    topic = broker.image.topic("__transaction_state")
    p = None if topic is None else topic.partitions.get(
        partition_for(transactional_id, int(topic.num_partitions)))
    if p is None or p.leader < 0 or p.leader == broker.node_id:
        return None
    return int(p.leader)


def verify_remotely(broker: Broker, transactional_id: str,
                    wanted: dict[TopicPartition, tuple[int, int]], *, add: bool
                    ) -> Deferred[dict[TopicPartition, ErrorCode]]:
    """Each partition of `wanted` (-> (producer id, epoch)) verified, or added when `add`,
    by the id's coordinator on another broker; only partitions in error are in the answer."""
    from kio.schema.add_partitions_to_txn.v5 import request as req

    node = remote_coordinator(broker, transactional_id)
    if node is None or broker.peers is None:
        return succeed(dict.fromkeys(wanted, ErrorCode.coordinator_not_available))
    by_producer: dict[tuple[int, int], dict[str, list[int]]] = {}
    for (name, index), ids in wanted.items():
        by_producer.setdefault(ids, {}).setdefault(name, []).append(index)
    request = req.AddPartitionsToTxnRequest(transactions=tuple(
        req.AddPartitionsToTxnTransaction(
            transactional_id=transactional_id, producer_id=i64(pid),
            producer_epoch=i16(epoch), verify_only=not add,
            topics=tuple(req.AddPartitionsToTxnTopic(
                name=name, partitions=tuple(i32(i) for i in indexes))
                for name, indexes in topics.items()))
        for (pid, epoch), topics in by_producer.items()))

    def answered(response: Any) -> dict[TopicPartition, ErrorCode]:
        if response.error_code != ErrorCode.none:
            return dict.fromkeys(wanted, ErrorCode(response.error_code))
        errors = {}
        for txn in response.results_by_transaction:
            for topic_result in txn.topic_results:
                for r in topic_result.results_by_partition:
                    error = ErrorCode(r.partition_error_code)
                    if error is not ErrorCode.none:
                        errors[(topic_result.name, int(r.partition_index))] = error
        return errors

    def failed(failure: Any) -> dict[TopicPartition, ErrorCode]:
        log.info("Verifying {id} with its coordinator, node {node}, failed: {e}",
                 id=transactional_id, node=node, e=failure.getErrorMessage())
        return dict.fromkeys(wanted, ErrorCode.network_exception)

    return broker.peers.send(node, request).addCallback(answered).addErrback(failed)
