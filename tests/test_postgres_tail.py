"""The postgres provider's bounded tail cache, with confluent-kafka (librdkafka): partitions
many times larger than akfak.postgres.cache.bytes.per.partition (256 KiB here, 2 MiB of
data) read from offset 0, read_committed over old aborted transactions, timestamps of old
records, and a new leader (after a restart, after a kill -9 in a cluster) that loads only
about the budget; a consumer of many old partitions through a small read-back cache whose
reads are all prepared off the reactor.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import free_port, start_process
from tests.clients import CLIENT_TIMEOUT_MS, T0, poll_until
from tests.postgres import PostgresServer
from tests.test_metrics import get, parse
from tests.test_metrics import value as sample

BUDGET = 256 * 1024
RECORDS = 2048
VALUE = 1000  # bytes: RECORDS * VALUE is 8 budgets
LOADED = re.compile(r"(\S+): .*offsets \[(\d+), (\d+)\), (\d+) bytes loaded "
                    r"\(cached from offset (\d+)\)")


def value(i: int) -> bytes:
    return b"%06d" % i + b"." * (VALUE - 6)


def produce(bootstrap: str, topic: str, start: int = 0, count: int = RECORDS,
            partition: int = 0) -> None:
    import confluent_kafka

    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "acks": "all",
                                         "enable.idempotence": True, "linger.ms": 5,
                                         "batch.size": 16384,
                                         "socket.timeout.ms": CLIENT_TIMEOUT_MS})
    for i in range(start, start + count):
        producer.produce(topic, value=value(i), partition=partition, timestamp=T0 + i)
    assert producer.flush(60) == 0


def read_all(bootstrap: str, topic: str, count: int, partitions: int = 1, **config: Any
             ) -> list[bytes]:
    import confluent_kafka

    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "unused",
                                         "enable.auto.commit": False,
                                         "fetch.max.bytes": 128 * 1024,
                                         "message.max.bytes": 64 * 1024,
                                         "max.partition.fetch.bytes": 64 * 1024, **config})
    consumer.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list[bytes] = []

    def more() -> bool:
        for m in consumer.consume(500, 0.5):
            assert m.error() is None, m.error()
            got.append(m.value())
        return len(got) >= count

    try:
        poll_until(more, 60, what=f"{count} records of {topic}")
        time.sleep(0.2)
        got.extend(m.value() for m in consumer.consume(100, 0.3) if m.error() is None)
    finally:
        consumer.close()
    return got


def loaded_lines(log: Path, topic: str) -> list[tuple[int, int, int, int]]:
    """(log start, end, bytes loaded, cached from) of each load of topic-0 the log shows."""
    return [(int(m[2]), int(m[3]), int(m[4]), int(m[5]))
            for m in LOADED.finditer(log.read_text(errors="replace")) if m[1] == f"{topic}-0"]


def test_old_data_read_back(postgres: PostgresServer, tmp_path: Path) -> None:
    import confluent_kafka
    from confluent_kafka.admin import AdminClient, NewTopic

    url = postgres.new_database()
    log_path = tmp_path / "broker.log"
    args = ("--storage", url, "--node-id", "1",
            "-o", f"akfak.postgres.cache.bytes.per.partition={BUDGET}")
    broker = start_process(tmp_path / "unused", *args, log_path=log_path)
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        futures = admin.create_topics([NewTopic("big", 1, 1), NewTopic("txn", 1, 1)])
        for f in futures.values():
            f.result(30)
        produce(broker.bootstrap, "big")
        # Old transactions: aborted ones between committed ones, then enough data after
        # them that they are far below the cached tail.
        txn = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap,
                                        "transactional.id": "tail-txn"})
        txn.init_transactions(30)
        for commit, tag in ((True, b"kept"), (False, b"dropped"), (True, b"kept"),
                            (False, b"dropped")):
            txn.begin_transaction()
            for i in range(20):
                txn.produce("txn", value=tag + b"-%d" % i, partition=0)
            (txn.commit_transaction if commit else txn.abort_transaction)(30)
        produce(broker.bootstrap, "txn", 0, RECORDS)
        expected = [value(i) for i in range(RECORDS)]

        assert read_all(broker.bootstrap, "big", RECORDS) == expected
        committed = read_all(broker.bootstrap, "txn", 40 + RECORDS,
                             **{"isolation.level": "read_committed"})
        assert committed == [b"kept-%d" % i for i in range(20)] * 2 + expected

        broker.kill()
        broker = start_process(tmp_path / "unused", *args, log_path=log_path)
        # The restart loaded about the budget of each, the rest stays in PostgreSQL.
        for topic in ("big", "txn"):
            start, _end, loaded, cached = loaded_lines(log_path, topic)[-1]
            assert start == 0 and cached > 0 and loaded <= BUDGET + 64 * 1024, (topic, loaded)
        assert read_all(broker.bootstrap, "big", RECORDS) == expected
        assert read_all(broker.bootstrap, "txn", 40 + RECORDS,
                        **{"isolation.level": "read_committed"}) == committed
        # The timestamp of an old record, found by SQL.
        consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap,
                                             "group.id": "unused"})
        (found,) = consumer.offsets_for_times([confluent_kafka.TopicPartition("big", 0, T0 + 10)],
                                              30)
        consumer.close()
        assert found.offset == 10
        # The idempotent producer state of old batches came back too: the new producer's
        # appends go on at the end.
        produce(broker.bootstrap, "big", RECORDS, 10)
        assert read_all(broker.bootstrap, "big", RECORDS + 10)[-10:] == [
            value(i) for i in range(RECORDS, RECORDS + 10)]
    finally:
        broker.stop()


def test_failover_loads_only_the_tail(akfak_cluster: Any) -> None:
    cluster = akfak_cluster(2, properties={"akfak.postgres.cache.bytes.per.partition": str(BUDGET)})
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic("failover", 1, 2)])["failover"].result(30)
    produce(cluster.bootstrap, "failover")
    leader = cluster.leaders("failover")[0]
    cluster.kill(leader)
    other = next(n for n in cluster.ports if n != leader)
    log_path = cluster.base / f"broker-{other}.log"

    def took_over() -> bool:
        return bool(loaded_lines(log_path, "failover"))

    poll_until(took_over, 30, what="the new leader")
    start, end, loaded, cached = loaded_lines(log_path, "failover")[-1]
    assert (start, end) == (0, RECORDS) and cached > 0
    assert loaded <= BUDGET + 64 * 1024, loaded  # not the 2 MiB of the partition
    assert read_all(cluster.bootstrap, "failover", RECORDS) == [value(i) for i in range(RECORDS)]
    cluster.restart(leader)


@pytest.mark.slow  # opt-in (AKFAK_SLOW=1), for the suite's budget: the tests beside it read old data back too
def test_many_old_partitions_are_read_back_off_the_reactor(postgres: PostgresServer,
                                                           tmp_path: Path) -> None:
    """16 partitions of 512 KiB, each cached 64 KiB, read from offset 0 through a 256 KiB
    read-back cache: a fetch of all 16 (64 KiB each, 128 KiB in all) prepares only its
    128 KiB, and holds what it prepared for its read, so no read queries on the reactor
    (it did when every partition prepared its 64 KiB, pushing the first ones out)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    partitions, each = 16, 512
    http = free_port()
    broker = start_process(tmp_path / "unused", "--storage", postgres.new_database(),
                           "--node-id", "1", "--http", f"tcp:{http}:interface=127.0.0.1",
                           "-o", "akfak.postgres.cache.bytes.per.partition=65536",
                           "-o", "akfak.postgres.readback.bytes=262144")
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("wide", partitions, 1)])["wide"].result(30)
        for p in range(partitions):
            produce(broker.bootstrap, "wide", p * each, each, partition=p)
        got = read_all(broker.bootstrap, "wide", partitions * each, partitions)
        assert sorted(got) == [value(i) for i in range(partitions * each)]
        status, body = get(f"http://127.0.0.1:{http}/metrics")
        assert status == 200
        samples = parse(body.decode())
        prepared = sample(samples, "akfak_postgres_readback_queries_total", prepared="true")
        assert prepared >= partitions  # most of it came from PostgreSQL
        assert sample(samples, "akfak_postgres_readback_bytes_total") >= partitions * each * 700
        assert sample(samples, "akfak_postgres_readback_queries_total", prepared="false") == 0
    finally:
        broker.stop()


