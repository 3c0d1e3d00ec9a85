"""Error paths answer Kafka's error codes, and the connection (or client) stays usable (issue 4).

Through the clients where they expose the broker's answer, and over raw connections
(tests/wire.py, records built by tests/recordbatch.py) where they do not; after each error
the same connection or client must still serve a good request.

The `strict` broker runs with auto.create.topics.enable=false and a small message.max.bytes;
its topics were created (and given 10 records each) by an earlier run of the broker on the
same directory with the defaults, so that these tests need no admin API.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kio.schema.errors import ErrorCode

from tests.brokers import BrokerProcess, start_process
from tests.clients import (
    LIBRARIES,
    ProduceFailed,
    Record,
    assert_consumed,
    create_topic,
    high_watermark,
    make_records,
    open_consumer,
    open_producer,
    read_records,
    running_broker,
)
from tests.recordbatch import make_batch, parse_batches
from tests.requests import fetch, list_offsets, metadata, produce
from tests.wire import WireClient

MAX_MESSAGE_BYTES = 100_000
STRICT_ARGS = ("-o", "auto.create.topics.enable=false", "-o", f"message.max.bytes={MAX_MESSAGE_BYTES}")
PREPARED = make_records(10, seed=5)
RESETS = ("earliest", "latest", "none")
TOPICS = [
    "errors.exists", "errors.crc", "errors.big", "errors.range",
    *(f"errors.big.{library}" for library in LIBRARIES),
    *(f"errors.reset.{library}.{reset}" for library in LIBRARIES for reset in RESETS),
]
INVALID_NAMES = ["bad/name", "with space", "x" * 250, ".", "..", "", "tab\there", "ünïcode"]


def batch(records: list[Record], **kwargs: Any) -> bytes:
    return make_batch([(r.key, r.value, list(r.headers), r.timestamp) for r in records], **kwargs)


def produce_raw(client: WireClient, topic: str, data: bytes, partition: int = 0) -> Any:
    return client.request(produce(topic, {partition: data})).responses[0].partition_responses[0]


def fetch_raw(client: WireClient, topic: str, offset: int, partition: int = 0) -> Any:
    return client.request(fetch({topic: {partition: offset}})).responses[0].partitions[0]


def assert_connection_works(client: WireClient, topic: str = "errors.exists") -> None:
    """The same connection answers a good Metadata and a good Fetch."""
    (answer,) = client.request(metadata([topic], allow_auto_topic_creation=False)).topics
    assert (answer.error_code, answer.name, len(answer.partitions)) == (ErrorCode.none, topic, 1)
    got = fetch_raw(client, topic, 0)
    assert got.error_code == ErrorCode.none
    assert [(r.key, r.value) for r in parse_batches(got.records or b"")][:10] == [
        (r.key, r.value) for r in PREPARED]


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    data = Path(tmp_path_factory.mktemp("errors-strict")) / "data"
    setup = start_process(data)
    try:
        with WireClient(setup.port) as client:
            for topic in TOPICS:
                create_topic(setup.port, topic)
                answer = produce_raw(client, topic, batch(PREPARED))
                assert (answer.error_code, answer.base_offset) == (ErrorCode.none, 0)
    finally:
        setup.stop()
    with running_broker(data, *STRICT_ARGS) as broker:
        yield broker


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker with Kafka's defaults (auto-creation on)."""
    with running_broker(Path(tmp_path_factory.mktemp("errors-default")) / "data") as broker:
        create_topic(broker.port, "errors.exists")
        with WireClient(broker.port) as client:
            produce_raw(client, "errors.exists", batch(PREPARED))
        yield broker


# --------------------------------------------------------------------------------------------
# Unknown topic, auto-creation off


