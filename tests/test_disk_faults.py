"""Disk faults with real clients on a broker subprocess: a full disk, I/O errors, bit flips.

- Disk full (a size-limited tmpfs the test mounts): a producer (confluent-kafka, acks=all,
  idempotent) fills it until its records fail; the broker answered KAFKA_STORAGE_ERROR
  (seen on the wire too), every acknowledged record reads back while the disk is full,
  CreateTopics and offset commits answer errors, the broker keeps answering; once the test
  deletes its filler file, produce succeeds again without a restart; after a restart
  everything acknowledged is there and the directory opens without truncation.
- I/O errors (an ext2 image on a loop device whose backing store the test fills, see
  small_fs.py: the kernel fails the device's writes, with EIO or ENOSPC): the same.
- Bit flips in a closed segment: after a kill -9, recovery truncates at the corrupt batch
  and logs its offset (Kafka's LogLoader); after a clean shutdown (no recovery), the first
  fetch of the batch CRC-checks it and answers CORRUPT_MESSAGE, so a consumer (with or
  without check.crcs) gets an error at that offset, never the flipped record.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests import requests
from tests.brokers import BrokerProcess, start_process
from tests.recordbatch import make_batch
from tests.small_fs import failing_disk, fill, tmpfs
from tests.wire import WireClient

TOPIC = "filling"
#: Small segments, so that the disk fills across rolls (new segments, indexes, snapshots).
TOPIC_CONFIG = {"segment.bytes": str(128 * 1024)}
VALUE_SIZE = 1500

Acked = dict[tuple[int, int], bytes]


#: About 19 KB of metadata records (a 64-partition topic's are 4.8 KB).
NEW_TOPIC_PARTITIONS = 256


def _broker(data_dir: Path, log_path: Path) -> BrokerProcess:
    # The offsets topic small, so that its creation fits a small disk.
    return start_process(data_dir, "--override", "offsets.topic.num.partitions=1",
                         log_path=log_path)


def _create(bootstrap: str, name: str, partitions: int = 2,
            config: dict[str, str] | None = None) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1,
                                                config=config or TOPIC_CONFIG)]).values():
        future.result(20)


def _producer(bootstrap: str, **extra: Any) -> Producer:
    return Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                     "linger.ms": 5, "batch.size": 16384, "message.timeout.ms": 4000,
                     "retry.backoff.ms": 50, **extra})


def produce_until_errors(bootstrap: str, topic: str, acked: Acked, limit: int = 20000) -> list[Any]:
    """Produce until records fail (the disk is full); every acknowledged one goes in `acked`."""
    producer = _producer(bootstrap)
    errors: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()
        else:
            errors.append(err)

    for i in range(limit):
        producer.produce(topic, value=os.urandom(VALUE_SIZE), key=b"%d" % i, on_delivery=report)
        producer.poll(0)
        if errors:
            break
        if i % 200 == 199:
            producer.flush(10)
    producer.flush(20)
    assert errors, f"{limit} records fit on the disk: it never filled"
    return errors


def produce_all(bootstrap: str, topic: str, acked: Acked, count: int) -> None:
    producer = _producer(bootstrap, **{"message.timeout.ms": 30000})
    failed: list[Any] = []

    def report(err: Any, msg: Any) -> None:
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()
        else:
            failed.append(err)

    for i in range(count):
        producer.produce(topic, value=os.urandom(VALUE_SIZE), key=b"again-%d" % i,
                         on_delivery=report)
        producer.poll(0)
    assert producer.flush(40) == 0
    assert not failed, failed[:3]


def consume_all(bootstrap: str, topic: str, partitions: int, *, check_crcs: bool = False,
                timeout: float = 30.0) -> tuple[Acked, list[Any]]:
    """Every record of `topic` from the start to the high watermark, and the errors seen."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time()}",
                         "enable.auto.commit": False, "check.crcs": check_crcs,
                         "fetch.error.backoff.ms": 50})
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)}
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: Acked = {}
    errors: list[Any] = []
    positions = dict.fromkeys(range(partitions), 0)
    deadline = time.monotonic() + timeout
    while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
        for msg in consumer.consume(500, 0.5):
            if msg.error() is not None:
                errors.append(msg.error())
                if len(errors) > 3:
                    break
                continue
            got[(msg.partition(), msg.offset())] = msg.value()
            positions[msg.partition()] = msg.offset() + 1
        if len(errors) > 3:
            break
    consumer.close()
    return got, errors


