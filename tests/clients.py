"""Real Kafka clients against akfak: produce and consume with kafka-python, confluent-kafka,
aiokafka and Debian's kcat, and compare what comes back byte for byte.

Every client here is blocking from the caller's point of view (aiokafka runs on a private event
loop), is closed by its context manager, and has timeouts of seconds so that a broken broker
fails a test quickly instead of hanging it.  Consumers never join a group: they `assign` a
partition and seek, so these helpers depend only on Metadata, Produce, Fetch and ListOffsets.

    records = make_records(1000)
    with open_producer("aiokafka", bootstrap, compression="zstd", acks="all") as producer:
        offsets = producer.send("topic", records)
    got = consume("confluent-kafka", bootstrap, "topic", len(records))
    assert_consumed(records, got)
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import struct
import subprocess
import time
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from tests.brokers import BrokerProcess, start_process
from tests.requests import fetch, list_offsets, metadata
from tests.wire import WireClient

LIBRARIES = ("kafka-python", "confluent-kafka", "aiokafka")
CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
ACKS = ("0", "1", "all")

#: Start offsets for consumers besides a plain offset.
BEGINNING = -2
END = -1

#: A broken broker should fail a test in seconds, not in the clients' default minutes.
CLIENT_TIMEOUT_MS = 10_000
#: Base of generated timestamps (ms): an hour ago, so that time-based retention (7 days by
#: default) never deletes test records, however the clock is set.
T0 = (int(time.time()) - 3600) * 1000

KCAT = shutil.which("kcat")
requires_kcat = pytest.mark.skipif(
    KCAT is None, reason="kcat is not installed (.ci/run installs Debian's kcat package)")

T = TypeVar("T")


@dataclass(frozen=True)
class Record:
    """What a producer sends: all four parts must come back byte-identical."""

    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp: int | None = None


@dataclass(frozen=True)
class Consumed:
    """What a consumer returns, normalised across the libraries."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp: int

    def record(self) -> Record:
        return Record(self.key, self.value, self.headers, self.timestamp)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Records


_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india")


def make_records(n: int, *, seed: int = 0, t0: int = T0, ascii_only: bool = False,
                 monotonic: bool = False) -> list[Record]:
    """`n` deterministic records, all keyed, with headers and explicit timestamps.

    They cover what a client could get wrong on the way through the broker: binary keys,
    values and header values (unless `ascii_only`), empty keys and values, null values
    (tombstones), no headers, repeated and non-ASCII header keys, sizes from 0 to ~1 KB, and
    timestamps that go backwards inside a batch (unless `monotonic`).  Values are mostly
    text, so every codec really compresses them.
    """
    rng = random.Random(seed)

    def blob(lo: int, hi: int) -> bytes:
        if ascii_only:
            return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                           for _ in range(rng.randint(lo, hi))).encode()
        return rng.randbytes(rng.randint(lo, hi))

    records = []
    for i in range(n):
        key = b"" if i % 211 == 7 and not ascii_only else f"key-{i:06d}-".encode() + blob(0, 6)
        if i % 97 == 13 and not ascii_only:
            value: bytes | None = None
        elif i % 101 == 17 and not ascii_only:
            value = b""
        else:
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 120)))
            value = f"value {i} {words} ".encode() + blob(0, 24)
        headers: list[tuple[str, bytes]] = []
        for h in range(rng.choice((0, 1, 1, 2, 3))):
            name = ("trace-id", "kind", "ключ" if not ascii_only else "k", "kind")[h]
            headers.append((name, blob(0, 16)))
        if monotonic:
            ts = t0 + i * 10
        else:
            ts = t0 + i * 10 + rng.randint(-25, 25)
        records.append(Record(key, value, tuple(headers), ts))
    return records


