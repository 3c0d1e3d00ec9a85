"""A broker whose whole state is in PostgreSQL (`--storage postgresql://...`), driven by
confluent-kafka (librdkafka), checked both through the clients and in the tables.

- every codec, idempotent acks=all: consumed back identical, and each batch is one
  akfak_batch row holding the batch as the client compressed it;
- a consumer group's commit, a committed and an aborted transaction (read_committed);
- kill -9 and a new broker on the same database: every acknowledged record, the group's
  offsets, the aborted transaction's index and the transactional id all come back;
- retention and DeleteRecords delete rows and move the log start, across a restart too;
  that broker is configured through server.properties (`akfak.storage=...`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import BrokerProcess, start_process
from tests.clients import (
    CLIENT_TIMEOUT_MS,
    T0,
    Record,
    assert_consumed,
    consume,
    make_records,
    open_producer,
    poll_until,
)
from tests.postgres import PostgresServer

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
N = 300


def query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


@pytest.fixture
def brokers(tmp_path: Path) -> Any:
    """Starts `python -m akfak ARGS...` (no data directory is ever made); all are stopped
    after the test."""
    started: list[BrokerProcess] = []

    def run(*args: str) -> BrokerProcess:
        broker = start_process(tmp_path / "unused", *args, log_path=tmp_path / "broker.log")
        started.append(broker)
        return broker

    yield run
    for broker in started:
        if broker.proc.poll() is None:
            broker.stop()


def admin(broker: BrokerProcess) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(broker: BrokerProcess, topic: str, partitions: int = 1, **configs: str) -> None:
    from confluent_kafka.admin import NewTopic

    client = admin(broker)  # kept: its futures fail once it is collected
    futures = client.create_topics([NewTopic(topic, partitions, 1, config=configs)])
    futures[topic].result(30)


def transactional_producer(broker: BrokerProcess, txn_id: str) -> Any:
    import confluent_kafka

    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap,
                                         "transactional.id": txn_id,
                                         "socket.timeout.ms": CLIENT_TIMEOUT_MS})
    producer.init_transactions(30)
    return producer


def group_consumer(broker: BrokerProcess, group: str, **config: Any) -> Any:
    import confluent_kafka

    return confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                                     "auto.offset.reset": "earliest",
                                     "enable.auto.commit": False, **config})


def values(consumer: Any, count: int, timeout: float = 30.0) -> list[bytes]:
    got: list[bytes] = []

    def more() -> bool:
        for m in consumer.consume(count - len(got), 0.5):
            assert m.error() is None, m.error()
            got.append(m.value())
        return len(got) >= count

    poll_until(more, timeout, what=f"{count} records")
    return got


def test_clients_and_a_kill9_restart(postgres: PostgresServer, brokers: Any) -> None:
    import confluent_kafka

    url = postgres.new_database()
    args = ("--storage", url, "--node-id", "1", "-o", "group.initial.rebalance.delay.ms=0")
    broker = brokers(*args)
    written: dict[str, list[Record]] = {}
    for seed, codec in enumerate(CODECS):
        topic = f"pg.{codec}"
        create(broker, topic)
        written[topic] = make_records(N, seed=seed, monotonic=True)
        with open_producer("confluent-kafka", broker.bootstrap, compression=codec, acks="all",
                           **{"enable.idempotence": True, "linger.ms": 5}) as producer:
            assert producer.send(topic, written[topic]) == list(range(N))
        assert_consumed(written[topic], consume("confluent-kafka", broker.bootstrap, topic, N),
                        what=codec)
        # One row per batch, as the client compressed it (attributes' codec bits).
        rows = query(url, "SELECT base_offset, last_offset, data FROM akfak_batch b JOIN "
                     "akfak_partition p USING (topic_id, partition) WHERE p.topic = %s "
                     "ORDER BY base_offset", topic)
        assert rows and sum(last - base + 1 for base, last, _ in rows) == N
        assert {struct.unpack_from(">h", data, 21)[0] & 7 for _, _, data in rows} == {
            CODEC_IDS[codec]}

    # A consumer group commits offset 100 of pg.none.
    consumer = group_consumer(broker, "pg-group")
    consumer.subscribe(["pg.none"])
    values(consumer, 100)
    consumer.commit(offsets=[confluent_kafka.TopicPartition("pg.none", 0, 100)], asynchronous=False)
    consumer.close()

    # One transaction committed, one aborted.
    create(broker, "pg.txn")
    producer = transactional_producer(broker, "pg-txn")
    for commit, tag in ((True, b"kept"), (False, b"dropped"), (True, b"kept")):
        producer.begin_transaction()
        for i in range(5):
            producer.produce("pg.txn", value=tag + b"-%d" % i, partition=0)
        (producer.commit_transaction if commit else producer.abort_transaction)(30)
    reader = group_consumer(broker, "pg-txn-reader", **{"isolation.level": "read_committed"})
    reader.subscribe(["pg.txn"])
    assert values(reader, 10) == [b"kept-%d" % i for i in range(5)] * 2
    reader.close()

    broker.kill()
    broker = brokers(*args)
    for topic, records in written.items():
        assert_consumed(records, consume("confluent-kafka", broker.bootstrap, topic, N),
                        what=f"{topic} after kill -9")
    consumer = group_consumer(broker, "pg-group")
    (committed,) = consumer.committed([confluent_kafka.TopicPartition("pg.none", 0)], 30)
    assert committed.offset == 100
    consumer.close()
    reader = group_consumer(broker, "pg-txn-reader-2", **{"isolation.level": "read_committed"})
    reader.subscribe(["pg.txn"])
    assert values(reader, 10) == [b"kept-%d" % i for i in range(5)] * 2
    reader.close()
    # The transactional id is known (its producer id and epoch survive): a new producer
    # fences the old one and commits.
    producer = transactional_producer(broker, "pg-txn")
    producer.begin_transaction()
    producer.produce("pg.txn", value=b"after", partition=0)
    producer.commit_transaction(30)
    # An idempotent producer goes on appending after the restart.
    more = make_records(50, seed=99, t0=T0 + N * 10, monotonic=True)
    with open_producer("confluent-kafka", broker.bootstrap, acks="all",
                       **{"enable.idempotence": True}) as idempotent:
        assert idempotent.send("pg.zstd", more) == list(range(N, N + 50))


def test_retention_and_delete_records(postgres: PostgresServer, brokers: Any,
                                      tmp_path: Path) -> None:
    import confluent_kafka

    url = postgres.new_database()
    properties = tmp_path / "server.properties"
    properties.write_text(f"akfak.storage={url}\nnode.id=1\n"
                          "log.retention.check.interval.ms=300\ngroup.initial.rebalance.delay.ms=0\n")
    broker = brokers("--config", str(properties))
    # Records an hour old on a topic keeping 10 minutes: retention takes them all.
    create(broker, "pg.retained", **{"retention.ms": "600000"})
    old = make_records(200, t0=T0, monotonic=True)
    with open_producer("confluent-kafka", broker.bootstrap, acks="all") as producer:
        producer.send("pg.retained", old)
    create(broker, "pg.deleted")
    with open_producer("confluent-kafka", broker.bootstrap, acks="all") as producer:
        producer.send("pg.deleted", make_records(100, seed=1, monotonic=True))
    client = admin(broker)
    futures = client.delete_records([confluent_kafka.TopicPartition("pg.deleted", 0, 60)])
    assert next(iter(futures.values())).result(30).low_watermark == 60

    def log_starts() -> dict[str, tuple[int, int]]:
        return {t: (s, n) for t, s, n in query(
            url, "SELECT topic, log_start_offset, (SELECT count(*) FROM akfak_batch b "
            "WHERE b.topic_id = p.topic_id AND b.partition = p.partition) "
            "FROM akfak_partition p WHERE topic LIKE 'pg.%%'")}

    poll_until(lambda: log_starts()["pg.retained"] == (200, 0), 20, what="retention")
    assert log_starts()["pg.deleted"][0] == 60
    broker.stop()
    broker = brokers("--config", str(properties))
    with consume_watermarks(broker) as watermarks:
        assert watermarks("pg.retained") == (200, 200)
        assert watermarks("pg.deleted") == (60, 100)
    got = consume("confluent-kafka", broker.bootstrap, "pg.deleted", 40)
    assert [c.offset for c in got] == list(range(60, 100))


@contextmanager
def consume_watermarks(broker: BrokerProcess) -> Iterator[Any]:
    """A function giving a topic's partition 0 (low, high) watermarks, with one consumer."""
    import confluent_kafka

    consumer = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap,
                                         "group.id": "pg-watermarks"})

    def watermarks(topic: str) -> tuple[int, int]:
        low, high = consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0),
                                                   timeout=30, cached=False)
        return int(low), int(high)

    try:
        yield watermarks
    finally:
        consumer.close()