def assert_all_there(acked: Acked, got: Acked, what: str) -> None:
    missing = [k for k in acked if k not in got]
    assert not missing, f"{what}: {len(missing)} acknowledged records missing, e.g. {missing[:3]}"
    wrong = [k for k, v in acked.items() if got[k] != v]
    assert not wrong, f"{what}: {len(wrong)} records differ, e.g. {wrong[:3]}"


def raw_produce_error(port: int, topic: str) -> int:
    with WireClient(port) as client:
        response = client.request(requests.produce(topic, {0: make_batch([(b"k", os.urandom(64 * 1024))])},
                                                   acks=-1))
    return int(response.responses[0].partition_responses[0].error_code)


def offset_commit_error(port: int, topic: str) -> int:
    module = requests._module(8, 2)
    request = requests.build(
        module.OffsetCommitRequest, group_id="committer", generation_id_or_member_epoch=-1,
        member_id="", retention_time_ms=-1,
        topics=(module.OffsetCommitRequestTopic(name=topic, partitions=tuple(
            requests.build(module.OffsetCommitRequestPartition, partition_index=p,
                           committed_offset=1, committed_metadata="m" * 4000,
                           commit_timestamp=-1) for p in (0, 1))),))
    with WireClient(port) as client:
        response = client.request(request)
    return int(response.topics[0].partitions[0].error_code)


def _api_versions_ok(port: int) -> bool:
    module = requests._module(18, 3)
    with WireClient(port) as client:
        response = client.request(requests.build(
            module.ApiVersionsRequest, client_software_name="t", client_software_version="1"))
    return int(response.error_code) == 0


def _check_disk_fault(broker: BrokerProcess, data_dir: Path, log_path: Path, *,
                      fault: Any, heal: Any) -> None:
    """The scenario both faults share; `fault()` makes writes fail, `heal()` ends it."""
    _create(broker.bootstrap, TOPIC)
    _create(broker.bootstrap, "other", 1)
    acked: Acked = {}
    produce_all(broker.bootstrap, TOPIC, acked, 200)
    assert offset_commit_error(broker.port, TOPIC) == 0  # __consumer_offsets exists
    fault()
    errors = produce_until_errors(broker.bootstrap, TOPIC, acked)
    # librdkafka retries KAFKA_STORAGE_ERROR until message.timeout.ms; the broker's answer:
    assert all(e.code() == KafkaError._MSG_TIMED_OUT for e in errors), errors[:3]
    assert raw_produce_error(broker.port, TOPIC) == KafkaError.KAFKA_STORAGE_ERROR
    assert raw_produce_error(broker.port, "other") == KafkaError.KAFKA_STORAGE_ERROR
    assert _api_versions_ok(broker.port)

    # Reads go on while the disk fails, and give back everything acknowledged.
    got, read_errors = consume_all(broker.bootstrap, TOPIC, 2)
    assert not read_errors, read_errors
    assert_all_there(acked, got, "while the disk fails")

    # A new topic and an offset commit answer errors, and the broker goes on.  (Both are
    # larger than a page: a small write may still fit the free end of a file's last page.
    # The topic's records are several pages, as ext2 may also reuse freed blocks whose
    # pages the loop device's backing store still holds.)
    fault()  # whatever the producer left free
    with pytest.raises(KafkaException) as raised:
        _create(broker.bootstrap, "new-topic", NEW_TOPIC_PARTITIONS)
    assert raised.value.args[0].code() == KafkaError.KAFKA_STORAGE_ERROR
    assert offset_commit_error(broker.port, TOPIC) == KafkaError.NOT_COORDINATOR
    assert _api_versions_ok(broker.port)

    # Space (or the disk) comes back: produce succeeds again, without a restart.
    heal()
    produce_all(broker.bootstrap, TOPIC, acked, 300)
    produce_all(broker.bootstrap, "other", {}, 20)
    assert offset_commit_error(broker.port, TOPIC) == 0
    try:
        _create(broker.bootstrap, "new-topic", NEW_TOPIC_PARTITIONS)
    except KafkaException as e:
        # the failed CreateTopics may have been written before its fsync failed (an error
        # answers a change that may or may not have been made, as Kafka's timeouts do)
        assert e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
    produce_all(broker.bootstrap, "new-topic", {}, 20)
    got, read_errors = consume_all(broker.bootstrap, TOPIC, 2)
    assert not read_errors, read_errors
    assert_all_there(acked, got, "after the disk came back")
    log = log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert re.search(r"Cannot append to filling-\d", log), log[-3000:]
    assert re.search(r"Appends to filling-\d succeed again", log), log[-3000:]

    # A kill -9 and a restart: everything acknowledged is there, nothing was cut.
    broker.stop(signal.SIGKILL)
    offset = log_path.stat().st_size
    restarted = _broker(data_dir, log_path)
    try:
        got, read_errors = consume_all(restarted.bootstrap, TOPIC, 2)
        assert not read_errors, read_errors
        assert_all_there(acked, got, "after a kill -9 and a restart")
        with open(log_path, errors="replace") as f:
            f.seek(offset)
            after = f.read()
        assert "Truncating" not in after and "offline" not in after, after[-3000:]
        assert "Traceback" not in after, after[-3000:]
    finally:
        restarted.stop()


