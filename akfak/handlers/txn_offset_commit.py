"""TxnOffsetCommit (28), v0-v5: offsets committed inside a transaction.

Behavior / Version notes (Kafka's KafkaApis and GroupCoordinator):
- The transaction must hold the group's `__consumer_offsets` partition (added by
  AddOffsetsToTxn; v5, transaction version 2, adds it implicitly); else the
  coordinator's verification error (INVALID_TXN_STATE before v4 for a partition
  not in the transaction, as Kafka maps TRANSACTION_ABORTABLE for older clients;
  INVALID_PRODUCER_EPOCH for PRODUCER_FENCED).  In a cluster whose transactional id is
  coordinated by another broker, the group coordinator asks that one
  (akfak.transactions.remote, AddPartitionsToTxn v5); a request that fails answers
  COORDINATOR_LOAD_IN_PROGRESS, a coordinator not known yet COORDINATOR_NOT_AVAILABLE.
- The offsets are pending until the transaction's COMMIT marker reaches that
  partition (akfak.groups.txn_offsets); an ABORT drops them.
- v3+ carry generation, member id and group instance id, checked as for
  OffsetCommit (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID);
  unknown topics or partitions are UNKNOWN_TOPIC_OR_PARTITION.
- ACLs: WRITE on the transactional id (else every partition
  TRANSACTIONAL_ID_AUTHORIZATION_FAILED), READ on the group (GROUP_AUTHORIZATION_FAILED),
  READ on each topic (TOPIC_AUTHORIZATION_FAILED for its partitions).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32
from twisted.internet.defer import Deferred, succeed

from akfak.coordinator.log_topic import OFFSETS_TOPIC
from akfak.groups.results import CommitRequestPartition
from akfak.groups.txn_offsets import txn_commit_offsets
from akfak.handlers.base import NO_THROTTLE, Handler, make
from akfak.handlers.groups import coordinator_of
from akfak.handlers.offsets import TopicLookup
from akfak.protocol import RequestContext
from akfak.security.acls import GROUP, READ, TOPIC, TRANSACTIONAL_ID, WRITE
from akfak.security.checks import access
from akfak.transactions.remote import verify_remotely

TopicPartition = tuple[str, int]


class TxnOffsetCommitHandler(Handler):
    api_key = 28
    min_version = 0
    max_version = 5

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        topics = TopicLookup(self.broker)
        order: list[TopicPartition] = []
        errors: dict[TopicPartition, ErrorCode] = {}
        wanted: list[CommitRequestPartition] = []
        acl = access(context)
        refused = (ErrorCode.transactional_id_authorization_failed
                   if not acl.allows(WRITE, TRANSACTIONAL_ID, request.transactional_id)
                   else ErrorCode.group_authorization_failed
                   if not acl.allows(READ, GROUP, request.group_id) else None)
        for topic in request.topics:
            denied = refused or (None if acl.allows(READ, TOPIC, topic.name)
                                 else ErrorCode.topic_authorization_failed)
            for p in topic.partitions:
                key = (topic.name, int(p.partition_index))
                order.append(key)
                error = denied or topics.partition_exists(*key)
                if error is not ErrorCode.none:
                    errors[key] = error
                    continue
                wanted.append(CommitRequestPartition(
                    topic.name, int(p.partition_index), int(p.committed_offset),
                    int(getattr(p, "committed_leader_epoch", -1)), p.committed_metadata))
        answer = self._commit(request, wanted, version) if wanted else succeed({})

        def respond(committed: dict[TopicPartition, ErrorCode]) -> Any:
            module = self.response_module(version)
            by_topic: dict[str, list[Any]] = {}
            for key in order:
                error = errors.get(key) or committed.get(key, ErrorCode.none)
                by_topic.setdefault(key[0], []).append(module.TxnOffsetCommitResponsePartition(
                    partition_index=i32(key[1]), error_code=error))
            return make(self.response_type(version), throttle_time=NO_THROTTLE, topics=tuple(
                module.TxnOffsetCommitResponseTopic(name=name, partitions=tuple(parts))
                for name, parts in by_topic.items()))

        return answer.addCallback(respond)

    def _commit(self, request: Any, wanted: list[CommitRequestPartition], version: int
                ) -> Deferred[dict[TopicPartition, ErrorCode]]:
        keys = [(w.topic, w.partition) for w in wanted]
        groups, txns = coordinator_of(self.broker), self.broker.transaction_coordinator
        if groups is None or txns is None:
            return succeed(dict.fromkeys(keys, ErrorCode.coordinator_not_available))
        producer_id, epoch = int(request.producer_id), int(request.producer_epoch)
        offsets_partition = (OFFSETS_TOPIC, groups.partition_for(request.group_id))

        def commit(error: ErrorCode) -> Any:
            if error is not ErrorCode.none:
                if error is ErrorCode.producer_fenced:
                    error = ErrorCode.invalid_producer_epoch
                elif error is ErrorCode.transaction_abortable and version < 4:
                    error = ErrorCode.invalid_txn_state
                return succeed(dict.fromkeys(keys, error))
            return txn_commit_offsets(
                groups, request.group_id, producer_id, epoch,
                int(getattr(request, "generation_id", -1)), getattr(request, "member_id", ""),
                getattr(request, "group_instance_id", None), wanted)

        if (self.broker.cluster is not None
                and txns.status(request.transactional_id) is ErrorCode.not_coordinator):
            verified = verify_remotely(
                self.broker, request.transactional_id, {offsets_partition: (producer_id, epoch)},
                add=version >= 5).addCallback(
                lambda errors: _remote_error(errors.get(offsets_partition, ErrorCode.none)))
        elif version >= 5:
            verified = txns.add_partitions(request.transactional_id, producer_id, epoch,
                                           {offsets_partition}, client_version=2)
        else:
            verified = succeed(txns.verify(request.transactional_id, producer_id, epoch,
                                           [offsets_partition])[offsets_partition])
        return verified.addCallback(commit)


def _remote_error(error: ErrorCode) -> ErrorCode:
    """A verification error from the coordinator on another broker, as Kafka's group
    coordinator answers it (CoordinatorOperationExceptionHelper): a failed request is
    retried without a coordinator lookup, a coordinator not yet there looked up again."""
    if error is ErrorCode.network_exception:
        return ErrorCode.coordinator_load_in_progress
    if error in (ErrorCode.unknown_topic_or_partition, ErrorCode.not_enough_replicas,
                 ErrorCode.request_timed_out):
        return ErrorCode.coordinator_not_available
    if error is ErrorCode.cluster_authorization_failed:
        return ErrorCode.invalid_txn_state
    return error


HANDLERS = (TxnOffsetCommitHandler,)
