"""Produce (key 0), advertised v0-v13; record data is magic 2 only, so v3+.

Behavior:
- v0-v2 are advertised as Kafka 4 does (librdkafka refuses to produce compressed
  data to a broker whose minimum is above 0, KAFKA-18659) and every partition is
  answered UNSUPPORTED_VERSION in that version's format.
- Each partition must carry exactly one magic-2 batch (INVALID_RECORD otherwise),
  zstd only from v7 (UNSUPPORTED_COMPRESSION_TYPE); storage checks CRC, sizes and
  offsets, and akfak.log.validator the records as Kafka's LogValidator does.
  Internal topics refuse client appends (INVALID_TOPIC_EXCEPTION).
- Per-record errors (KIP-467, v8+): the whole batch fails, `record_errors` names the
  records at fault by index and `error_message` says why; as Kafka, other append
  errors carry no message (CORRUPT_MESSAGE, INVALID_RECORD, MESSAGE_TOO_LARGE,
  UNKNOWN_SERVER_ERROR for what Kafka cannot decompress).  Each refusal is logged.
- acks 0: no response at all; if any partition failed, the connection is closed
  instead, so the client refreshes its metadata (as Kafka does).  acks 1 and -1
  are the same on a single node.  Other acks: INVALID_REQUIRED_ACKS everywhere.
- v13 names topics by id (UNKNOWN_TOPIC_ID when unknown).
- Transactional batches in a request without a transactional id, or with one the
  principal may not WRITE: every partition TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as Kafka
  answers the whole request.  A topic the principal may not WRITE:
  TOPIC_AUTHORIZATION_FAILED for its partitions (before looking the partition up).
- Batches with a producer id are checked against the partition's producer state
  (akfak.log.producer_state): a retried duplicate answers its original base offset
  (and, as Kafka, the batch's timestamp as log_append_time), a sequence gap
  OUT_OF_ORDER_SEQUENCE_NUMBER, an old epoch INVALID_PRODUCER_EPOCH.
- Transactional batches (KIP-890): the first batch of a transaction in a partition
  is verified with the transaction coordinator (akfak.transactions.verification): v12+
  (transaction version 2) adds the partition to the transaction, retrying
  CONCURRENT_TRANSACTIONS for up to 100 ms; older versions require AddPartitionsToTxn to
  have added it, else INVALID_TXN_STATE (TRANSACTION_ABORTABLE from v11).  As
  Kafka, PRODUCER_FENCED answers INVALID_PRODUCER_EPOCH and a coordinator that is
  loading or away NOT_ENOUGH_REPLICAS (retriable).
- Record batches go to the log as they came, but for the patched offsets.
- When flush.messages makes an append fsync, the answer waits for the fsync (which
  runs on a thread), so with flush.messages=1 an acknowledged batch is on disk; on
  postgres every answer waits for the commit.  An append that is not committed (a deposed
  leader's, refused by the leader epoch: fencing) answers NOT_LEADER_OR_FOLLOWER for its
  partition, a storage failure KAFKA_STORAGE_ERROR; the other partitions as they went.
- KIP-951 (v10+): a NOT_LEADER_OR_FOLLOWER partition carries `current_leader` (the
  cluster's leader and epoch) and the response `node_endpoints` of those leaders.
- producer_byte_rate (akfak.quota_manager) counts the request's record bytes; over the
  quota, the answer carries throttle_time_ms and the connection is not read for that long.
"""

from __future__ import annotations

import struct
from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64
from twisted.internet.defer import CancelledError, Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.errors import (
    CorruptMessage,
    InvalidRecord,
    KafkaError,
    MessageTooLarge,
    NotLeaderOrFollower,
    UnknownServerError,
)
from akfak.handlers.base import Handler, encode_entity, throttle_time, timestamp
from akfak.log.batch import HEADER_SIZE, parse_header
from akfak.log.partition import Commit
from akfak.log.validator import RecordErrors
from akfak.metadata_image import INTERNAL_TOPICS
from akfak.protocol import RequestContext
from akfak.quota_manager import PRODUCE
from akfak.security.acls import TOPIC, TRANSACTIONAL_ID, WRITE
from akfak.security.checks import Everything, access
from akfak.transactions.verification import Answer, verify_produce

_log = Logger()
_BATCH_PREFIX = struct.Struct(">qi")  # base offset, batch length
MIN_BATCH_SIZE = 61  # a batch header with no records
MIN_RECORD_OVERHEAD = 14  # Kafka's LegacyRecord.RECORD_OVERHEAD_V0: the least any batch length is
ZSTD = 4
TRANSACTIONAL_BIT = 0x10


