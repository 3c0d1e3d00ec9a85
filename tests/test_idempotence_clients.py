"""Idempotent producers of real clients against a broker subprocess.

kafka-python 3 with its default settings (idempotence on, acks=all), confluent-kafka
with `enable.idempotence=true` and aiokafka with `enable_idempotence=True` each
produce 20,000 records to a 3-partition topic.  The partitions are then read back
over raw Fetch: exactly the 20,000 records, each partition in the order sent, in
batches from one producer id whose sequence numbers run 0, 1, 2 ... without a gap
or repeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from kio.schema.errors import ErrorCode

from tests.recordbatch import parse_batch_list
from tests.requests import fetch, metadata
from tests.test_idempotence import describe_producers
from tests.wire import WireClient

TOPIC = "idem"
PARTITIONS = 3
COUNT = 20_000
TIMEOUT_S = 60


def value(i: int) -> bytes:
    return b"%d" % i


def produce_kafka_python(bootstrap: str) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)  # defaults: idempotent, acks=all
    try:
        assert producer.config["enable_idempotence"]
        futures = [producer.send(TOPIC, value(i), partition=i % PARTITIONS) for i in range(COUNT)]
        producer.flush(TIMEOUT_S)
        for future in futures:
            future.get(timeout=TIMEOUT_S)
    finally:
        producer.close(timeout=10)


def produce_confluent_kafka(bootstrap: str) -> None:
    from confluent_kafka import Producer

    errors: list[Any] = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "message.timeout.ms": TIMEOUT_S * 1000})

    def delivered(error: Any, _message: Any) -> None:
        if error is not None:
            errors.append(error)

    for i in range(COUNT):
        while True:
            try:
                producer.produce(TOPIC, value(i), partition=i % PARTITIONS, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(TIMEOUT_S) == 0
    assert errors == []


def produce_aiokafka(bootstrap: str) -> None:
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                    request_timeout_ms=TIMEOUT_S * 1000)
        await producer.start()
        try:
            sent = [await producer.send(TOPIC, value(i), partition=i % PARTITIONS)
                    for i in range(COUNT)]
            await asyncio.wait_for(asyncio.gather(*sent), TIMEOUT_S)
        finally:
            await producer.stop()

    asyncio.run(run())


PRODUCERS: dict[str, Callable[[str], None]] = {
    "kafka-python": produce_kafka_python,
    "confluent-kafka": produce_confluent_kafka,
    "aiokafka": produce_aiokafka,
}


def read_partition(client: WireClient, partition: int) -> list[Any]:
    """Every batch of a partition, parsed, by raw Fetch."""
    batches: list[Any] = []
    offset = 0
    while True:
        part = client.request(fetch({TOPIC: {partition: offset}}, max_bytes=1 << 22,
                                    partition_max_bytes=1 << 22)).responses[0].partitions[0]
        assert part.error_code == ErrorCode.none
        got = parse_batch_list(part.records or b"")
        if not got:
            assert offset == part.high_watermark
            return batches
        batches.extend(b for b in got if b.base_offset + b.last_offset_delta >= offset)
        offset = got[-1].base_offset + got[-1].last_offset_delta + 1


@pytest.mark.parametrize("library", list(PRODUCERS))
def test_exactly_once_per_partition(broker_process: Any, library: str) -> None:
    broker = broker_process("-o", f"num.partitions={PARTITIONS}")
    with WireClient(broker.port) as c:
        created = c.request(metadata([TOPIC], allow_auto_topic_creation=True)).topics[0]
        assert created.error_code in (ErrorCode.none, ErrorCode.leader_not_available)

    PRODUCERS[library](broker.bootstrap)

    seen: list[int] = []
    with WireClient(broker.port) as c:
        for partition in range(PARTITIONS):
            batches = read_partition(c, partition)
            records = [r for b in batches for r in b.records]
            values = [int(r.value) for r in records]
            assert values == list(range(partition, COUNT, PARTITIONS)), library
            assert [r.offset for r in records] == list(range(len(records)))
            # One idempotent producer: every batch carries its id, sequences run unbroken.
            assert {b.producer_id for b in batches} == {batches[0].producer_id}
            assert batches[0].producer_id >= 0
            sequences = [b.base_sequence + i for b in batches for i in range(b.record_count)]
            assert sequences == list(range(len(records)))
            seen.extend(values)
            state = c.request(describe_producers({TOPIC: [partition]})).topics[0].partitions[0]
            (producer,) = state.active_producers
            assert (producer.producer_id, producer.last_sequence) == (
                batches[0].producer_id, len(records) - 1)
    assert sorted(seen) == list(range(COUNT))