def assert_consumed(expected: Sequence[Record], got: Sequence[Consumed], *, first_offset: int = 0,
                    check_timestamps: bool = True, what: str = "") -> None:
    """`got` is exactly `expected`, at contiguous offsets from `first_offset`.

    Messages name the first difference instead of diffing thousands of records.
    """
    label = f"{what}: " if what else ""
    offsets = [c.offset for c in got]
    want = list(range(first_offset, first_offset + len(expected)))
    if offsets != want:
        first_bad = next((i for i, (a, b) in enumerate(zip(offsets, want, strict=False)) if a != b),
                         min(len(offsets), len(want)))
        raise AssertionError(
            f"{label}got {len(got)} records, expected {len(expected)} at offsets "
            f"{first_offset}..{first_offset + len(expected) - 1}; first difference at index "
            f"{first_bad}: got offsets {offsets[max(0, first_bad - 2):first_bad + 3]}")
    for i, (e, g) in enumerate(zip(expected, got, strict=True)):
        actual = g.record()
        if not check_timestamps:
            actual = Record(actual.key, actual.value, actual.headers, e.timestamp)
        if actual != e:
            raise AssertionError(f"{label}record {i} (offset {g.offset}) differs:\n"
                                 f"  expected {e!r}\n  got      {actual!r}")


