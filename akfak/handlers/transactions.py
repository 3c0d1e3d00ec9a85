"""AddPartitionsToTxn (24) v0-v5, AddOffsetsToTxn (25) v0-v4, EndTxn (26) v0-v5 and
WriteTxnMarkers (27) v1: the transactional producer's calls to its coordinator.

Behavior / Version notes (Kafka's KafkaApis and TransactionCoordinator):
- AddPartitionsToTxn v0-v3 (clients) carry one transaction; a partition of a topic
  that does not exist is UNKNOWN_TOPIC_OR_PARTITION and then every other partition
  OPERATION_NOT_ATTEMPTED; otherwise every partition gets the coordinator's answer
  (NONE, CONCURRENT_TRANSACTIONS, PRODUCER_FENCED, INVALID_PRODUCER_ID_MAPPING,
  INVALID_TXN_STATE, COORDINATOR_LOAD_IN_PROGRESS ...).  v4+ (KIP-890, brokers)
  batch transactions; `verify_only` answers per partition whether it is in the
  ongoing transaction (TRANSACTION_ABORTABLE when not) without adding it.
- AddOffsetsToTxn adds the group's `__consumer_offsets` partition.
- EndTxn commits or aborts: the coordinator answers once PrepareCommit/PrepareAbort
  is in `__transaction_state`, the markers and the Complete state follow at once.
  v5 (transaction version 2) bumps the epoch with every EndTxn and answers the new
  producer id and epoch.
- PRODUCER_FENCED is INVALID_PRODUCER_EPOCH for AddPartitionsToTxn/AddOffsetsToTxn/
  EndTxn below v2, as Kafka maps it for older clients.
- WriteTxnMarkers is a broker-to-broker API: on one node the coordinator writes
  markers itself; a request is still answered, writing the markers it names as a
  partition leader does (a marker in `__consumer_offsets` settles the transaction's
  pending offsets there; UNKNOWN_TOPIC_OR_PARTITION, or the error the log answers, per
  partition).  The answer waits for the markers' commit (postgres); in a cluster a
  partition led elsewhere is NOT_LEADER_OR_FOLLOWER, and the coordinator's markers come as
  this request.
- ACLs (as KafkaApis): AddPartitionsToTxn v0-v3 needs WRITE on the transactional id (else
  every partition TRANSACTIONAL_ID_AUTHORIZATION_FAILED) and WRITE on each topic (else
  TOPIC_AUTHORIZATION_FAILED, and OPERATION_NOT_ATTEMPTED for the rest); an internal topic
  is always TOPIC_AUTHORIZATION_FAILED there, authorizer or not, as in Kafka.  v4+ and
  WriteTxnMarkers need CLUSTER_ACTION (WriteTxnMarkers: or ALTER) on the cluster, else
  CLUSTER_AUTHORIZATION_FAILED (the top-level error; every marker partition).
  AddOffsetsToTxn and EndTxn need WRITE on the transactional id
  (TRANSACTIONAL_ID_AUTHORIZATION_FAILED), AddOffsetsToTxn then READ on the group
  (GROUP_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode
from kio.schema.types import ProducerId
from kio.static.primitive import i16, i32
from twisted.internet.defer import Deferred, gatherResults, succeed

from akfak.coordinator.log_topic import OFFSETS_TOPIC
from akfak.errors import KafkaError
from akfak.handlers.base import NO_THROTTLE, Handler, make
from akfak.handlers.groups import coordinator_of
from akfak.metadata_image import INTERNAL_TOPICS
from akfak.protocol import RequestContext
from akfak.security.acls import ALTER, CLUSTER_ACTION, GROUP, READ, TOPIC, TRANSACTIONAL_ID, WRITE
from akfak.security.checks import Everything, access
from akfak.transactions.service import write_marker

TopicPartition = tuple[str, int]


def fenced_for(version: int, error: ErrorCode, first_with_fenced: int = 2) -> ErrorCode:
    """PRODUCER_FENCED as clients of `version` know it."""
    if error is ErrorCode.producer_fenced and version < first_with_fenced:
        return ErrorCode.invalid_producer_epoch
    return error


class _TxnHandler(Handler):
    def _coordinator(self) -> Any:
        return self.broker.transaction_coordinator


class AddPartitionsToTxnHandler(_TxnHandler):
    api_key = 24
    min_version = 0
    max_version = 5

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        module = self.response_module(version)
        acl = access(context)
        if version <= 3:
            done = self._one(request.v3_and_below_transactional_id,
                             int(request.v3_and_below_producer_id),
                             int(request.v3_and_below_producer_epoch),
                             request.v3_and_below_topics, False, version, acl)
            return done.addCallback(lambda results: make(
                self.response_type(version), throttle_time=NO_THROTTLE,
                results_by_topic_v3_and_below=self._topic_results(module, results)))
        if not acl.cluster(CLUSTER_ACTION):  # from brokers only
            return make(self.response_type(version), throttle_time=NO_THROTTLE,
                        error_code=ErrorCode.cluster_authorization_failed,
                        results_by_transaction=())
        answers = [self._one(t.transactional_id, int(t.producer_id), int(t.producer_epoch),
                             t.topics, bool(t.verify_only), version, acl)
                   for t in request.transactions]

        def respond(results: list[dict[TopicPartition, ErrorCode]]) -> Any:
            return make(self.response_type(version), throttle_time=NO_THROTTLE,
                        error_code=ErrorCode.none, results_by_transaction=tuple(
                            module.AddPartitionsToTxnResult(
                                transactional_id=t.transactional_id,
                                topic_results=self._topic_results(module, r))
                            for t, r in zip(request.transactions, results, strict=True)))

        return gatherResults(answers).addCallback(respond)

    def _one(self, transactional_id: str, producer_id: int, epoch: int, topics: Any,
             verify_only: bool, version: int, acl: Everything
             ) -> Deferred[dict[TopicPartition, ErrorCode]]:
        wanted = [(t.name, int(p)) for t in topics for p in t.partitions]
        failed: dict[TopicPartition, ErrorCode] = {}
        if version <= 3:  # from clients
            if not acl.allows(WRITE, TRANSACTIONAL_ID, transactional_id):
                return succeed(dict.fromkeys(wanted, ErrorCode.transactional_id_authorization_failed))
            failed = {tp: ErrorCode.topic_authorization_failed for tp in wanted
                      if tp[0] in INTERNAL_TOPICS or not acl.allows(WRITE, TOPIC, tp[0])}
        # in a cluster the partition may be led by another broker: the metadata says it exists
        failed.update((tp, ErrorCode.unknown_topic_or_partition) for tp in wanted
                      if tp not in failed and self.broker.get_log(*tp) is None
                      and (self.broker.cluster is None or self.broker.image.partition(*tp) is None))
        if failed:
            return succeed({tp: failed.get(tp, ErrorCode.operation_not_attempted) for tp in wanted})
        coordinator = self._coordinator()
        if coordinator is None:
            return succeed(dict.fromkeys(wanted, ErrorCode.coordinator_not_available))
        if verify_only:
            return succeed(coordinator.verify(transactional_id, producer_id, epoch, wanted))
        # v4+ comes from brokers adding a Produce's partition: transaction version 2 (Kafka's
        # transactionVersionForAddPartitionsToTxn)
        added = coordinator.add_partitions(transactional_id, producer_id, epoch, set(wanted),
                                           client_version=2 if version >= 4 else 0)
        return added.addCallback(lambda e: dict.fromkeys(wanted, fenced_for(version, e)))

    @staticmethod
    def _topic_results(module: Any, results: dict[TopicPartition, ErrorCode]) -> tuple[Any, ...]:
        by_topic: dict[str, list[Any]] = {}
        for (topic, partition), error in results.items():
            by_topic.setdefault(topic, []).append(module.AddPartitionsToTxnPartitionResult(
                partition_index=i32(partition), partition_error_code=error))
        return tuple(module.AddPartitionsToTxnTopicResult(name=t, results_by_partition=tuple(ps))
                     for t, ps in by_topic.items())


class AddOffsetsToTxnHandler(_TxnHandler):
    api_key = 25
    min_version = 0
    max_version = 4

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        groups, coordinator = coordinator_of(self.broker), self._coordinator()

        def respond(error: ErrorCode) -> Any:
            return make(self.response_type(version), throttle_time=NO_THROTTLE,
                        error_code=fenced_for(version, error))

        acl = access(context)
        if not acl.allows(WRITE, TRANSACTIONAL_ID, request.transactional_id):
            return respond(ErrorCode.transactional_id_authorization_failed)
        if not acl.allows(READ, GROUP, request.group_id):
            return respond(ErrorCode.group_authorization_failed)
        if groups is None or coordinator is None:
            return respond(ErrorCode.coordinator_not_available)
        partition = (OFFSETS_TOPIC, groups.partition_for(request.group_id))
        added = groups.ensure_topic().addCallback(lambda _: coordinator.add_partitions(
            request.transactional_id, int(request.producer_id), int(request.producer_epoch),
            {partition}))
        return added.addCallback(respond)


class EndTxnHandler(_TxnHandler):
    api_key = 26
    min_version = 0
    max_version = 5

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version

        def respond(result: tuple[ErrorCode, int, int]) -> Any:
            error, producer_id, epoch = result
            return make(self.response_type(version), throttle_time=NO_THROTTLE,
                        error_code=fenced_for(version, error), producer_id=ProducerId(producer_id),
                        producer_epoch=i16(epoch))

        coordinator = self._coordinator()
        if not access(context).allows(WRITE, TRANSACTIONAL_ID, request.transactional_id):
            return respond((ErrorCode.transactional_id_authorization_failed, -1, -1))
        if coordinator is None:
            return respond((ErrorCode.coordinator_not_available, -1, -1))
        ended = coordinator.end_txn(request.transactional_id, int(request.producer_id),
                                    int(request.producer_epoch), bool(request.committed),
                                    client_version=2 if version >= 5 else 0)
        return ended.addCallback(respond)


class WriteTxnMarkersHandler(Handler):
    api_key = 27
    min_version = 1
    max_version = 1

    def handle(self, request: Any, context: RequestContext) -> Any:
        module = self.response_module(context.api_version)
        broker = self.broker
        acl = access(context)
        allowed = acl.cluster(ALTER, log_denied=False) or acl.cluster(CLUSTER_ACTION)
        results: list[Deferred[ErrorCode]] = []
        for marker in request.markers:
            for topic in marker.topics:
                for index in topic.partition_indexes:
                    results.append(_write(broker, marker, topic.name, int(index)) if allowed
                                   else succeed(ErrorCode.cluster_authorization_failed))

        def respond(errors: list[ErrorCode]) -> Any:
            each = iter(errors)
            return self.response_type(context.api_version)(markers=tuple(
                module.WritableTxnMarkerResult(producer_id=marker.producer_id, topics=tuple(
                    module.WritableTxnMarkerTopicResult(name=topic.name, partitions=tuple(
                        module.WritableTxnMarkerPartitionResult(
                            partition_index=i32(index), error_code=next(each))
                        for index in topic.partition_indexes))
                    for topic in marker.topics))
                for marker in request.markers))

        return gatherResults(results).addCallback(respond)


def _write(broker: Any, marker: Any, topic: str, index: int) -> Deferred[ErrorCode]:
    """The marker's error, once it is committed where the storage commits (postgres)."""
    try:
        flushed = write_marker(broker, int(marker.producer_id), int(marker.producer_epoch),
                               bool(marker.transaction_result), int(marker.coordinator_epoch),
                               topic, index)
    except KafkaError as e:
        return succeed(ErrorCode(e.error_code))
    if flushed is None:
        return succeed(ErrorCode.none)
    # not committed: a deposed leader's (fenced), so the coordinator asks the new one
    return flushed.addCallbacks(lambda _: ErrorCode.none,
                                lambda _: ErrorCode.not_leader_or_follower)


HANDLERS = (AddPartitionsToTxnHandler, AddOffsetsToTxnHandler, EndTxnHandler,
            WriteTxnMarkersHandler)
