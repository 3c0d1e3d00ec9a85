"""What the broker holds, for /metrics: partitions, groups and lag, transactions, connections,
the cleaner and retention.  Read at scrape time, never kept up to date in between.

`snapshot()` reads the live state on the reactor, the partitions and groups in slices of at
most `BUDGET` seconds per reactor turn (a broker with 10,000 partitions is read in a few
turns and serves its clients between them); it fires with plain tuples that `families()`
turns into metric families on a thread.  Each partition's figures are consistent with each
other; partitions read in different turns may be a few milliseconds apart, as any scrape of
Kafka's MBeans is.

Names as the Prometheus JMX exporter's Kafka rules spell Kafka's MBeans (kafka_log_log_*,
kafka_server_replicamanager_*, kafka_controller_kafkacontroller_*,
kafka_coordinator_group_groupmetadatamanager_*, kafka_log_logcleaner*,
kafka_server_socketservermetrics_*) and as kafka_exporter names its series (kafka_brokers,
kafka_topic_*, kafka_consumergroup_*); akfak_* for what neither has.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from twisted.internet.defer import Deferred

from akfak.group_lag import GroupLag, group_lags
from akfak.groups.group import GroupState

if TYPE_CHECKING:
    from akfak.broker import Broker

T = TypeVar("T")
R = TypeVar("R")

#: The most a scrape holds the reactor per turn (seconds).
BUDGET = 0.002


@dataclass(slots=True)
class Turns:
    """How long a scrape's reads held the reactor, in all and in its longest turn: wall
    time, and the reactor thread's CPU time (without the waits for the GIL or the CPU that
    another thread or process caused)."""

    total: float = 0.0
    longest: float = 0.0
    total_cpu: float = 0.0
    longest_cpu: float = 0.0
    count: int = 0

    def add(self, seconds: float, cpu: float) -> None:
        self.total += seconds
        self.longest = max(self.longest, seconds)
        self.total_cpu += cpu
        self.longest_cpu = max(self.longest_cpu, cpu)
        self.count += 1


def sliced(clock: Any, items: list[T], step: Callable[[T], R | None],
           budget: float = BUDGET, turns: Turns | None = None) -> Deferred[list[R]]:
    """`step` over `items` on the reactor, at most `budget` seconds per reactor turn (and
    one step); fires with the results that are not None.  `turns` adds up the turns."""
    done: Deferred[list[R]] = Deferred()
    results: list[R] = []
    position = [0]

    def turn() -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        index = position[0]
        failure: Exception | None = None
        try:
            while index < len(items):
                result = step(items[index])
                index += 1
                if result is not None:
                    results.append(result)
                if time.perf_counter() - started >= budget:
                    break
        except Exception as e:
            failure = e
        position[0] = index
        if turns is not None:
            turns.add(time.perf_counter() - started, time.thread_time() - cpu)
        # what waits for the results runs after this turn is counted
        if failure is not None:
            done.errback(failure)
        elif index < len(items):
            clock.callLater(0, turn)
        else:
            done.callback(results)

    if budget == float("inf"):
        turn()  # all at once, done when this returns
    else:
        clock.callLater(0, turn)  # a turn of its own: the caller's work is counted apart
    return done


@dataclass(slots=True)
class StateSnapshot:
    node_id: int
    cluster_id: str
    #: (topic, partition count)
    topics: list[tuple[str, int]] = field(default_factory=list)
    #: (topic, partition, size, log start, log end, high watermark, segments, producers)
    partitions: list[tuple[str, int, int, int, int, int, int, int]] = field(default_factory=list)
    offline: int = 0
    #: listener -> (connections made, connections lost)
    connections: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: (group, state, protocol type, protocol, members)
    groups: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    #: the same of the consumer rebalance protocol's (KIP-848) groups, the assignor as protocol
    consumer_groups: list[tuple[str, str, str, str, int]] = field(default_factory=list)
    lags: list[GroupLag] = field(default_factory=list)
    offsets: int = 0
    #: the reactor turns this snapshot took
    turns: Turns = field(default_factory=Turns)
    transactions: dict[str, int] = field(default_factory=dict)
    cleaner: dict[str, float] = field(default_factory=dict)
    #: the postgres provider's read-back of old batches (empty for the others)
    readback: dict[str, int] = field(default_factory=dict)


class StateMetrics:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    # -- on the reactor -----------------------------------------------------------------

    def snapshot(self, budget: float = BUDGET) -> Deferred[StateSnapshot]:
        broker = self.broker
        started, cpu = time.perf_counter(), time.thread_time()
        image = broker.image
        storage = broker.storage
        snap = StateSnapshot(broker.node_id, broker.cluster_id)
        snap.topics = [(name, len(topic.partitions)) for name, topic in image.topics_by_name.items()]
        snap.offline = len(storage.offline)
        made, lost = broker.connections_made, broker.connections_lost
        snap.connections = {name: (made[name], lost[name]) for name in made}
        cleaner = storage.cleaner
        totals = cleaner.totals
        snap.cleaner = {
            "logs_cleaned": cleaner.logs_cleaned, "bytes_read": totals.bytes_read,
            "bytes_written": totals.bytes_written, "records_read": totals.records_read,
            "records_retained": totals.records_retained, "max_clean_seconds": cleaner.max_clean_seconds,
            "uncleanable": len(cleaner.uncleanable), "segments_deleted": storage.segments_deleted,
            "since_last_run_ms": (-1 if cleaner.last_pass_end is None
                                  else (time.time() - cleaner.last_pass_end) * 1000),
        }
        if (tail := getattr(storage, "tail", None)) is not None:
            lru = tail.readback
            snap.readback = {"queries": lru.queries, "unprepared": lru.unprepared,
                             "bytes": lru.bytes_read, "cached": lru.size}
        if broker.transaction_coordinator is not None:
            snap.transactions = dict(Counter(
                txn.state.display for txn in broker.transaction_coordinator.txns.values()))
        coordinator = broker.group_coordinator
        group_names: list[str] = []
        if coordinator is not None:
            for name, group in coordinator.groups.items():
                snap.groups.append((name, str(group.state), group.protocol_type or "",
                                    group.protocol_name or "", len(group.members)))
            consumer = coordinator.consumer
            for name, cg in consumer.groups.items():
                assignor = cg.preferred_assignor(cg.members.values()) or consumer.assignor_names[0]
                snap.consumer_groups.append((name, cg.state, "consumer", assignor, len(cg.members)))
            group_names = sorted(coordinator.offsets)
            snap.offsets = sum(len(o) for o in coordinator.offsets.values())

        def read(partition_log: Any) -> tuple[str, int, int, int, int, int, int, int] | None:
            if partition_log.closed:
                return None
            state = partition_log.producer_state
            return (partition_log.topic, partition_log.partition, partition_log.size_in_bytes,
                    partition_log.log_start_offset, partition_log.log_end_offset,
                    partition_log.high_watermark, len(partition_log.segments),
                    len(state.producers) if state is not None else 0)

        def lags(_: object) -> Deferred[list[list[GroupLag]]]:
            return sliced(broker.clock, group_names, lambda name: group_lags(broker, name), budget,
                          snap.turns)

        def done(per_group: list[list[GroupLag]]) -> StateSnapshot:
            snap.lags = [lag for found in per_group for lag in found]
            return snap

        snap.turns.add(time.perf_counter() - started, time.thread_time() - cpu)
        reading = sliced(broker.clock, list(storage.logs()), read, budget, snap.turns)
        reading.addCallback(lambda found: setattr(snap, "partitions", found))
        return reading.addCallback(lags).addCallback(done)

    # -- on a thread ---------------------------------------------------------------------

    @staticmethod
    def text(snap: StateSnapshot) -> str:
        """The families with a series per partition, in the text format, written directly:
        prometheus_client's families and encoder cost some 40 times more per sample, which for
        10,000 partitions is seconds of a thread holding the GIL the reactor needs."""
        out: list[str] = []
        ordered = sorted(snap.partitions)
        labels = [f'{{partition="{row[1]}",topic="{row[0]}"}} ' for row in ordered]
        for name, documentation, index in PARTITION_GAUGES:
            _head(out, name, documentation)
            out.extend(f"{name}{label}{row[index]}\n" for label, row in zip(labels, ordered, strict=True))
        lags = snap.lags
        lag_labels = [f'{{consumergroup="{_escape(e.group)}",partition="{e.partition}",topic="{e.topic}"}} '
                      for e in lags]
        _head(out, "kafka_consumergroup_current_offset", "The group's committed offset")
        out.extend(f"kafka_consumergroup_current_offset{label}{e.committed}\n"
                   for label, e in zip(lag_labels, lags, strict=True))
        _head(out, "kafka_consumergroup_lag", "High watermark minus the committed offset")
        out.extend(f"kafka_consumergroup_lag{label}{e.lag}\n"
                   for label, e in zip(lag_labels, lags, strict=True))
        current_sum: Counter[tuple[str, str]] = Counter()
        lag_sum: Counter[tuple[str, str]] = Counter()
        for entry in lags:
            current_sum[entry.group, entry.topic] += entry.committed
            lag_sum[entry.group, entry.topic] += entry.lag
        for name, sums in (("kafka_consumergroup_current_offset_sum", current_sum),
                           ("kafka_consumergroup_lag_sum", lag_sum)):
            _head(out, name, "Summed over the topic's partitions")
            out.extend(f'{name}{{consumergroup="{_escape(group)}",topic="{topic}"}} {value}\n'
                       for (group, topic), value in sorted(sums.items()))
        return "".join(out)

    @staticmethod
    def families(snap: StateSnapshot) -> Iterator[Metric]:
        """The other families, for prometheus_client's encoder."""
        yield _gauge("kafka_brokers", "Brokers in the cluster (kafka_exporter)", 1)
        info = GaugeMetricFamily("akfak_broker_info", "This node", labels=["node_id", "cluster_id"])
        info.add_metric([str(snap.node_id), snap.cluster_id], 1)
        yield info
        yield from _connections(snap)
        yield from _partitions(snap)
        yield from _groups(snap)
        yield from _cleaner(snap)
        yield from _readback(snap)
        turns = snap.turns
        yield _gauge("akfak_metrics_scrape_reactor_seconds",
                     "How long this scrape's reads held the reactor, in all its turns", turns.total)
        yield _gauge("akfak_metrics_scrape_longest_turn_seconds",
                     "The longest reactor turn of this scrape's reads", turns.longest)
        yield _gauge("akfak_metrics_scrape_reactor_cpu_seconds",
                     "The reactor thread's CPU time in this scrape's reads", turns.total_cpu)
        yield _gauge("akfak_metrics_scrape_longest_turn_cpu_seconds",
                     "The reactor thread's CPU time in the longest turn of this scrape's reads",
                     turns.longest_cpu)
        yield _gauge("akfak_metrics_scrape_turns", "Reactor turns of this scrape's reads", turns.count)
        transactions = GaugeMetricFamily(
            "akfak_transactions", "Transactional ids this coordinator holds, by state",
            labels=["state"])
        for state, count in sorted(snap.transactions.items()):
            transactions.add_metric([state], count)
        yield transactions


