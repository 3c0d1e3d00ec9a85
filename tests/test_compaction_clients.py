"""Compacted topics with real clients, against a broker subprocess whose log cleaner runs
every 200 ms (`log.cleaner.backoff.ms`).

A topic created through confluent-kafka's AdminClient with `cleanup.policy=compact`, small
segments and `min.cleanable.dirty.ratio=0.01` takes keyed records with repeated keys and
tombstones, from an idempotent librdkafka producer (lz4) and a plain kafka-python one;
once the cleaner has been through it, each consumer library reading from the beginning
gets exactly the latest record of every key, at the offset it was written at, with gaps
where older records went.  The idempotent producer's last batch, all of whose records
were overwritten, stays as an empty batch (as Kafka's cleaner keeps it) that every
consumer steps over.  A record without a key is refused with INVALID_RECORD.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import BrokerProcess
from tests.clients import (
    LIBRARIES,
    ClientConsumer,
    Consumed,
    ProduceFailed,
    Record,
    high_watermark,
    open_consumer,
    open_producer,
    running_broker,
)
from tests.recordbatch import parse_batch_list

TOPIC = "compacted"
KEYS = 40
ROUNDS = 8
#: Segments of 8 KiB: many of them, so there is plenty below the active one to clean.
TOPIC_CONFIGS = {"cleanup.policy": "compact", "segment.bytes": "8192",
                 "min.cleanable.dirty.ratio": "0.01"}
#: Client batches must fit a segment (a larger one is RECORD_LIST_TOO_LARGE, as in Kafka).
CONFLUENT_SETTINGS = {"enable.idempotence": True, "batch.size": 4096, "linger.ms": 5}
KAFKA_PYTHON_SETTINGS = {"batch_size": 4096}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    data = Path(tmp_path_factory.mktemp("compaction")) / "data"
    with running_broker(data, "-o", "log.cleaner.backoff.ms=200") as b:
        yield b


def create_topic(bootstrap: str, topic: str, configs: dict[str, str]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1,
                                            config=configs)], request_timeout=10)
    futures[topic].result(timeout=10)


def round_value(round_: int, key: int) -> bytes | None:
    if round_ == ROUNDS - 2 and key % 7 == 3:
        return None  # a tombstone, overwritten in the last round for some keys
    if round_ == ROUNDS - 1 and key % 7 == 3 and key % 2:
        return None
    return b"round %d of key %d " % (round_, key) + b"." * (key * 3)


@pytest.fixture(scope="module")
def written(broker: BrokerProcess) -> dict[bytes, tuple[int, bytes | None]]:
    """Write the topic; key -> (offset, value) of its latest record."""
    create_topic(broker.bootstrap, TOPIC, TOPIC_CONFIGS)
    latest: dict[bytes, tuple[int, bytes | None]] = {}

    def note(records: list[Record], offsets: list[int]) -> None:
        for r, offset in zip(records, offsets, strict=True):
            assert r.key is not None and offset >= 0
            latest[r.key] = (offset, r.value)

    main = [Record(b"key-%02d" % k, round_value(r, k)) for r in range(ROUNDS) for k in range(KEYS)]
    with open_producer("confluent-kafka", broker.bootstrap, compression="lz4", acks="all",
                       **CONFLUENT_SETTINGS) as producer:
        note(main, producer.send(TOPIC, main))
        # The idempotent producer's last batch: one record, overwritten below.
        last = [Record(b"last-a", b"from the idempotent producer")]
        note(last, producer.send(TOPIC, last))
    # A unique tail larger than a segment pushes everything above into cleanable segments.
    tail = [Record(b"last-a", b"overwritten")] + [
        Record(b"tail-%03d" % i, b"t" * 200) for i in range(60)]
    with open_producer("kafka-python", broker.bootstrap, acks="1",
                       **KAFKA_PYTHON_SETTINGS) as producer:
        note(tail, producer.send(TOPIC, tail))
    return latest


def read_all(consumer: ClientConsumer, end: int, timeout: float = 20.0) -> list[Consumed]:
    """Every record from the beginning up to the high watermark `end`."""
    consumer.assign(TOPIC, 0)
    got: list[Consumed] = []
    deadline = time.monotonic() + timeout
    while (not got or got[-1].offset < end - 1) and time.monotonic() < deadline:
        got.extend(consumer.poll(0.5))
    return got


def as_latest(records: list[Consumed]) -> dict[bytes | None, tuple[int, bytes | None]]:
    return {r.key: (r.offset, r.value) for r in records}


@pytest.mark.parametrize("library", LIBRARIES)
def test_consumers_read_the_latest_record_of_every_key(
        broker: BrokerProcess, written: dict[bytes, tuple[int, bytes | None]],
        library: str) -> None:
    end = high_watermark(broker.port, TOPIC)
    assert end == ROUNDS * KEYS + 1 + 61
    with open_consumer(library, broker.bootstrap) as consumer:
        # Poll until the cleaner has been through (it runs every 200 ms): then each key is
        # there once.  Before, the log has every record ever written.
        deadline = time.monotonic() + 60
        while True:
            records = read_all(consumer, end)
            keys = [r.key for r in records]
            if len(keys) == len(set(keys)) or time.monotonic() > deadline:
                break
    assert len(keys) == len(set(keys)), f"not compacted within 60 s: {len(keys)} records"
    assert as_latest(records) == written
    offsets = [r.offset for r in records]
    assert offsets == sorted(offsets) and offsets[-1] == end - 1
    assert len(offsets) < end  # gaps where older records went
    # Tombstones stay (delete.retention.ms is a day), as a consumer must see the deletion.
    assert [r.key for r in records if r.value is None] == [
        b"key-%02d" % k for k in range(KEYS) if k % 7 == 3 and k % 2]
    # What the consumers stepped over: the idempotent producer's last batch, emptied.
    stored = [b for path in sorted((broker.data_dir / f"{TOPIC}-0").glob("*.log"))
              for b in parse_batch_list(path.read_bytes())]
    (empty,) = [b for b in stored if b.record_count == 0]
    assert empty.producer_id >= 0 and empty.base_offset == written[b"last-a"][0] - 1


def test_a_record_without_a_key_is_refused(broker: BrokerProcess,
                                           written: dict[bytes, Any]) -> None:
    import kafka.errors
    from confluent_kafka import KafkaError

    end = high_watermark(broker.port, TOPIC)
    with open_producer("kafka-python", broker.bootstrap, acks="1",
                       **KAFKA_PYTHON_SETTINGS) as producer, \
            pytest.raises(kafka.errors.InvalidRecordError):
        producer.send(TOPIC, [Record(None, b"no key")])
    with open_producer("confluent-kafka", broker.bootstrap, acks="all") as producer, \
            pytest.raises(ProduceFailed) as failed:
        producer.send(TOPIC, [Record(None, b"no key")])
    assert failed.value.errors[0][1].code() == KafkaError.INVALID_RECORD
    assert high_watermark(broker.port, TOPIC) == end
