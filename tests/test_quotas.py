"""Client quotas: AlterClientQuotas / DescribeClientQuotas over raw sockets (Kafka's
validation and filter errors, validate_only, persistence across a restart), `kafka-configs`
on akfak and on the real Kafka 4.1.1 broker printing the same, and enforcement: a producer
and a consumer capped at 1 MB/s measure about that with non-zero throttle time while an
uncapped client beside them is not throttled; request_percentage throttling every response
(raw sockets); controller_mutation_rate strict (kafka-python's CreateTopics v7, DeleteTopics
v6: THROTTLING_QUOTA_EXCEEDED) and permissive (librdkafka's CreateTopics v4: created, and
throttled); an ip's connection_creation_rate closing connections, and
max.connection.creation.rate making them wait.

confluent-kafka 2.16 has no alter/describe_client_quotas, so the admin-client side is the
Java ConfigCommand's.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kio.static.primitive import f64, i8, i32Timedelta

from tests.brokers import BrokerProcess
from tests.kafka_peer import KafkaPeer
from tests.kafka_tools import run_tool
from tests.wire import WireClient

CONFIGS = "kafka.admin.ConfigCommand"
MB = 1024 * 1024


def alter(client: WireClient, entries: list[tuple[list[tuple[str, str | None]],
                                                 list[tuple[str, float | None]]]],
          validate_only: bool = False) -> list[tuple[int, str | None]]:
    from kio.schema.alter_client_quotas.v1 import request as m
    response = client.request(m.AlterClientQuotasRequest(validate_only=validate_only, entries=tuple(
        m.EntryData(entity=tuple(m.EntityData(entity_type=t, entity_name=n) for t, n in entity),
                    ops=tuple(m.OpData(key=k, value=f64(v or 0.0), remove=v is None) for k, v in ops))
        for entity, ops in entries)))
    return [(int(e.error_code), e.error_message) for e in response.entries]


def describe(client: WireClient, components: list[tuple[str, int, str | None]], strict: bool = False
             ) -> tuple[int, str | None, dict[tuple[tuple[str, str | None], ...], dict[str, float]]]:
    from kio.schema.describe_client_quotas.v1 import request as m
    response = client.request(m.DescribeClientQuotasRequest(strict=strict, components=tuple(
        m.ComponentData(entity_type=t, match_type=i8(mt), match=n) for t, mt, n in components)))
    found = {tuple(sorted((e.entity_type, e.entity_name) for e in entry.entity)):
             {v.key: float(v.value) for v in entry.values} for entry in response.entries or ()}
    return int(response.error_code), response.error_message, found


EXACT, DEFAULT, ANY = 0, 1, 2


def test_alter_describe_and_errors(broker_process: Any) -> None:
    # 3 windows (Kafka's quota.window.num, 11 by default) so that the burst a fresh sensor
    # allows, (num - 1) windows' worth, is 2 MB and the steady rate shows within seconds
    broker: BrokerProcess = broker_process("-o", "quota.window.num=3")
    with WireClient(broker.port) as c:
        assert alter(c, [([("client-id", "c1")], [("producer_byte_rate", 1048576.0)]),
                         ([("user", None)], [("consumer_byte_rate", 2e6),
                                             ("request_percentage", 50.5)]),
                         ([("user", "alice"), ("client-id", None)], [("producer_byte_rate", 1e5)]),
                         ([("ip", "127.0.0.1")], [("connection_creation_rate", 10.0)])]) == [(0, None)] * 4
        # validate_only answers without writing
        assert alter(c, [([("client-id", "c9")], [("producer_byte_rate", 5.0)])],
                     validate_only=True) == [(0, None)]
        errors = alter(c, [
            ([], [("producer_byte_rate", 1.0)]),
            ([("group", "g")], [("producer_byte_rate", 1.0)]),
            ([("user", "")], [("producer_byte_rate", 1.0)]),
            ([("ip", "127.0.0.1"), ("user", "u")], [("connection_creation_rate", 1.0)]),
            ([("client-id", "c2")], [("no_such_key", 1.0)]),
            ([("client-id", "c3")], [("producer_byte_rate", 0.0)]),
            ([("client-id", "c4")], [("producer_byte_rate", 1.5)]),
            ([("ip", "127.0.0.2")], [("producer_byte_rate", 1.0)]),
            ([("client-id", "c5")], [("producer_byte_rate", 1.0), ("producer_byte_rate", 2.0)]),
        ])
        assert errors == [
            (42, "Invalid empty client quota entity"),
            (42, "Unhandled client quota entity type: group"),
            (42, "Empty user not supported"),
            (42, "Invalid quota entity combination, IP entity shouldnot be combined with User "
                 "or ClientId"),
            (42, "Invalid configuration key no_such_key"),
            (42, "Quota producer_byte_rate must be greater than 0"),
            (42, "producer_byte_rate cannot be a fractional value."),
            (42, "Invalid configuration key producer_byte_rate"),
            (42, "Ignoring duplicate entity ClientQuotaEntity(entries={client-id=c5})"),
        ]
        assert describe(c, [])[2] == {
            (("client-id", "c1"),): {"producer_byte_rate": 1048576.0},
            (("user", None),): {"consumer_byte_rate": 2e6, "request_percentage": 50.5},
            (("client-id", None), ("user", "alice")): {"producer_byte_rate": 1e5},
            (("ip", "127.0.0.1"),): {"connection_creation_rate": 10.0},
        }
        assert set(describe(c, [("client-id", ANY, None)])[2]) == {
            (("client-id", "c1"),), (("client-id", None), ("user", "alice"))}
        assert set(describe(c, [("client-id", ANY, None)], strict=True)[2]) == {(("client-id", "c1"),)}
        assert set(describe(c, [("user", DEFAULT, None)])[2]) == {(("user", None),)}
        assert set(describe(c, [("user", EXACT, "alice")])[2]) == {
            (("client-id", None), ("user", "alice"))}
        assert describe(c, [("user", EXACT, None)])[:2] == (
            42, "Request specified MATCH_TYPE_EXACT, but set match string to null.")
        assert describe(c, [("user", ANY, None), ("user", ANY, None)])[:2] == (
            42, "Entity type user cannot appear more than once in the filter.")
        assert describe(c, [("group", ANY, None)])[:2] == (35, "Unsupported entity type group")
        assert describe(c, [("ip", ANY, None), ("user", ANY, None)])[0] == 42
        # removal; removing what is not set is no error
        assert alter(c, [([("user", None)], [("request_percentage", None)]),
                         ([("client-id", "zz")], [("producer_byte_rate", None)])]) == [(0, None)] * 2
    broker.stop()
    broker = broker_process(data_dir=broker.data_dir)
    with WireClient(broker.port) as c:
        assert describe(c, [("user", DEFAULT, None)])[2] == {
            (("user", None),): {"consumer_byte_rate": 2e6}}
        assert len(describe(c, [])[2]) == 4


# -- kafka-configs on both brokers ----------------------------------------------------------


@pytest.mark.jvm
@pytest.mark.timeout(900)
def test_kafka_configs_prints_the_same(kafka_peer: KafkaPeer, broker_process: Any) -> None:
    akfak: BrokerProcess = broker_process()
    outputs = {}
    for name, bootstrap in (("akfak", akfak.bootstrap), ("kafka", kafka_peer.bootstrap)):
        base = ("--bootstrap-server", bootstrap)
        for args in (("--entity-type", "clients", "--entity-name", "c1"),
                     ("--entity-type", "users", "--entity-default"),
                     ("--entity-type", "users", "--entity-name", "bob", "--entity-type", "clients",
                      "--entity-name", "c2")):
            run = run_tool(CONFIGS, *base, "--alter", "--add-config",
                           "producer_byte_rate=1048576,consumer_byte_rate=2097152", *args)
            assert run.returncode == 0, run.stderr
        run = run_tool(CONFIGS, *base, "--alter", "--add-config", "producer_byte_rate=1.5",
                       "--entity-type", "clients", "--entity-name", "c3")
        bad = (run.returncode, run.stdout.strip().splitlines()[-1:])
        describes = [run_tool(CONFIGS, *base, "--describe", *args) for args in (
            ("--entity-type", "clients"), ("--entity-type", "users"),
            ("--entity-type", "users", "--entity-default"),
            ("--entity-type", "clients", "--entity-name", "c1"))]
        assert all(d.returncode == 0 for d in describes), [d.stderr for d in describes]
        outputs[name] = ([sorted(d.stdout.splitlines()) for d in describes], bad)
    assert outputs["akfak"] == outputs["kafka"]
    assert any("c1" in line for line in outputs["akfak"][0][0])


# -- enforcement ----------------------------------------------------------------------------


def _topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the answer
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)


class _Stats:
    """librdkafka's per-broker `throttle` window stats (max ms seen), from stats_cb."""

    def __init__(self) -> None:
        self.max_throttle = 0

    def __call__(self, raw: str) -> None:
        for b in json.loads(raw).get("brokers", {}).values():
            self.max_throttle = max(self.max_throttle, int(b.get("throttle", {}).get("max", 0)))