def check_produce_records(records: bytes | None, version: int) -> tuple[ErrorCode, str | None]:
    """Kafka's ProduceRequest.validateRecords: one magic-2 batch per partition."""
    if records is None or len(records) < 12:
        return ErrorCode.invalid_record, (
            f"Produce requests with version {version} must have at least one record batch per partition")
    _base, length = _BATCH_PREFIX.unpack_from(records)
    if length < MIN_RECORD_OVERHEAD:  # Kafka's batch iterator refuses it before the magic
        return ErrorCode.corrupt_message, (
            f"Record size {length} is less than the minimum record overhead ({MIN_RECORD_OVERHEAD})")
    if length < MIN_BATCH_SIZE - 12 and len(records) >= 17 and records[16] == 2:
        return ErrorCode.corrupt_message, f"Record batch length {length} is below the minimum"
    if 12 + length > len(records):
        return ErrorCode.invalid_record, (
            f"Produce requests with version {version} must have at least one record batch per partition")
    if records[16] != 2:
        return ErrorCode.invalid_record, (
            f"Produce requests with version {version} are only allowed to contain record batches "
            "with magic version 2")
    if version < 7 and len(records) >= 23 and records[22] & 0x07 == ZSTD:
        return ErrorCode.unsupported_compression_type, (
            f"Produce requests with version {version} are not allowed to use ZStandard compression")
    if 12 + length < len(records):
        return ErrorCode.invalid_record, (
            f"Produce requests with version {version} are only allowed to contain exactly one "
            "record batch per partition")
    return ErrorCode.none, None


def transactional_denied(request: Any, version: int, acl: Everything) -> bool:
    """Whether Kafka refuses the whole request TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
    transactional batches without a transactional id or with one not to WRITE."""
    txn_id = request.transactional_id if version >= 3 else None
    return ((txn_id is None or acl.enabled) and has_transactional_records(request)
            and (txn_id is None or not acl.allows(WRITE, TRANSACTIONAL_ID, str(txn_id))))


def has_transactional_records(request: Any) -> bool:
    """Kafka's ProduceRequest.hasTransactionalRecords: a first batch with the transactional
    attribute bit (byte 22 holds the low byte of the attributes)."""
    return any(
        data.records is not None and len(data.records) > 22 and data.records[16] == 2
        and data.records[22] & TRANSACTIONAL_BIT
        for topic_data in request.topic_data for data in topic_data.partition_data)