def test_unknown_topic_raw(strict: BrokerProcess) -> None:
    with WireClient(strict.port) as client:
        for version in (1, 4, 9, 12):  # v1-v3 always allow auto-creation; v4+ ask for it here
            response = client.request(metadata(["errors.missing"], version=version), version=version)
            (answer,) = response.topics
            assert (answer.name, answer.error_code, answer.partitions) == (
                "errors.missing", ErrorCode.unknown_topic_or_partition, ()), f"Metadata v{version}"
            assert_connection_works(client)
        names = {t.name for t in client.request(metadata(None)).topics}
        assert "errors.missing" not in names and "errors.exists" in names

        assert produce_raw(client, "errors.missing", batch(PREPARED)).error_code == (
            ErrorCode.unknown_topic_or_partition)
        assert_connection_works(client)
        assert fetch_raw(client, "errors.missing", 0).error_code == ErrorCode.unknown_topic_or_partition
        assert_connection_works(client)
        answer = client.request(list_offsets("errors.missing", {0: -1})).topics[0].partitions[0]
        assert answer.error_code == ErrorCode.unknown_topic_or_partition
        assert_connection_works(client)


#: How each producer library reports a topic the broker does not know, with the setting
#: that makes it give up in seconds.  kafka-python only says its metadata wait timed out.
UNKNOWN_TOPIC_BY_LIBRARY: dict[str, tuple[type[BaseException] | str, dict[str, Any]]] = {
    "confluent-kafka": ("confluent", {"topic.metadata.propagation.max.ms": 1000}),
    "aiokafka": ("aiokafka.errors.UnknownTopicOrPartitionError", {"request_timeout_ms": 2000}),
    "kafka-python": ("kafka.errors.KafkaTimeoutError", {"max_block_ms": 2000}),
}


def _exception_type(dotted: str) -> type[BaseException]:
    import importlib

    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


@pytest.mark.parametrize("library", LIBRARIES)
def test_unknown_topic_through_producers(strict: BrokerProcess, library: str) -> None:
    expected, settings = UNKNOWN_TOPIC_BY_LIBRARY[library]
    record = make_records(1, seed=6)
    with open_producer(library, strict.bootstrap, acks="1", **settings) as producer:
        if expected == "confluent":
            import confluent_kafka

            with pytest.raises(ProduceFailed) as failed:
                producer.send("errors.missing", record)
            assert failed.value.errors[0][1].code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART
        else:
            with pytest.raises(_exception_type(str(expected))):
                producer.send("errors.missing", record)
        # The same producer goes on producing to a topic that exists.
        end = high_watermark(strict.port, "errors.exists")
        assert producer.send("errors.exists", record) == [end]


def test_unknown_topic_confluent_metadata(strict: BrokerProcess) -> None:
    import confluent_kafka

    producer = confluent_kafka.Producer({"bootstrap.servers": strict.bootstrap})
    try:
        topics = producer.list_topics("errors.missing", timeout=10).topics
        assert topics["errors.missing"].error.code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART
        assert "errors.missing" not in producer.list_topics(timeout=10).topics
        assert producer.list_topics("errors.exists", timeout=10).topics["errors.exists"].error is None
    finally:
        producer.close()


# --------------------------------------------------------------------------------------------
# Invalid topic names: INVALID_TOPIC_EXCEPTION whether auto-creation is on, off or not asked for
# (Kafka's KafkaApis.getTopicMetadata validates the names it will not create).


BROKERS = pytest.mark.parametrize("which", ["default", "strict"],
                                  ids=["broker-auto-create-on", "broker-auto-create-off"])


@pytest.mark.parametrize("allow_auto_creation", [True, False], ids=["allow-auto-create", "no-auto-create"])
@BROKERS
def test_invalid_topic_names_in_metadata(request: pytest.FixtureRequest, which: str,
                                         allow_auto_creation: bool) -> None:
    broker: BrokerProcess = request.getfixturevalue(which)
    wrong = {}
    with WireClient(broker.port) as client:
        for name in INVALID_NAMES:
            response = client.request(metadata([name], allow_auto_topic_creation=allow_auto_creation))
            (answer,) = response.topics
            assert answer.name == name and answer.partitions == ()
            if answer.error_code != ErrorCode.invalid_topic_exception:
                wrong[name[:20]] = answer.error_code.name
            assert_connection_works(client)
        names = {t.name for t in client.request(metadata(None)).topics}
    assert not names & set(INVALID_NAMES), "an invalid name was created"
    assert not wrong, f"not INVALID_TOPIC_EXCEPTION: {wrong}"


