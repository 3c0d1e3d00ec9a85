"""What /metrics and the console's API show of the broker's live state, with real clients:
consumer groups of both rebalance protocols while their members run (state, members and
their assignment), producers and transactions, the log cleaner and retention, the
overview and the topics' produce and consume rates, the inspector's connection filter, and
the console behind a secured broker's users in a browser (tests/conftest.py's `browser`)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from akfak.testing.embedded import EmbeddedBroker
from akfak.testing.security import Security
from tests.test_metrics import Samples, get, scrape, value


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def api(broker: EmbeddedBroker, path: str) -> Any:
    with urllib.request.urlopen(f"{broker.http_url}api/{path}", timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    # the cleaner and retention every 200 ms, so that a test sees them work
    with EmbeddedBroker(storage="disk", http=True, overrides={
            "log.cleaner.backoff.ms": "200", "log.retention.check.interval.ms": "200",
            "group.consumer.heartbeat.interval.ms": "500",
            "group.consumer.min.heartbeat.interval.ms": "500"}) as running:
        yield running


def produce(broker: EmbeddedBroker, topic: str, count: int, partitions: int = 1, **config: Any) -> None:
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5, **config})
    for i in range(count):
        producer.produce(topic, b"v%d" % i, key=b"k%d" % (i % 10), partition=i % partitions)
    assert producer.flush(15) == 0


def consuming(broker: EmbeddedBroker, group: str, topic: str, count: int, **config: Any) -> Consumer:
    """A member of `group` that has consumed and committed `count` records and stays in."""
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, **config})
    consumer.subscribe([topic])
    seen, deadline = 0, time.monotonic() + 30
    while seen < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            seen += 1
    assert seen == count
    consumer.commit(asynchronous=False)
    return consumer


@pytest.mark.parametrize(("protocol", "assignor"), [("classic", "range"), ("consumer", "uniform")])
def test_a_running_group_with_its_members_and_assignment(broker: EmbeddedBroker, protocol: str,
                                                         assignor: str) -> None:
    topic, group = f"members-{protocol}", f"group-{protocol}"
    broker.create_topic(topic, partitions=2)
    produce(broker, topic, 10, partitions=2)
    consumer = consuming(broker, group, topic, 10, **{"group.protocol": protocol,
                                                      "client.id": f"member-{protocol}"})
    try:
        # a KIP-848 member reconciles on its heartbeats: wait for a Stable group
        wait_for(lambda: {g["group"]: g for g in api(broker, "groups")}[group]["state"] == "Stable",
                 what=f"a Stable {protocol} group")
        listed = {g["group"]: g for g in api(broker, "groups")}[group]
        assert (listed["protocol_type"], listed["members"], listed["lag"]) == ("consumer", 1, 0)
        detail = api(broker, f"groups/{group}")
        assert (detail["protocol_type"], detail["protocol"]) == ("consumer", assignor)
        [member] = detail["members"]
        assert member["client_id"] == f"member-{protocol}"
        assert member["subscription"] == [topic] and member["assignment"] == {topic: [0, 1]}
        assert [(p["partition"], p["committed"], p["lag"], p["member_id"]) for p in detail["partitions"]] \
            == [(0, 5, 0, member["member_id"]), (1, 5, 0, member["member_id"])]
        samples = scrape(broker)
        assert value(samples, "kafka_consumergroup_members", consumergroup=group) == 1
        assert value(samples, "akfak_consumergroup_info", consumergroup=group, state="Stable",
                     protocol_type="consumer", protocol=assignor) == 1
        if protocol == "consumer":
            # Kafka 4's group-coordinator-metrics; NumGroups counts classic groups only
            assert value(samples, "kafka_server_group_coordinator_metrics_group_count",
                         protocol="consumer") >= 1
            assert value(samples, "kafka_server_group_coordinator_metrics_consumer_group_count",
                         state="Stable") >= 1
    finally:
        consumer.close()
    gone = wait_for(lambda: (g := api(broker, f"groups/{group}"))["state"] == "Empty" and g,
                    what="the group empty after its member left")
    assert gone["members"] == [] and gone["lag"] == 0


def test_producer_ids_and_transactions(broker: EmbeddedBroker) -> None:
    topic = "producers"
    broker.create_topic(topic, partitions=1)
    before = scrape(broker)
    produce(broker, topic, 5, **{"enable.idempotence": True})
    txn = Producer({"bootstrap.servers": broker.bootstrap_servers, "transactional.id": "metered-txn"})
    txn.init_transactions(15)
    txn.begin_transaction()
    txn.produce(topic, b"in a transaction")
    txn.commit_transaction(15)
    after = scrape(broker)
    # the idempotent producer and the transactional one each hold a producer id in the partition
    assert (value(after, "kafka_server_replicamanager_produceridcount")
            - value(before, "kafka_server_replicamanager_produceridcount")) == 2
    assert value(after, "akfak_transactions", state="CompleteCommit") \
        - value(before, "akfak_transactions", state="CompleteCommit") == 1
    txn.begin_transaction()
    txn.produce(topic, b"left open")
    assert txn.flush(15) == 0
    assert value(scrape(broker), "akfak_transactions", state="Ongoing") == 1
    txn.abort_transaction(15)


def _segments(samples: Samples, topic: str) -> tuple[float, float]:
    return (value(samples, "kafka_log_log_numlogsegments", topic=topic, partition=0),
            value(samples, "kafka_log_log_logstartoffset", topic=topic, partition=0))


def test_retention_and_cleaner_progress(broker: EmbeddedBroker) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    retained, compacted = "retained", "compacted"
    broker.create_topic(retained, partitions=1, config={"segment.bytes": "1024"})
    broker.create_topic(compacted, partitions=1, config={
        "segment.bytes": "1024", "cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"})
    produce(broker, retained, 200, **{"batch.size": 200})
    before = scrape(broker)
    segments, start = _segments(before, retained)
    assert segments > 3 and start == 0
    # retention.ms=1 from now on: every segment is expired, the active one too (as Kafka,
    # the log rolls an empty one and deletes them all)
    resource = ConfigResource("TOPIC", retained, incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([resource])[resource].result(15)
    after = wait_for(lambda: (s := scrape(broker)) and _segments(s, retained) == (1, 200) and s,
                     what="retention to delete the old segments")
    deleted = "akfak_log_retention_deleted_segments_total"
    assert value(after, deleted) - value(before, deleted) == segments

    # ten keys written 20 times each: the cleaner keeps the latest of each
    produce(broker, compacted, 200, **{"batch.size": 200})
    cleaned = wait_for(lambda: (s := scrape(broker)) and value(s, "akfak_log_cleaner_logs_cleaned_total")
                       > value(before, "akfak_log_cleaner_logs_cleaned_total") and s,
                       what="a cleaning of the compacted topic")

    def delta(name: str) -> float:
        return value(cleaned, name) - value(before, name)

    assert delta("akfak_log_cleaner_read_records_total") > delta("akfak_log_cleaner_retained_records_total")
    assert delta("akfak_log_cleaner_read_bytes_total") > delta("akfak_log_cleaner_written_bytes_total") > 0
    assert value(cleaned, "kafka_log_logcleanermanager_time_since_last_run_ms") >= 0
    assert value(cleaned, "kafka_log_logcleanermanager_uncleanable_partitions_count") == 0


def test_overview_totals_series_and_topic_rates(broker: EmbeddedBroker) -> None:
    topic = "rated"
    broker.create_topic(topic, partitions=1)
    first = api(broker, "overview")
    assert first["node_id"] == broker.broker.node_id and first["cluster_id"] == broker.broker.cluster_id
    [listener] = first["listeners"]
    assert listener["security_protocol"] == "PLAINTEXT"
    assert listener["advertised"] == f"127.0.0.1:{broker.port}"
    assert first["uptime_s"] >= 0 and len(first["series"]) == 120
    # produce and commit for a few sampling periods (2 s): both rates show
    produce(broker, topic, 20)
    sent = 20
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 0})
    consumer = consuming(broker, "rater", topic, 20)
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        for _ in range(20):
            producer.produce(topic, b"r")
        sent += 20
        assert producer.flush(10) == 0
        got = 0
        while got < 20:
            got += sum(1 for m in consumer.consume(20 - got, timeout=1) if m.error() is None)
        consumer.commit(asynchronous=False)
    rates = {t["name"]: t for t in api(broker, "topics")}[topic]
    assert rates["produce_per_s"] > 0 and rates["consume_per_s"] > 0
    consumer.close()
    later = api(broker, "overview?seconds=30")
    assert later["totals"]["topics"] == len(api(broker, "topics"))
    assert later["totals"]["requests"] > first["totals"]["requests"]
    assert later["totals"]["bytes_in"] > first["totals"]["bytes_in"] + sent
    series = later["series"]
    assert len(series) == 30 and sum(p["requests"] for p in series) > 0
    assert [p["t"] for p in series] == list(range(series[0]["t"], series[0]["t"] + 30))
    # idle for two sampling periods: the rates fall to 0
    wait_for(lambda: {t["name"]: t for t in api(broker, "topics")}[topic]["produce_per_s"] == 0,
             timeout=10, what="the produce rate to fall to 0")


def test_inspector_filters_by_connection(broker: EmbeddedBroker) -> None:
    topic = "two-connections"
    broker.create_topic(topic, partitions=1)
    since = api(broker, "requests?limit=1")["last"]
    # two producers with one client id: only the connection tells their requests apart
    for payload in (b"first", b"second"):
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "client.id": "twins"})
        producer.produce(topic, payload)
        assert producer.flush(10) == 0
    produces = api(broker, f"requests?since={since}&client_id=twins&api=Produce")["requests"]
    assert len(produces) == 2 and produces[0]["connection"] != produces[1]["connection"]
    for entry in produces:
        only = api(broker, f"requests?since={since}&connection={entry['connection']}")["requests"]
        assert {e["connection"] for e in only} == {entry["connection"]}
        assert [e["seq"] for e in only if e["api"] == "Produce"] == [entry["seq"]]


def test_the_fixture_serves_no_http_unless_asked(akfak_broker: EmbeddedBroker) -> None:
    assert akfak_broker.http_url is None
    # nothing observes requests: the hot path records no events
    assert not akfak_broker.call(lambda: bool(akfak_broker.broker.request_observers))


def test_the_console_asks_a_secured_brokers_users(browser: Any, tmp_path: Path) -> None:
    security = Security(listeners=["SASL_PLAINTEXT"], users={"alice": "alice-secret"},
                        mechanisms=["PLAIN"])
    with EmbeddedBroker(security=security, http=True) as secured:
        secured.create_topic("secret-topic", partitions=1)
        for path in ("", "static/console.js", "api/topics", "api/requests"):
            assert get(f"{secured.http_url}{path}")[0] == 401
            assert get(f"{secured.http_url}{path}", ("alice", "wrong"))[0] == 401
            assert get(f"{secured.http_url}{path}", ("alice", "alice-secret"))[0] == 200
        # a browser given the user's credentials: the page and every API call it makes pass
        context = browser.new_context(http_credentials={"username": "alice", "password": "alice-secret"})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(secured.http_url + "#/topics")
        page.wait_for_selector('#topics tr[data-topic="secret-topic"]', timeout=15_000)
        page.screenshot(path=str(tmp_path / "secured-topics.png"), full_page=True)
        context.close()
        assert errors == []
