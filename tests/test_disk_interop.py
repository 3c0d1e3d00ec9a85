"""The disk format both ways with a real Kafka 4.1.1 broker (tests/kafka_peer.py): akfak serves a
directory Kafka stopped cleanly (controlled shutdown leaves every partition leaderless) or was
killed in (kill -9), and Kafka opens a directory akfak wrote at the metadata level akfak finalized."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    ConsumerGroupType,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from tests.kafka_peer import start_kafka
from tests.test_features import api_versions, finalized
from tests.wire import WireClient

pytestmark = [pytest.mark.jvm, pytest.mark.timeout(600)]


def fill(bootstrap: str, topic: str, first: int, count: int) -> None:
    """`count` records value-i (i from `first`) round robin over two partitions, idempotently;
    and a committed transaction of one record per partition."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(first, first + count):
        producer.produce(topic, f"value-{i}".encode(), key=f"key-{i}".encode(), partition=i % 2)
    assert producer.flush(30) == 0
    txn = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-{first}"})
    txn.init_transactions(30)
    txn.begin_transaction()
    for p in range(2):
        txn.produce(topic, f"txn-{first}-{p}".encode(), partition=p)
    txn.commit_transaction(30)


def commit_offsets(bootstrap: str, topic: str, group: str, offsets: dict[int, int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                        asynchronous=False)
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, group: str, count: int) -> tuple[list[str], dict[int, int]]:
    """`count` committed values of `topic` (read_committed, from the start), then whatever else
    arrives within a second, and `group`'s committed offsets."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{group}-reader",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    seen: list[str] = []
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
        deadline = time.monotonic() + 60
        quiet_until = None
        while time.monotonic() < deadline and (quiet_until is None or time.monotonic() < quiet_until):
            message = consumer.poll(0.1)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            seen.append(message.value().decode())
            if len(seen) >= count and quiet_until is None:
                quiet_until = time.monotonic() + 1.0
        offsets = {tp.partition: tp.offset for tp in Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group}).committed(
            [TopicPartition(topic, p) for p in range(2)], timeout=30)}
    finally:
        consumer.close()
    return seen, offsets


def member_reads(bootstrap: str, topic: str, group: str, count: int) -> list[str]:
    """A group.protocol=consumer (KIP-848) member of `group` on `topic`: `count` values from the
    committed offsets (or the start), committed, then it closes (leaving the group)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "group.protocol": "consumer",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    seen: list[str] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(seen) < count and time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is None:
                continue
            if message.error():
                raise KafkaException(message.error())
            seen.append(message.value().decode())
        assert len(seen) == count, f"{group} read {len(seen)} of {count} values of {topic} in 60 s"
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return seen


