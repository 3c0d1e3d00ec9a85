"""Interoperability with Apache Kafka's on-disk format.

Opens a copy of a log directory Apache Kafka wrote (../shared/fixtures/kafka-kraft-logs:
topic `foo`, one partition, "Hello World!" at offset 0, plus the KRaft metadata log),
and checks that a directory akfak writes has the same shape.
"""

from __future__ import annotations

import base64
import re
import struct
import uuid
from pathlib import Path

import pytest_twisted
from twisted.internet.task import Clock

from akfak.config import BrokerConfig
from akfak.log.checkpoints import METADATA_TOPIC_ID
from akfak.log.disk import DiskLogStorage
from akfak.log.metadata_records import RESOURCE_TOPIC
from akfak.metadata import Controller
from tests.log.conftest import T0, make_config
from tests.log.test_metadata import kafka_decode
from tests.recordbatch import make_batch, parse_batch_list


def kafka_uuid(text: str) -> uuid.UUID:
    return uuid.UUID(bytes=base64.urlsafe_b64decode(text + "=="))


def read_kafka_record(segment: bytes) -> list[tuple[int, bytes | None, bytes | None]]:
    """Decode a segment's records by hand (offset, key, value): the broker is not asked."""
    out = []
    pos = 0
    while pos < len(segment):
        base_offset, length = struct.unpack_from(">qi", segment, pos)
        count = struct.unpack_from(">i", segment, pos + 57)[0]
        assert segment[pos + 16] == 2 and segment[pos + 21 : pos + 23] == b"\x00\x00"
        q = pos + 61
        for _ in range(count):
            q, _length = _varint(segment, q)
            q += 1  # attributes
            q, _ts_delta = _varint(segment, q)
            q, offset_delta = _varint(segment, q)
            q, key_len = _varint(segment, q)
            key = segment[q : q + key_len] if key_len >= 0 else None
            q += max(key_len, 0)
            q, value_len = _varint(segment, q)
            value = segment[q : q + value_len] if value_len >= 0 else None
            q += max(value_len, 0)
            q, headers = _varint(segment, q)
            assert headers == 0
            out.append((base_offset + offset_delta, key, value))
        pos += 12 + length
    return out


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    raw = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return pos, (raw >> 1) ^ -(raw & 1)


