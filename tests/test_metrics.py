"""/metrics: Prometheus' text format, parsed by prometheus_client, after real client traffic;
HTTP Basic authentication against the broker's SASL users; loopback-only without them."""

from __future__ import annotations

import base64
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from prometheus_client.parser import text_string_to_metric_families

from akfak.testing.embedded import EmbeddedBroker
from akfak.testing.security import Security
from akfak.web.root import build_root
from akfak.web.service import HttpService
from tests.brokers import free_port, start_process
from tests.recordbatch import make_batch
from tests.requests import fetch, metadata, produce
from tests.wire import WireClient, encode_body, encode_request

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(
            f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(broker: EmbeddedBroker) -> Samples:
    status, body = get(f"{broker.http_url}metrics")
    assert status == 200
    return parse(body.decode())


def value(samples: Samples, name: str, **labels: Any) -> float:
    return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())), 0.0)


def eventually(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(http=True) as running:
        yield running


def test_produce_consume_counters_offsets_and_lag(broker: EmbeddedBroker) -> None:
    topic, group, n = "metered", "metered-group", 40
    broker.create_topic(topic, partitions=2)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
    for i in range(n):
        producer.produce(topic, f"value-{i}".encode(), key=b"k", partition=i % 2,
                         headers=[("h", b"x")])
    assert producer.flush(15) == 0
    after_produce = scrape(broker)
    assert value(after_produce, "kafka_server_brokertopicmetrics_messagesin_total", topic=topic) == n
    sizes = [value(after_produce, "kafka_log_log_size", topic=topic, partition=p) for p in (0, 1)]
    assert all(sizes)
    # the appended record sets are what the log holds (offsets patched in place)
    assert value(after_produce, "kafka_server_brokertopicmetrics_bytesin_total", topic=topic) == sum(sizes)
    assert value(after_produce, "kafka_server_brokertopicmetrics_totalproducerequests_total",
                 topic=topic) >= 2
    assert value(after_produce, "kafka_server_brokertopicmetrics_failedproducerequests_total",
                 topic=topic) == 0
    for p in (0, 1):
        labels = {"topic": topic, "partition": p}
        assert value(after_produce, "kafka_log_log_logendoffset", **labels) == n // 2
        assert value(after_produce, "kafka_topic_partition_current_offset", **labels) == n // 2
        assert value(after_produce, "kafka_log_log_logstartoffset", **labels) == 0
        assert value(after_produce, "kafka_topic_partition_oldest_offset", **labels) == 0
        assert value(after_produce, "kafka_log_log_numlogsegments", **labels) == 1
    assert value(after_produce, "kafka_topic_partitions", topic=topic) == 2
    # all topics: no topic label, at least this topic's
    assert value(after_produce, "kafka_server_brokertopicmetrics_messagesin_total") >= n

    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        seen = 0
        deadline = time.monotonic() + 30
        while seen < n and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                seen += 1
        assert seen == n
        consumer.commit(asynchronous=False)
        consumed = scrape(broker)
        assert value(consumed, "kafka_consumergroup_members", consumergroup=group) == 1
        assert value(consumed, "akfak_consumergroup_info", consumergroup=group, state="Stable",
                     protocol_type="consumer", protocol="range") == 1
    finally:
        consumer.close()
    for p in (0, 1):
        labels = {"consumergroup": group, "topic": topic, "partition": p}
        assert value(consumed, "kafka_consumergroup_current_offset", **labels) == n // 2
        assert (consumed["kafka_consumergroup_lag", frozenset((k, str(v)) for k, v in labels.items())]
                == 0)
    assert value(consumed, "kafka_consumergroup_current_offset_sum", consumergroup=group, topic=topic) == n
    assert value(consumed, "kafka_server_brokertopicmetrics_bytesout_total", topic=topic) >= sum(sizes)
    assert value(consumed, "kafka_server_brokertopicmetrics_totalfetchrequests_total", topic=topic) >= 1

    for i in range(n):
        producer.produce(topic, f"more-{i}".encode(), partition=i % 2)
    assert producer.flush(15) == 0
    behind = scrape(broker)
    assert value(behind, "kafka_server_brokertopicmetrics_messagesin_total", topic=topic) == 2 * n
    for p in (0, 1):
        assert value(behind, "kafka_consumergroup_lag", consumergroup=group, topic=topic,
                     partition=p) == n // 2
    assert value(behind, "kafka_consumergroup_lag_sum", consumergroup=group, topic=topic) == n
    # the member left: the group is Empty, its offsets stay
    assert value(behind, "kafka_consumergroup_members", consumergroup=group) == 0
    assert value(behind, "kafka_coordinator_group_groupmetadatamanager_numgroupsempty") >= 1


def test_request_counts_latencies_and_errors_by_code(broker: EmbeddedBroker) -> None:
    topic = "counted"
    broker.create_topic(topic, partitions=1)
    before = scrape(broker)
    with WireClient(broker.port) as client:
        for _ in range(3):
            client.request(metadata([topic], version=12))
        answer = client.request(produce(topic, {0: make_batch([(None, b"a"), (None, b"b")])}))
        assert answer.responses[0].partition_responses[0].error_code == 0
        # a partition the topic does not have: UNKNOWN_TOPIC_OR_PARTITION, not "failed"
        client.request(produce(topic, {7: make_batch()}))
    after = scrape(broker)

    def delta(name: str, **labels: Any) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("kafka_network_requestmetrics_requests_total", request="Metadata", version=12) == 3
    assert delta("kafka_network_requestmetrics_requests_total", request="Produce", version=9) == 2
    assert delta("kafka_network_requestmetrics_errors_total", request="Produce", error="NONE") == 1
    assert delta("kafka_network_requestmetrics_errors_total", request="Produce",
                 error="UNKNOWN_TOPIC_OR_PARTITION") == 1
    # Metadata counts the topic's and its partition's codes, as Kafka's errorCounts
    assert delta("kafka_network_requestmetrics_errors_total", request="Metadata", error="NONE") == 6
    assert delta("kafka_server_brokertopicmetrics_messagesin_total", topic=topic) == 2
    assert delta("kafka_server_brokertopicmetrics_totalproducerequests_total", topic=topic) == 1
    assert delta("kafka_server_brokertopicmetrics_failedproducerequests_total", topic=topic) == 0
    for histogram in ("totaltimems", "requestqueuetimems", "localtimems", "responsequeuetimems",
                      "responsesendtimems", "requestbytes"):
        name = f"kafka_network_requestmetrics_{histogram}"
        assert delta(f"{name}_count", request="Metadata") == 3
        assert delta(f"{name}_bucket", request="Metadata", le="+Inf") == 3
    assert value(after, "kafka_network_requestmetrics_totaltimems_sum", request="Metadata") > 0


def test_a_response_read_slowly_counts_as_send_time(broker: EmbeddedBroker) -> None:
    """ResponseSendTimeMs ends when the answer's last byte has left for the socket: a client
    that reads a 16 MiB Fetch answer only after 0.5 s (through a small receive window)
    shows it there and in the total, not in the local or response queue time."""
    topic = "read-slowly"
    broker.create_topic(topic, partitions=1)
    with WireClient(broker.port) as client:
        for _ in range(16):
            batch = make_batch([(None, os.urandom(1000)) for _ in range(1000)])
            (answer,) = client.request(produce(topic, {0: batch})).responses
            assert answer.partition_responses[0].error_code == 0
    before = scrape(broker)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", broker.port))
    with sock:
        request = fetch({topic: {0: 0}}, partition_max_bytes=32 << 20)
        sock.sendall(encode_request(1, 12, 1, encode_body(request)))
        time.sleep(0.5)
        received = 0
        while received < 16_000_000:
            chunk = sock.recv(1 << 20)
            assert chunk
            received += len(chunk)
    eventually(lambda: value(scrape(broker), "kafka_network_requestmetrics_responsesendtimems_count",
                             request="Fetch") > value(
        before, "kafka_network_requestmetrics_responsesendtimems_count", request="Fetch"))
    after = scrape(broker)

    def delta(name: str, **labels: Any) -> float:
        return value(after, f"kafka_network_requestmetrics_{name}", request="Fetch", **labels) - value(
            before, f"kafka_network_requestmetrics_{name}", request="Fetch", **labels)

    assert delta("responsesendtimems_count") == 1
    assert delta("responsesendtimems_sum") >= 400
    assert delta("responsesendtimems_bucket", le="+Inf") == 1
    assert delta("responsesendtimems_bucket", le="250.0") == 0
    assert delta("totaltimems_sum") >= 400
    assert delta("localtimems_sum") < 250 and delta("responsequeuetimems_sum") < 250


def test_connections_per_listener(broker: EmbeddedBroker) -> None:
    name = "kafka_server_socketservermetrics_connection_count"
    # clients of earlier tests may still be closing: wait until the count holds still
    counts: list[float] = []
    eventually(lambda: counts.append(value(scrape(broker), name, listener="PLAINTEXT"))
               or (len(counts) > 2 and counts[-1] == counts[-2] == counts[-3]))
    base = counts[-1]
    made = value(scrape(broker), "kafka_server_socketservermetrics_connection_creation_total",
                 listener="PLAINTEXT")
    clients = [WireClient(broker.port) for _ in range(3)]
    try:
        for client in clients:
            client.request(metadata([], version=12))  # the broker has seen the connection
        now = scrape(broker)
        assert value(now, name, listener="PLAINTEXT") == base + 3
        assert value(now, "kafka_server_socket_server_metrics_connection_count",
                     listener="PLAINTEXT") == base + 3
        assert value(now, "kafka_server_socketservermetrics_connection_creation_total",
                     listener="PLAINTEXT") == made + 3
    finally:
        for client in clients:
            client.close()
    eventually(lambda: value(scrape(broker), name, listener="PLAINTEXT") == base)


def test_process_and_broker_state_series(broker: EmbeddedBroker) -> None:
    broker.create_topic("state-series", partitions=1)  # not relying on the other tests' topics
    samples = scrape(broker)
    assert value(samples, "process_cpu_seconds_total") > 0
    assert value(samples, "process_resident_memory_bytes") > 0
    assert value(samples, "process_open_fds") > 0
    assert value(samples, "kafka_brokers") == 1
    assert value(samples, "kafka_controller_kafkacontroller_activecontrollercount") == 1
    assert value(samples, "kafka_server_replicamanager_partitioncount") >= 1
    status, body = get(f"{broker.http_url}metrics")
    assert status == 200 and body.endswith(b"\n")


def test_each_embedded_broker_has_its_own_registry(broker: EmbeddedBroker) -> None:
    with EmbeddedBroker(http=True) as other:
        other.create_topic("only-on-other", partitions=1)
        assert value(scrape(other), "kafka_topic_partitions", topic="only-on-other") == 1
        assert ("kafka_topic_partitions", frozenset({("topic", "only-on-other")})) not in scrape(broker)


# -- HTTP security -------------------------------------------------------------------------


def test_sasl_users_are_asked_for_plain_and_scram() -> None:
    security = Security(listeners=["SASL_PLAINTEXT"], users={"alice": "alice-secret"},
                        mechanisms=["PLAIN", "SCRAM-SHA-256"])
    with EmbeddedBroker(security=security, http=True) as secured:
        url = f"{secured.http_url}metrics"
        status, _ = get(url)
        assert status == 401
        assert get(url, ("alice", "wrong"))[0] == 401
        assert get(url, ("nobody", "alice-secret"))[0] == 401
        status, body = get(url, ("alice", "alice-secret"))
        assert status == 200 and b"kafka_brokers 1.0" in body
        # a SCRAM-only user, added as kafka-configs would: checked against the stored key
        admin = AdminClient(secured.client_config("alice"))
        upsert = UserScramCredentialUpsertion(
            "carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"carol-secret")
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(15)
        assert get(url, ("carol", "wrong"))[0] == 401
        assert get(url, ("carol", "carol-secret"))[0] == 200
        assert get(url, ("carol", "carol-secret"))[0] == 200  # remembered: no second PBKDF2
        assert get(f"{secured.http_url}no-such-page", ("carol", "carol-secret"))[0] == 404


def _serve(broker: EmbeddedBroker, endpoint: str) -> HttpService:
    def start() -> Any:
        service = HttpService(broker.broker, endpoint, build_root(broker.broker), broker.reactor)
        service.startService()
        return service.listening.addCallback(lambda _: service)  # type: ignore[union-attr]

    return broker.call(start)


def test_other_than_loopback_needs_users_or_allow_remote(broker: EmbeddedBroker) -> None:
    refused = _serve(broker, "tcp:0")  # every interface
    assert refused.port is None and refused.url is None
    with EmbeddedBroker(http=True, overrides={"akfak.http.allow.remote": "true"}) as remote:
        served = _serve(remote, "tcp:0")
        try:
            assert served.port is not None
            port = served.port.getHost().port
            assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200
        finally:
            remote.call(served.stopService)


def test_daemon_prints_the_url_and_serves_metrics(tmp_path: Path) -> None:
    http = free_port()
    daemon = start_process(tmp_path / "data", "--http", f"tcp:{http}:interface=127.0.0.1")
    try:
        url = f"http://127.0.0.1:{http}/"
        eventually(lambda: url in daemon.log())
        status, body = get(url + "metrics")
        assert status == 200
        samples = parse(body.decode())
        assert value(samples, "kafka_brokers") == 1
        assert value(samples, "kafka_controller_kafkacontroller_activecontrollercount") == 1
    finally:
        daemon.stop()


def test_http_listeners_property_and_repeated_http(tmp_path: Path) -> None:
    first, second, third = free_port(), free_port(), free_port()
    properties = tmp_path / "server.properties"
    properties.write_text(f"akfak.http.listeners=tcp:{first}:interface=127.0.0.1, "
                          f"tcp:{second}:interface=127.0.0.1\n")
    port = free_port()
    command = [sys.executable, "-m", "akfak", "--listen", f"tcp:{port}:interface=127.0.0.1",
               "--data-dir", str(tmp_path / "data"), "--config", str(properties)]
    daemon = start_process(tmp_path / "data", port=port, command=command)
    try:
        for http in (first, second):  # both endpoints of the property, each printed
            eventually(lambda http=http: f"http://127.0.0.1:{http}/" in daemon.log())
            assert get(f"http://127.0.0.1:{http}/metrics")[0] == 200
    finally:
        daemon.stop()
    # --http, repeated, replaces the property (another port: a log file of its own)
    port = free_port()
    command[4] = f"tcp:{port}:interface=127.0.0.1"
    daemon = start_process(tmp_path / "data", port=port, command=[
        *command, "--http", f"tcp:{third}:interface=127.0.0.1", "--http", f"tcp:{first}:interface=127.0.0.1"])
    try:
        for http in (third, first):
            eventually(lambda http=http: f"http://127.0.0.1:{http}/" in daemon.log())
            assert get(f"http://127.0.0.1:{http}/")[0] == 200  # the console's page
        assert f":{second}/" not in daemon.log()
    finally:
        daemon.stop()


@pytest.mark.parametrize("how", ["python -m akfak", "twistd akfak"])
def test_http_is_on_by_default_on_loopback_8080(tmp_path: Path, how: str) -> None:
    port = free_port()
    listen = ["--listen", f"tcp:{port}:interface=127.0.0.1", "--data-dir", str(tmp_path / "data")]
    command = ([sys.executable, "-m", "akfak", *listen] if how == "python -m akfak" else
               [str(Path(sys.executable).with_name("twistd")), "-n", "--pidfile=", "akfak", *listen])
    daemon = start_process(tmp_path / "data", port=port, command=command, cwd=tmp_path)
    try:
        # served, or refused because something else on this machine holds port 8080: either
        # way the log names the default endpoint
        eventually(lambda: "metrics and console on" in daemon.log()
                   or "no metrics or console on tcp:8080" in daemon.log())
        log = daemon.log()
        if "metrics and console on" in log:
            assert "http://127.0.0.1:8080/ (tcp:8080:interface=127.0.0.1)" in log
        else:
            assert "no metrics or console on tcp:8080:interface=127.0.0.1:" in log
    finally:
        daemon.stop()


def test_consumer_lag_of_a_group_from_group_lags(broker: EmbeddedBroker) -> None:
    from akfak.group_lag import group_lags

    topic, group = "lagging", "lag-group"
    broker.create_topic(topic, partitions=1)
    producer = Producer({"bootstrap.servers": broker.bootstrap_servers})
    for i in range(5):
        producer.produce(topic, b"x%d" % i)
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 2)], asynchronous=False)
    finally:
        consumer.close()
    lags = broker.call(group_lags, broker.broker, group)
    assert [(g.topic, g.partition, g.committed, g.end_offset, g.lag) for g in lags] == [(topic, 0, 2, 5, 3)]


def test_a_deleted_topic_loses_its_series(broker: EmbeddedBroker) -> None:
    topic = "short-lived"
    broker.create_topic(topic, partitions=1)
    with WireClient(broker.port) as client:
        client.request(produce(topic, {0: make_batch()}))
    assert value(scrape(broker), "kafka_server_brokertopicmetrics_messagesin_total", topic=topic) == 1
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    admin.delete_topics([topic])[topic].result(15)
    after = scrape(broker)
    assert not [key for key in after if ("topic", topic) in key[1]]
