"""Several akfak brokers over one PostgreSQL (akfak/cluster.py), driven by confluent-kafka:

- the live brokers and the controller in Metadata; a topic with replication factor 3 has
  its leaders spread over the three; produce and consume through any broker (clients are
  re-routed to the leaders); auto-creation through a broker that is not the controller;
- kill -9 of a leader while idempotent acks=all producers run: its partitions move to the
  others within the lease, and every acknowledged record is in the log once, in order;
- fencing: a deposed leader's appends are refused by the epoch in the partition row.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest

from tests.cluster import SESSION_MS, AkfakCluster, Load

TIMEOUT = 30


@pytest.fixture(scope="module")
def cluster(akfak_cluster: Any) -> AkfakCluster:
    return akfak_cluster(3)


def admin(cluster: AkfakCluster) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": cluster.bootstrap})


def create(cluster: AkfakCluster, topic: str, partitions: int, rf: int = 3) -> None:
    """Create a topic, retried while the controller has not seen a restarted broker yet."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    client = admin(cluster)
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            client.create_topics([NewTopic(topic, partitions, rf)])[topic].result(TIMEOUT)
            return
        except KafkaException as e:
            if (e.args[0].code() != KafkaError.INVALID_REPLICATION_FACTOR
                    or time.monotonic() > deadline):
                raise
            time.sleep(0.2)


def wait_leaders(cluster: AkfakCluster, topic: str, avoid: int | None = None) -> dict[int, int]:
    """Partition -> leader once every partition has a live leader (not `avoid`)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        leaders = cluster.leaders(topic)
        live = cluster.live()
        if leaders and all(v in live and v != avoid for v in leaders.values()):
            return leaders
        assert time.monotonic() < deadline, f"leaders of {topic}: {leaders}, live {live}"
        time.sleep(0.1)


def create_placed(cluster: AkfakCluster, topic: str, replicas: list[int]) -> None:
    """A one-partition topic on `replicas` (the first leads it)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic

    spec = NewTopic(topic, num_partitions=1, replication_factor=-1, replica_assignment=[replicas])
    client = admin(cluster)
    deadline = time.monotonic() + TIMEOUT
    while True:  # until the controller has seen every broker registered (a tick)
        try:
            client.create_topics([spec])[topic].result(TIMEOUT)
            break
        except KafkaException as e:
            assert e.args[0].code() == KafkaError.INVALID_REPLICA_ASSIGNMENT, e
            assert time.monotonic() < deadline, e
            time.sleep(0.2)
    assert wait_leaders(cluster, topic) == {0: replicas[0]}


def producer(bootstrap: str, **extra: Any) -> Any:
    from confluent_kafka import Producer

    return Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                     "linger.ms": 2, "message.timeout.ms": 60000, **extra})


