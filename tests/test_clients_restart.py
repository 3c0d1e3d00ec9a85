"""The broker restarted on the same data directory keeps everything (issue 4).

- SIGTERM, then a new broker on the same directory and port: every record reads back
  identical with each consumer library, and ListOffsets earliest / latest / max timestamp /
  by timestamp answers as before (asked through confluent-kafka and kafka-python, and raw).
- kill -9: the broker writes with os.write, so the page cache holds whatever it acknowledged;
  every acknowledged record survives, even with a producer streaming at the moment of the kill.

Small segments (log.segment.bytes=64 KiB) make each partition several segments with their
offset and time indexes, so recovery reads more than one file.
"""

from __future__ import annotations

import bisect
import threading
import time
from pathlib import Path
from typing import Any

from tests.brokers import BrokerProcess, start_process
from tests.clients import (
    CLIENT_TIMEOUT_MS,
    LIBRARIES,
    T0,
    Record,
    assert_consumed,
    consume,
    create_topic,
    high_watermark,
    make_records,
    open_producer,
    produce,
)
from tests.requests import list_offsets
from tests.wire import WireClient

PARTITIONS = 3
PER_PARTITION = 1500
BROKER_ARGS = ("-o", f"num.partitions={PARTITIONS}", "-o", "log.segment.bytes=65536")
#: (producer, codec, acks, settings) per topic; kafka-python's acks=all needs idempotence
#: (issue 7).  librdkafka's batches grow to 1 MB, and a batch larger than a segment is
#: refused (RECORD_LIST_TOO_LARGE, as Kafka does): 16 KiB, as the Java client's default.
WRITERS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("confluent-kafka", "gzip", "all", {"batch.size": 16384}),
    ("aiokafka", "zstd", "1", {}),
    ("kafka-python", "lz4", "1", {}),
)


def partition_records(seed: int, partition: int) -> list[Record]:
    """Monotonic timestamps, so "the first offset whose timestamp >= t" is unambiguous."""
    return make_records(PER_PARTITION, seed=seed * 10 + partition, monotonic=True,
                        t0=T0 + partition * 100_000)


def write_topics(broker: BrokerProcess) -> dict[str, list[list[Record]]]:
    written = {}
    for seed, (library, codec, acks, settings) in enumerate(WRITERS):
        topic = f"restart.{library}"
        create_topic(broker.port, topic)
        per_partition = [partition_records(seed, p) for p in range(PARTITIONS)]
        with open_producer(library, broker.bootstrap, compression=codec, acks=acks,
                           **settings) as producer:
            for p, records in enumerate(per_partition):
                assert producer.send(topic, records, partition=p) == list(range(PER_PARTITION))
        written[topic] = per_partition
    return written


def segment_count(broker: BrokerProcess, topic: str, partition: int) -> int:
    return len(list((broker.data_dir / f"{topic}-{partition}").glob("*.log")))


def timestamp_targets(records: list[Record]) -> list[int]:
    stamps = [r.timestamp for r in records]
    assert all(t is not None for t in stamps)
    targets = {stamps[0] - 1_000_000, stamps[-1] + 1, stamps[-1]}  # type: ignore[operator]
    for i in (0, 1, 499, 500, 777, len(stamps) - 1):
        targets.update({stamps[i], stamps[i] - 1, stamps[i] + 1})  # type: ignore[operator]
    return sorted(targets)  # type: ignore[arg-type]


def expected_answers(records: list[Record]) -> dict[str, Any]:
    """What ListOffsets must answer for a partition holding `records` from offset 0."""
    stamps: list[int] = [r.timestamp for r in records]  # type: ignore[misc]
    by_time = {}
    for t in timestamp_targets(records):
        i = bisect.bisect_left(stamps, t)
        by_time[t] = (i, stamps[i]) if i < len(stamps) else None
    return {"earliest": 0, "latest": len(records), "max": (len(records) - 1, stamps[-1]),
            "by_time": by_time}


