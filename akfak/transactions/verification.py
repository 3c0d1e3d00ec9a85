"""KIP-890 transaction verification for a partition leader's Produce, as Kafka's
ReplicaManager.appendRecordsWithTransactionVerification does it.

- The first transactional batch of a producer epoch in a partition is verified with the
  transactional id's coordinator (here, or on another broker of the cluster: AddPartitionsToTxn
  v5, akfak.transactions.remote).  Produce v12+ (transaction version 2) adds the partition to
  the transaction; older versions only ask whether AddPartitionsToTxn added it.
- v12+: CONCURRENT_TRANSACTIONS (the coordinator is still writing the previous transaction's
  markers, which is the common case right after a commit) is retried here every
  `add.partitions.to.txn.retry.backoff.ms` until `add.partitions.to.txn.retry.backoff.max.ms`
  (at most `request.timeout.ms`) has passed, then answered as it is; the client retries it.
- The answers, as Kafka gives them in a Produce response: PRODUCER_FENCED is
  INVALID_PRODUCER_EPOCH, TRANSACTION_ABORTABLE INVALID_TXN_STATE up to v10 (both from
  AddPartitionsToTxnManager); INVALID_TXN_STATE says "Partition was not added to the
  transaction"; a coordinator that cannot answer (loading, moving, unreachable, and before
  v12 busy) is NOT_ENOUGH_REPLICAS, a retriable error that does not refresh the client's
  metadata, with the coordinator's error in the message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.task import deferLater

from akfak.transactions.remote import verify_remotely

if TYPE_CHECKING:
    from akfak.broker import Broker

TopicPartition = tuple[str, int]
#: an error code with the message Kafka gives it (None: the error's own)
Answer = tuple[ErrorCode, str | None]

#: the first Produce version whose transactional batches add their partition (TV2)
ADDS_PARTITION = 12
_UNVERIFIABLE = {ErrorCode.network_exception, ErrorCode.coordinator_load_in_progress,
                 ErrorCode.coordinator_not_available, ErrorCode.not_coordinator}


def verify_produce(broker: Broker, transactional_id: str,
                   wanted: dict[TopicPartition, tuple[int, int]], version: int
                   ) -> Deferred[dict[TopicPartition, Answer]]:
    """Each partition of `wanted` (-> (producer id, epoch)) verified or added; the answers
    of those that failed."""
    adds = version >= ADDS_PARTITION
    clock = broker.clock
    config = broker.config
    give_up_at = clock.seconds() + min(
        config.get_int("add.partitions.to.txn.retry.backoff.max.ms"),
        config.get_int("request.timeout.ms")) / 1000
    backoff_s = config.get_int("add.partitions.to.txn.retry.backoff.ms") / 1000

    def settle(errors: dict[TopicPartition, ErrorCode]) -> Deferred[dict[TopicPartition, Answer]]:
        if (adds and ErrorCode.concurrent_transactions in errors.values()
                and clock.seconds() < give_up_at):
            return deferLater(clock, backoff_s, _ask, broker, transactional_id, wanted,
                              adds).addCallback(settle)
        return succeed({tp: produce_answer(e, version) for tp, e in errors.items()})

    return _ask(broker, transactional_id, wanted, adds).addCallback(settle)


def _ask(broker: Broker, transactional_id: str, wanted: dict[TopicPartition, tuple[int, int]],
         adds: bool) -> Deferred[dict[TopicPartition, ErrorCode]]:
    """The coordinator's errors for the partitions of `wanted` that failed."""
    coordinator = broker.transaction_coordinator
    if coordinator is None:
        return succeed(dict.fromkeys(wanted, ErrorCode.coordinator_not_available))
    if (broker.cluster is not None
            and coordinator.status(transactional_id) is ErrorCode.not_coordinator):
        return verify_remotely(broker, transactional_id, wanted, add=adds)
    if not adds:
        return succeed({tp: e for tp, (pid, epoch) in wanted.items()
                        if (e := coordinator.verify(transactional_id, pid, epoch, [tp])[tp])
                        is not ErrorCode.none})
    # one addition per producer (Kafka's one transaction per AddPartitionsToTxn)
    by_producer: dict[tuple[int, int], set[TopicPartition]] = {}
    for tp, ids in wanted.items():
        by_producer.setdefault(ids, set()).add(tp)
    added = [coordinator.add_partitions(transactional_id, pid, epoch, tps, client_version=2)
             .addCallback(lambda e, tps=tps: dict.fromkeys(tps, e))
             for (pid, epoch), tps in by_producer.items()]
    return gatherResults(added).addCallback(
        lambda results: {tp: e for r in results for tp, e in r.items() if e is not ErrorCode.none})


def produce_answer(error: ErrorCode, version: int) -> Answer:
    """A verification error as Kafka answers it in a Produce response of `version`."""
    if error is ErrorCode.producer_fenced:
        return ErrorCode.invalid_producer_epoch, None
    if error is ErrorCode.transaction_abortable and version <= 10:
        error = ErrorCode.invalid_txn_state
    if error is ErrorCode.invalid_txn_state:
        return error, "Partition was not added to the transaction"
    if error in _UNVERIFIABLE or (error is ErrorCode.concurrent_transactions
                                  and version < ADDS_PARTITION):
        return ErrorCode.not_enough_replicas, (
            "Unable to verify the partition has been added to the transaction. "
            f"Underlying error: {error.name.upper()}")
    return error, None