def consume_all(bootstrap: str, topic: str, partitions: int, expected: int) -> dict[int, list]:
    """partition -> values, read from the beginning until `expected` records came."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: dict[int, list] = defaultdict(list)
    deadline = time.monotonic() + TIMEOUT
    try:
        while sum(map(len, got.values())) < expected and time.monotonic() < deadline:
            for m in consumer.consume(500, 0.5):
                if m.error() is None:
                    got[m.partition()].append(m.value())
        # anything beyond what was expected (a duplicate) shows up here
        for m in consumer.consume(500, 1.0):
            if m.error() is None:
                got[m.partition()].append(m.value())
    finally:
        consumer.close()
    return got


def test_brokers_and_leaders_spread(cluster: AkfakCluster) -> None:
    from confluent_kafka.admin import AdminClient

    # a broker's Metadata lists another once it replayed that one's registration (a tick)
    client = AdminClient({"bootstrap.servers": cluster.address(2)})
    deadline = time.monotonic() + TIMEOUT
    md = client.list_topics(timeout=TIMEOUT)
    while sorted(md.brokers) != [1, 2, 3] and time.monotonic() < deadline:
        time.sleep(0.2)
        md = client.list_topics(timeout=TIMEOUT)
    assert sorted(md.brokers) == [1, 2, 3]
    assert {b.port for b in md.brokers.values()} == set(cluster.ports.values())
    assert md.controller_id == cluster.controller()
    create(cluster, "spread", 6)
    leaders = wait_leaders(cluster, "spread")
    assert sorted(leaders.values()) == [1, 1, 2, 2, 3, 3]
    md = admin(cluster).list_topics("spread", timeout=TIMEOUT)
    for p in md.topics["spread"].partitions.values():
        assert sorted(p.replicas) == [1, 2, 3]
        assert p.leader == leaders[p.id]


def test_produce_and_consume_through_any_broker(cluster: AkfakCluster) -> None:
    create(cluster, "anywhere", 3)
    wait_leaders(cluster, "anywhere")
    for node in cluster.ports:
        p = producer(cluster.address(node))
        for i in range(30):
            p.produce("anywhere", f"{node}-{i}".encode(), partition=i % 3)
        assert p.flush(TIMEOUT) == 0
    got = consume_all(cluster.address(3), "anywhere", 3, 90)
    assert sorted(v for vs in got.values() for v in vs) == sorted(
        f"{n}-{i}".encode() for n in cluster.ports for i in range(30))


def test_auto_create_through_a_broker_that_is_not_the_controller(
        cluster: AkfakCluster) -> None:
    """Metadata's auto-creation on a broker that is not the controller: that broker asks the
    controller and answers UNKNOWN_TOPIC_OR_PARTITION meanwhile (as Kafka's brokers forward
    CreateTopics), and the topic appears; a producer bootstrapped on that broker alone
    delivers to a new topic (librdkafka's 0103 fenced_txn produced to an auto-created
    topic and waited forever on NOT_CONTROLLER)."""
    import importlib
    import uuid

    from kio.schema.errors import ErrorCode

    from tests.wire import WireClient

    other = next(n for n in cluster.ports if n != cluster.controller())
    m = importlib.import_module("kio.schema.metadata.v12.request")

    def ask(topic: str) -> Any:
        request = m.MetadataRequest(
            topics=(m.MetadataRequestTopic(name=topic, topic_id=uuid.UUID(int=0)),),
            allow_auto_topic_creation=True, include_topic_authorized_operations=False)
        with WireClient(cluster.ports[other], timeout=TIMEOUT) as client:
            return client.request(request).topics[0]

    assert ask("auto-raw").error_code == ErrorCode.unknown_topic_or_partition
    deadline = time.monotonic() + TIMEOUT
    while (answer := ask("auto-raw")).error_code != ErrorCode.none:
        assert answer.error_code == ErrorCode.unknown_topic_or_partition
        assert time.monotonic() < deadline, "the controller did not create it"
        time.sleep(0.1)
    assert len(answer.partitions) == 1  # num.partitions

    p = producer(cluster.address(other))
    for i in range(5):
        p.produce("auto-client", f"v{i}".encode())
    assert p.flush(TIMEOUT) == 0
    assert sorted(consume_all(cluster.bootstrap, "auto-client", 1, 5)[0]) == [
        f"v{i}".encode() for i in range(5)]


def test_manual_assignments_name_the_other_brokers(cluster: AkfakCluster) -> None:
    """CreateTopics and CreatePartitions with replica assignments naming every broker
    (librdkafka's 0081 admin test): accepted, with those replicas."""
    from confluent_kafka.admin import NewPartitions, NewTopic

    client = admin(cluster)
    client.create_topics([NewTopic("manual", replica_assignment=[[1, 2, 3], [2, 3, 1]],
                                   num_partitions=2)]
                         )["manual"].result(TIMEOUT)
    client.create_partitions([NewPartitions("manual", 3, [[3, 1, 2]])])["manual"].result(
        TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while len(parts := client.list_topics("manual", timeout=TIMEOUT).topics["manual"]
              .partitions) < 3:
        assert time.monotonic() < deadline, parts
        time.sleep(0.1)
    assert {i: p.replicas for i, p in parts.items()} == {
        0: [1, 2, 3], 1: [2, 3, 1], 2: [3, 1, 2]}


def test_kill_leader_under_load(cluster: AkfakCluster) -> None:
    """kill -9 of the broker leading partitions 0 while two idempotent acks=all producers
    run: nothing acknowledged is lost or duplicated, order per partition holds, and the
    partitions have live leaders again within the lease (plus an election tick)."""
    topic, partitions = "failover", 4
    create(cluster, topic, partitions)
    victim = wait_leaders(cluster, topic)[0]
    load = Load(cluster.bootstrap, topic, partitions).start()
    time.sleep(1.5)
    cluster.kill(victim)
    killed = time.monotonic()
    leaders = wait_leaders(cluster, topic, avoid=victim)
    moved = time.monotonic() - killed
    time.sleep(1.5)
    total = load.finish()
    assert not load.errors, load.errors[:5]
    assert victim not in leaders.values()
    assert moved < SESSION_MS / 1000 + 5, moved
    assert total > 100
    load.check(consume_all(cluster.bootstrap, topic, partitions, total))
    cluster.restart(victim)


def test_kip951_leader_hints_off_the_leader(cluster: AkfakCluster) -> None:
    """Produce v10 and Fetch v16 sent to a broker that does not lead the partition answer
    NOT_LEADER_OR_FOLLOWER with the current leader and its endpoint (KIP-951)."""
    from kio.schema.errors import ErrorCode

    from tests.recordbatch import make_batch
    from tests.requests import fetch, produce
    from tests.wire import WireClient

    create(cluster, "hints", 1)
    leader = wait_leaders(cluster, "hints")[0]
    (epoch, topic_id) = cluster.query_rows(
        "SELECT leader_epoch, topic_id FROM akfak_partition WHERE topic = 'hints'")[0]
    other = next(n for n in cluster.ports if n != leader)
    deadline = time.monotonic() + TIMEOUT
    with WireClient(cluster.ports[other]) as client:
        while True:  # the other broker knows the election once it replayed it
            produced = client.request(produce("hints", {0: make_batch([(None, b"v", None, 0)])},
                                              acks=-1, version=10))
            answer = produced.responses[0].partition_responses[0]
            if answer.current_leader.leader_id == leader or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        fetched = client.request(fetch({topic_id: {0: 0}}, version=16))
    assert answer.error_code == ErrorCode.not_leader_or_follower
    assert (answer.current_leader.leader_id, answer.current_leader.leader_epoch) == (leader, epoch)
    assert [(e.node_id, e.port) for e in produced.node_endpoints] == [
        (leader, cluster.ports[leader])]
    part = fetched.responses[0].partitions[0]
    assert part.error_code == ErrorCode.not_leader_or_follower
    assert part.current_leader.leader_id == leader
    assert [(e.node_id, e.port) for e in fetched.node_endpoints] == [
        (leader, cluster.ports[leader])]
