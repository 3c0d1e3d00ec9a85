"""Group and transaction coordinators in a cluster of akfak brokers (akfak/cluster.py):

- FindCoordinator, on any broker, answers the leader of the key's partition of
  `__consumer_offsets` / `__transaction_state` (created with replication factor 3), and
  the other brokers answer NOT_COORDINATOR for that key;
- a consumer group (classic and KIP-848) keeps its committed offsets across kill -9 of its
  coordinator, and consumes everything produced;
- transactional offsets for a group coordinated by another broker than the transactional
  id (the group coordinator verifies with the transaction coordinator);
- a transactional producer continues across kill -9 of its coordinator: every
  transaction whose commit returned is read whole by a read_committed consumer, and no
  record of another transaction is read;
- over raw sockets, a transaction version 2 Produce (v12) that opens the next transaction
  while the coordinator still writes the last one's markers: its partition leader (the
  coordinator itself, or another broker) retries CONCURRENT_TRANSACTIONS for 100 ms before
  answering it, a v11 Produce gets NOT_ENOUGH_REPLICAS at once, and once the markers are
  written the next transaction goes through.
"""

from __future__ import annotations

import importlib
import signal
import time
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from kio.static.primitive import i8

from akfak.groups.records import partition_for
from tests.cluster import AkfakCluster
from tests.requests import produce
from tests.test_cluster import TIMEOUT, admin, create, create_placed, wait_leaders
from tests.test_idempotence import batch, init_producer_id
from tests.test_transactions_protocol import end_txn
from tests.wire import WireClient

OFFSETS_PARTITIONS = 6  # tests/cluster.py: offsets.topic.num.partitions
TXN_PARTITIONS = 3


@pytest.fixture(scope="module")
def cluster(akfak_cluster: Any) -> AkfakCluster:
    return akfak_cluster(3)


def find_coordinator(port: int, key: str, key_type: int = 0) -> Any:
    m = importlib.import_module("kio.schema.find_coordinator.v4.request")
    with WireClient(port, timeout=TIMEOUT) as client:
        response = client.request(m.FindCoordinatorRequest(key_type=i8(key_type),
                                                           coordinator_keys=(key,)))
    return response.coordinators[0]


def coordinator_of(cluster: AkfakCluster, key: str, key_type: int = 0) -> int:
    """The broker leading the key's partition, as the partition rows say (once live)."""
    topic, n = (("__consumer_offsets", OFFSETS_PARTITIONS) if key_type == 0
                else ("__transaction_state", TXN_PARTITIONS))
    return wait_leaders(cluster, topic)[partition_for(key, n)]


def restart_dead(cluster: AkfakCluster) -> None:
    for node, broker in cluster.brokers.items():
        if broker.proc.poll() is not None:
            cluster.restart(node)


def test_find_coordinator_answers_the_partition_leader(cluster: AkfakCluster) -> None:
    found = find_coordinator(cluster.ports[1], "g-find")
    assert found.error_code == ErrorCode.none
    leader = coordinator_of(cluster, "g-find")
    md = importlib.import_module("kio.schema.offset_fetch.v7.request")
    for node, port in cluster.ports.items():
        # every broker knows the leader once it replayed the election (a tick)
        deadline = time.monotonic() + TIMEOUT
        while (entry := find_coordinator(port, "g-find")).node_id != leader:
            assert time.monotonic() < deadline, (node, entry)
            time.sleep(0.1)
        assert (entry.host, entry.port) == ("127.0.0.1", cluster.ports[leader])
        with WireClient(port) as client:
            fetched = client.request(md.OffsetFetchRequest(group_id="g-find", topics=None,
                                                           require_stable=False))
        want = ErrorCode.none if node == leader else ErrorCode.not_coordinator
        assert fetched.error_code == want, node
    txn = find_coordinator(cluster.ports[2], "t-find", key_type=1)
    assert txn.error_code == ErrorCode.none
    assert txn.node_id == coordinator_of(cluster, "t-find", key_type=1)
    # the coordinator topics have three replicas each, so they can move
    md = admin(cluster).list_topics(timeout=TIMEOUT)
    for name, count in (("__consumer_offsets", OFFSETS_PARTITIONS),
                        ("__transaction_state", TXN_PARTITIONS)):
        parts = md.topics[name].partitions
        assert len(parts) == count
        assert all(sorted(p.replicas) == [1, 2, 3] for p in parts.values()), {
            i: p.replicas for i, p in parts.items()}


