"""Produce validates records as Kafka 4.1's LogValidator (akfak/log/validator.py).

Raw requests built by hand (tests/recordbatch.py) go to akfak and to a real Kafka
4.1.1 broker (tests/kafka_peer.py), which must give the same answers: error code,
error message, record_errors.  Real clients then show the per-record errors
(KIP-467): librdkafka, kafka-python and the Java producer fail only the records at
fault, the rest of their batch as "another record failed".
"""

from __future__ import annotations

import re
import time
from typing import Any

import cramjam
import lz4.frame
import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests import jvm
from tests.brokers import BrokerProcess
from tests.kafka_peer import KafkaPeer
from tests.recordbatch import batch_of, parse_batch_list, record_bytes
from tests.requests import fetch, produce
from tests.wire import WireClient

HOUR = 3_600_000
TOPICS = {
    "plain": {},
    "compacted": {"cleanup.policy": "compact"},
    "lat": {"message.timestamp.type": "LogAppendTime"},
    "narrow": {"message.timestamp.before.max.ms": str(HOUR), "message.timestamp.after.max.ms": str(HOUR)},
}
LZ4, ZSTD = 3, 4


def keyed(n: int) -> bytes:
    return b"".join(record_bytes(i, b"k%d" % i, b"v%d" % i) for i in range(n))


def lz4_frame(data: bytes, flg: int | None = None, bd: int | None = None) -> bytes:
    """A frame with independent blocks, its FLG and BD bytes optionally replaced."""
    frame = bytearray(lz4.frame.compress(data, block_linked=False, store_size=False))
    if flg is not None:
        frame[4] = flg
    if bd is not None:
        frame[5] = bd
    return bytes(frame)