def produce_rate(config: dict[str, str], topic: str, seconds: float, out: dict[str, Any],
                 key: str) -> None:
    """out[key] = (bytes/s acknowledged after a 2 s burst, the largest throttle_time_ms
    librdkafka saw), producing 10 kB values with `config` for `seconds` (a thread's target)."""
    stats = _Stats()
    producer = Producer({**config, "acks": 1, "linger.ms": 5, "statistics.interval.ms": 500,
                         "stats_cb": stats, "queue.buffering.max.kbytes": 4096})
    payload = b"x" * 10_000
    acked = 0

    def delivered(err: Any, msg: Any) -> None:
        nonlocal acked
        if err is None:
            acked += len(msg.value())

    start = time.monotonic()
    warm = None  # (time, bytes acked) once past the burst: the steady rate is measured from there
    while time.monotonic() - start < seconds:
        try:
            producer.produce(topic, payload, callback=delivered)
        except BufferError:
            producer.poll(0.05)
        producer.poll(0)
        if warm is None and time.monotonic() - start >= 2.0:
            warm = (time.monotonic(), acked)
    assert warm is not None
    elapsed = time.monotonic() - warm[0]
    counted = acked - warm[1]  # acknowledged within the measured part of the run
    producer.flush(60)
    producer.poll(1.0)  # the last stats
    out[key] = (counted / elapsed, stats.max_throttle)