def poll_until(fn: Any, timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Call `fn` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s (last: {result!r})")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# aiokafka behind a blocking facade


class _Loop:
    """A private asyncio loop: aiokafka clients are created and driven on it, in one thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if timeout is not None:
            return self.loop.run_until_complete(asyncio.wait_for(coro, timeout))
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


def _kafka_python_acks(acks: str) -> int | str:
    return acks if acks == "all" else int(acks)


def _compression_or_none(compression: str) -> str | None:
    return None if compression == "none" else compression


# --------------------------------------------------------------------------------------------
# Producers


class ClientProducer(Protocol):
    library: str

    def send(self, topic: str, records: Sequence[Record], partition: int = 0,
             timeout: float = 30.0) -> list[int]:
        """Send every record, wait for all of them, and return their offsets in order.

        With acks=0 the broker says nothing and the offsets mean nothing.  A failed record raises.
        """

    def close(self) -> None: ...


class KafkaPythonProducer:
    library = "kafka-python"

    def __init__(self, bootstrap: str, compression: str, acks: str, config: dict[str, Any]):
        import kafka

        self.client = kafka.KafkaProducer(**{
            "bootstrap_servers": bootstrap, "compression_type": _compression_or_none(compression),
            "acks": _kafka_python_acks(acks), "request_timeout_ms": CLIENT_TIMEOUT_MS,
            "max_block_ms": CLIENT_TIMEOUT_MS, **config})

    def send(self, topic: str, records: Sequence[Record], partition: int = 0,
             timeout: float = 30.0) -> list[int]:
        futures = []
        for i, r in enumerate(records):
            futures.append(self.client.send(topic, key=r.key, value=r.value, headers=list(r.headers),
                                            timestamp_ms=r.timestamp, partition=partition))
            if i == 0 and len(records) > 1:
                # Fail early (raising the first record's error): else every later batch
                # logs the same error again.
                self.client.flush(timeout)
                futures[0].get(timeout)
        self.client.flush(timeout)
        return [max(-1, f.get(timeout).offset) for f in futures]

    def close(self) -> None:
        self.client.close(timeout=5)


class ConfluentProducer:
    library = "confluent-kafka"

    def __init__(self, bootstrap: str, compression: str, acks: str, config: dict[str, Any]):
        import confluent_kafka

        self.client = confluent_kafka.Producer({
            "bootstrap.servers": bootstrap, "compression.type": compression, "acks": acks,
            "socket.timeout.ms": CLIENT_TIMEOUT_MS, "message.timeout.ms": 3 * CLIENT_TIMEOUT_MS,
            **config})

    def send(self, topic: str, records: Sequence[Record], partition: int = 0,
             timeout: float = 30.0) -> list[int]:
        results: list[Any] = [None] * len(records)

        def reporter(i: int) -> Any:
            def report(err: Any, msg: Any) -> None:
                # acks=0: librdkafka reports no offset (None).
                offset = msg.offset()
                results[i] = err if err is not None else -1 if offset is None else max(-1, offset)
            return report

        for i, r in enumerate(records):
            while True:
                try:
                    self.client.produce(topic, key=r.key, value=r.value, headers=list(r.headers),
                                        timestamp=r.timestamp or 0, partition=partition,
                                        on_delivery=reporter(i))
                    break
                except BufferError:
                    self.client.poll(0.05)
        left = self.client.flush(timeout)
        assert left == 0, f"confluent-kafka: {left} records still undelivered after {timeout}s"
        errors = [(i, e) for i, e in enumerate(results) if not isinstance(e, int)]
        if errors:
            raise ProduceFailed(self.library, errors)
        return results

    def close(self) -> None:
        if self.client.flush(5):
            self.client.purge()  # whatever a broken broker never took: close() would wait for it
        self.client.close()


class AiokafkaProducer:
    library = "aiokafka"

    def __init__(self, bootstrap: str, compression: str, acks: str, config: dict[str, Any]):
        import aiokafka

        self.loop = _Loop()

        async def start() -> Any:
            client = aiokafka.AIOKafkaProducer(**{
                "bootstrap_servers": bootstrap, "compression_type": _compression_or_none(compression),
                "acks": _kafka_python_acks(acks), "request_timeout_ms": CLIENT_TIMEOUT_MS, **config})
            try:
                await client.start()
            except BaseException:
                await client.stop()
                raise
            return client

        try:
            self.client = self.loop.run(start())
        except BaseException:
            self.loop.close()
            raise

    def send(self, topic: str, records: Sequence[Record], partition: int = 0,
             timeout: float = 30.0) -> list[int]:
        async def send_all() -> list[int]:
            futures = [await self.client.send(topic, key=r.key, value=r.value,
                                              headers=list(r.headers), timestamp_ms=r.timestamp,
                                              partition=partition)
                       for r in records]
            # acks=0: aiokafka resolves each future with None.
            return [-1 if m is None else max(-1, m.offset) for m in await asyncio.gather(*futures)]

        return self.loop.run(send_all(), timeout)

    def close(self) -> None:
        try:
            self.loop.run(self.client.stop(), 10)
        finally:
            self.loop.close()


class ProduceFailed(Exception):
    def __init__(self, library: str, errors: list[tuple[int, Any]]):
        self.library = library
        self.errors = errors
        super().__init__(f"{library}: {len(errors)} records failed, the first: record "
                         f"{errors[0][0]}: {errors[0][1]!r}")


_PRODUCERS: dict[str, Any] = {
    "kafka-python": KafkaPythonProducer,
    "confluent-kafka": ConfluentProducer,
    "aiokafka": AiokafkaProducer,
}


@contextmanager
def open_producer(library: str, bootstrap: str, *, compression: str = "none", acks: str = "all",
                  **config: Any) -> Iterator[ClientProducer]:
    """A producer of `library` with its default settings but for codec, acks and timeouts.

    `config` adds settings in the library's own spelling.
    """
    producer = _PRODUCERS[library](bootstrap, compression, acks, config)
    try:
        yield producer
    finally:
        producer.close()


def produce(library: str, bootstrap: str, topic: str, records: Sequence[Record], *,
            partition: int = 0, compression: str = "none", acks: str = "all",
            **config: Any) -> list[int]:
    with open_producer(library, bootstrap, compression=compression, acks=acks, **config) as p:
        return p.send(topic, records, partition)


# --------------------------------------------------------------------------------------------
# Consumers


class ClientConsumer(Protocol):
    library: str

    def assign(self, topic: str, partition: int = 0, offset: int = BEGINNING) -> None:
        """Consume `topic`/`partition` from `offset` (or BEGINNING / END), without a group."""

    def poll(self, timeout: float) -> list[Consumed]:
        """Whatever arrives within `timeout` seconds (errors raise)."""

    def watermarks(self, topic: str, partition: int = 0) -> tuple[int, int]:
        """(log start offset, high watermark), asked of the broker (ListOffsets)."""

    def close(self) -> None: ...


class KafkaPythonConsumer:
    library = "kafka-python"

    def __init__(self, bootstrap: str, config: dict[str, Any]):
        import kafka

        self.kafka = kafka
        self.client = kafka.KafkaConsumer(**{
            "bootstrap_servers": bootstrap, "group_id": None, "enable_auto_commit": False,
            "request_timeout_ms": CLIENT_TIMEOUT_MS, **config})

    def assign(self, topic: str, partition: int = 0, offset: int = BEGINNING) -> None:
        tp = self.kafka.TopicPartition(topic, partition)
        self.client.assign([tp])
        if offset == BEGINNING:
            self.client.seek_to_beginning(tp)
        elif offset == END:
            self.client.seek_to_end(tp)
        else:
            self.client.seek(tp, offset)

    def poll(self, timeout: float) -> list[Consumed]:
        batches = self.client.poll(timeout_ms=int(timeout * 1000))
        return [Consumed(m.offset, m.key, m.value, tuple(m.headers or ()), m.timestamp)
                for messages in batches.values() for m in messages]

    def watermarks(self, topic: str, partition: int = 0) -> tuple[int, int]:
        tp = self.kafka.TopicPartition(topic, partition)
        low = self.client.beginning_offsets([tp], timeout_ms=CLIENT_TIMEOUT_MS)[tp]
        high = self.client.end_offsets([tp], timeout_ms=CLIENT_TIMEOUT_MS)[tp]
        return low, high

    def close(self) -> None:
        self.client.close(autocommit=False, timeout_ms=5000)


class ConfluentConsumer:
    library = "confluent-kafka"

    def __init__(self, bootstrap: str, config: dict[str, Any]):
        import confluent_kafka

        self.ck = confluent_kafka
        # confluent-kafka insists on a group.id even for assign(); nothing is ever committed.
        self.client = confluent_kafka.Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"akfak-tests-{uuid.uuid4().hex}",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "socket.timeout.ms": CLIENT_TIMEOUT_MS, **config})

    def assign(self, topic: str, partition: int = 0, offset: int = BEGINNING) -> None:
        start = {BEGINNING: self.ck.OFFSET_BEGINNING, END: self.ck.OFFSET_END}.get(offset, offset)
        # Knowing the leader first saves librdkafka's 500 ms offset-query retry timer.
        self.client.list_topics(topic, timeout=CLIENT_TIMEOUT_MS / 1000)
        self.client.assign([self.ck.TopicPartition(topic, partition, start)])

    def poll(self, timeout: float) -> list[Consumed]:
        # consume(n, timeout) waits for n records or the whole timeout: poll() returns with
        # the first record, then consume(n, 0) takes what else has arrived.
        first = self.client.poll(timeout)
        if first is None:
            return []
        out = []
        for m in [first, *self.client.consume(10_000, 0)]:
            if m.error() is not None:
                raise self.ck.KafkaException(m.error())
            _kind, ts = m.timestamp()
            out.append(Consumed(m.offset(), m.key(), m.value(), tuple(m.headers() or ()), ts))
        return out

    def watermarks(self, topic: str, partition: int = 0) -> tuple[int, int]:
        low, high = self.client.get_watermark_offsets(
            self.ck.TopicPartition(topic, partition), timeout=CLIENT_TIMEOUT_MS / 1000, cached=False)
        return low, high

    def close(self) -> None:
        self.client.close()


class AiokafkaConsumer:
    library = "aiokafka"

    def __init__(self, bootstrap: str, config: dict[str, Any]):
        import aiokafka

        self.aiokafka = aiokafka
        self.loop = _Loop()

        async def start() -> Any:
            client = aiokafka.AIOKafkaConsumer(**{
                "bootstrap_servers": bootstrap, "group_id": None, "enable_auto_commit": False,
                "request_timeout_ms": CLIENT_TIMEOUT_MS, **config})
            try:
                await client.start()
            except BaseException:
                await client.stop()
                raise
            return client

        try:
            self.client = self.loop.run(start())
        except BaseException:
            self.loop.close()
            raise

    def assign(self, topic: str, partition: int = 0, offset: int = BEGINNING) -> None:
        tp = self.aiokafka.TopicPartition(topic, partition)

        async def assign() -> None:  # aiokafka makes futures: only inside its running loop
            self.client.assign([tp])
            if offset == BEGINNING:
                await self.client.seek_to_beginning(tp)
            elif offset == END:
                await self.client.seek_to_end(tp)
            else:
                self.client.seek(tp, offset)

        self.loop.run(assign(), CLIENT_TIMEOUT_MS / 1000)

    def poll(self, timeout: float) -> list[Consumed]:
        batches = self.loop.run(self.client.getmany(timeout_ms=int(timeout * 1000)))
        return [Consumed(m.offset, m.key, m.value, tuple(m.headers or ()), m.timestamp)
                for messages in batches.values() for m in messages]

    def watermarks(self, topic: str, partition: int = 0) -> tuple[int, int]:
        tp = self.aiokafka.TopicPartition(topic, partition)

        async def ask() -> tuple[int, int]:
            low = await self.client.beginning_offsets([tp])
            high = await self.client.end_offsets([tp])
            return low[tp], high[tp]

        return self.loop.run(ask(), CLIENT_TIMEOUT_MS / 1000)

    def close(self) -> None:
        try:
            self.loop.run(self.client.stop(), 10)
        finally:
            self.loop.close()


_CONSUMERS: dict[str, Any] = {
    "kafka-python": KafkaPythonConsumer,
    "confluent-kafka": ConfluentConsumer,
    "aiokafka": AiokafkaConsumer,
}


@contextmanager
def open_consumer(library: str, bootstrap: str, **config: Any) -> Iterator[ClientConsumer]:
    """A consumer of `library`, default settings but for timeouts; `config` adds settings."""
    consumer = _CONSUMERS[library](bootstrap, config)
    try:
        yield consumer
    finally:
        consumer.close()


def read_records(consumer: ClientConsumer, count: int, timeout: float = 30.0) -> list[Consumed]:
    """Poll until `count` records arrived (or `timeout` passed: the caller's assert tells)."""
    got: list[Consumed] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got.extend(consumer.poll(min(0.5, max(0.01, deadline - time.monotonic()))))
    return got


def consume(library: str, bootstrap: str, topic: str, count: int, *, partition: int = 0,
            offset: int = BEGINNING, timeout: float = 30.0, **config: Any) -> list[Consumed]:
    """`count` records of `topic`/`partition` from `offset`, read with `library`."""
    with open_consumer(library, bootstrap, **config) as consumer:
        consumer.assign(topic, partition, offset)
        return read_records(consumer, count, timeout)


# --------------------------------------------------------------------------------------------
# kcat (Debian's package; librdkafka underneath, driven as a command)


def kcat_produce(bootstrap: str, topic: str, records: Sequence[Record], *, partition: int = 0,
                 compression: str = "none", headers: Sequence[tuple[str, str]] = (),
                 timeout: float = 60.0) -> None:
    """`kcat -P -K:` of `key:value` lines; kcat sets the same `headers` on every record.

    Keys and values must be printable, without ':' or newlines; timestamps are kcat's own.
    """
    assert KCAT is not None
    lines = []
    for r in records:
        assert r.key is not None and r.value is not None
        assert b":" not in r.key and b"\n" not in r.key + r.value
        lines.append(r.key + b":" + r.value + b"\n")
    command = [KCAT, "-P", "-b", bootstrap, "-t", topic, "-p", str(partition), "-z", compression,
               "-K:", "-X", f"message.timeout.ms={3 * CLIENT_TIMEOUT_MS}"]
    for name, value in headers:
        command += ["-H", f"{name}={value}"]
    done = subprocess.run(command, input=b"".join(lines), capture_output=True, timeout=timeout)
    assert done.returncode == 0, f"kcat -P failed ({done.returncode}): {done.stderr.decode()}"


def kcat_consume(bootstrap: str, topic: str, count: int, *, partition: int = 0,
                 timeout: float = 60.0) -> list[Consumed]:
    """`kcat -C -J` from the beginning of the partition: `count` records, then exit."""
    assert KCAT is not None
    command = [KCAT, "-C", "-b", bootstrap, "-t", topic, "-p", str(partition), "-o", "beginning",
               "-c", str(count), "-J", "-q"]
    done = subprocess.run(command, capture_output=True, timeout=timeout)
    assert done.returncode == 0, f"kcat -C failed ({done.returncode}): {done.stderr.decode()}"
    out = []
    for line in done.stdout.decode().splitlines():
        if not line.strip():
            continue
        msg = json.loads(line)
        flat = msg.get("headers") or []
        headers = tuple((flat[i], None if flat[i + 1] is None else flat[i + 1].encode())
                        for i in range(0, len(flat), 2))
        out.append(Consumed(
            msg["offset"], None if msg["key"] is None else msg["key"].encode(),
            None if msg["payload"] is None else msg["payload"].encode(), headers, msg["ts"]))
    return out


# --------------------------------------------------------------------------------------------
# Raw protocol (tests/wire.py, tests/requests.py)

_BATCH_HEAD = struct.Struct(">qiibIh")  # base offset, length, leader epoch, magic, crc, attributes


def create_topic(port: int, topic: str) -> Any:
    """Auto-create `topic` with a Metadata request (no admin API needed); its metadata."""
    with WireClient(port) as client:
        response = client.request(metadata([topic]))
    (answer,) = response.topics
    assert answer.error_code == 0, f"creating {topic}: {answer.error_code!r}"
    return answer


def high_watermark(port: int, topic: str, partition: int = 0) -> int:
    """ListOffsets latest, over a raw connection."""
    with WireClient(port) as client:
        response = client.request(list_offsets(topic, {partition: -1}))
    answer = response.topics[0].partitions[0]
    assert answer.error_code == 0, f"ListOffsets {topic}/{partition}: {answer.error_code!r}"
    return int(answer.offset)


def stored_codecs(port: int, topic: str, partition: int = 0) -> dict[str, int]:
    """How many stored batches of the partition use each codec (read from the batch headers)."""
    with WireClient(port) as client:
        response = client.request(fetch({topic: {partition: 0}}, max_bytes=1 << 30,
                                         partition_max_bytes=1 << 30))
    data = response.responses[0].partitions[0].records or b""
    names = {v: k for k, v in CODEC_IDS.items()}
    counts: dict[str, int] = {}
    pos = 0
    while pos + _BATCH_HEAD.size <= len(data):
        _base, length, _epoch, _magic, _crc, attributes = _BATCH_HEAD.unpack_from(data, pos)
        name = names.get(attributes & 0x07, f"codec {attributes & 0x07}")
        counts[name] = counts.get(name, 0) + 1
        pos += 12 + length
    return counts


# --------------------------------------------------------------------------------------------
# Brokers


@contextmanager
def running_broker(data_dir: Path, *extra: str) -> Iterator[BrokerProcess]:
    """A broker subprocess for a module's tests; it must still be alive when they end."""
    broker = start_process(data_dir, *extra)
    try:
        yield broker
    finally:
        crashed = broker.proc.poll()
        if crashed is None:
            broker.stop()
        assert crashed is None, f"the broker exited early ({crashed}):\n{broker.log()[-5000:]}"