@pytest_twisted.ensureDeferred
async def test_opens_a_directory_kafka_wrote(kafka_fixture: Path, clock: Clock) -> None:
    expected_id = kafka_uuid(
        (kafka_fixture / "foo-0" / "partition.metadata").read_text().split("topic_id:")[1].strip())
    metadata_end = (kafka_fixture / "__cluster_metadata-0" / "00000000000000000000.log").stat()
    config = BrokerConfig(properties={"log.dir": str(kafka_fixture)})
    storage = DiskLogStorage(config, clock=clock)
    controller = Controller(storage, config)

    assert storage.meta_properties.cluster_id == "rwd2jqiwRaCycLq7mKVHXA"
    assert storage.meta_properties.directory_id == kafka_uuid("AiSXPLrdRM-HREWplhnaNA")
    topic = controller.image.topic("foo")
    assert topic is not None and topic.topic_id == expected_id
    assert controller.image.topic_by_id(expected_id) is topic
    assert list(topic.partitions) == [0]
    partition = topic.partitions[0]
    assert (partition.leader, partition.leader_epoch, partition.replicas, partition.isr) == (
        1, 0, (1,), (1,))
    assert partition.directories == (storage.meta_properties.directory_id,)
    assert controller.image.features["metadata.version"] == 20
    # Replaying changed nothing: no bootstrap record was added to Kafka's log.
    assert (kafka_fixture / "__cluster_metadata-0" / "00000000000000000000.log").stat().st_size \
        == metadata_end.st_size

    log = storage.get_log("foo", 0)
    assert log is not None and log.topic_id == expected_id
    assert (log.log_start_offset, log.log_end_offset) == (0, 1)
    records = read_kafka_record(b"".join(log.read(0, 1 << 20).parts))
    assert records == [(0, None, b"Hello World!")]
    # Kafka left no index files; loading rebuilt them.
    assert (kafka_fixture / "foo-0" / "00000000000000000000.index").exists()
    assert (kafka_fixture / "foo-0" / "00000000000000000000.timeindex").exists()

    info = log.append(make_batch([(None, b"from akfak")], timestamp=T0), leader_epoch=0,
                      now_ms=T0)
    assert info.base_offset == 1
    controller.alter_configs(RESOURCE_TOPIC, "foo", {"retention.ms": "86400000"})
    await storage.close()

    storage = DiskLogStorage(config, clock=clock)
    controller = Controller(storage, config)
    log = storage.get_log("foo", 0)
    assert log is not None
    assert read_kafka_record(b"".join(log.read(0, 1 << 20).parts)) == [
        (0, None, b"Hello World!"), (1, None, b"from akfak")]
    assert log.config.retention_ms == 86_400_000
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_akfak_writes_the_same_shape(kafka_fixture: Path, tmp_path: Path,
                                           clock: Clock) -> None:
    data = tmp_path / "akfak"
    config = make_config(data)
    storage = DiskLogStorage(config, clock=clock)
    controller = Controller(storage, config)
    topic = controller.create_topic("foo", 1, 1)
    storage.get_log("foo", 0).append(  # type: ignore[union-attr]
        make_batch([(None, b"Hello World!")], timestamp=T0), leader_epoch=0, now_ms=T0)
    await storage.close()

    def keys(path: Path) -> set[str]:
        return {line.split("=")[0] for line in path.read_text().splitlines()
                if line and not line.startswith("#")}

    assert keys(data / "meta.properties") == keys(kafka_fixture / "meta.properties")
    for directory in ("foo-0", "__cluster_metadata-0"):
        ours = (data / directory / "partition.metadata").read_text()
        theirs = (kafka_fixture / directory / "partition.metadata").read_text()
        shape = re.compile(r"^version: 0\ntopic_id: [A-Za-z0-9_-]{22}$")
        assert shape.match(ours) and shape.match(theirs)
    assert (data / "__cluster_metadata-0" / "partition.metadata").read_text() == (
        kafka_fixture / "__cluster_metadata-0" / "partition.metadata").read_text()
    assert kafka_uuid((data / "foo-0" / "partition.metadata").read_text().split(": ")[2]) == \
        topic.topic_id
    assert (data / "foo-0" / "00000000000000000000.log").exists()
    assert (data / "__cluster_metadata-0" / "00000000000000000000.log").exists()
    assert read_kafka_record((data / "foo-0" / "00000000000000000000.log").read_bytes()) == \
        read_kafka_record((kafka_fixture / "foo-0" / "00000000000000000000.log").read_bytes())

    # The metadata log, read with the independent schema decoder, says what Kafka's says.
    ours = [kafka_decode(r.value) for b in parse_batch_list(  # type: ignore[arg-type]
        (data / "__cluster_metadata-0" / "00000000000000000000.log").read_bytes())
        for r in b.records]
    theirs_batches = parse_batch_list(
        (kafka_fixture / "__cluster_metadata-0" / "00000000000000000000.log").read_bytes())
    theirs = [kafka_decode(r.value) for b in theirs_batches for r in b.records  # type: ignore[arg-type]
              if r.value is not None and r.value[1] in (2, 3, 12)]
    assert all(b.crc_ok for b in theirs_batches)
    # The fixture is at metadata.version 3.8-IV0; a new akfak directory bootstraps as Kafka
    # 4.1.1 formats one (features, the cluster's min.insync.replicas), PartitionRecord v2.
    assert [d["type"] for d in theirs] == [12, 2, 3]
    assert [d["type"] for d in ours] == [12, 12, 12, 12, 4, 2, 3]
    assert theirs[0]["level"] == 20 and ours[0]["level"] == 27
    assert ours[5]["name"] == theirs[1]["name"] == "foo"
    assert (ours[6]["version"], theirs[2]["version"]) == (2, 1)
    mine, kafkas = dict(ours[6]), dict(theirs[2])
    for d in (mine, kafkas):
        for key in ("topic_id", "directories", "version"):
            d.pop(key)
    assert mine == kafkas
    assert uuid.UUID(int=1) == METADATA_TOPIC_ID


@pytest_twisted.ensureDeferred
async def test_replay_starts_from_a_kraft_snapshot(tmp_path: Path, clock: Clock) -> None:
    """Kafka cleans its metadata log behind snapshots; the state before one is in it."""
    from akfak.log.metadata_records import FeatureLevelRecord, TopicRecord, encode_record
    from akfak.log.records import encode_batch

    config = make_config(tmp_path / "data")
    storage = DiskLogStorage(config, clock=clock)
    storage.open()
    metadata = storage.metadata_log
    ids = {name: uuid.uuid4() for name in ("old", "snap", "new")}
    metadata.append([FeatureLevelRecord("metadata.version", 20)], T0)
    metadata.append([TopicRecord("old", ids["old"])], T0)  # offset 1: covered by the snapshot
    metadata.append([TopicRecord(f"x{i}", uuid.uuid4()) for i in range(3)], T0)  # 2..4
    assert metadata.append([TopicRecord("new", ids["new"])], T0) == 5
    await storage.close()
    snapshot = encode_batch([(None, b"\x00\x00\x00\x00")], timestamp=T0, control=True) + \
        encode_batch([(None, encode_record(FeatureLevelRecord("metadata.version", 20))),
                      (None, encode_record(TopicRecord("snap", ids["snap"])))],
                     timestamp=T0, base_offset=1)
    (tmp_path / "data" / "__cluster_metadata-0" / "00000000000000000005-0000000001.checkpoint") \
        .write_bytes(snapshot)

    storage = DiskLogStorage(config, clock=clock)
    controller = Controller(storage, config)
    assert set(controller.image.topics_by_name) == {"snap", "new"}
    assert controller.image.topic("new").topic_id == ids["new"]  # type: ignore[union-attr]
    await storage.close()
