"""Fetch (key 1), v4-v18.

Behavior:
- Whole batches from the one containing the fetch offset; the client skips
  records before its offset.  Per partition at most partition_max_bytes, in all
  at most max_bytes, except that the first partition returning data returns at
  least one whole batch (KIP-74), or clients stall on a large batch.
- Long poll: without min_bytes of data the answer waits up to max_wait_ms,
  woken by appends to any fetched partition (AppendWaiters), then reads again.
- OFFSET_OUT_OF_RANGE outside [log start offset, high watermark]; a fetch at the
  high watermark is empty.  read_committed reads to the last stable offset and
  lists the aborted transactions overlapping what it returns (KIP-98).
- v7+: fetch sessions (KIP-227, akfak.fetch_sessions); session errors answer
  with a top-level error and no partitions.  v13+: topics by id (UNKNOWN_TOPIC_ID).
- current_leader_epoch newer than ours: UNKNOWN_LEADER_EPOCH; older: FENCED_LEADER_EPOCH.
- In a cluster, a partition another broker leads is NOT_LEADER_OR_FOLLOWER; with KIP-951
  it carries that leader and epoch (`current_leader`, v12+) and the response the
  leaders' `node_endpoints` (v16+), so the consumer re-routes at once.  The high
  watermark on postgres is what PostgreSQL committed: nothing is read before that.
- Data a log does not hold in memory (postgres: below a partition's cached tail) is read
  on a thread first (`prepare_read`, one query per partition); the answer waits for it.
  Only up to the fetch's max_bytes is prepared, partitions in request order; a partition
  past that gets no records this time (as it would once max_bytes is reached), so no read
  of such data runs on the reactor.
- Record bytes go from the log to the transport untouched (fetch_response), stored
  batches already CRC-checked as file ranges that the connection sendfile()s
  (akfak.response_writer).
- With an authorizer: READ on each topic, else TOPIC_AUTHORIZATION_FAILED for its
  partitions (before looking them up); a follower's fetch (replica id >= 0) needs
  CLUSTER_ACTION on the cluster instead, else every partition TOPIC_AUTHORIZATION_FAILED.
- consumer_byte_rate (akfak.quota_manager) counts the record bytes of each answer; one that
  takes the client over its quota is not sent (and max_bytes is at most the quota times
  `quota.window.num - 1` windows): as Kafka, the answer is empty (the session
  unchanged) with the throttle time, and the connection is not read for that long. So is
  one that takes it over request_percentage (its bytes are then not counted).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, gatherResults

from akfak.errors import KafkaError
from akfak.fetch_sessions import FetchContext, PartitionKey
from akfak.handlers.base import NO_TOPIC_ID, Handler, prepare_reads
from akfak.handlers.fetch_response import PartitionResult, TopicResult, encode_fetch_response
from akfak.protocol import RequestContext
from akfak.quota_manager import FETCH
from akfak.security.acls import CLUSTER_ACTION, READ, TOPIC
from akfak.security.checks import EVERYTHING, NOTHING, Everything, access

READ_COMMITTED = 1
OFFSET_OUT_OF_RANGE = 1
UNKNOWN_TOPIC_OR_PARTITION = 3
UNKNOWN_TOPIC_ID = 100
FENCED_LEADER_EPOCH = 74
NOT_LEADER_OR_FOLLOWER = 6
UNKNOWN_LEADER_EPOCH = 75
TOPIC_AUTHORIZATION_FAILED = 29


@dataclass(slots=True)
class _Read:
    """One partition's read, before the session decides whether to send it."""

    key: PartitionKey
    name: str | None
    result: PartitionResult