def cases() -> dict[str, tuple[str, bytes]]:
    """name -> (topic, one batch)."""
    now = int(time.time() * 1000)
    three = keyed(3)
    bad_offsets = record_bytes(0, b"a", b"0") + record_bytes(0, b"b", b"1") + record_bytes(5, b"c", b"2")
    keyless = b"".join(record_bytes(i, None if i in (0, 5) else b"k", b"v") for i in range(10))
    times = b"".join(record_bytes(i, b"k", b"v", ts_delta={1: -2 * HOUR, 3: 2 * HOUR}.get(i, 0))
                     for i in range(5))
    both = b"".join(record_bytes(i, None if i == 2 else b"k", b"v", ts_delta=2 * HOUR if i in (2, 4) else 0)
                    for i in range(5))
    negative_headers = record_bytes(0, b"k", b"v", header_count=-1) + record_bytes(1, b"k", b"v")
    longer = record_bytes(0, b"k", b"v", length_adjust=1) + record_bytes(1, b"k", b"v")
    shorter = record_bytes(0, b"k", b"v", length_adjust=-1) + record_bytes(1, b"k", b"v")
    return {
        "none": ("plain", batch_of(three, 3)),
        "lz4": ("plain", batch_of(three, 3, codec=LZ4)),
        "lz4-checksums-and-size": ("plain", batch_of(three, 3, codec=LZ4, payload=lz4.frame.compress(
            three, block_linked=False, block_checksum=True, content_checksum=True, store_size=True))),
        # cramjam's frames link their blocks (FLG 0x54: version 1, checksums, dependent blocks)
        "lz4-dependent-blocks": ("plain", batch_of(three, 3, codec=LZ4,
                                                    payload=bytes(cramjam.lz4.compress(three)))),
        "lz4-dependent-flag": ("plain", batch_of(three, 3, codec=LZ4, payload=lz4_frame(three, flg=0x40))),
        "lz4-reserved-flag": ("plain", batch_of(three, 3, codec=LZ4, payload=lz4_frame(three, flg=0x61))),
        "lz4-version-2": ("plain", batch_of(three, 3, codec=LZ4, payload=lz4_frame(three, flg=0xA0))),
        "lz4-block-size-3": ("plain", batch_of(three, 3, codec=LZ4, payload=lz4_frame(three, bd=0x30))),
        "lz4-bad-header-checksum": ("plain", batch_of(three, 3, codec=LZ4, payload=lz4_frame(three)[:6]
                                                      + b"\x00" + lz4_frame(three)[7:])),
        "lz4-bad-magic": ("plain", batch_of(three, 3, codec=LZ4, payload=b"\0\0\0\0" + lz4_frame(three)[4:])),
        "zstd-garbage": ("plain", batch_of(three, 3, codec=ZSTD, payload=b"\x28\xb5\x2f\xfd" + b"\xff" * 20)),
        "gzip-garbage": ("plain", batch_of(three, 3, codec=1, payload=b"\x1f\x8b" + b"\xff" * 20)),
        "codec-5": ("plain", batch_of(three, 3, codec=5, payload=three)),
        "none-count-above": ("plain", batch_of(keyed(2), 3)),
        "none-count-below": ("plain", batch_of(keyed(3), 2)),
        "zstd-count-above": ("plain", batch_of(keyed(2), 3, codec=ZSTD)),
        "zstd-count-below": ("plain", batch_of(keyed(3), 2, codec=ZSTD)),
        "none-truncated": ("plain", batch_of(keyed(2)[:-3], 2)),
        "zstd-truncated": ("plain", batch_of(keyed(2)[:-3], 2, codec=ZSTD)),
        "none-bad-offset-deltas": ("plain", batch_of(bad_offsets, 3)),
        "zstd-bad-offset-deltas": ("plain", batch_of(bad_offsets, 3, codec=ZSTD)),
        "none-keyless-compacted": ("compacted", batch_of(keyless, 10)),
        "zstd-keyless-compacted": ("compacted", batch_of(keyless, 10, codec=ZSTD)),
        "none-timestamps-narrow": ("narrow", batch_of(times, 5, base_timestamp=now,
                                                      max_timestamp=now + 2 * HOUR)),
        "zstd-timestamps-narrow": ("narrow", batch_of(times, 5, codec=ZSTD, base_timestamp=now,
                                                      max_timestamp=now + 2 * HOUR)),
        "none-future-timestamp": ("plain", batch_of(times, 5, base_timestamp=now,
                                                    max_timestamp=now + 2 * HOUR)),
        "none-future-timestamp-header-lies": ("plain", batch_of(times, 5, base_timestamp=now,
                                                                max_timestamp=now)),
        "none-no-timestamp": ("narrow", batch_of(record_bytes(0, b"k", b"v"), 1, base_timestamp=-1)),
        "none-keyless-and-future-compacted": ("compacted", batch_of(both, 5, base_timestamp=now,
                                                                    max_timestamp=now + 2 * HOUR)),
        "none-log-append-time-flag": ("plain", batch_of(three, 3, attributes=0x08)),
        "none-log-append-time-flag-lat": ("lat", batch_of(three, 3, attributes=0x08)),
        "zstd-log-append-time-flag-lat": ("lat", batch_of(
            record_bytes(0, None, b"v") + record_bytes(1, b"k", b"v"), 2, codec=ZSTD, attributes=0x08)),
        "none-negative-header-count": ("plain", batch_of(negative_headers, 2)),
        "zstd-negative-header-count": ("plain", batch_of(negative_headers, 2, codec=ZSTD)),
        "none-record-longer": ("plain", batch_of(longer, 2)),
        "none-record-shorter": ("plain", batch_of(shorter, 2)),
        # Kafka streams compressed records field by field, ignoring their length prefixes.
        "zstd-record-longer": ("plain", batch_of(longer, 2, codec=ZSTD)),
        "zstd-record-shorter": ("plain", batch_of(shorter, 2, codec=ZSTD)),
    }


