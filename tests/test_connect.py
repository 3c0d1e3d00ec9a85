"""Kafka Connect 4.1.1 (connect-runtime, a distributed worker) against akfak.

One worker JVM (`org.apache.kafka.connect.cli.ConnectDistributed`) keeps its connector configs,
source offsets and statuses in three compacted topics on the broker, which it creates itself,
and serves its REST API on 127.0.0.1 only. The source connector is tests/java's
akfak.tests.connect.CountingSourceConnector (records 0..N-1, source offset {"next": i+1}),
found through its ServiceLoader manifest (plugin.discovery=service_load: no classpath scan).

A worker takes ~10 s to start on a loaded 2-core machine, so the test runs on akfak in CI and
on the Kafka peer only when slow tests are asked for (it passes there the same way).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import free_port
from tests.clients import poll_until
from tests.jvm import build, java_command

pytestmark = [pytest.mark.jvm, pytest.mark.timeout(300)]

#: the worker's start: JVM, plugin discovery, REST server, reading its three topics, joining its group
START_TIMEOUT = 90.0
RECORDS = 3000

WORKER_PROPERTIES = """\
bootstrap.servers={bootstrap}
group.id=connect-cluster
config.storage.topic=connect-configs
offset.storage.topic=connect-offsets
status.storage.topic=connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.storage.partitions=2
status.storage.partitions=1
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
offset.flush.interval.ms=500
listeners=http://127.0.0.1:{port}
rest.advertised.host.name=127.0.0.1
rest.advertised.port={port}
plugin.discovery=service_load
# a departed worker's tasks are reassigned at once, not after 5 minutes
scheduled.rebalance.max.delay.ms=0
"""

CONNECTOR = {
    "connector.class": "akfak.tests.connect.CountingSourceConnector",
    "tasks.max": "1",
    "topic": "counted",
    "records": str(RECORDS),
    # ~500 records a second: the restart falls mid-stream
    "batch": "10",
    "poll.ms": "20",
    # KIP-158: the worker creates the topic (the Kafka peer does not auto-create topics)
    "topic.creation.default.replication.factor": "1",
    "topic.creation.default.partitions": "1",
}


class Worker:
    """A ConnectDistributed JVM and its REST API."""

    def __init__(self, bootstrap: str, directory: Path) -> None:
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        properties = directory / "worker.properties"
        properties.write_text(WORKER_PROPERTIES.format(bootstrap=bootstrap, port=self.port))
        self.log_path = directory / "worker.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                ["nice", *java_command(build(), "org.apache.kafka.connect.cli.ConnectDistributed",
                                       str(properties))],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # the herder answers /connectors once it has joined its group
            try:
                self.get("/connectors")
                return
            except (OSError, urllib.error.HTTPError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"the Connect worker did not start:\n{self.log()}") from None
                time.sleep(0.25)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as answer:
            text = answer.read()
        return json.loads(text) if text else None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def stored_next(self, connector: str) -> int:
        """The connector's source offset as the worker reads it back from its offsets topic
        (GET /connectors/NAME/offsets, KIP-875)."""
        offsets = self.get(f"/connectors/{connector}/offsets")["offsets"]
        return int(offsets[0]["offset"]["next"]) if offsets else 0

    def running(self, connector: str) -> bool:
        try:
            status = self.get(f"/connectors/{connector}/status")
        except urllib.error.HTTPError:
            return False
        states = [status["connector"]["state"], *(task["state"] for task in status["tasks"])]
        return len(states) == 2 and set(states) == {"RUNNING"}

    def log(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-80:])

    def stop(self) -> int:
        """SIGTERM: the worker stops its tasks, commits their offsets and leaves its group."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def read_topic(bootstrap: str, topic: str, partitions: int = 1) -> list[tuple[str, str]]:
    """The keys and values of `topic`, partition after partition, each from its start to its
    high watermark."""
    import confluent_kafka

    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "reader",
                                         "enable.auto.commit": False})
    records: list[tuple[str, str]] = []
    try:
        for partition in range(partitions):
            tp = confluent_kafka.TopicPartition(topic, partition, confluent_kafka.OFFSET_BEGINNING)
            _, end = consumer.get_watermark_offsets(tp, timeout=10)
            consumer.assign([tp])
            deadline = time.monotonic() + 30
            position = 0
            while position < end and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    records.append((message.key().decode(), message.value().decode()))
                    position = message.offset() + 1
        return records
    finally:
        consumer.close()


def stored_offset(bootstrap: str) -> int:
    """The counter's last source offset in the worker's offsets topic, read from the broker."""
    key = json.dumps(["counter", {"counter": "counter"}], separators=(",", ":"))
    values = [json.loads(value)["next"] for k, value in read_topic(bootstrap, "connect-offsets", 2)
              if k == key]
    return int(values[-1])


def cleanup_policies(bootstrap: str, topics: list[str]) -> dict[str, str]:
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in topics])
    return {resource.name: future.result(10)["cleanup.policy"].value for resource, future in futures.items()}


@pytest.fixture(params=["akfak", pytest.param("kafka", marks=pytest.mark.slow)])
def bootstrap(request: pytest.FixtureRequest, broker_process: Any) -> str:
    build()
    if request.param == "kafka":
        return str(request.getfixturevalue("kafka_peer").bootstrap)
    return str(broker_process("-o", "group.initial.rebalance.delay.ms=0").bootstrap)


def test_source_connector_survives_a_worker_restart(bootstrap: str, tmp_path: Path) -> None:
    """A source connector writes 3,000 records; the worker is restarted (SIGTERM, then a new
    JVM on the same topics) once it has stored an offset past 500. The new worker reads the
    connector's config, its offset and its status back from the broker and goes on from the
    stored offset: the topic holds records 0..2999 in order, at most replaying the records after
    the last stored offset (at-least-once), and the stored offset ends at 3000."""
    worker = Worker(bootstrap, tmp_path / "worker-1")
    try:
        config = worker.request("PUT", "/connectors/counter/config", CONNECTOR)["config"]
        assert config == {**CONNECTOR, "name": "counter"}
        poll_until(lambda: worker.stored_next("counter") >= 500, 60, 0.1, "a stored offset past 500")
    finally:
        assert worker.stop() in (0, 143), worker.log()
    before_restart = len(read_topic(bootstrap, "counted"))
    assert before_restart < RECORDS  # the restart does fall mid-stream
    resumed_from = stored_offset(bootstrap)
    assert 500 <= resumed_from <= before_restart
    internal = ["connect-configs", "connect-offsets", "connect-status"]
    assert cleanup_policies(bootstrap, internal) == dict.fromkeys(internal, "compact")

    worker = Worker(bootstrap, tmp_path / "worker-2")
    try:
        assert worker.get("/connectors") == ["counter"]
        assert worker.get("/connectors/counter/config") == {**CONNECTOR, "name": "counter"}
        poll_until(lambda: worker.running("counter"), 60, 0.2, "the connector and its task RUNNING")
        poll_until(lambda: worker.stored_next("counter") == RECORDS, 60, 0.2, "the stored offset at the end")
    finally:
        assert worker.stop() in (0, 143), worker.log()

    values = [value for _, value in read_topic(bootstrap, "counted")]
    replayed = before_restart - resumed_from
    assert values == [f"record-{i}" for i in range(before_restart)] + [
        f"record-{i}" for i in range(resumed_from, RECORDS)], (before_restart, resumed_from)
    assert replayed < 500, replayed