class FetchHandler(Handler):
    api_key = 1
    min_version = 4
    max_version = 18

    def encode(self, version: int, response: Any) -> bytes | list[bytes]:
        return response  # already encoded to parts by handle()

    def handle(self, request: Any, context: RequestContext) -> Any:
        version = context.api_version
        broker = self.broker
        by_id = version >= 13
        wanted: list[tuple[PartitionKey, int, int]] = []
        leader_epochs: dict[PartitionKey, int] = {}
        for topic in request.topics:
            # kio reads the zero topic id as None; Kafka answers it UNKNOWN_TOPIC_ID.
            ref: Hashable = (topic.topic_id or NO_TOPIC_ID) if by_id else topic.topic
            for p in topic.partitions:
                key = (ref, int(p.partition))
                wanted.append((key, int(p.fetch_offset), int(p.partition_max_bytes)))
                leader_epochs[key] = int(p.current_leader_epoch) if version >= 9 else -1
        if version >= 7:
            forgotten = [
                (((t.topic_id or NO_TOPIC_ID) if by_id else t.topic), int(index))
                for t in request.forgotten_topics_data
                for index in t.partitions
            ]
            try:
                fetch = broker.fetch_sessions.new_context(
                    int(request.session_id), int(request.session_epoch), wanted, forgotten,
                    broker.now_ms())
            except KafkaError as e:
                return encode_fetch_response(version, e.error_code, 0, [])
        else:
            fetch = FetchContext(0, wanted)

        isolation = int(request.isolation_level)
        max_bytes = int(request.max_bytes)
        if (quota_bytes := broker.quotas.max_in_window(FETCH, context)) is not None:
            max_bytes = min(max_bytes, int(quota_bytes))
        min_bytes = int(request.min_bytes)
        max_wait_ms = int(request.max_wait.total_seconds() * 1000)
        deadline = broker.clock.seconds() + max_wait_ms / 1000
        acl = access(context)
        if acl.enabled:
            replica = request.replica_state.replica_id if version >= 15 else request.replica_id
            if int(replica) >= 0:
                # A follower: CLUSTER_ACTION stands for READ on every topic (or for none).
                acl = EVERYTHING if acl.cluster(CLUSTER_ACTION) else NOTHING

        unprepared: set[PartitionKey] = set()

        def attempt(_: object = None) -> Any:
            nonlocal unprepared
            waits, unprepared = self._prepare(fetch, by_id, max_bytes)
            if waits:  # old data (postgres: below the cached tail) is read on threads first
                return gatherResults(waits, consumeErrors=True).addBoth(answer)
            return answer()

        def answer(_: object = None) -> Any:
            reads, size, errors = self._read(fetch, leader_epochs, by_id, isolation, max_bytes, acl,
                                             unprepared)
            remaining = deadline - broker.clock.seconds()
            if size >= min_bytes or errors or remaining <= 0 or not reads:
                quotas = broker.quotas
                throttle_ms = max(quotas.record(FETCH, context, size),
                                  quotas.record_request(context))
                if throttle_ms > 0:
                    # either quota: the answer is empty, so its bytes are not counted (Kafka)
                    quotas.unrecord(FETCH, context, size)
                    quotas.throttle(context.connection, throttle_ms)
                    return encode_fetch_response(version, 0, fetch.session_id, [], throttle_ms)
                return self._respond(version, fetch, reads, context.listener)
            waiting: Deferred[bool] = broker.waiters.wait(
                [(r.name, r.result.index) for r in reads if r.name is not None], remaining)
            return waiting.addCallback(attempt)

        return attempt()

    def _prepare(self, fetch: FetchContext, by_id: bool, max_bytes: int
                 ) -> tuple[list[Deferred[None]], set[PartitionKey]]:
        """prepare_reads for the fetched partitions: the Deferreds, and those past max_bytes."""
        broker = self.broker
        wanted = []
        for key, offset, partition_max in fetch.partitions:
            ref, index = key
            name = broker.topic_name(ref) if by_id else ref
            if name is not None and (log := broker.get_log(name, index)) is not None:
                wanted.append((key, log, offset, partition_max))
        return prepare_reads(wanted, max_bytes)

    def _read(self, fetch: FetchContext, leader_epochs: dict[PartitionKey, int], by_id: bool,
              isolation: int, max_bytes: int, acl: Everything, unprepared: set[PartitionKey]
              ) -> tuple[list[_Read], int, bool]:
        broker = self.broker
        reads: list[_Read] = []
        total = 0
        errors = False
        min_one = True
        for key, offset, partition_max in fetch.partitions:
            ref, index = key
            name = broker.topic_name(ref) if by_id else ref
            result = PartitionResult(index)
            reads.append(_Read(key, name, result))
            if (name is not None or acl is NOTHING) and not acl.allows(READ, TOPIC, name or ""):
                result.error = TOPIC_AUTHORIZATION_FAILED
                errors = True
                continue
            log = broker.get_log(name, index) if name is not None else None
            if log is None:
                result.error = ((UNKNOWN_TOPIC_ID if by_id else UNKNOWN_TOPIC_OR_PARTITION)
                                if name is None else int(broker.missing_log_error(name, index)))
                errors = True
                if result.error == NOT_LEADER_OR_FOLLOWER and name is not None:
                    result.current_leader = broker.current_leader(name, index)
                continue
            result.high_watermark = log.high_watermark
            result.last_stable_offset = log.last_stable_offset
            result.log_start_offset = log.log_start_offset
            requested_epoch = leader_epochs.get(key, -1)
            if requested_epoch >= 0:
                epoch = broker.leader_epoch(name, index)
                if requested_epoch != epoch:
                    result.error = UNKNOWN_LEADER_EPOCH if requested_epoch > epoch else FENCED_LEADER_EPOCH
                    errors = True
                    continue
            if isolation == READ_COMMITTED:
                result.aborted = []
            if key in unprepared:
                continue
            limit = max(0, min(partition_max, max_bytes - total))
            try:
                read = log.read(offset, limit, min_one=min_one, ranges=True,
                                max_offset=log.last_stable_offset if isolation == READ_COMMITTED else None)
            except KafkaError as e:
                result.error = e.error_code
                errors = errors or e.error_code != 0
                continue
            if read.size:
                min_one = False
                total += read.size
                result.records, result.records_size = read.parts, read.size
                if isolation == READ_COMMITTED:
                    # Per fetched range, from the segments' .txnindex: no record is read.
                    upper = read.next_offset if read.next_offset is not None else offset
                    result.aborted = [(a.producer_id, a.first_offset)
                                      for a in log.collect_aborted(offset, upper)]
        return reads, total, errors

    def _respond(self, version: int, fetch: FetchContext, reads: list[_Read], listener: str
                 ) -> list[Any]:
        topics: list[TopicResult] = []
        by_ref: dict[Hashable, TopicResult] = {}
        for read in reads:
            result = read.result
            if not fetch.include(read.key, result.high_watermark, result.last_stable_offset,
                                 result.log_start_offset, bool(result.records_size), result.error):
                continue
            ref = read.key[0]
            topic = by_ref.get(ref)
            if topic is None:
                if version >= 13:
                    topic = TopicResult("", ref)  # type: ignore[arg-type]
                else:
                    topic = TopicResult(ref, NO_TOPIC_ID)  # type: ignore[arg-type]
                by_ref[ref] = topic
                topics.append(topic)
            topic.partitions.append(result)
        endpoints = []
        if version >= 16:
            leaders = {r.result.current_leader[0] for r in reads if r.result.current_leader}
            endpoints = [(n, *e) for n in sorted(leaders)
                         if (e := self.broker.node_endpoint(n, listener)) is not None]
        encoded = encode_fetch_response(version, 0, fetch.session_id, topics,
                                        node_endpoints=endpoints)
        encoded.reads = [(read.name, read.result) for read in reads]
        return encoded


HANDLERS = (FetchHandler,)
