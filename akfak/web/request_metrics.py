"""What answered requests add to /metrics: counts, latencies, errors, messages and bytes.

A request observer (akfak.request_events) that keeps plain counters, cheap enough for every
request: dictionary increments, a bisect per latency histogram, a batch header read per
produced partition.  `snapshot()` copies them on the reactor; `families()` turns a copy
into Prometheus metric families on any thread.

Kafka's meaning, and its JMX names as the Prometheus JMX exporter's Kafka rules spell them:
- kafka_network_requestmetrics_requests_total{request,version}: answered requests (Fetch
  from a consumer counts under both `Fetch` and `FetchConsumer`, as Kafka records it);
- kafka_network_requestmetrics_errors_total{request,error}: the error codes in responses,
  NONE included, as Kafka's errorCounts: the top-level error_code and those of nested
  entities (topics, partitions) to a depth of three, at most 2,000 entities per response;
- histograms in ms per request name, Kafka's split of a request's time (akfak.request_events):
  requestqueuetimems (the frame read until its handler began: behind earlier frames of the
  same read, or a paused connection), localtimems (until the handler's answer was ready:
  long polls, fsync waits and coordinator writes included, which Kafka counts as
  RemoteTimeMs), responsequeuetimems (behind earlier answers of the same connection),
  responsesendtimems (until the answer's last byte left for the socket), totaltimems (all
  of it); requestbytes (bytes);
- kafka_server_brokertopicmetrics_*: messagesin (the record count field of each appended
  batch's header, never decoded), bytesin (the appended record set), bytesout (fetched
  record bytes), totalproducerequests / totalfetchrequests per partition that reached the
  log, failedproducerequests / failedfetchrequests for the unexpected errors only (as
  Kafka's ReplicaManager: unknown partition, too large, corrupt, storage errors are not
  "failed"); per topic and, without a topic label, for all topics.
"""

from __future__ import annotations

import bisect
import struct
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode
from kio.schema.index import api_key_map, schema_name_map
from kio.static.constants import EntityType
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from twisted.logger import Logger

from akfak.handlers.fetch_response import EncodedFetch
from akfak.request_events import RequestEvent

if TYPE_CHECKING:
    from akfak.broker import Broker

log = Logger()

PRODUCE, FETCH = 0, 1

#: Latency bucket bounds (ms): sub-millisecond local answers to 30 s long polls.
TIME_BOUNDS_MS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000,
                  10000, 30000)
SIZE_BOUNDS = (64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216)
HISTOGRAMS = ("totaltimems", "requestqueuetimems", "localtimems", "responsequeuetimems",
              "responsesendtimems", "requestbytes")

MAX_ENTITIES = 2000  # per response, for the error walk
MAX_DEPTH = 3

# Kafka's ReplicaManager does not count these partition errors as failed requests.
_KNOWN_PRODUCE_ERRORS = frozenset({0, 2, 3, 6, 10, 17, 18, 56})
_KNOWN_FETCH_ERRORS = frozenset({0, 1, 3, 6, 9, 56, 74, 75, 82})
# Partitions Kafka answers before they reach the log (authorization, unknown topic or id,
# request validation): not counted in total*requests either.
_NOT_REACHING_LOG = frozenset({3, 29, 35, 53, 76, 87, 100})

_BATCH_LENGTH = struct.Struct(">i")
_RECORD_COUNT_AT = 57  # the batch header's records count (magic 2)
_MAGIC_AT = 16
_BATCH_HEADER = 61

_ERROR_NAMES = {int(code): code.name.upper() for code in ErrorCode}


def _api_names() -> dict[int, str]:
    """Kafka's ApiKeys names (`Produce`, `ListOffsets`, ...): the kio request class without
    its `Request` suffix."""
    names = {}
    for key, module in api_key_map.items():
        versions = schema_name_map[module]
        path = versions[max(versions)][EntityType.request]
        names[int(key)] = path.rpartition(":")[2].removesuffix("Request")
    return names


API_NAMES = _api_names()


def record_count(records: Any) -> int:
    """The records in a record set, summed from its batch headers (magic 2)."""
    if not records:
        return 0
    view = records if isinstance(records, bytes | bytearray) else bytes(records)
    count = pos = 0
    end = len(view)
    while pos + _BATCH_HEADER <= end and view[pos + _MAGIC_AT] == 2:
        count += _BATCH_LENGTH.unpack_from(view, pos + _RECORD_COUNT_AT)[0]
        pos += 12 + _BATCH_LENGTH.unpack_from(view, pos + 8)[0]
    return count


class _Histogram:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def copy(self) -> tuple[list[int], float]:
        return list(self.counts), self.total