@pytest.fixture
def capped(broker_process: Any) -> Iterator[BrokerProcess]:
    # 3 windows (Kafka's quota.window.num, 11 by default) so that the burst a fresh sensor
    # allows, (num - 1) windows' worth, is 2 MB and the steady rate shows within seconds
    broker: BrokerProcess = broker_process("-o", "quota.window.num=3")
    with WireClient(broker.port) as c:
        assert alter(c, [([("client-id", "c1")], [("producer_byte_rate", float(MB)),
                                                  ("consumer_byte_rate", float(MB))])]) == [(0, None)]
    yield broker


@pytest.mark.timeout(180)
def test_capped_producer_is_throttled_others_are_not(capped: BrokerProcess) -> None:
    # An 8 s run at a 1 MB/s quota, measured after the first 2 s: the rate is near the quota
    # (0.7-1.5 MB/s), while the uncapped producer runs faster than twice that.
    _topic(capped.bootstrap, "quota-p")
    out: dict[str, Any] = {}
    threads = [threading.Thread(target=produce_rate, args=(
        {"bootstrap.servers": capped.bootstrap, "client.id": cid}, "quota-p", 8.0, out, cid))
               for cid in ("c1", "free")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    rate, throttle = out["c1"]
    assert 0.7 * MB <= rate <= 1.5 * MB, rate / MB
    assert throttle > 0
    free_rate, free_throttle = out["free"]
    assert free_throttle == 0
    assert free_rate > 2 * MB, free_rate / MB


def _consume(bootstrap: str, client_id: str, topic: str, seconds: float, warmup: float = 2.0
             ) -> tuple[float, int]:
    stats = _Stats()
    consumer = Consumer({"bootstrap.servers": bootstrap, "client.id": client_id,
                         "group.id": f"g-{client_id}", "auto.offset.reset": "earliest",
                         "statistics.interval.ms": 500, "stats_cb": stats,
                         # answers of 64 KB (the loader's batches are that size: an answer
                         # holds at least one whole batch). As Kafka, an answer that would
                         # go over the quota is not sent, and the client waits the time
                         # computed with it; with 3 windows, 1 MB answers average ~0.7 of
                         # the quota (on Kafka too), 64 KB ones ~0.95.
                         "max.partition.fetch.bytes": 65536})
    consumer.subscribe([topic])
    got = 0
    start = None  # the first message, then (as for the producer) the rate after 2 s more
    warm = None
    while warm is None or time.monotonic() - warm[0] < seconds:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            start = start or time.monotonic()
            got += len(msg.value())
        if warm is None and start is not None and time.monotonic() - start >= warmup:
            warm = (time.monotonic(), got)
    elapsed = time.monotonic() - warm[0]
    got -= warm[1]
    consumer.poll(1.0)
    consumer.close()
    return got / elapsed, stats.max_throttle


@pytest.mark.timeout(240)
def test_capped_consumer_is_throttled_others_are_not(capped: BrokerProcess) -> None:
    _topic(capped.bootstrap, "quota-f")
    producer = Producer({"bootstrap.servers": capped.bootstrap, "client.id": "loader",
                         "linger.ms": 20, "batch.size": 65536})
    for _ in range(4000):  # 40 MB: more than either consumer reads in its run
        while True:
            try:
                producer.produce("quota-f", b"y" * 10_000)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0
    rate, throttle = _consume(capped.bootstrap, "c1", "quota-f", 5.0)
    assert 0.7 * MB <= rate <= 1.5 * MB, rate / MB
    assert throttle > 0
    free_rate, free_throttle = _consume(capped.bootstrap, "free", "quota-f", 1.0, warmup=0.0)
    assert free_throttle == 0
    assert free_rate > 2 * MB, free_rate / MB


# -- request_percentage, controller_mutation_rate, connection creation rates -----------------


def _api_versions(client: WireClient) -> Any:
    from kio.schema.api_versions.v3 import request as m
    return client.request(m.ApiVersionsRequest(client_software_name="akfak-tests",
                                               client_software_version="1"))


def _metadata(client: WireClient) -> Any:
    from kio.schema.metadata.v12 import request as m
    return client.request(m.MetadataRequest(topics=None, allow_auto_topic_creation=False,
                                            include_topic_authorized_operations=False))


def _ms(response: Any) -> float:
    return response.throttle_time.total_seconds() * 1000


@pytest.mark.timeout(120)
def test_request_percentage_throttles_every_response(broker_process: Any) -> None:
    broker: BrokerProcess = broker_process("-o", "quota.window.num=2")
    with WireClient(broker.port) as c:
        # 0.01% of a thread: any request goes over it
        assert alter(c, [([("client-id", "rq")], [("request_percentage", 0.01)])]) == [(0, None)]
    with WireClient(broker.port, client_id="rq") as capped, \
            WireClient(broker.port, client_id="free") as free:
        start = time.monotonic()
        throttles = [_ms(_metadata(capped)), _ms(_api_versions(capped)), _ms(_metadata(capped))]
        elapsed = time.monotonic() - start
        # as Kafka's ClientRequestQuotaManager: at most one window (1 s) each, and the
        # connection is not read meanwhile, so the 2nd and 3rd answers come a throttle later
        assert all(0 < t <= 1000 for t in throttles), throttles
        assert elapsed >= (throttles[0] + throttles[1]) / 1000 * 0.9, (elapsed, throttles)
        assert _ms(_metadata(free)) == 0 and _ms(_api_versions(free)) == 0


@pytest.mark.timeout(120)
def test_controller_mutation_rate_strict_and_permissive(broker_process: Any) -> None:
    # 1 partition/s and a burst of controller.quota.window.num (2) x 1 s: 2 tokens
    from kafka.admin import KafkaAdminClient
    from kafka.admin import NewTopic as KNewTopic
    broker: BrokerProcess = broker_process("-o", "controller.quota.window.num=2")
    with WireClient(broker.port) as c:
        assert alter(c, [([("client-id", "adm")], [("controller_mutation_rate", 1.0)])]) == [(0, None)]
    # kafka-python sends CreateTopics v7: strict. A topic is allowed while tokens remain,
    # whatever its size (2 -> -8), then the next ones are refused until the bucket refills;
    # the answer's throttle time is the 8 s to get back to zero (kafka-python waits it out).
    strict = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="adm")
    try:
        created = strict.create_topics([KNewTopic("m1", 10, 1), KNewTopic("m2", 1, 1)],
                                       raise_errors=False)
        assert [t["error_code"] for t in created["topics"]] == [0, 89]  # THROTTLING_QUOTA_EXCEEDED
    finally:
        strict.close()
    from kio.schema.delete_topics.v6 import request as dt
    with WireClient(broker.port, client_id="adm") as c:  # DeleteTopics v6: strict too
        response = c.request(dt.DeleteTopicsRequest(
            topics=(dt.DeleteTopicState(name="m1", topic_id=None),),
            timeout=i32Timedelta.parse(timedelta(seconds=5))))
        assert [int(r.error_code) for r in response.responses] == [89]
        assert 6000 < _ms(response) <= 8000
    # librdkafka sends CreateTopics v4: permissive. The topic is created and the answer
    # carries the time until the bucket is back at zero (throttle_cb reports it).
    throttles: list[float] = []  # seconds
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "client.id": "adm",
                         "throttle_cb": lambda event: throttles.append(event.throttle_time)})
    admin.create_topics([NewTopic("m3", 1, 1)])["m3"].result(30)
    deadline = time.monotonic() + 5
    while not throttles and time.monotonic() < deadline:
        admin.poll(0.1)
    assert throttles and max(throttles) > 1.0, throttles  # ~9 s of debt
    with WireClient(broker.port, client_id="other") as other:  # another client: no quota
        assert _ms(_metadata(other)) == 0
        assert {t.name for t in _metadata(other).topics} == {"m1", "m3"}