def test_disk_full(tmp_path: Path) -> None:
    """ENOSPC on a tmpfs: KAFKA_STORAGE_ERROR, nothing acknowledged lost, recovery by itself."""
    with tmpfs(tmp_path / "fs", "12m") as fs:
        data_dir, log_path = fs / "data", tmp_path / "broker.log"
        filler = fs / "filler"
        broker = _broker(data_dir, log_path)
        try:
            def fault() -> None:
                # First the filler leaves 1.5 MiB, for the producer to fill; then it takes
                # whatever the producer left.
                if filler.exists():
                    fill(fs / "filler-rest")
                    return
                stat = os.statvfs(fs)
                with open(filler, "wb") as f:
                    f.write(b"\0" * (stat.f_bavail * stat.f_frsize - 1536 * 1024))

            def heal() -> None:
                filler.unlink()
                (fs / "filler-rest").unlink()

            _check_disk_fault(broker, data_dir, log_path, fault=fault, heal=heal)
        finally:
            broker.stop(signal.SIGKILL)


def test_io_errors(tmp_path: Path) -> None:
    """EIO from the block layer (see small_fs.failing_disk): the same guarantees as ENOSPC."""
    with failing_disk(tmp_path / "eio") as disk:
        data_dir, log_path = disk.mount / "data", tmp_path / "broker.log"
        broker = _broker(data_dir, log_path)
        try:
            _check_disk_fault(broker, data_dir, log_path, fault=disk.fail, heal=disk.heal)
            # The kernel fails the loop device's writes: EIO for some writes, the backing
            # store's ENOSPC passed through for others (which, varies from run to run).
            assert re.search(r"Cannot append to .*Errno (5|28)", log_path.read_text())
        finally:
            broker.stop(signal.SIGKILL)


# -- bit flips -------------------------------------------------------------------------

FLIPS = "flips"


def _batches(path: Path) -> list[tuple[int, int, int]]:
    """(position, size, base offset) of each batch in a segment file."""
    data = path.read_bytes()
    found, pos = [], 0
    while pos + 12 <= len(data):
        base = int.from_bytes(data[pos : pos + 8], "big", signed=True)
        size = 12 + int.from_bytes(data[pos + 8 : pos + 12], "big", signed=True)
        found.append((pos, size, base))
        pos += size
    return found