def confluent_answers(bootstrap: str, topic: str, partition: int, targets: list[int]) -> dict[str, Any]:
    """get_watermark_offsets and offsets_for_times of a confluent-kafka consumer."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "akfak-tests-restart",
                         "enable.auto.commit": False})
    try:
        timeout = CLIENT_TIMEOUT_MS / 1000
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout,
                                                   cached=False)
        by_time = {}
        for t in targets:  # one lookup each: a partition named twice is an error
            (found,) = consumer.offsets_for_times([TopicPartition(topic, partition, t)], timeout=timeout)
            assert found.error is None, found.error
            by_time[t] = found.offset if found.offset >= 0 else None
        return {"earliest": low, "latest": high, "by_time": by_time}
    finally:
        consumer.close()


def kafka_python_answers(bootstrap: str, topic: str, partition: int,
                         targets: list[int]) -> dict[str, Any]:
    """beginning_offsets, end_offsets and offsets_for_times of a kafka-python consumer."""
    import kafka

    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=CLIENT_TIMEOUT_MS)
    try:
        tp = kafka.TopicPartition(topic, partition)
        by_time = {}
        for t in targets:
            found = consumer.offsets_for_times({tp: t}, timeout_ms=CLIENT_TIMEOUT_MS)[tp]
            by_time[t] = None if found is None else (found.offset, found.timestamp)
        return {"earliest": consumer.beginning_offsets([tp], timeout_ms=CLIENT_TIMEOUT_MS)[tp],
                "latest": consumer.end_offsets([tp], timeout_ms=CLIENT_TIMEOUT_MS)[tp],
                "by_time": by_time}
    finally:
        consumer.close()


def wire_answers(port: int, topic: str, partition: int, targets: list[int]) -> dict[str, Any]:
    """ListOffsets v7 over a raw connection, max timestamp (-3) included."""
    def ask(client: WireClient, ts: int) -> tuple[int, int]:
        answer = client.request(list_offsets(topic, {partition: ts})).topics[0].partitions[0]
        assert answer.error_code == 0, f"ListOffsets {topic}/{partition} at {ts}: {answer.error_code!r}"
        return int(answer.offset), int(answer.timestamp)

    with WireClient(port) as client:
        by_time = {}
        for t in targets:
            offset, ts = ask(client, t)
            by_time[t] = None if offset == -1 else (offset, ts)
        return {"earliest": ask(client, -2)[0], "latest": ask(client, -1)[0], "max": ask(client, -3),
                "by_time": by_time}


def all_answers(broker: BrokerProcess, topic: str, partition: int, targets: list[int]) -> dict[str, Any]:
    return {
        "confluent-kafka": confluent_answers(broker.bootstrap, topic, partition, targets),
        "kafka-python": kafka_python_answers(broker.bootstrap, topic, partition, targets),
        "wire": wire_answers(broker.port, topic, partition, targets),
    }


def check_answers(answers: dict[str, Any], records: list[Record]) -> None:
    expected = expected_answers(records)
    offsets_only = {t: None if v is None else v[0] for t, v in expected["by_time"].items()}
    assert answers["wire"] == expected
    assert answers["kafka-python"] == {k: expected[k] for k in ("earliest", "latest", "by_time")}
    assert answers["confluent-kafka"] == {"earliest": 0, "latest": len(records), "by_time": offsets_only}


def read_everything(broker: BrokerProcess, written: dict[str, list[list[Record]]], when: str) -> None:
    for topic, per_partition in written.items():
        for p, records in enumerate(per_partition):
            for library in LIBRARIES:
                got = consume(library, broker.bootstrap, topic, len(records), partition=p)
                assert_consumed(records, got, what=f"{when}: {library} reading {topic}/{p}")


def test_sigterm_and_restart_keep_records_and_offsets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    broker = start_process(data, *BROKER_ARGS)
    try:
        written = write_topics(broker)
        for topic in written:
            for p in range(PARTITIONS):
                assert segment_count(broker, topic, p) > 1, "the test wants several segments"
        before = {}
        for topic, per_partition in written.items():
            for p, records in enumerate(per_partition):
                answers = all_answers(broker, topic, p, timestamp_targets(records))
                check_answers(answers, records)
                before[(topic, p)] = answers
        read_everything(broker, written, "before the restart")
    finally:
        broker.stop()
    assert "Traceback" not in broker.log(), broker.log()[-5000:]

    restarted = start_process(data, *BROKER_ARGS, port=broker.port,
                              log_path=tmp_path / "restarted.log")
    try:
        read_everything(restarted, written, "after the restart")
        for topic, per_partition in written.items():
            for p, records in enumerate(per_partition):
                after = all_answers(restarted, topic, p, timestamp_targets(records))
                assert after == before[(topic, p)], f"ListOffsets of {topic}/{p} changed"
        # Appends continue where the log ended.
        extra = make_records(10, seed=99)
        assert produce("confluent-kafka", restarted.bootstrap, "restart.aiokafka", extra,
                       partition=1) == list(range(PER_PARTITION, PER_PARTITION + 10))
        got = consume("aiokafka", restarted.bootstrap, "restart.aiokafka", 10, partition=1,
                      offset=PER_PARTITION)
        assert_consumed(extra, got, first_offset=PER_PARTITION)
    finally:
        restarted.stop()
    assert "Traceback" not in restarted.log(), restarted.log()[-5000:]


class StreamingProducer(threading.Thread):
    """Produces to one partition, one record at a time, until stopped; remembers every
    record sent and the offset of each one acknowledged."""

    def __init__(self, bootstrap: str, topic: str, partition: int):
        super().__init__(daemon=True)
        from confluent_kafka import Producer

        self.topic, self.partition = topic, partition
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 1,
                                  "message.timeout.ms": 5000, "reconnect.backoff.max.ms": 200})
        self.sent: list[Record] = []
        self.acked: dict[int, Record] = {}
        self.errors: list[Any] = []
        self.running = threading.Event()
        self.halt = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            record = Record(f"stream-{i}".encode(), f"value {i} ".encode() * 8,
                            (("n", str(i).encode()),), T0 + i)

            def report(err: Any, msg: Any, record: Record = record) -> None:
                if err is None:
                    self.acked[msg.offset()] = record
                else:
                    self.errors.append(err)

            try:
                self.producer.produce(self.topic, key=record.key, value=record.value,
                                      headers=list(record.headers), timestamp=record.timestamp,
                                      partition=self.partition, on_delivery=report)
            except BufferError:
                self.producer.poll(0.01)
                continue
            self.sent.append(record)
            i += 1
            self.producer.poll(0)
            if len(self.acked) > 200:
                self.running.set()
            time.sleep(0.0005)

    def finish(self) -> None:
        """Stop producing; give up on whatever the dead broker never answered."""
        self.halt.set()
        self.join(10)
        self.producer.poll(0.5)  # deliver the reports already received
        self.producer.purge()
        self.producer.flush(5)
        self.producer.close()


def test_kill_9_keeps_acknowledged_records(tmp_path: Path) -> None:
    data = tmp_path / "data"
    broker = start_process(data, *BROKER_ARGS)
    stream = None
    try:
        written = write_topics(broker)
        create_topic(broker.port, "restart.stream")
        stream = StreamingProducer(broker.bootstrap, "restart.stream", 0)
        stream.start()
        assert stream.running.wait(20), f"the streaming producer got no acks: {stream.errors[:3]}"
        broker.kill()  # while the producer is still sending
    finally:
        if stream is not None:
            stream.finish()
        broker.stop()
    acked = dict(stream.acked)
    assert len(acked) > 200

    restarted = start_process(data, *BROKER_ARGS, port=broker.port,
                              log_path=tmp_path / "restarted.log")
    try:
        read_everything(restarted, written, "after kill -9")
        for topic, per_partition in written.items():
            for p, records in enumerate(per_partition):
                check_answers(all_answers(restarted, topic, p, timestamp_targets(records)), records)
        # Every acknowledged record is there, at its offset; the log holds exactly a prefix
        # of what was sent (a record that arrived but whose ack was lost may be there too).
        high = max(acked) + 1
        end = high_watermark(restarted.port, "restart.stream")
        assert high <= end <= len(stream.sent), (high, end, len(stream.sent))
        got = consume("confluent-kafka", restarted.bootstrap, "restart.stream", end)
        assert_consumed(stream.sent[:end], got, what="the streamed records after kill -9")
        assert all(stream.sent[offset] == record for offset, record in acked.items())
        # And the log takes appends again at its end.
        assert produce("kafka-python", restarted.bootstrap, "restart.stream", make_records(5),
                       acks="1") == list(range(end, end + 5))
    finally:
        restarted.stop()
    assert "Traceback" not in restarted.log(), restarted.log()[-5000:]