#: (name, help, index in a StateSnapshot.partitions row) of the per-partition gauges
PARTITION_GAUGES = (
    ("kafka_log_log_size", "Bytes in the partition's log segments", 2),
    ("kafka_log_log_logstartoffset", "The partition's log start offset", 3),
    ("kafka_log_log_logendoffset", "The partition's log end offset", 4),
    ("kafka_log_log_numlogsegments", "Segments of the partition's log", 6),
    ("kafka_topic_partition_current_offset",
     "The partition's newest offset, its high watermark (kafka_exporter)", 5),
    ("kafka_topic_partition_oldest_offset",
     "The partition's oldest offset, its log start offset (kafka_exporter)", 3),
)


def _head(out: list[str], name: str, documentation: str) -> None:
    out.append(f"# HELP {name} {documentation}\n# TYPE {name} gauge\n")


def _escape(label_value: str) -> str:
    """A label value in the text format (topic names need none: Kafka allows [a-zA-Z0-9._-])."""
    return label_value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _connections(snap: StateSnapshot) -> Iterator[Metric]:
    count = GaugeMetricFamily("kafka_server_socketservermetrics_connection_count",
                              "Open connections per listener (socket-server-metrics)",
                              labels=["listener"])
    # the Strimzi rules' spelling of the same MBean, which its dashboards query
    strimzi = GaugeMetricFamily("kafka_server_socket_server_metrics_connection_count",
                                "Open connections per listener (socket-server-metrics)",
                                labels=["listener"])
    made = CounterMetricFamily("kafka_server_socketservermetrics_connection_creation",
                               "Connections accepted per listener", labels=["listener"])
    lost = CounterMetricFamily("kafka_server_socketservermetrics_connection_close",
                               "Connections closed per listener", labels=["listener"])
    for listener, (opened, closed) in sorted(snap.connections.items()):
        count.add_metric([listener], opened - closed)
        strimzi.add_metric([listener], opened - closed)
        made.add_metric([listener], opened)
        lost.add_metric([listener], closed)
    yield from (count, strimzi, made, lost)