@BROKERS
def test_invalid_topic_name_through_confluent(request: pytest.FixtureRequest, which: str) -> None:
    import confluent_kafka

    broker: BrokerProcess = request.getfixturevalue(which)
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    try:
        error = producer.list_topics("bad/name", timeout=10).topics["bad/name"].error
        assert error is not None and error.code() == confluent_kafka.KafkaError.TOPIC_EXCEPTION, error
        assert producer.list_topics("errors.exists", timeout=10).topics["errors.exists"].error is None
    finally:
        producer.close()


# --------------------------------------------------------------------------------------------
# Unknown partition


def test_unknown_partition_raw(strict: BrokerProcess) -> None:
    with WireClient(strict.port) as client:
        assert produce_raw(client, "errors.exists", batch(PREPARED), partition=7).error_code == (
            ErrorCode.unknown_topic_or_partition)
        assert_connection_works(client)
        assert fetch_raw(client, "errors.exists", 0, partition=7).error_code == (
            ErrorCode.unknown_topic_or_partition)
        assert_connection_works(client)
        answer = client.request(list_offsets("errors.exists", {7: -1})).topics[0].partitions[0]
        assert answer.error_code == ErrorCode.unknown_topic_or_partition
        assert_connection_works(client)


def test_unknown_partition_through_confluent(strict: BrokerProcess) -> None:
    import confluent_kafka

    record = make_records(1, seed=7)
    with open_producer("confluent-kafka", strict.bootstrap, acks="1") as producer:
        with pytest.raises(ProduceFailed) as failed:
            producer.send("errors.exists", record, partition=7)
        assert failed.value.errors[0][1].code() == confluent_kafka.KafkaError._UNKNOWN_PARTITION
        end = high_watermark(strict.port, "errors.exists")
        assert producer.send("errors.exists", record, partition=0) == [end]


# --------------------------------------------------------------------------------------------
# Fetch beyond the high watermark


def test_fetch_beyond_high_watermark_raw(strict: BrokerProcess) -> None:
    end = high_watermark(strict.port, "errors.range")
    assert end >= len(PREPARED)
    with WireClient(strict.port) as client:
        for offset in (end + 1, end + 1000, -5):
            answer = fetch_raw(client, "errors.range", offset)
            assert answer.error_code == ErrorCode.offset_out_of_range, f"Fetch at {offset} (end {end})"
            assert_connection_works(client)
        at_end = fetch_raw(client, "errors.range", end)
        assert (at_end.error_code, at_end.high_watermark, at_end.records or b"") == (ErrorCode.none, end, b"")
        assert_connection_works(client)


def _produce_one(port: int, topic: str, value: bytes) -> int:
    with WireClient(port) as client:
        answer = produce_raw(client, topic, make_batch([(b"late", value)]))
    assert answer.error_code == ErrorCode.none
    return int(answer.base_offset)


#: What a consumer with auto.offset.reset "none" (confluent: "error") raises on
#: OFFSET_OUT_OF_RANGE.
OUT_OF_RANGE_ERRORS = {
    "kafka-python": "kafka.errors.OffsetOutOfRangeError",
    "aiokafka": "aiokafka.errors.OffsetOutOfRangeError",
    "confluent-kafka": "confluent_kafka.KafkaException",
}


@pytest.mark.parametrize("reset", RESETS, ids=[f"reset-{r}" for r in RESETS])
@pytest.mark.parametrize("library", LIBRARIES)
def test_fetch_beyond_high_watermark_auto_offset_reset(strict: BrokerProcess, library: str,
                                                        reset: str) -> None:
    topic = f"errors.reset.{library}.{reset}"
    end = high_watermark(strict.port, topic)
    setting = ({"auto.offset.reset": "error" if reset == "none" else reset}
               if library == "confluent-kafka" else {"auto_offset_reset": reset})
    with open_consumer(library, strict.bootstrap, **setting) as consumer:
        consumer.assign(topic, 0, end + 100)
        if reset == "earliest":
            assert_consumed(PREPARED, read_records(consumer, len(PREPARED), 15)[:len(PREPARED)])
        elif reset == "latest":
            # Reset to the end: nothing before `end` arrives, a record appended later does.
            # Appends repeat until one arrives, as the reset may land after an append.
            appended: list[int] = []
            got: list[Any] = []
            deadline = time.monotonic() + 15
            while not got and time.monotonic() < deadline:
                appended.append(_produce_one(strict.port, topic, f"after reset {len(appended)}".encode()))
                got = consumer.poll(0.5)
            assert got, "nothing arrived after the reset to the end"
            assert got[0].offset in appended, (got[0].offset, appended)
        else:
            with pytest.raises(_exception_type(OUT_OF_RANGE_ERRORS[library])) as raised:
                read_records(consumer, 1, 15)
            if library == "confluent-kafka":
                import confluent_kafka

                assert raised.value.args[0].code() == confluent_kafka.KafkaError._AUTO_OFFSET_RESET
            # The consumer is still usable: back to the beginning.
            consumer.assign(topic, 0, 0)
            assert_consumed(PREPARED, read_records(consumer, len(PREPARED), 15)[:len(PREPARED)])