class ProduceHandler(Handler):
    api_key = 0
    min_version = 0
    max_version = 13
    kio_min_version = 3

    def request_type(self, version: int) -> Any:
        return super().request_type(max(version, self.kio_min_version))

    def decode(self, version: int, body: bytes, offset: int) -> Any:
        if version >= self.kio_min_version:
            return super().decode(version, body, offset)
        # v0-v2 are v3 without the leading transactional id: decode them as v3 with a null one.
        return super().decode(self.kio_min_version, b"\xff\xff" + body[offset:], 0)

    def encode(self, version: int, response: Any) -> bytes | list[bytes]:
        if version >= self.kio_min_version:
            return super().encode(version, response)
        return encode_legacy_response(version, response)

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        acl = access(context)
        denied = transactional_denied(request, version, acl)
        if version >= self.kio_min_version and request.transactional_id is not None and not denied:
            verified = self._verify_transactions(request, version, acl)
            if isinstance(verified, Deferred):
                return verified.addCallback(
                    lambda errors: self._append(request, context, errors, acl, denied))
            return self._append(request, context, verified, acl, denied)
        return self._append(request, context, {}, acl, denied)

    def _verify_transactions(self, request: Any, version: int, acl: Everything
                             ) -> dict[tuple[str, int], Answer] | Deferred[Any]:
        """The partitions whose batch opens a transaction there, verified with the
        coordinator (akfak.transactions.verification); the answers of those that fail."""
        wanted: dict[tuple[str, int], tuple[int, int]] = {}
        for topic_data in request.topic_data:
            name = (self.broker.topic_name(topic_data.topic_id) if version >= 13
                    else topic_data.name)
            for data in topic_data.partition_data:
                records = data.records
                if (name is None or records is None or len(records) < HEADER_SIZE
                        or records[16] != 2 or not records[22] & TRANSACTIONAL_BIT
                        or not acl.allows(WRITE, TOPIC, name)):
                    continue
                header = parse_header(records)
                key = (name, int(data.index))
                partition_log = self.broker.get_log(*key)
                state = partition_log.producer_state if partition_log is not None else None
                entry = state.last_entry(header.producer_id) if state is not None else None
                if (entry is not None and entry.current_txn_first_offset is not None
                        and entry.producer_epoch == header.producer_epoch):
                    continue  # its transaction is open here: verified when it began
                wanted[key] = (header.producer_id, header.producer_epoch)
        if not wanted:
            return {}
        return verify_produce(self.broker, str(request.transactional_id), wanted, version)

    def _append(self, request: Any, context: RequestContext,
                txn_errors: dict[tuple[str, int], Answer], acl: Everything,
                unauthorized: bool) -> Any:
        version = context.api_version
        acks = int(request.acks)
        module = self.response_module(max(version, self.kio_min_version))
        broker = self.broker
        now_ms = broker.now_ms()
        failed = False
        #: (topic fields, partition responses) per topic, built once the commits are known
        topics: list[tuple[dict[str, Any], list[Any]]] = []
        #: (partition responses, position, name, index, commit) of appends that wait for it
        fsyncs: list[tuple[list[Any], int, str, int, Deferred[None]]] = []
        #: the same, for appends acknowledged after a commit (postgres)
        commits: list[tuple[list[Any], int, str, int, Commit]] = []
        for topic_data in request.topic_data:
            if version >= 13:
                name = broker.topic_name(topic_data.topic_id)
            else:
                name = topic_data.name
            partitions: list[Any] = []
            for data in topic_data.partition_data:
                index = int(data.index)
                if version < self.kio_min_version:
                    error, message = ErrorCode.unsupported_version, (
                        f"Produce v{version} is not supported; use v3 or later")
                elif unauthorized:
                    error, message = (ErrorCode.transactional_id_authorization_failed,
                                      "Transactional Id authorization failed.")
                elif acks not in (-1, 0, 1):
                    error, message = ErrorCode.invalid_required_acks, None
                elif name is None:
                    error, message = ErrorCode.unknown_topic_id, None
                elif not acl.allows(WRITE, TOPIC, name):
                    error, message = ErrorCode.topic_authorization_failed, None
                elif (name, index) in txn_errors:
                    error, message = txn_errors[(name, index)]
                else:
                    error, message = check_produce_records(data.records, version)
                result = None
                record_errors: tuple[tuple[int, str], ...] = ()
                if not error:
                    log = broker.get_log(name, index)
                    if log is None:
                        error = broker.missing_log_error(name, index)
                    elif name in INTERNAL_TOPICS:
                        error, message = ErrorCode.invalid_topic_exception, (
                            f"Cannot append to internal topic {name}")
                    else:
                        try:
                            result = log.append(data.records, leader_epoch=broker.leader_epoch(name, index),
                                                now_ms=now_ms)
                        except KafkaError as e:
                            _log.info("Produce to {topic}-{partition} refused ({error}): {reason}",
                                      topic=name, partition=index, error=ErrorCode(e.error_code).name,
                                      reason=str(e))
                            error, message = ErrorCode(e.error_code), _append_message(e)
                            record_errors = getattr(e, "record_errors", ())
                        else:
                            broker.appended(name, index)
                            if result.commit is not None:
                                commits.append((partitions, len(partitions), name, index,
                                                result.commit))
                            elif result.flushed is not None:
                                fsyncs.append((partitions, len(partitions), name, index,
                                               result.flushed))
                failed = failed or bool(error)
                partitions.append(self._partition(
                    module, version, index, error, message, result, record_errors,
                    self._leader_hint(module, version, name, index, error)))
            topic_fields: dict[str, Any] = {}
            if version >= 13:
                topic_fields["topic_id"] = topic_data.topic_id
            else:
                topic_fields["name"] = topic_data.name
            topics.append((topic_fields, partitions))
        # producer_byte_rate counts the records of every partition, appended or not, as Kafka
        # counts the request's size
        throttle_ms = broker.quotas.record(PRODUCE, context, sum(
            len(d.records or b"") for t in request.topic_data for d in t.partition_data))
        broker.quotas.throttle(context.connection, throttle_ms)
        if acks == 0:
            if failed:
                context.connection.drop("a Produce with acks=0 failed; closing so the client "
                                        "refreshes its metadata")
            return None

        def respond(_: object = None) -> Any:
            leaders = {p.current_leader.leader_id for _, ps in topics for p in ps
                       if version >= 10 and p.current_leader.leader_id >= 0}
            extra: dict[str, Any] = {}
            if leaders:
                extra["node_endpoints"] = tuple(
                    module.NodeEndpoint(node_id=i32(n), host=e[0], port=i32(e[1]), rack=e[2])
                    for n in sorted(leaders)
                    if (e := broker.node_endpoint(n, context.listener)) is not None)
            return self.response_type(max(version, self.kio_min_version))(
                responses=tuple(module.TopicProduceResponse(partition_responses=tuple(ps), **f)
                                for f, ps in topics),
                throttle_time=throttle_time(throttle_ms), **extra)

        if not fsyncs and not commits:
            return respond()

        def refused(failure: Any, partitions: list[Any], position: int, name: str, index: int
                    ) -> None:
            # Not committed: a deposed leader's append (fenced) or a storage failure.  That
            # partition is answered so; the others as they went.
            if failure.check(CancelledError):
                return  # the client went away (its connection closed) while it waited
            error = (ErrorCode.not_leader_or_follower
                     if isinstance(failure.value, NotLeaderOrFollower)
                     else ErrorCode.kafka_storage_error)
            _log.info("Produce to {topic}-{partition} not committed ({error}): {reason}",
                      topic=name, partition=index, error=error.name,
                      reason=failure.getErrorMessage())
            partitions[position] = self._partition(
                module, version, index, error, None, None, (),
                self._leader_hint(module, version, name, index, error))

        def checked(_: object, waiting: list[tuple[list[Any], int, str, int, Commit]]) -> None:
            for partitions, position, name, index, commit in waiting:
                try:
                    commit.check()
                except Exception:
                    refused(Failure(), partitions, position, name, index)

        def failed_all(failure: Failure,
                       waiting: list[tuple[list[Any], int, str, int, Commit]]) -> None:
            for partitions, position, name, index, _ in waiting:
                refused(failure, partitions, position, name, index)

        # The answer waits for the commit (postgres) or fsync (flush.messages), as in Kafka:
        # one barrier for all the partitions of a writer, each checked after it.
        waits = [d.addErrback(refused, partitions, position, name, index)
                 for partitions, position, name, index, d in fsyncs]
        by_barrier: dict[Any, list[tuple[list[Any], int, str, int, Commit]]] = {}
        for entry in commits:
            by_barrier.setdefault(entry[4].barrier, []).append(entry)
        waits += [barrier().addCallbacks(checked, failed_all, callbackArgs=(waiting,),
                                         errbackArgs=(waiting,))
                  for barrier, waiting in by_barrier.items()]
        return gatherResults(waits).addCallback(respond)

    def _leader_hint(self, module: Any, version: int, name: str | None, index: int,
                     error: ErrorCode) -> Any:
        """KIP-951 (v10+): the current leader of a partition answered NOT_LEADER_OR_FOLLOWER
        here, so the client re-routes without asking Metadata first."""
        if version < 10 or name is None or error is not ErrorCode.not_leader_or_follower:
            return None
        leader = self.broker.current_leader(name, index)
        if leader is None:
            return None
        return module.LeaderIdAndEpoch(leader_id=i32(leader[0]), leader_epoch=i32(leader[1]))

    @staticmethod
    def _partition(module: Any, version: int, index: int, error: ErrorCode, message: str | None,
                   result: Any, record_errors: tuple[tuple[int, str], ...] = (),
                   current_leader: Any = None) -> Any:
        fields: dict[str, Any] = {
            "index": i32(index),
            "error_code": error,
            "base_offset": i64(result.base_offset if result else -1),
            "log_append_time": timestamp(result.log_append_time if result else -1),
        }
        if version >= 5:
            fields["log_start_offset"] = i64(result.log_start_offset if result else -1)
        if version >= 8:
            fields["record_errors"] = tuple(
                module.BatchIndexAndErrorMessage(batch_index=i32(i), batch_index_error_message=m)
                for i, m in record_errors)
            fields["error_message"] = message
        if current_leader is not None:
            fields["current_leader"] = current_leader
        return module.PartitionProduceResponse(**fields)


#: Append errors Kafka answers without their message (its ReplicaManager gives one only for
#: per-record errors): the batch and record checks of batch.py and akfak.log.validator.
_SILENT_ERRORS = (CorruptMessage, InvalidRecord, MessageTooLarge, UnknownServerError)


def _append_message(error: KafkaError) -> str | None:
    if isinstance(error, RecordErrors) or not isinstance(error, _SILENT_ERRORS):
        return str(error)
    return None


_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def encode_legacy_response(version: int, response: Any) -> bytes:
    """A v0-v2 Produce response: v2 is laid out as v3; v1 drops log_append_time; v0
    also drops throttle_time."""
    if version == 2:
        return encode_entity(response)
    out = bytearray(_I32.pack(len(response.responses)))
    for topic in response.responses:
        name = topic.name.encode()
        out += _I16.pack(len(name)) + name + _I32.pack(len(topic.partition_responses))
        for p in topic.partition_responses:
            out += struct.pack(">ihq", p.index, p.error_code, p.base_offset)
    if version == 1:
        out += _I32.pack(int(response.throttle_time.total_seconds() * 1000))
    return bytes(out)


HANDLERS = (ProduceHandler,)