def test_txn_offsets_for_a_group_coordinated_elsewhere(cluster: AkfakCluster) -> None:
    """send_offsets_to_transaction for a group whose coordinator is not the transactional
    id's: the group coordinator verifies the transaction with the other broker (as Kafka's
    AddPartitionsToTxnManager); the offset is committed with the transaction, and an aborted
    one is not (librdkafka's 0103 consumer_producer_txn got NOT_COORDINATOR until its
    timeout)."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    for key_type in (0, 1):  # the coordinator topics exist
        find_coordinator(cluster.ports[1], "probe", key_type)
    txn_id, topic = "txo-txn", "txo"
    txn_node = coordinator_of(cluster, txn_id, key_type=1)
    group = next(g for g in (f"txo-group-{i}" for i in range(100))
                 if coordinator_of(cluster, g) != txn_node)
    create(cluster, topic, 1)
    wait_leaders(cluster, topic)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": txn_id})
    p.init_transactions(TIMEOUT)
    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        for offset, commit_it in ((42, True), (50, False)):
            p.begin_transaction()
            p.produce(topic, b"x", partition=0)
            p.send_offsets_to_transaction([TopicPartition(topic, 0, offset)],
                                          consumer.consumer_group_metadata(), TIMEOUT)
            if commit_it:
                p.commit_transaction(TIMEOUT)
            else:
                p.abort_transaction(TIMEOUT)
            # OffsetFetch answers once the markers are written (require_stable)
            deadline = time.monotonic() + TIMEOUT
            while (got := consumer.committed([TopicPartition(topic, 0)], 10)[0].offset) != 42:
                assert time.monotonic() < deadline, got
                time.sleep(0.2)
    finally:
        consumer.close()


def commit(consumer: Any) -> None:
    """A synchronous commit, retried while the coordinator moves."""
    from confluent_kafka import KafkaException

    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            consumer.commit(asynchronous=False)
            return
        except KafkaException as e:
            if e.args[0].code() == -168:  # _NO_OFFSET: nothing new to commit
                return
            assert time.monotonic() < deadline, e
            time.sleep(0.2)


# the classic group's run is opt-in (AKFAK_SLOW=1), for the suite's budget
@pytest.mark.parametrize("protocol", [pytest.param("classic", marks=pytest.mark.slow), "consumer"])
def test_group_survives_coordinator_kill(cluster: AkfakCluster, protocol: str) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    topic, group, total = f"grouped-{protocol}", f"survivor-{protocol}", 300
    create(cluster, topic, 3)
    wait_leaders(cluster, topic)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
    for i in range(total):
        producer.produce(topic, f"{i:04d}".encode(), partition=i % 3)
    assert producer.flush(TIMEOUT) == 0
    extra = ({"group.protocol": "consumer"} if protocol == "consumer"
             else {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500})
    settings = {"bootstrap.servers": cluster.bootstrap, "group.id": group,
                "enable.auto.commit": False, "auto.offset.reset": "earliest", **extra}
    consumer = Consumer(settings)
    consumer.subscribe([topic])
    seen: set[bytes] = set()
    deadline = time.monotonic() + TIMEOUT
    while len(seen) < total // 2:
        assert time.monotonic() < deadline, len(seen)
        for m in consumer.consume(50, 0.5):
            if m.error() is None:
                seen.add(m.value())
    commit(consumer)
    before = {tp.partition: tp.offset for tp in consumer.committed(
        [TopicPartition(topic, p) for p in range(3)], TIMEOUT)}
    assert sum(max(o, 0) for o in before.values()) >= total // 2 - 50
    victim = coordinator_of(cluster, group)
    cluster.kill(victim)
    deadline = time.monotonic() + 60
    while len(seen) < total:
        assert time.monotonic() < deadline, f"{len(seen)} of {total} after the kill"
        for m in consumer.consume(50, 0.5):
            if m.error() is None:
                seen.add(m.value())
        commit(consumer)
    consumer.close()
    assert seen == {f"{i:04d}".encode() for i in range(total)}
    # A new member of the group starts where the group committed: the end of every partition.
    reader = Consumer(settings)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                after = {tp.partition: tp.offset for tp in reader.committed(
                    [TopicPartition(topic, p) for p in range(3)], 5)}
                if sum(after.values()) == total:
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert all(after[p] >= max(before[p], 0) for p in range(3))
    finally:
        reader.close()
        restart_dead(cluster)


def test_transactions_survive_coordinator_kill(cluster: AkfakCluster) -> None:
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    topic, txn_id, partitions = "transacted", "txn-survivor", 3
    create(cluster, topic, partitions)
    wait_leaders(cluster, topic)

    def new_producer() -> Any:
        p = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": txn_id,
                      "transaction.timeout.ms": 20000, "linger.ms": 1})
        deadline = time.monotonic() + 60
        while True:
            try:
                p.init_transactions(10)
                return p
            except KafkaException as e:
                assert time.monotonic() < deadline, e
                time.sleep(0.5)

    producer = new_producer()
    committed: list[int] = []
    aborted: list[int] = []
    victim = None
    started = time.monotonic()
    n = 0
    while len(committed) < 40:
        assert time.monotonic() - started < 120, (committed, aborted)
        if n == 10:  # kill the coordinator between the 10th and the 11th transaction
            victim = coordinator_of(cluster, txn_id, key_type=1)
            cluster.kill(victim)
        try:
            producer.begin_transaction()
            for i in range(6):
                producer.produce(topic, f"{n:03d}-{i}".encode(), partition=i % partitions)
            producer.commit_transaction(30)
            committed.append(n)
        except KafkaException as e:
            error = e.args[0]
            if error.txn_requires_abort():
                try:
                    producer.abort_transaction(30)
                except KafkaException:
                    producer = new_producer()
            elif error.retriable():
                try:
                    producer.commit_transaction(30)
                    committed.append(n)
                except KafkaException:
                    producer = new_producer()
            else:
                producer = new_producer()
            if n not in committed:
                aborted.append(n)
        n += 1
    assert victim is not None
    reader = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "txn-reader",
                       "isolation.level": "read_committed", "enable.auto.commit": False,
                       "auto.offset.reset": "earliest"})
    reader.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: dict[int, list[str]] = {}
    deadline = time.monotonic() + 60
    try:
        while sum(map(len, got.values())) < 6 * len(committed) and time.monotonic() < deadline:
            for m in reader.consume(100, 0.5):
                if m.error() is None:
                    txn, _, i = m.value().decode().partition("-")
                    got.setdefault(int(txn), []).append(i)
        for m in reader.consume(100, 1.0):
            if m.error() is None:
                txn, _, i = m.value().decode().partition("-")
                got.setdefault(int(txn), []).append(i)
    finally:
        reader.close()
        restart_dead(cluster)
    for txn in committed:
        assert sorted(got.get(txn, [])) == [str(i) for i in range(6)], txn
    for txn, records in got.items():
        # a transaction whose commit did not return may have committed; never partly
        assert sorted(records) == [str(i) for i in range(6)], txn


def test_tv2_produce_waits_out_the_last_commits_markers(cluster: AkfakCluster) -> None:
    txn_id = "tv2-next"
    deadline = time.monotonic() + TIMEOUT  # the first lookup creates __transaction_state
    while (found := find_coordinator(cluster.ports[1], txn_id, 1)).error_code != ErrorCode.none:
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
    coordinator = coordinator_of(cluster, txn_id, key_type=1)
    stalled, other = sorted(set(cluster.ports) - {coordinator})
    # one partition on the broker whose markers will stall, one on another broker (remote
    # verification), one on the coordinator (verified where it is)
    leaders = {"tv2-stalled": stalled, "tv2-remote": other, "tv2-local": coordinator}
    for topic, node in leaders.items():
        create_placed(cluster, topic, [node])

    def send(topic: str, epoch: int, seq: int, version: int = 12) -> Any:
        with WireClient(cluster.ports[leaders[topic]], timeout=TIMEOUT) as c:
            response = c.request(produce(topic, {0: batch(pid, epoch, seq, transactional=True)},
                                         acks=-1, version=version, transactional_id=txn_id))
        return response.responses[0].partition_responses[0]

    with WireClient(cluster.ports[coordinator], timeout=TIMEOUT) as c:
        init = c.request(init_producer_id(txn_id))
        assert init.error_code == ErrorCode.none, init
        pid, epoch = int(init.producer_id), int(init.producer_epoch)
        for topic in leaders:
            assert send(topic, epoch, 0).error_code == ErrorCode.none, topic
        cluster.kill(stalled, signal.SIGSTOP)  # its marker waits: the commit stays Prepare
        try:
            ended = c.request(end_txn(txn_id, pid, epoch, True, version=5))
            assert (ended.error_code, int(ended.producer_epoch)) == (ErrorCode.none, epoch + 1)
            for topic in ("tv2-remote", "tv2-local"):
                started = time.monotonic()
                busy = send(topic, epoch + 1, 0)
                assert busy.error_code == ErrorCode.concurrent_transactions, (topic, busy)
                assert time.monotonic() - started >= 0.1, topic  # retried by the leader first
            old = send("tv2-remote", epoch + 1, 0, version=11)
            assert (old.error_code, old.error_message) == (
                ErrorCode.not_enough_replicas, "Unable to verify the partition has been added "
                "to the transaction. Underlying error: CONCURRENT_TRANSACTIONS")
        finally:
            cluster.kill(stalled, signal.SIGCONT)
        deadline = time.monotonic() + TIMEOUT
        while (answer := send("tv2-remote", epoch + 1, 0)).error_code != ErrorCode.none:
            assert answer.error_code == ErrorCode.concurrent_transactions, answer
            assert time.monotonic() < deadline, answer
        ended = c.request(end_txn(txn_id, pid, epoch + 1, True, version=5))
        assert (ended.error_code, int(ended.producer_epoch)) == (ErrorCode.none, epoch + 2)
