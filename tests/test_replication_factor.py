"""`akfak.accept.any.replication.factor`: test brokers (akfak.testing, on by default) accept
the replication factor 3 that test suites written for a three-broker cluster ask for; the topic
gets this node as its one replica, and Metadata and DescribeConfigs say so.  The daemon keeps
Kafka's answer (INVALID_REPLICATION_FACTOR), as a one-node Kafka does."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic

TIMEOUT = 30


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def test_the_daemon_refuses_a_replication_factor_above_one(broker_process: Any) -> None:
    broker = broker_process()
    client = admin(broker.bootstrap)
    future = client.create_topics([NewTopic("rf3", 1, 3)])["rf3"]
    with pytest.raises(KafkaException) as raised:
        future.result(TIMEOUT)
    error = raised.value.args[0]
    assert error.name() == "INVALID_REPLICATION_FACTOR"
    assert "only 1 broker(s) are registered" in error.str()


def test_opted_in_a_replication_factor_of_three_gets_one_replica(broker_process: Any) -> None:
    broker = broker_process("--override", "akfak.accept.any.replication.factor=true",
                            "--override", "default.replication.factor=3")
    client = admin(broker.bootstrap)
    client.create_topics([NewTopic("rf3", 2, 3), NewTopic("rf-default", 1)])["rf3"].result(TIMEOUT)
    metadata = client.list_topics(timeout=TIMEOUT)
    for topic, partitions in (("rf3", 2), ("rf-default", 1)):
        described = metadata.topics[topic]
        assert sorted(described.partitions) == list(range(partitions))
        for partition in described.partitions.values():
            assert (partition.leader, partition.replicas, partition.isrs) == (1, [1], [1])
    # More partitions keep the one replica; acks=all is satisfied by it.
    client.create_partitions([NewPartitions("rf3", 3)])["rf3"].result(TIMEOUT)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for partition in range(3):
        producer.produce("rf3", value=b"v%d" % partition, partition=partition)
    assert producer.flush(TIMEOUT) == 0
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "rf",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe(["rf3"])
    values = set()
    while len(values) < 3:
        message = consumer.poll(TIMEOUT)
        assert message is not None and message.error() is None
        values.add(message.value())
    consumer.close()
    assert values == {b"v0", b"v1", b"v2"}
    # The switch is a (read-only) broker config like any other.
    (described,) = client.describe_configs([ConfigResource("BROKER", "1")]).values()
    entry = described.result(TIMEOUT)["akfak.accept.any.replication.factor"]
    assert (entry.value, entry.is_read_only) == ("true", True)


def test_test_brokers_accept_any_replication_factor(akfak_broker: Any) -> None:
    client = admin(akfak_broker.bootstrap_servers)
    client.create_topics([NewTopic("suite-topic", 3, 3)])["suite-topic"].result(TIMEOUT)
    partitions = client.list_topics(timeout=TIMEOUT).topics["suite-topic"].partitions
    assert [p.replicas for p in partitions.values()] == [[1], [1], [1]]