def _partitions(snap: StateSnapshot) -> Iterator[Metric]:
    topic_partitions = GaugeMetricFamily("kafka_topic_partitions", "Partitions of the topic",
                                         labels=["topic"])
    for name, count in sorted(snap.topics):
        topic_partitions.add_metric([name], count)
    yield topic_partitions
    partitions = sum(count for _, count in snap.topics)
    yield _gauge("kafka_controller_kafkacontroller_activecontrollercount",
                 "1: this node is the active controller", 1)
    yield _gauge("kafka_controller_kafkacontroller_globaltopiccount", "Topics", len(snap.topics))
    yield _gauge("kafka_controller_kafkacontroller_globalpartitioncount", "Partitions", partitions)
    yield _gauge("kafka_controller_kafkacontroller_offlinepartitionscount",
                 "Partitions whose log could not be opened", snap.offline)
    yield _gauge("kafka_server_replicamanager_partitioncount", "Partitions on this broker",
                 len(snap.partitions))
    yield _gauge("kafka_server_replicamanager_leadercount", "Partitions this broker leads",
                 len(snap.partitions))
    yield _gauge("kafka_server_replicamanager_underreplicatedpartitions",
                 "Under-replicated partitions (one node: none)", 0)
    yield _gauge("kafka_server_replicamanager_produceridcount",
                 "Producer ids in the partitions' producer states",
                 sum(p[7] for p in snap.partitions))