def consumer_group(bootstrap: str, topic: str,
                   group: str) -> tuple[ConsumerGroupType, ConsumerGroupState, dict[int, int]]:
    """`group`'s type and state (confluent-kafka's describe: ConsumerGroupDescribe) and its
    committed offsets on `topic`, retried while the coordinator loads the group."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + 30
    while True:
        try:
            described = admin.describe_consumer_groups([group])[group].result(30)
            listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(
                group, [TopicPartition(topic, p) for p in range(2)])])[group].result(30)
            break
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    offsets = {tp.partition: tp.offset for tp in listed.topic_partitions}
    return described.type, described.state, offsets


def moves_consumer_group(source: str, topic: str, group: str) -> Callable[[str], None]:
    """The first half of a KIP-848 group's move between brokers: on `source`, a member reads 10 of
    the 22 values of `topic` (fill), commits and leaves. The function returned checks the
    destination: the group there is an Empty `consumer` group with the same committed offsets, and
    a member rejoining reads exactly the 12 values left."""
    first = member_reads(source, topic, group, 10)
    _, _, committed = consumer_group(source, topic, group)
    assert max(committed.values()) > 0, committed  # a partition fetched later may have none (-1001)

    def check(destination: str) -> None:
        kind, state, offsets = consumer_group(destination, topic, group)
        assert (kind, state) == (ConsumerGroupType.CONSUMER, ConsumerGroupState.EMPTY)
        assert offsets == committed
        rest = member_reads(destination, topic, group, 12)
        assert sorted(first + rest) == expected_values([(0, 20)])
    return check


def expected_values(batches: list[tuple[int, int]]) -> list[str]:
    values: list[str] = []
    for first, count in batches:
        values += [f"value-{i}" for i in range(first, first + count)]
        values += [f"txn-{first}-{p}" for p in range(2)]
    return sorted(values)


def create(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result(30)


def test_akfak_serves_a_directory_kafka_stopped_cleanly(tmp_path: Path, broker_process: Any) -> None:
    kafka = start_kafka(tmp_path / "kafka")
    try:
        create(kafka.bootstrap, "moved")
        fill(kafka.bootstrap, "moved", 0, 20)
        commit_offsets(kafka.bootstrap, "moved", "g", {0: 7, 1: 5})
        consumer_group_there = moves_consumer_group(kafka.bootstrap, "moved", "cg")
    finally:
        assert kafka.stop() in (0, 143)  # SIGTERM: a controlled shutdown
    data = tmp_path / "copy"
    shutil.copytree(tmp_path / "kafka" / "kraft-logs", data)

    akfak = broker_process(data_dir=data)
    seen, offsets = read_all(akfak.bootstrap, "moved", "g", 22)
    assert sorted(seen) == expected_values([(0, 20)])
    assert offsets == {0: 7, 1: 5}
    consumer_group_there(akfak.bootstrap)
    fill(akfak.bootstrap, "moved", 20, 10)  # and it keeps appending
    seen, _ = read_all(akfak.bootstrap, "moved", "g", 34)
    assert sorted(seen) == expected_values([(0, 20), (20, 10)])
    with WireClient(akfak.port) as c:  # the directory keeps the levels Kafka finalized
        levels = finalized(api_versions(c))
    assert levels["metadata.version"] == 27 and levels["transaction.version"] == 2
    # moved-0/1 and the internal topics' partitions (3 + 3 on the Kafka peer)
    assert "Registered again and elected this node for 8 leaderless partitions" in akfak.log()


def test_akfak_serves_a_directory_kafka_was_killed_in(tmp_path: Path, broker_process: Any) -> None:
    """kill -9: no controlled shutdown, so the partitions keep their leader (this node) and the
    segments their unflushed tails past the recovery point, which akfak recovers."""
    kafka = start_kafka(tmp_path / "kafka")
    try:
        create(kafka.bootstrap, "killed")
        fill(kafka.bootstrap, "killed", 0, 20)
        commit_offsets(kafka.bootstrap, "killed", "g", {0: 4, 1: 6})
    finally:
        kafka.proc.kill()
        assert kafka.proc.wait(30) == -9
    data = tmp_path / "copy"
    shutil.copytree(tmp_path / "kafka" / "kraft-logs", data)

    akfak = broker_process(data_dir=data)
    seen, offsets = read_all(akfak.bootstrap, "killed", "g", 22)
    assert sorted(seen) == expected_values([(0, 20)])
    assert offsets == {0: 4, 1: 6}
    fill(akfak.bootstrap, "killed", 20, 10)  # and it keeps appending
    seen, _ = read_all(akfak.bootstrap, "killed", "g", 34)
    assert sorted(seen) == expected_values([(0, 20), (20, 10)])
    with WireClient(akfak.port) as c:
        assert finalized(api_versions(c))["metadata.version"] == 27
    assert "leaderless partitions" not in akfak.log()  # nothing to elect: Kafka still led them


def test_kafka_opens_a_directory_akfak_wrote(tmp_path: Path, broker_process: Any) -> None:
    data = tmp_path / "akfak"
    akfak = broker_process(data_dir=data)
    create(akfak.bootstrap, "back")
    fill(akfak.bootstrap, "back", 0, 20)
    commit_offsets(akfak.bootstrap, "back", "g", {0: 3, 1: 9})
    consumer_group_there = moves_consumer_group(akfak.bootstrap, "back", "cg")
    assert akfak.stop() in (0, -15, 143)  # SIGTERM: twistd re-raises it
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)

    kafka = start_kafka(tmp_path / "kafka", log_dir=copy)
    try:
        with WireClient(kafka.port) as c:
            levels = finalized(api_versions(c))
        assert {k: v for k, v in levels.items() if k != "kraft.version"} == {
            "metadata.version": 27, "group.version": 1, "transaction.version": 2,
            "eligible.leader.replicas.version": 1}
        seen, offsets = read_all(kafka.bootstrap, "back", "g", 22)
        assert sorted(seen) == expected_values([(0, 20)])
        assert offsets == {0: 3, 1: 9}
        consumer_group_there(kafka.bootstrap)
        fill(kafka.bootstrap, "back", 20, 4)
    finally:
        kafka.stop()
    assert "ERROR" not in "\n".join(line for line in kafka.log().splitlines()
                                    if "kafka.Kafka" in line or "Fatal" in line)