def create_topics(bootstrap: str) -> None:
    """The TOPICS (the Kafka broker is shared by this module's tests: some exist already)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [NewTopic(t, 1, 1, config=c) for t, c in TOPICS.items() if t not in existing]
    for future in admin.create_topics(wanted).values() if wanted else ():
        future.result(30)
    deadline = time.monotonic() + 30

    def led() -> set[str]:
        listed = admin.list_topics(timeout=10).topics
        return {t for t in TOPICS if t in listed and listed[t].partitions
                and listed[t].partitions[0].leader >= 0}

    while set(TOPICS) - led():
        assert time.monotonic() < deadline
        time.sleep(0.2)


def normalized(text: str | None) -> str | None:
    """Timestamps and window bounds (the brokers' clocks differ by milliseconds) as T."""
    return None if text is None else re.sub(r"-?\d{12,}", "T", text)


def answers(bootstrap: str) -> dict[str, tuple[int, str | None, list[tuple[int, str | None]], bool]]:
    """name -> (error code, message, record_errors, whether an offset was assigned)."""
    create_topics(bootstrap)
    got = {}
    with WireClient(int(bootstrap.rsplit(":", 1)[1])) as client:
        for topic in TOPICS:  # Kafka's replica manager can lag its metadata (NOT_LEADER_OR_FOLLOWER)
            deadline = time.monotonic() + 30
            while client.request(produce(topic, {0: batch_of(keyed(1), 1)}, version=11)).responses[0] \
                    .partition_responses[0].error_code == 6:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        for name, (topic, data) in cases().items():
            deadline = time.monotonic() + 15
            while True:
                p = client.request(produce(topic, {0: data}, version=11)).responses[0].partition_responses[0]
                # a broker may not lead a partition it has just created yet (Kafka: NOT_LEADER)
                if p.error_code != 6 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            got[name] = (int(p.error_code), normalized(p.error_message),
                         [(int(e.batch_index), normalized(e.batch_index_error_message))
                          for e in p.record_errors],
                         p.base_offset >= 0)
    return got


def stored_offsets(bootstrap: str, topic: str, data: bytes) -> list[tuple[int, int]]:
    """Produce `data`; (offset - base offset, attributes) of the records as stored."""
    with WireClient(int(bootstrap.rsplit(":", 1)[1])) as client:
        p = client.request(produce(topic, {0: data}, version=11)).responses[0].partition_responses[0]
        assert p.error_code == 0, p
        response = client.request(fetch({topic: {0: int(p.base_offset)}}, partition_max_bytes=300))
        [stored] = parse_batch_list(response.responses[0].partitions[0].records)
        return [(r.offset - int(p.base_offset), stored.attributes) for r in stored.records]


def out_of_range(offset: int) -> str:
    return (f"Timestamp T of message with offset {offset} is out of range. The timestamp should be "
            "within [T, T]")


def test_raw_batches_get_kafkas_answers(broker_process: Any) -> None:
    """What akfak answers, spelled out (the next test holds Kafka to the same)."""
    broker: BrokerProcess = broker_process()
    got = answers(broker.bootstrap)
    ok = {n for n, (code, *_rest) in got.items() if code == 0}
    assert ok == {"none", "lz4", "lz4-checksums-and-size", "none-bad-offset-deltas", "none-no-timestamp",
                  "none-log-append-time-flag", "zstd-record-longer", "zstd-record-shorter"}
    for name in ("lz4-dependent-blocks", "lz4-dependent-flag", "lz4-reserved-flag", "lz4-version-2",
                 "lz4-block-size-3", "lz4-bad-header-checksum", "lz4-bad-magic", "zstd-garbage",
                 "gzip-garbage", "codec-5", "zstd-bad-offset-deltas"):
        assert got[name] == (-1, None, [], False), name  # UNKNOWN_SERVER_ERROR
    for name in ("none-count-above", "none-count-below", "zstd-count-above", "zstd-count-below",
                 "none-truncated", "zstd-truncated", "zstd-negative-header-count",
                 "none-negative-header-count", "none-record-longer", "none-record-shorter"):
        assert got[name] == (87, None, [], False), name
    keyless = "Compacted topic cannot accept message without key in topic partition compacted-0"
    for name in ("none-keyless-compacted", "zstd-keyless-compacted"):
        assert got[name] == (87, (
            "One or more records have been rejected due to 2 record errors in total, and only showing the "
            f"first three errors at most: [RecordError(batchIndex=0, message='{keyless}'), "
            f"RecordError(batchIndex=5, message='{keyless}')]"), [(0, keyless), (5, keyless)], False)
    code, message, errors, _ = got["none-timestamps-narrow"]
    assert (code, message) == (32, "One or more records have been rejected due to invalid timestamp")
    assert errors == [(1, out_of_range(1)), (3, out_of_range(3))]
    assert got["zstd-timestamps-narrow"] == got["none-timestamps-narrow"]
    assert [i for i, _ in got["none-future-timestamp"][2]] == [3]
    assert got["none-future-timestamp-header-lies"] == got["none-future-timestamp"]
    assert got["none-keyless-and-future-compacted"][:3] == (32, message, [(2, keyless),
                                                                          (4, out_of_range(4))])
    assert [i for i, _ in got["none-log-append-time-flag-lat"][2]] == [0, 1, 2]
    assert got["zstd-log-append-time-flag-lat"][2][0][1] == (
        "Invalid timestamp type in message PartialDefaultRecord(offset=0, timestamp=T, key=-1 bytes, "
        "value=1 bytes). Producer should not set timestamp type to LogAppendTime.")


def test_raw_batches_answer_as_kafka_does(broker_process: Any, kafka_peer: KafkaPeer) -> None:
    akfak, kafka = answers(broker_process().bootstrap), answers(kafka_peer.bootstrap)
    differ = {name for name in akfak if akfak[name] != kafka[name]}
    assert not differ, {n: (akfak[n], kafka[n]) for n in differ}


def test_stored_batches_as_kafka_stores_them(broker_process: Any, kafka_peer: KafkaPeer) -> None:
    """Uncompressed offset deltas are kept; a client's LogAppendTime flag is cleared on a
    CreateTime topic."""
    now = int(time.time() * 1000)
    bad_offsets = record_bytes(0, b"a", b"0") + record_bytes(0, b"b", b"1") + record_bytes(5, b"c", b"2")
    for bootstrap in (broker_process().bootstrap, kafka_peer.bootstrap):
        create_topics(bootstrap)
        assert stored_offsets(bootstrap, "plain", batch_of(bad_offsets, 3)) == [(0, 0), (0, 0), (5, 0)]
        assert stored_offsets(bootstrap, "plain", batch_of(keyed(2), 2, attributes=0x08,
                                                           base_timestamp=now)) == [(0, 0), (1, 0)]


def produce_keyless_batch(bootstrap: str, topic: str) -> dict[str, list[int]]:
    """librdkafka sends 100 records in one batch, every tenth without a key; the indexes
    of the records by outcome."""
    outcomes: dict[str, list[int]] = {}
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1000, "enable.idempotence": False,
                         "message.send.max.retries": 0})

    def report(err: Any, msg: Any) -> None:
        name = "ok" if err is None else err.name()
        outcomes.setdefault(name, []).append(int(msg.value()[1:]))

    for i in range(100):
        producer.produce(topic, b"v%d" % i, key=None if i % 10 == 0 else b"k%d" % i, partition=0,
                         on_delivery=report)
    assert producer.flush(30) == 0
    return {k: sorted(v) for k, v in outcomes.items()}