def _served(port: int, client_id: str = "akfak-tests") -> bool:
    """A new connection's ApiVersions is answered (False: closed unanswered)."""
    with WireClient(port, client_id=client_id) as c:
        try:
            _api_versions(c)
        except ConnectionError:
            return False
    return True


@pytest.mark.timeout(120)
def test_connection_creation_rates(broker_process: Any) -> None:
    # an ip's connection_creation_rate: over it, a connection is closed (after up to 1 s)
    broker: BrokerProcess = broker_process("-o", "quota.window.num=2")
    with WireClient(broker.port) as c:
        assert alter(c, [([("ip", "127.0.0.1")], [("connection_creation_rate", 1.0)])]) == [(0, None)]
    outcomes = [_served(broker.port) for _ in range(4)]
    assert outcomes[0] and not all(outcomes), outcomes
    time.sleep(2.1)  # the windows pass: connections are served again
    with WireClient(broker.port) as c:
        assert alter(c, [([("ip", "127.0.0.1")], [("connection_creation_rate", None)])]) == [(0, None)]
    assert all(_served(broker.port) for _ in range(4))
    broker.stop()
    # max.connection.creation.rate: over it, connections wait (none is refused)
    broker = broker_process("-o", "quota.window.num=2", "-o", "max.connection.creation.rate=4",
                            data_dir=broker.data_dir)
    time.sleep(1.0)  # the broker's own start is not counted, but let its window pass
    start = time.monotonic()
    assert all(_served(broker.port) for _ in range(12))
    # 12 connections at 4/s with a 1 s window: at least ~1.5 s of waiting
    assert time.monotonic() - start >= 1.4
