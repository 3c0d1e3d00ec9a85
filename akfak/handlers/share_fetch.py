"""ShareFetch (key 78) and ShareAcknowledge (key 79), v1 (Kafka 4.1.1's only version).

Behavior (Kafka 4.1's KafkaApis, SharePartitionManager and SharePartition):
- Without share groups enabled: UNSUPPORTED_VERSION; READ on the group, else
  GROUP_AUTHORIZATION_FAILED (top-level errors, no partitions).
- Share sessions (akfak.share.sessions): epoch 0 opens one with the partitions named, later
  epochs add and forget partitions and fetch every partition of the session; session errors
  (SHARE_SESSION_NOT_FOUND, INVALID_SHARE_SESSION_EPOCH, SHARE_SESSION_LIMIT_REACHED,
  INVALID_REQUEST for acknowledgements on epoch 0) are top-level.  Epoch -1 fetches nothing,
  applies the acknowledgements and closes the session, releasing the member's records.
- Acknowledgements (piggybacked, or ShareAcknowledge): per partition INVALID_REQUEST for
  batches out of order, first > last, no types, types not one per offset or not 0-3;
  UNKNOWN_TOPIC_ID, TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PARTITION; then the
  share-partition's answer (INVALID_RECORD_STATE for records not acquired by the member).  The
  answer waits until the new state is written to `__share_group_state` (and is that write's
  error if it fails).
- Fetching acquires records for the member (akfak.share.partition) and returns the record
  batches that hold them as stored (bytes untouched, only batch headers read), with the
  acquired ranges and delivery counts and the group's lock duration (read_committed groups:
  up to the last stable offset, aborted transactions archived).  Without records it waits
  up to MaxWaitMs, woken by appends and by records becoming available again; MinBytes is
  checked before acquiring.  A full session answers every partition, a later one only those
  with records, errors or acknowledgement results.
- In a cluster only the partition's leader serves it (others answer NOT_LEADER_OR_FOLLOWER,
  for fetches and acknowledgements, with the current leader and its endpoint in the response
  as KafkaApis does, KIP-951); a share-partition's state is read from its share
  coordinator on first use (akfak.share.persister), meanwhile the partition has no records
  (the fetch waits), and acknowledgements of it are INVALID_RECORD_STATE.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from kio.schema.errors import ErrorCode
from kio.static.primitive import i32
from twisted.internet.defer import Deferred, gatherResults, succeed

from akfak.coordinator.codec import uvarint
from akfak.errors import KafkaError
from akfak.handlers.base import NO_THROTTLE, NO_TOPIC_ID, Handler, prepare_reads
from akfak.handlers.share_groups import share_service
from akfak.protocol import RequestContext
from akfak.security.acls import GROUP, READ, TOPIC
from akfak.security.checks import access
from akfak.share.partition import AcknowledgeError, Acquired
from akfak.share.service import SharePartitionLoading
from akfak.share.sessions import FINAL_EPOCH, SessionError

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_HEAD = struct.Struct(">ih")  # throttle, error
_PARTITION = struct.Struct(">ih")
_ACQUIRED = struct.Struct(">qqh")
_LEADER = struct.Struct(">ii")

Ref = tuple[Hashable, int]


@dataclass(slots=True)
class PartitionAnswer:
    index: int
    error: int = 0
    ack_error: int | None = None
    leader: tuple[int, int] = (0, 0)
    records: list[Any] = field(default_factory=list)
    size: int = 0
    acquired: list[Acquired] = field(default_factory=list)


def _string(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    data = value.encode()
    return uvarint(len(data) + 1) + data


#: (node id, host, port, rack) of a leader named in a response (KIP-951)
Endpoint = tuple[int, str, int, str | None]


def encode_share_fetch_response(error: int, lock_ms: int, topics: dict[Hashable, list[PartitionAnswer]],
                                throttle_ms: int = 0, message: str | None = None,
                                endpoints: list[Endpoint] | tuple[()] = ()) -> list[Any]:
    """ShareFetchResponse v1 as parts, the record batches as they were read."""
    parts: list[Any] = []
    buf = bytearray(_HEAD.pack(throttle_ms, error) + _string(message) + _I32.pack(lock_ms))
    buf += uvarint(len(topics) + 1)
    for topic_id, partitions in topics.items():
        buf += (topic_id if isinstance(topic_id, uuid.UUID) else NO_TOPIC_ID).bytes
        buf += uvarint(len(partitions) + 1)
        for p in partitions:
            buf += _PARTITION.pack(p.index, p.error) + b"\x00"
            buf += _I16.pack(p.ack_error or 0) + b"\x00"
            buf += _LEADER.pack(*p.leader) + b"\x00"
            buf += uvarint(p.size + 1)
            if p.size:
                parts.append(bytes(buf))
                parts.extend(p.records)
                buf = bytearray()
            buf += uvarint(len(p.acquired) + 1)
            for a in p.acquired:
                buf += _ACQUIRED.pack(a.first_offset, a.last_offset, a.delivery_count) + b"\x00"
            buf.append(0)
        buf.append(0)
    buf += uvarint(len(endpoints) + 1)
    for node_id, host, port, rack in endpoints:
        buf += _I32.pack(node_id) + _string(host) + _I32.pack(port) + _string(rack) + b"\x00"
    buf.append(0)  # tagged fields
    parts.append(bytes(buf))
    return parts


def _validate(batches: Any) -> tuple[int, list[tuple[int, int, list[int]]]]:
    """validateAcknowledgementBatches: (error, batches as (first, last, types))."""
    out = []
    prev_end = -1
    for b in batches:
        first, last, types = int(b.first_offset), int(b.last_offset), [int(t) for t in b.acknowledge_types]
        if (first > last or first < prev_end or not types
                or (len(types) > 1 and last - first != len(types) - 1)
                or any(t < 0 or t > 3 for t in types)):
            return ErrorCode.invalid_request.value, []
        prev_end = last
        out.append((first, last, types))
    return 0, out


#: The errors whose answer names the partition's current leader (KafkaApis).
_LEADER_ERRORS = (ErrorCode.not_leader_or_follower.value, ErrorCode.fenced_leader_epoch.value)


class _ShareHandler(Handler):
    def leader_hint(self, name: str | None, index: int, error: int) -> tuple[int, int] | None:
        """KIP-951: (leader, epoch) for an answer that the partition is led elsewhere
        ((-1, -1) when unknown); None for other answers."""
        if error not in _LEADER_ERRORS:
            return None
        leader = self.broker.current_leader(name, index) if name is not None else None
        return leader or (-1, -1)

    def endpoints(self, leaders: Any, context: RequestContext) -> list[Endpoint]:
        """The NodeEndpoints of the leaders named (those live on the request's listener)."""
        return [(n, *e) for n in sorted({leader for leader, _epoch in leaders if leader >= 0})
                if (e := self.broker.node_endpoint(n, context.listener)) is not None]

    def acknowledge(self, service: Any, group_id: str, member_id: str,
                    topics: Any, context: RequestContext, *, skip_empty: bool = False
                    ) -> Deferred[dict[Ref, int]]:
        """Apply the acknowledgements of `topics`; fires with (topic id, partition) -> error.
        A ShareFetch's partitions without acknowledgements are `skip_empty`."""
        broker = self.broker
        acl = access(context)
        results: dict[Ref, int] = {}
        writes: list[Deferred[Any]] = []
        for topic in topics:
            topic_id = topic.topic_id or NO_TOPIC_ID
            name = broker.topic_name(topic_id)
            for p in topic.partitions:
                ref = (topic_id, int(p.partition_index))
                batches = p.acknowledgement_batches
                if not batches and skip_empty:
                    continue
                error, plan = _validate(batches)
                if error:
                    results[ref] = error
                elif name is None:
                    results[ref] = ErrorCode.unknown_topic_id.value
                elif not acl.allows(READ, TOPIC, name):
                    results[ref] = ErrorCode.topic_authorization_failed.value
                elif (log := broker.get_log(name, ref[1])) is None:
                    results[ref] = int(broker.missing_log_error(name, ref[1]))
                elif not plan:
                    results[ref] = 0
                else:
                    try:
                        sp = service.partition(group_id, topic_id, name, ref[1], log)
                        written = sp.acknowledge(member_id, plan)
                        results[ref] = 0
                        if isinstance(written, Deferred):  # fires with an error code, if any
                            writes.append(written.addCallback(
                                lambda code, ref=ref: code and results.__setitem__(ref, code)))
                    except AcknowledgeError as e:
                        results[ref] = e.error.value
                    except SharePartitionLoading:  # it holds nothing the member acquired
                        results[ref] = ErrorCode.invalid_record_state.value
                    except KafkaError as e:
                        results[ref] = e.error_code
        if not writes:
            return succeed(results)
        return gatherResults(writes, consumeErrors=True).addBoth(lambda _: results)


class ShareFetchHandler(_ShareHandler):
    api_key = 78
    min_version = 1
    max_version = 1

    def encode(self, version: int, response: Any) -> bytes | list[bytes]:
        return response  # already parts

    def handle(self, request: Any, context: RequestContext) -> Any:
        broker = self.broker
        service = share_service(broker)
        if service is None:
            return encode_share_fetch_response(ErrorCode.unsupported_version.value, 0, {})
        group_id = request.group_id or ""
        if not access(context).allows(READ, GROUP, group_id):
            return encode_share_fetch_response(ErrorCode.group_authorization_failed.value, 0, {})
        member_id = request.member_id or ""
        epoch = int(request.share_session_epoch)
        wanted = [(t.topic_id or NO_TOPIC_ID, int(p.partition_index))
                  for t in request.topics for p in t.partitions]
        forgotten = [(t.topic_id or NO_TOPIC_ID, int(i))
                     for t in request.forgotten_topics_data for i in t.partitions]
        has_acks = any(p.acknowledgement_batches for t in request.topics for p in t.partitions)
        try:
            session, full = service.sessions.fetch_context(
                group_id, member_id, epoch, wanted, forgotten, has_acks, context.connection)
        except SessionError as e:
            return encode_share_fetch_response(e.error.value, 0, {})
        acked = (self.acknowledge(service, group_id, member_id, request.topics, context,
                                  skip_empty=True) if has_acks else succeed({}))
        lock_ms = service.lock_duration_ms(group_id)
        if epoch == FINAL_EPOCH:
            def closed(acks: dict[Ref, int]) -> Any:
                service.sessions.remove(group_id, member_id)
                service.release(group_id, member_id)
                return self._respond(lock_ms, {}, acks, True, context)

            return acked.addCallback(closed)
        refs = list(dict.fromkeys(wanted)) if full else list(session.partitions)
        max_wait_s = request.max_wait.total_seconds()
        deadline = broker.clock.seconds() + max_wait_s
        min_bytes = int(request.min_bytes)
        max_bytes = min(int(request.max_bytes), broker.config.get_int("fetch.max.bytes", 57671680))
        max_records = int(request.max_records)
        acl = access(context)
        read_committed = service.group_config(group_id, "share.isolation.level", None) \
            == "read_committed"

        def attempt(acks: dict[Ref, int]) -> Any:
            answers: dict[Ref, PartitionAnswer] = {}
            sources: list[tuple[Ref, str, Any, Any]] = []
            #: (a cluster) share-partitions whose state is on its way: nothing yet, no error
            loading: list[tuple[str, int]] = []
            for ref in refs:
                topic_id, index = ref
                answer = answers[ref] = PartitionAnswer(index)
                name = broker.topic_name(topic_id)
                if name is None:
                    answer.error = ErrorCode.unknown_topic_id.value
                    continue
                if not acl.allows(READ, TOPIC, name):
                    answer.error = ErrorCode.topic_authorization_failed.value
                    continue
                log = broker.get_log(name, index)
                if log is None:
                    answer.error = int(broker.missing_log_error(name, index))
                    answer.leader = self.leader_hint(name, index, answer.error) or answer.leader
                    continue
                try:
                    sp = service.partition(group_id, topic_id, name, index, log)
                except SharePartitionLoading:
                    loading.append((name, index))
                    continue
                except KafkaError as e:
                    answer.error = e.error_code
                    answer.leader = self.leader_hint(name, index, answer.error) or answer.leader
                    continue
                answer.leader = (broker.node_id, max(broker.leader_epoch(name, index), 0))
                sources.append((ref, name, log, sp))
            # Data a log does not hold in memory (postgres: below the cached tail) is read
            # on threads first, up to max_bytes; the partitions past that wait their turn.
            waits, later = prepare_reads(
                [(ref, log, sp.next_fetch_offset(), max_bytes) for ref, _n, log, sp in sources],
                max_bytes)
            sources = [source for source in sources if source[0] not in later]
            if waits:
                return gatherResults(waits, consumeErrors=True).addBoth(
                    lambda _: acquire(acks, answers, sources, loading))
            return acquire(acks, answers, sources, loading)

        def acquire(acks: dict[Ref, int], answers: dict[Ref, PartitionAnswer],
                    sources: list[tuple[Ref, str, Any, Any]], loading: list[tuple[str, int]]
                    ) -> Any:
            remaining = deadline - broker.clock.seconds()
            if remaining > 0 and min_bytes > 1 and sources and sum(
                    service.available_bytes(sp, log, max_bytes, read_committed)
                    for _r, _n, log, sp in sources) < min_bytes:
                return wait(acks, sources, remaining)
            total = 0
            records_left = max_records
            for ref, _name, log, sp in sources:
                acquired, records, size = service.acquire(
                    sp, log, member_id, max_bytes - total, total == 0, records_left,
                    read_committed)
                if acquired:
                    answer = answers[ref]
                    answer.acquired, answer.records, answer.size = acquired, records, size
                    total += size
                    records_left -= sum(a.last_offset - a.first_offset + 1 for a in acquired)
                    if records_left <= 0 or total >= max_bytes:
                        break
            if total == 0 and remaining > 0 and (sources or loading) and len(sources) + len(
                    loading) == sum(1 for a in answers.values() if a.error == 0):
                return wait(acks, sources, remaining, loading)
            return self._respond(lock_ms, answers, acks, full, context)

        def wait(acks: dict[Ref, int], sources: list[Any], remaining: float,
                 loading: list[tuple[str, int]] | None = None) -> Any:
            waiting = broker.waiters.wait(
                [(name, ref[1]) for ref, name, _l, _s in sources] + (loading or []), remaining)
            return waiting.addCallback(lambda _: attempt(acks))

        return acked.addCallback(attempt)

    def _respond(self, lock_ms: int, answers: dict[Ref, PartitionAnswer], acks: dict[Ref, int],
                 full: bool, context: RequestContext) -> list[Any]:
        for ref, error in acks.items():
            answer = answers.get(ref)
            if answer is None:
                answer = answers[ref] = PartitionAnswer(ref[1])
            answer.ack_error = error
        topics: dict[Hashable, list[PartitionAnswer]] = {}
        for (topic_id, _index), answer in answers.items():
            if full or answer.size or answer.error or answer.ack_error is not None:
                topics.setdefault(topic_id, []).append(answer)
        named = [a.leader for ps in topics.values() for a in ps if a.error in _LEADER_ERRORS]
        return encode_share_fetch_response(0, lock_ms, topics,
                                           endpoints=self.endpoints(named, context))


class ShareAcknowledgeHandler(_ShareHandler):
    api_key = 79
    min_version = 1
    max_version = 1

    def handle(self, request: Any, context: RequestContext) -> Any:
        response_type = self.response_type(context.api_version)
        module = self.response_module(context.api_version)

        def error(code: ErrorCode) -> Any:
            return response_type(throttle_time=NO_THROTTLE, error_code=code, error_message=None,
                                 responses=(), node_endpoints=())

        service = share_service(self.broker)
        if service is None:
            return error(ErrorCode.unsupported_version)
        group_id = request.group_id or ""
        if not access(context).allows(READ, GROUP, group_id):
            return error(ErrorCode.group_authorization_failed)
        member_id = request.member_id or ""
        epoch = int(request.share_session_epoch)
        try:
            service.sessions.acknowledge_context(group_id, member_id, epoch)
        except SessionError as e:
            return error(e.error)

        def respond(acks: dict[Ref, int]) -> Any:
            if epoch == FINAL_EPOCH:
                service.sessions.remove(group_id, member_id)
                service.release(group_id, member_id)
            topics: dict[Hashable, list[Any]] = {}
            named: list[tuple[int, int]] = []
            for (topic_id, index), code in acks.items():
                leader = self.leader_hint(self.broker.topic_name(topic_id), index, code)
                if leader is not None:
                    named.append(leader)
                leader_id, leader_epoch = leader or (0, 0)
                topics.setdefault(topic_id, []).append(module.PartitionData(
                    partition_index=index, error_code=ErrorCode(code), error_message=None,
                    current_leader=module.LeaderIdAndEpoch(leader_id=i32(leader_id),
                                                           leader_epoch=i32(leader_epoch))))
            return response_type(
                throttle_time=NO_THROTTLE, error_code=ErrorCode.none, error_message=None,
                responses=tuple(module.ShareAcknowledgeTopicResponse(topic_id=t, partitions=tuple(ps))
                                for t, ps in topics.items()),
                node_endpoints=tuple(
                    module.NodeEndpoint(node_id=i32(n), host=h, port=i32(p), rack=r)
                    for n, h, p, r in self.endpoints(named, context)))

        return self.acknowledge(service, group_id, member_id, request.topics, context) \
            .addCallback(respond)


HANDLERS = (ShareFetchHandler, ShareAcknowledgeHandler)
