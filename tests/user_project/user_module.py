"""A user's test module, as a project that ran `pip install akfak` would write it.

No conftest, no akfak import: the akfak_broker fixtures come from the installed pytest plugin.
tests/test_testing_clients.py copies this file to an empty directory as test_user_project.py
and runs pytest there (the name here keeps our own suite from collecting it directly).
"""

from __future__ import annotations

import asyncio
import time

import pytest

MESSAGES = [b"one", b"two", b"three"]


def test_confluent_kafka(akfak_broker):
    from confluent_kafka import Consumer, Producer

    akfak_broker.create_topic("orders", partitions=2)

    producer = Producer({"bootstrap.servers": akfak_broker.bootstrap_servers})
    for value in MESSAGES:
        producer.produce("orders", key=b"customer-1", value=value)
    assert producer.flush(10) == 0

    consumer = Consumer({
        "bootstrap.servers": akfak_broker.bootstrap_servers,
        "group.id": "billing",
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe(["orders"])
    received = []
    deadline = time.monotonic() + 30
    while len(received) < len(MESSAGES) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            received.append(message.value())
    consumer.close()
    assert received == MESSAGES  # one key: one partition, in order


def test_kafka_python(akfak_broker):
    from kafka import KafkaConsumer, KafkaProducer

    akfak_broker.create_topic("clicks")

    producer = KafkaProducer(bootstrap_servers=akfak_broker.bootstrap_servers)
    for value in MESSAGES:
        producer.send("clicks", value)
    producer.flush()
    producer.close()

    consumer = KafkaConsumer(
        "clicks",
        bootstrap_servers=akfak_broker.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    received = [record.value for _, record in zip(MESSAGES, consumer, strict=False)]
    consumer.close()
    assert received == MESSAGES


def test_aiokafka(akfak_broker):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    akfak_broker.create_topic("payments")

    async def roundtrip():
        producer = AIOKafkaProducer(bootstrap_servers=akfak_broker.bootstrap_servers)
        await producer.start()
        try:
            for value in MESSAGES:
                await producer.send_and_wait("payments", value)
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            "payments", bootstrap_servers=akfak_broker.bootstrap_servers, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            received = []
            async with asyncio.timeout(30):
                async for record in consumer:
                    received.append(record.value)
                    if len(received) == len(MESSAGES):
                        break
        finally:
            await consumer.stop()
        return received

    assert asyncio.run(roundtrip()) == MESSAGES


@pytest.mark.akfak(storage="disk")
def test_on_disk(akfak_broker):
    from kafka import KafkaProducer

    akfak_broker.create_topic("audit")
    producer = KafkaProducer(bootstrap_servers=akfak_broker.bootstrap_servers)
    producer.send("audit", b"kept on disk").get(timeout=10)
    producer.close()
    assert (akfak_broker.data_dir / "audit-0").is_dir()


def test_session_broker(akfak_broker_session):
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    akfak_broker_session.create_topic("shared-topic")
    producer = Producer({"bootstrap.servers": akfak_broker_session.bootstrap_servers})
    producer.produce("shared-topic", b"hello")
    assert producer.flush(10) == 0
    admin = AdminClient({"bootstrap.servers": akfak_broker_session.bootstrap_servers})
    assert "shared-topic" in admin.list_topics(timeout=10).topics