def _groups(snap: StateSnapshot) -> Iterator[Metric]:
    states = Counter(state for _, state, _, _, _ in snap.groups)
    yield _gauge("kafka_coordinator_group_groupmetadatamanager_numgroups", "Groups",
                 len(snap.groups))
    for state in GroupState:
        suffix = state.name.lower().replace("_", "")
        yield _gauge(f"kafka_coordinator_group_groupmetadatamanager_numgroups{suffix}",
                     f"Groups in state {state.value}", states[state.value])
    yield _gauge("kafka_coordinator_group_groupmetadatamanager_numoffsets", "Committed offsets",
                 snap.offsets)
    members = GaugeMetricFamily("kafka_consumergroup_members", "Members of the group",
                                labels=["consumergroup"])
    group_info = GaugeMetricFamily("akfak_consumergroup_info", "The group's state and protocol",
                                   labels=["consumergroup", "state", "protocol_type", "protocol"])
    for name, state, protocol_type, protocol, count in sorted(snap.groups + snap.consumer_groups):
        members.add_metric([name], count)
        group_info.add_metric([name, state, protocol_type, protocol], 1)
    yield members
    yield group_info
    # NumGroups counts classic groups only, as Kafka's; Kafka 4's group-coordinator-metrics
    # (group-count per protocol, consumer-group-count per state) as the JMX exporter names them
    counts = GaugeMetricFamily("kafka_server_group_coordinator_metrics_group_count",
                               "Groups by rebalance protocol", labels=["protocol"])
    counts.add_metric(["classic"], len(snap.groups))
    counts.add_metric(["consumer"], len(snap.consumer_groups))
    yield counts
    by_state = Counter(state for _, state, _, _, _ in snap.consumer_groups)
    modern = GaugeMetricFamily("kafka_server_group_coordinator_metrics_consumer_group_count",
                               "Consumer-protocol groups by state", labels=["state"])
    for state in ("Empty", "Assigning", "Reconciling", "Stable", "Dead"):
        modern.add_metric([state], by_state[state])
    yield modern


def _cleaner(snap: StateSnapshot) -> Iterable[Metric]:
    c = snap.cleaner
    return [
        _gauge("kafka_log_logcleaner_max_clean_time_secs",
               "The longest log cleaning of the last cleaner pass (s)", c["max_clean_seconds"]),
        _gauge("kafka_log_logcleanermanager_uncleanable_partitions_count",
               "Logs whose cleaning failed, left alone until a restart", c["uncleanable"]),
        _gauge("kafka_log_logcleanermanager_time_since_last_run_ms",
               "Since the cleaner's last pass ended (-1: none yet)", c["since_last_run_ms"]),
        CounterMetricFamily("akfak_log_cleaner_logs_cleaned", "Log cleanings completed",
                            value=c["logs_cleaned"]),
        CounterMetricFamily("akfak_log_cleaner_read_bytes", "Bytes the cleaner read",
                            value=c["bytes_read"]),
        CounterMetricFamily("akfak_log_cleaner_written_bytes", "Bytes the cleaner wrote",
                            value=c["bytes_written"]),
        CounterMetricFamily("akfak_log_cleaner_read_records", "Records the cleaner read",
                            value=c["records_read"]),
        CounterMetricFamily("akfak_log_cleaner_retained_records", "Records the cleaner kept",
                            value=c["records_retained"]),
        CounterMetricFamily("akfak_log_retention_deleted_segments",
                            "Segments deleted by retention (time, size, log start offset)",
                            value=c["segments_deleted"]),
    ]


def _readback(snap: StateSnapshot) -> Iterable[Metric]:
    r = snap.readback
    if not r:
        return []
    queries = CounterMetricFamily(
        "akfak_postgres_readback_queries",
        "Queries reading old batches back from PostgreSQL (prepared: on a thread before the "
        "read; false: on the reactor, for a read that was not prepared)", labels=["prepared"])
    queries.add_metric(["true"], r["queries"] - r["unprepared"])
    queries.add_metric(["false"], r["unprepared"])
    return [
        queries,
        CounterMetricFamily("akfak_postgres_readback_bytes",
                            "Bytes of old batches read back from PostgreSQL", value=r["bytes"]),
        _gauge("akfak_postgres_readback_cached_bytes",
               "Bytes in the read-back cache (akfak.postgres.readback.bytes at most, besides "
               "prepared reads not taken yet)", r["cached"]),
    ]