# --------------------------------------------------------------------------------------------
# Bad CRC, oversized batches


def test_bad_crc_is_corrupt_message(strict: BrokerProcess) -> None:
    with WireClient(strict.port) as client:
        end = high_watermark(strict.port, "errors.crc")
        good = batch(make_records(3, seed=8))
        bad = bytearray(good)
        bad[-1] ^= 0xFF  # a flipped bit in the last record: the CRC no longer matches
        for data in (bytes(bad), batch(make_records(3, seed=8), crc=12345)):
            answer = produce_raw(client, "errors.crc", data)
            assert answer.error_code == ErrorCode.corrupt_message, answer
            assert_connection_works(client)
        answer = produce_raw(client, "errors.crc", good)
        assert (answer.error_code, answer.base_offset) == (ErrorCode.none, end)
        stored = parse_batches(fetch_raw(client, "errors.crc", end).records or b"")
        assert [(r.offset, r.key) for r in stored] == [
            (end + i, r.key) for i, r in enumerate(make_records(3, seed=8))]


def sized_batch(size: int) -> bytes:
    """One record whose batch is exactly `size` bytes."""
    pad = size - len(make_batch([(b"k", b"")]))
    for _ in range(5):
        data = make_batch([(b"k", b"")], pad_records=pad)
        if len(data) == size:
            return data
        pad += size - len(data)
    raise AssertionError(f"could not build a batch of {size} bytes")


def test_oversized_batch_is_message_too_large(strict: BrokerProcess) -> None:
    with WireClient(strict.port) as client:
        end = high_watermark(strict.port, "errors.big")
        for size in (MAX_MESSAGE_BYTES + 1, 3 * MAX_MESSAGE_BYTES):
            answer = produce_raw(client, "errors.big", sized_batch(size))
            assert answer.error_code == ErrorCode.message_too_large, f"a batch of {size} bytes"
            assert_connection_works(client)
        # message.max.bytes is inclusive.
        answer = produce_raw(client, "errors.big", sized_batch(MAX_MESSAGE_BYTES))
        assert (answer.error_code, answer.base_offset) == (ErrorCode.none, end)
        assert high_watermark(strict.port, "errors.big") == end + 1


#: The broker's MESSAGE_TOO_LARGE as each producer library reports it.
TOO_LARGE_ERRORS = {
    "kafka-python": "kafka.errors.MessageSizeTooLargeError",
    "aiokafka": "aiokafka.errors.MessageSizeTooLargeError",
}


@pytest.mark.parametrize("library", LIBRARIES)
def test_oversized_record_through_producers(strict: BrokerProcess, library: str) -> None:
    """Records under the clients' own limits (1 MB) but over the broker's."""
    topic = f"errors.big.{library}"
    end = high_watermark(strict.port, topic)
    big = [Record(b"big", b"x" * (2 * MAX_MESSAGE_BYTES), (), None)]
    small = make_records(1, seed=9)
    with open_producer(library, strict.bootstrap, acks="1") as producer:
        if library == "confluent-kafka":
            import confluent_kafka

            with pytest.raises(ProduceFailed) as failed:
                producer.send(topic, big)
            assert failed.value.errors[0][1].code() == confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE
        else:
            with pytest.raises(_exception_type(TOO_LARGE_ERRORS[library])):
                producer.send(topic, big)
        assert producer.send(topic, small) == [end]
    assert high_watermark(strict.port, topic) == end + 1