@pytest.mark.parametrize("peer", ["akfak", "kafka"])
def test_librdkafka_fails_only_the_keyless_records(broker_process: Any, request: pytest.FixtureRequest,
                                                  peer: str) -> None:
    bootstrap = (broker_process().bootstrap if peer == "akfak"
                 else request.getfixturevalue("kafka_peer").bootstrap)
    create_topics(bootstrap)
    outcomes = produce_keyless_batch(bootstrap, "compacted")
    assert outcomes == {
        "INVALID_RECORD": list(range(0, 100, 10)),
        KafkaError(KafkaError._INVALID_DIFFERENT_RECORD).name(): [i for i in range(100) if i % 10],
    }


def test_kafka_python_names_the_keyless_record(broker_process: Any) -> None:
    from kafka import KafkaProducer
    from kafka.errors import InvalidRecordError

    broker = broker_process()
    create_topics(broker.bootstrap)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=500, retries=0)
    try:
        futures = [producer.send("compacted", b"v%d" % i, key=None if i == 3 else b"k", partition=0)
                   for i in range(5)]
        producer.flush(30)
        errors = [f.exception for f in futures]
        assert [isinstance(e, InvalidRecordError) for e in errors] == [False, False, False, True, False]
        assert "Compacted topic cannot accept message without key" in str(errors[3])
        assert all("part of a batch which had one more more invalid records" in str(e)
                   for i, e in enumerate(errors) if i != 3), errors
        assert producer.send("compacted", b"v", key=b"k", partition=0).get(30).offset == 0
    finally:
        producer.close(5)


@pytest.mark.parametrize("peer", ["akfak", "kafka"])
def test_java_producer_names_the_keyless_records(broker_process: Any, request: pytest.FixtureRequest,
                                                 peer: str) -> None:
    jvm.build()
    bootstrap = (broker_process().bootstrap if peer == "akfak"
                 else request.getfixturevalue("kafka_peer").bootstrap)
    create_topics(bootstrap)
    run = jvm.run_java("KeylessProducer", bootstrap, "topic=compacted", "count=20", "every=10")
    assert run.returncode == 0, run.describe()
    failed = {line["index"]: line for line in run.lines if line.get("kind") == "failed"}
    assert sorted(failed) == list(range(20))
    keyless = {i for i, line in failed.items()
               if "Compacted topic cannot accept message without key" in line["message"]}
    assert keyless == {0, 10}
    # The others fail as part of a batch with invalid records.
    assert {i: line["error"] for i, line in failed.items() if i in keyless} == {
        0: "InvalidRecordException", 10: "InvalidRecordException"}
    assert {line["error"] for i, line in failed.items() if i not in keyless} == {"KafkaException"}