def _flip_in_closed_segment(partition_dir: Path) -> tuple[int, int]:
    """Flip one bit in the records of a batch in the middle of the second segment (closed);
    return (the batch's base offset, the second segment's base offset)."""
    segments = sorted(partition_dir.glob("*.log"))
    assert len(segments) >= 3, segments
    target = segments[1]
    batches = _batches(target)
    pos, size, base = batches[len(batches) // 2]
    with open(target, "r+b") as f:
        f.seek(pos + 61 + (size - 61) // 2)  # inside the records, past the 61-byte header
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x10]))
    return base, int(target.name[:20])


def _fill_flips(bootstrap: str) -> Acked:
    _create(bootstrap, FLIPS, 1, {"segment.bytes": str(64 * 1024)})
    acked: Acked = {}
    producer = _producer(bootstrap, **{"linger.ms": 0, "batch.size": 4096,
                                       "compression.type": "none"})

    def report(err: Any, msg: Any) -> None:
        assert err is None, err
        acked[(msg.partition(), msg.offset())] = msg.value()

    for i in range(300):
        producer.produce(FLIPS, value=os.urandom(1000), key=b"%d" % i, on_delivery=report)
        if i % 10 == 9:
            producer.flush(10)
    assert producer.flush(20) == 0
    return acked


@pytest.mark.parametrize("check_crcs", [False, True])
def test_bit_flip_before_the_recovery_point(tmp_path: Path, check_crcs: bool) -> None:
    """A clean shutdown, then a flipped bit in a closed segment: no recovery looks at it,
    so the first fetch of the batch CRC-checks it and answers CORRUPT_MESSAGE.  The records
    before it are consumed; the batch's records never are, whatever check.crcs says."""
    data_dir, log_path = tmp_path / "data", tmp_path / "broker.log"
    broker = _broker(data_dir, log_path)
    acked = _fill_flips(broker.bootstrap)
    broker.stop()  # clean: the next start trusts every segment
    corrupt, _ = _flip_in_closed_segment(data_dir / f"{FLIPS}-0")
    restarted = _broker(data_dir, log_path)
    try:
        got, errors = consume_all(restarted.bootstrap, FLIPS, 1, check_crcs=check_crcs,
                                  timeout=15)
        assert errors, "the corrupt batch was served without an error"
        # CORRUPT_MESSAGE (2) is INVALID_MSG in librdkafka: "Broker: Invalid message"
        assert all(e.code() == KafkaError.INVALID_MSG for e in errors), errors
        assert_all_there({k: v for k, v in acked.items() if k[1] < corrupt}, got,
                         "before the corrupt batch")
        assert max(o for _, o in got) == corrupt - 1
        assert f"Corrupt record batch in {FLIPS}-0 at offset {corrupt}" in log_path.read_text()
    finally:
        restarted.stop()


def test_bit_flip_after_the_recovery_point(tmp_path: Path) -> None:
    """A kill -9, then a flipped bit in a closed segment past the recovery point: recovery
    truncates the log at the corrupt batch and deletes the segments after it (Kafka's
    LogLoader), logging the offset; everything before it is served."""
    data_dir, log_path = tmp_path / "data", tmp_path / "broker.log"
    broker = _broker(data_dir, log_path)
    acked = _fill_flips(broker.bootstrap)
    broker.kill()  # no recovery-point checkpoint yet: recovery checks every segment
    corrupt, segment = _flip_in_closed_segment(data_dir / f"{FLIPS}-0")
    restarted = _broker(data_dir, log_path)
    try:
        got, errors = consume_all(restarted.bootstrap, FLIPS, 1, timeout=15)
        assert not errors, errors
        assert got.keys() == {k for k in acked if k[1] < corrupt}
        assert_all_there({k: v for k, v in acked.items() if k[1] < corrupt}, got,
                         "before the corrupt batch")
        log = log_path.read_text()
        assert re.search(rf"Truncating \d+ invalid bytes at the end of segment {segment} "
                         rf"\(byte \d+\): the batch at offset {corrupt} ", log), log[-2000:]
        assert sorted(p.name for p in (data_dir / f"{FLIPS}-0").glob("*.log"))[-1] == (
            f"{segment:020d}.log")
    finally:
        restarted.stop()