def test_coordinator_loads_and_the_console_read_old_data_off_the_reactor(
        postgres: PostgresServer, tmp_path: Path) -> None:
    """1500 offset commits of one group, far past a 64 KiB cache: after a restart the group
    coordinator replays its __consumer_offsets partition from PostgreSQL on a thread, the
    console's message browser reads old records the same way, and the reactor itself runs
    no read-back query."""
    import json
    import urllib.request

    import confluent_kafka
    from confluent_kafka.admin import AdminClient, NewTopic

    http = free_port()
    args = ("--storage", postgres.new_database(), "--node-id", "1",
            "--http", f"tcp:{http}:interface=127.0.0.1",
            "-o", "akfak.postgres.cache.bytes.per.partition=65536")
    broker = start_process(tmp_path / "unused", *args)
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("old", 1, 1)])["old"].result(30)
        produce(broker.bootstrap, "old")
        consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap,
                                             "group.id": "committer",
                                             "enable.auto.commit": False})
        for i in range(1, 1501):
            consumer.commit(offsets=[confluent_kafka.TopicPartition("old", 0, i, "m" * 100)],
                            asynchronous=False)
        consumer.close()
        broker.stop()
        broker = start_process(tmp_path / "unused", *args)

        consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap,
                                             "group.id": "committer"})
        (committed,) = consumer.committed([confluent_kafka.TopicPartition("old", 0)], 60)
        consumer.close()
        assert committed.offset == 1500
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/topics/old/partitions/0/"
                                    "records?offset=0&limit=3", timeout=30) as response:
            page = json.loads(response.read())
        assert [r["offset"] for r in page["records"]] == [0, 1, 2]
        assert page["records"][0]["value"]["text"].startswith("000000")
        status, body = get(f"http://127.0.0.1:{http}/metrics")
        assert status == 200
        samples = parse(body.decode())
        assert sample(samples, "akfak_postgres_readback_queries_total", prepared="true") >= 2
        assert sample(samples, "akfak_postgres_readback_queries_total", prepared="false") == 0
    finally:
        broker.stop()