class _TopicCounters:
    __slots__ = ("bytes_in", "bytes_out", "failed_fetch", "failed_produce", "messages_in",
                 "total_fetch", "total_produce")

    def __init__(self) -> None:
        self.messages_in = self.bytes_in = self.bytes_out = 0
        self.total_produce = self.total_fetch = self.failed_produce = self.failed_fetch = 0

    def copy(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) for name in TOPIC_FIELDS)


#: slot -> the JMX exporter's name of its BrokerTopicMetrics meter
TOPIC_FIELDS = {
    "messages_in": "messagesin",
    "bytes_in": "bytesin",
    "bytes_out": "bytesout",
    "total_produce": "totalproducerequests",
    "total_fetch": "totalfetchrequests",
    "failed_produce": "failedproducerequests",
    "failed_fetch": "failedfetchrequests",
}


class RequestMetrics:
    """The counters; call it with each RequestEvent (it is the observer)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.requests: Counter[tuple[str, int]] = Counter()
        self.errors: Counter[tuple[str, int]] = Counter()
        self.histograms: dict[tuple[str, str], _Histogram] = {}
        self.topics: dict[str, _TopicCounters] = {}
        self.all_topics = _TopicCounters()
        #: per-response-class plan of the error walk: (error fields, nested fields)
        self._plans: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._failed: set[int] = set()

    # -- on the reactor, per request ---------------------------------------------------

    def __call__(self, event: RequestEvent) -> None:
        try:
            self._count(event)
        except Exception:
            # an odd request must not cost every later one its counts (a failing observer
            # is removed): logged once per API
            if event.api_key not in self._failed:
                self._failed.add(event.api_key)
                log.failure("Counting a request (API key {key}) for /metrics failed",
                            key=event.api_key)

    def _count(self, event: RequestEvent) -> None:
        key = event.api_key
        name = API_NAMES.get(key, str(key))
        names: tuple[str, ...] = (name,)
        if key == FETCH:
            request: Any = event.request
            replica = (request.replica_state.replica_id if event.api_version >= 15
                       else request.replica_id)
            names = (name, "FetchFollower" if int(replica) >= 0 else "FetchConsumer")
        times = (("totaltimems", (event.flushed - event.arrived) * 1000),
                 ("requestqueuetimems", (event.received - event.arrived) * 1000),
                 ("localtimems", (event.answered - event.received) * 1000),
                 ("responsequeuetimems", (event.sent - event.answered) * 1000),
                 ("responsesendtimems", (event.flushed - event.sent) * 1000))
        for metric_name in names:
            self.requests[metric_name, event.api_version] += 1
            hists = self.histograms
            for hist, value in times:
                found = hists.get((hist, metric_name))
                if found is None:
                    found = hists[hist, metric_name] = _Histogram(TIME_BOUNDS_MS)
                found.observe(value)
            found = hists.get(("requestbytes", metric_name))
            if found is None:
                found = hists["requestbytes", metric_name] = _Histogram(SIZE_BOUNDS)
            found.observe(event.request_size)
        response = event.response
        if key == PRODUCE:
            self._produced(event)
        elif key == FETCH and isinstance(response, EncodedFetch):
            self._fetched(response)
        if response is not None:
            errors = self.errors
            for code in self._error_codes(response):
                errors[name, code] += 1

    def _topic(self, name: str) -> _TopicCounters:
        found = self.topics.get(name)
        if found is None:
            found = self.topics[name] = _TopicCounters()
        return found

    def _produced(self, event: RequestEvent) -> None:
        request: Any = event.request
        response: Any = event.response
        by_id = event.api_version >= 13
        answers: dict[tuple[Any, int], int] = {}
        if response is not None:
            for topic in response.responses:
                ref = topic.topic_id if by_id else topic.name
                for p in topic.partition_responses:
                    answers[ref, int(p.index)] = int(p.error_code)
        every = self.all_topics
        for topic in request.topic_data:
            ref = topic.topic_id if by_id else topic.name
            name = self.broker.topic_name(ref) if by_id else ref
            if name is None:
                continue
            counters = self._topic(name)
            for p in topic.partition_data:
                error = answers.get((ref, int(p.index)), 0)  # acks=0: no answer, appended
                if error in _NOT_REACHING_LOG:
                    continue
                counters.total_produce += 1
                every.total_produce += 1
                if error == 0:
                    records = p.records
                    size = len(records) if records is not None else 0
                    count = record_count(records)
                    counters.bytes_in += size
                    every.bytes_in += size
                    counters.messages_in += count
                    every.messages_in += count
                elif error not in _KNOWN_PRODUCE_ERRORS:
                    counters.failed_produce += 1
                    every.failed_produce += 1

    def _fetched(self, response: EncodedFetch) -> None:
        every = self.all_topics
        for name, result in response.reads:
            if name is None or result.error in _NOT_REACHING_LOG:
                continue
            counters = self._topic(name)
            counters.total_fetch += 1
            every.total_fetch += 1
            if result.error not in _KNOWN_FETCH_ERRORS:
                counters.failed_fetch += 1
                every.failed_fetch += 1
        for topic in response.topics:
            sent = sum(p.records_size for p in topic.partitions)
            if not sent:
                continue
            name = topic.name or self.broker.topic_name(topic.topic_id)
            if name is not None:
                self._topic(name).bytes_out += sent
                every.bytes_out += sent

    def _error_codes(self, response: Any) -> list[int]:
        """Every error code in a response, NONE included: its own and its nested entities'
        (bounded: MAX_DEPTH levels, MAX_ENTITIES entities)."""
        if isinstance(response, EncodedFetch):
            return [response.error_code, *(p.error for t in response.topics for p in t.partitions)]
        found: list[int] = []
        level = [response]
        visited = 0
        for _ in range(MAX_DEPTH):
            below: list[Any] = []
            for entity in level:
                visited += 1
                if visited > MAX_ENTITIES:
                    return found
                plan = self._plans.get(type(entity))
                if plan is None:
                    plan = self._plans[type(entity)] = _plan(type(entity))
                codes, nested = plan
                for field_name in codes:
                    found.append(int(getattr(entity, field_name)))
                for field_name in nested:
                    value = getattr(entity, field_name)
                    if isinstance(value, tuple):
                        if value and hasattr(value[0], "__dataclass_fields__"):
                            below.extend(value)
                    elif value is not None and hasattr(value, "__dataclass_fields__"):
                        below.append(value)
            if not below:
                break
            level = below
        return found

    # -- a scrape ----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A copy of the counters (on the reactor).  Deleted topics' counters go, as Kafka
        removes a deleted topic's BrokerTopicMetrics."""
        known = self.broker.image.topics_by_name
        for name in [name for name in self.topics if name not in known]:
            del self.topics[name]
        return {
            "requests": dict(self.requests),
            "errors": dict(self.errors),
            "histograms": {key: h.copy() for key, h in self.histograms.items()},
            "topics": {name: c.copy() for name, c in self.topics.items()},
            "all": self.all_topics.copy(),
        }

    @staticmethod
    def families(snapshot: dict[str, Any]) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "kafka_network_requestmetrics_requests", "Requests answered, by API and version "
            "(Kafka's RequestMetrics RequestsPerSec)", labels=["request", "version"])
        for (name, version), count in sorted(snapshot["requests"].items()):
            requests.add_metric([name, str(version)], count)
        yield requests
        errors = CounterMetricFamily(
            "kafka_network_requestmetrics_errors", "Error codes in responses, NONE included "
            "(Kafka's RequestMetrics ErrorsPerSec)", labels=["request", "error"])
        for (name, code), count in sorted(snapshot["errors"].items()):
            errors.add_metric([name, _ERROR_NAMES.get(code, str(code))], count)
        yield errors
        for hist in HISTOGRAMS:
            unit = "bytes" if hist == "requestbytes" else "ms"
            family = HistogramMetricFamily(
                f"kafka_network_requestmetrics_{hist}", f"Kafka's RequestMetrics {hist} ({unit})",
                labels=["request"])
            bounds = SIZE_BOUNDS if hist == "requestbytes" else TIME_BOUNDS_MS
            for (which, name), (counts, total) in sorted(snapshot["histograms"].items()):
                if which != hist:
                    continue
                cumulative, buckets = 0, []
                for bound, count in zip((*bounds, float("inf")), counts, strict=True):
                    cumulative += count
                    buckets.append((_le(bound), cumulative))
                family.add_metric([name], buckets, total)
            yield family
        for index, (slot, jmx) in enumerate(TOPIC_FIELDS.items()):
            family = CounterMetricFamily(
                f"kafka_server_brokertopicmetrics_{jmx}",
                f"Kafka's BrokerTopicMetrics {jmx} ({slot.replace('_', ' ')}): per topic, and "
                "for all topics without a topic label", labels=["topic"])
            family.samples.append(Sample(family.name + "_total", {}, snapshot["all"][index]))
            for topic, values in sorted(snapshot["topics"].items()):
                family.add_metric([topic], values[index])
            yield family


def _le(bound: float) -> str:
    if bound == float("inf"):
        return "+Inf"
    return str(float(bound))


def _plan(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Which fields of a kio entity class hold an error code, which may hold entities."""
    fields = getattr(cls, "__dataclass_fields__", None)
    if not fields:
        return (), ()
    codes = tuple(name for name, f in fields.items() if f.metadata.get("kafka_type") == "error_code")
    nested = tuple(name for name, f in fields.items() if "kafka_type" not in f.metadata)
    return codes, nested
