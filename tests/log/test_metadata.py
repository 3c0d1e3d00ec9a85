"""The metadata image and controller, on both providers; metadata record encoding."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from akfak.config import BrokerConfig
from akfak.errors import (
    InvalidConfig,
    InvalidPartitions,
    InvalidReplicationFactor,
    InvalidTopic,
    InvalidUpdateVersion,
    KafkaError,
    TopicAlreadyExists,
    TopicDeletionDisabled,
    UnknownTopicOrPartition,
)
from akfak.log.disk import DiskLogStorage
from akfak.log.metadata_records import (
    RESOURCE_BROKER,
    RESOURCE_TOPIC,
    BrokerEndpoint,
    BrokerRegistrationChangeRecord,
    ConfigRecord,
    FeatureLevelRecord,
    PartitionChangeRecord,
    PartitionRecord,
    ProducerIdsRecord,
    RegisterBrokerRecord,
    RemoveTopicRecord,
    TopicRecord,
    UnknownRecord,
    decode_record,
    encode_record,
)
from akfak.metadata import Controller
from akfak.metadata_image import MetadataImage
from tests.log.conftest import T0, StorageFactory, make_config
from tests.recordbatch import make_batch, parse_batch_list


def records_after(controller: Controller, offset: int) -> list[Any]:
    return [r for o, r in controller.storage.metadata_log.replay() if o >= offset]


# -- an independent reader of the record values, written from the Kafka JSON schemas ------


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _string(buf: bytes, pos: int) -> tuple[str | None, int]:
    n, pos = _uvarint(buf, pos)
    if n == 0:
        return None, pos
    return buf[pos : pos + n - 1].decode(), pos + n - 1


def _int32s(buf: bytes, pos: int) -> tuple[list[int], int]:
    n, pos = _uvarint(buf, pos)
    values = [struct.unpack_from(">i", buf, pos + 4 * i)[0] for i in range(n - 1)]
    return values, pos + 4 * (n - 1)


def _uuids(buf: bytes, pos: int) -> tuple[list[uuid.UUID], int]:
    n, pos = _uvarint(buf, pos)
    return [uuid.UUID(bytes=buf[pos + 16 * i : pos + 16 * i + 16]) for i in range(n - 1)], \
        pos + 16 * (n - 1)


def kafka_decode(value: bytes) -> dict[str, Any]:
    """Decode the metadata records akfak writes, straight from the schema definitions."""
    frame, pos = _uvarint(value, 0)
    api_key, pos = _uvarint(value, pos)
    version, pos = _uvarint(value, pos)
    assert frame == 1
    out: dict[str, Any] = {"type": api_key, "version": version}
    if api_key == 2:  # TopicRecord v0: Name string, TopicId uuid
        out["name"], pos = _string(value, pos)
        out["topic_id"] = uuid.UUID(bytes=value[pos : pos + 16])
        pos += 16
    elif api_key == 3:  # PartitionRecord v1
        out["partition"], = struct.unpack_from(">i", value, pos)
        out["topic_id"] = uuid.UUID(bytes=value[pos + 4 : pos + 20])
        pos += 20
        for name in ("replicas", "isr", "removing", "adding"):
            out[name], pos = _int32s(value, pos)
        out["leader"], out["leader_epoch"], out["partition_epoch"] = struct.unpack_from(
            ">iii", value, pos)
        pos += 12
        assert version >= 1
        out["directories"], pos = _uuids(value, pos)
    elif api_key == 4:  # ConfigRecord v0: ResourceType int8, names, nullable value
        out["resource_type"] = value[pos]
        out["resource_name"], pos = _string(value, pos + 1)
        out["name"], pos = _string(value, pos)
        out["value"], pos = _string(value, pos)
    elif api_key == 9:  # RemoveTopicRecord v0
        out["topic_id"] = uuid.UUID(bytes=value[pos : pos + 16])
        pos += 16
    elif api_key == 12:  # FeatureLevelRecord v0
        out["name"], pos = _string(value, pos)
        out["level"], = struct.unpack_from(">h", value, pos)
        pos += 2
    elif api_key == 15:  # ProducerIdsRecord v0
        out["broker_id"], out["broker_epoch"], out["next"] = struct.unpack_from(">iqq", value, pos)
        pos += 20
    else:
        raise AssertionError(f"unexpected record type {api_key}")
    tagged, pos = _uvarint(value, pos)
    assert tagged == 0 and pos == len(value), "trailing bytes"
    return out


# -- record encoding ------------------------------------------------------------------------

FIXTURE_VALUES = [
    "01020004666f6fbfd99e5e3235455281f8d4af1741970c00",
    "01030100000000bfd99e5e3235455281f8d4af1741970c020000000102000000010101000000010000000000"
    "000000020224973cbadd44cf874445a99619da3400",
    "010c00116d657461646174612e76657273696f6e001400",
]


@pytest.mark.parametrize("hex_value", FIXTURE_VALUES)
def test_records_written_by_kafka_round_trip_byte_for_byte(hex_value: str) -> None:
    value = bytes.fromhex(hex_value)
    record = decode_record(value)
    assert not isinstance(record, UnknownRecord)
    assert encode_record(record) == value


def test_record_round_trips_and_tagged_fields() -> None:
    topic_id = uuid.uuid4()
    change = PartitionChangeRecord(partition_id=3, topic_id=topic_id, isr=[1], leader=1,
                                   directories=[uuid.uuid4()])
    assert decode_record(encode_record(change)) == change
    # Tagged fields are written only when set: a no-op change is 2 ints and an empty tag list.
    bare = encode_record(PartitionChangeRecord(partition_id=0, topic_id=topic_id))
    assert len(bare) == 3 + 4 + 16 + 1
    config = ConfigRecord(RESOURCE_TOPIC, "t", "retention.ms", None)
    assert decode_record(encode_record(config)) == config
    assert isinstance(decode_record(b"\x01\x63\x00\x00"), UnknownRecord)


# -- the controller, on both providers --------------------------------------------------


def controller_for(open_storage: StorageFactory, clock: Clock | None = None,
                   **properties: object) -> Controller:
    storage = open_storage(**properties)
    return Controller(storage, storage.config, clock=clock)


def test_a_new_metadata_log_starts_with_metadata_version(open_storage: StorageFactory) -> None:
    """As Kafka 4.1.1's `kafka-storage format` bootstraps it (share.version stays 0: share
    groups are a preview in 4.1)."""
    controller = controller_for(open_storage)
    assert list(controller.storage.metadata_log.replay()) == [
        (0, FeatureLevelRecord("metadata.version", 27)),
        (1, FeatureLevelRecord("group.version", 1)),
        (2, FeatureLevelRecord("transaction.version", 2)),
        (3, FeatureLevelRecord("eligible.leader.replicas.version", 1)),
        (4, ConfigRecord(RESOURCE_BROKER, "", "min.insync.replicas", "1"))]
    assert controller.image.features == {"metadata.version": 27, "group.version": 1,
                                         "transaction.version": 2,
                                         "eligible.leader.replicas.version": 1}


def seeded_controller(open_storage: StorageFactory, *records: Any) -> Controller:
    """A controller over a metadata log that already holds `records` (an older cluster)."""
    storage = open_storage()
    storage.metadata_log.append(list(records), 0)
    return Controller(storage, storage.config)


def test_records_are_written_in_the_versions_of_the_finalized_metadata_version(
        open_storage: StorageFactory) -> None:
    controller = seeded_controller(open_storage, FeatureLevelRecord("metadata.version", 20))
    assert controller.image.features == {"metadata.version": 20}  # an older cluster keeps its level
    start = controller.storage.metadata_log.end_offset
    controller.create_topic("old", 1, 1)
    controller.update_features({"metadata.version": (27, 1)})
    controller.create_topic("new", 1, 1)
    batches = parse_batch_list(b"".join(
        controller.storage.metadata_log.log.read(start, 1 << 20).parts))  # type: ignore[attr-defined]
    decoded = [kafka_decode(r.value) for b in batches for r in b.records]  # type: ignore[arg-type]
    assert [(d["type"], d["version"]) for d in decoded] == [(2, 0), (3, 1), (12, 0), (2, 0), (3, 2)]


def test_update_features_follows_kafkas_rules(open_storage: StorageFactory) -> None:
    controller = seeded_controller(open_storage, FeatureLevelRecord("metadata.version", 20))
    cases = [
        ({"transaction.version": (3, 1)}, "Invalid update version 3 for feature "
         "transaction.version. Local controller 1 only supports versions 0-2"),
        ({"share.version": (2, 1)}, "Invalid update version 2 for feature share.version. "
         "Local controller 1 only supports versions 0-1"),
        ({"no.such.feature": (1, 1)}, "Invalid update version 1 for feature no.such.feature. "
         "Local controller 1 does not support this feature."),
        ({"eligible.leader.replicas.version": (1, 1)}, "Invalid update version 1 for feature "
         "eligible.leader.replicas.version. eligible.leader.replicas.version could not be set "
         "to 1 because it depends on metadata.version level 23"),
        ({"metadata.version": (16, 2)}, "Invalid metadata.version 16. Refusing to perform the "
         "requested downgrade because it might delete metadata information."),
        ({"metadata.version": (19, 1)}, "Invalid update version 19 for feature metadata.version. "
         "Can't downgrade the version of this feature without setting the upgrade type to "
         "either safe or unsafe downgrade."),
        ({"metadata.version": (21, 2)}, "Invalid update version 21 for feature metadata.version. "
         "Can't downgrade to a newer version."),
        # all or nothing: the valid update is not made either
        ({"metadata.version": (6, 1), "transaction.version": (2, 1)}, "Invalid update version 6 "
         "for feature metadata.version. Local controller 1 only supports versions 7-27"),
    ]
    for updates, message in cases:
        with pytest.raises(InvalidUpdateVersion) as caught:
            controller.update_features(updates)
        assert (caught.value.error_code, str(caught.value)) == (95, message)
    assert controller.image.features == {"metadata.version": 20}
    controller.update_features({"transaction.version": (2, 1)}, validate_only=True)
    assert controller.image.features == {"metadata.version": 20}
    # ELR depends on the metadata.version proposed in the same request
    controller.update_features({"metadata.version": (27, 1),
                                "eligible.leader.replicas.version": (1, 1),
                                "transaction.version": (2, 1)})
    assert controller.image.features == {"metadata.version": 27, "transaction.version": 2,
                                         "eligible.leader.replicas.version": 1}
    controller.update_features({"transaction.version": (0, 2)})  # 0 removes it
    controller.update_features({"metadata.version": (24, 2)})  # no record change from 24 to 27
    assert controller.image.features == {"metadata.version": 24,
                                         "eligible.leader.replicas.version": 1}
    reopened = Controller(controller.storage, controller.storage.config)
    assert reopened.image.features == controller.image.features


# a directory Kafka stopped is on disk; over PostgreSQL the cluster's controller elects on its
# tick instead (tests/test_cluster.py)
@pytest.mark.parametrize("provider", ["memory", "disk"])
def test_a_broker_back_from_controlled_shutdown_leads_again(open_storage: StorageFactory) -> None:
    """Kafka 4.1's controlled shutdown leaves `leader: -1, isr: [], ELR: [1]` and a fenced
    registration; coming back, the node registers unfenced and leads again."""
    storage = open_storage()
    directory = storage.meta_properties.directory_id
    topic_id = uuid.uuid4()
    registration = RegisterBrokerRecord(
        broker_id=1, incarnation_id=uuid.uuid4(), broker_epoch=5,
        end_points=[BrokerEndpoint("PLAINTEXT", "127.0.0.1", 9092)], fenced=False,
        log_dirs=[directory])
    storage.metadata_log.append([
        FeatureLevelRecord("metadata.version", 27), registration,
        TopicRecord("t", topic_id),
        *[PartitionRecord(partition_id=p, topic_id=topic_id, replicas=[1], isr=[1], leader=1,
                          leader_epoch=3, partition_epoch=4, directories=[directory])
          for p in range(2)],
        BrokerRegistrationChangeRecord(broker_id=1, broker_epoch=5, in_controlled_shutdown=1),
        *[PartitionChangeRecord(p, topic_id, isr=[], leader=-1, eligible_leader_replicas=[1],
                                last_known_elr=[1]) for p in range(2)],
        BrokerRegistrationChangeRecord(broker_id=1, broker_epoch=5, fenced=1),
    ], 0, 27)
    before = storage.metadata_log.end_offset
    controller = Controller(storage, storage.config)
    for p in range(2):
        image = controller.image.partition("t", p)
        assert image is not None
        assert (image.leader, image.isr, image.eligible_leader_replicas, image.last_known_elr,
                image.leader_epoch) == (1, (1,), (), (), 5)
        assert storage.get_log("t", p) is not None
    broker = controller.image.brokers[1]
    assert (broker.fenced, broker.in_controlled_shutdown, broker.epoch) == (False, False, before)
    written = records_after(controller, before)
    assert [type(r).__name__ for r in written] == [
        "RegisterBrokerRecord", "PartitionChangeRecord", "PartitionChangeRecord"]
    assert written[1] == PartitionChangeRecord(0, topic_id, isr=[1], leader=1,
                                               eligible_leader_replicas=[], last_known_elr=[])
    # Nothing more to do the next time.
    again = Controller(storage, storage.config)
    assert again.storage.metadata_log.end_offset == storage.metadata_log.end_offset


def test_create_topic_writes_what_kafka_writes(open_storage: StorageFactory) -> None:
    controller = controller_for(open_storage)
    start = controller.storage.metadata_log.end_offset
    topic = controller.create_topic("orders", 3, 1, {"retention.ms": "1000",
                                                     "cleanup.policy": "delete"})
    directory = controller.storage.meta_properties.directory_id
    written = records_after(controller, start)
    assert written == [
        ConfigRecord(RESOURCE_TOPIC, "orders", "cleanup.policy", "delete"),
        ConfigRecord(RESOURCE_TOPIC, "orders", "retention.ms", "1000"),
        TopicRecord("orders", topic.topic_id),
        *[PartitionRecord(partition_id=p, topic_id=topic.topic_id, replicas=[1], isr=[1],
                          leader=1, leader_epoch=0, partition_epoch=0,
                          directories=[directory]) for p in range(3)],
    ]
    image = controller.image
    assert image.topic("orders") is image.topic_by_id(topic.topic_id)
    assert sorted(topic.partitions) == [0, 1, 2]
    p0 = topic.partitions[0]
    assert (p0.leader, p0.leader_epoch, p0.partition_epoch, p0.replicas, p0.isr) == (
        1, 0, 0, (1,), (1,))
    assert image.configs_of_topic("orders") == {"retention.ms": "1000",
                                                "cleanup.policy": "delete"}
    for p in range(3):
        log = controller.storage.get_log("orders", p)
        assert log is not None and log.topic_id == topic.topic_id
        assert log.config.retention_ms == 1000
    # A second, independent reader agrees with the bytes in the log.
    batches = parse_batch_list(b"".join(
        controller.storage.metadata_log.log.read(start, 1 << 20).parts))  # type: ignore[attr-defined]
    decoded = [kafka_decode(r.value) for b in batches for r in b.records]  # type: ignore[arg-type]
    assert [d["type"] for d in decoded] == [4, 4, 2, 3, 3, 3]
    assert decoded[2] == {"type": 2, "version": 0, "name": "orders", "topic_id": topic.topic_id}
    assert decoded[3]["directories"] == [directory] and decoded[3]["version"] == 2


@pytest.mark.parametrize("name", ["", ".", "..", "a" * 250, "a b", "ünï", "x/y"])
def test_invalid_topic_names(open_storage: StorageFactory, name: str) -> None:
    controller = controller_for(open_storage)
    with pytest.raises(InvalidTopic) as caught:
        controller.create_topic(name, 1, 1)
    assert caught.value.error_code == 17


def test_longest_legal_topic_name(open_storage: StorageFactory) -> None:
    controller = controller_for(open_storage)
    name = "a.B_-9" + "z" * 243
    assert controller.create_topic(name, 1, 1).name == name


@pytest.mark.parametrize(("args", "configs", "error", "code"), [
    ((3, 3), None, InvalidReplicationFactor, 38),
    ((3, 0), None, InvalidReplicationFactor, 38),
    ((0, 1), None, InvalidPartitions, 37),
    ((-5, 1), None, InvalidPartitions, 37),
    ((1, 1), {"no.such.config": "1"}, InvalidConfig, 40),
    ((1, 1), {"retention.ms": "soon"}, InvalidConfig, 40),
    ((1, 1), {"cleanup.policy": "shred"}, InvalidConfig, 40),
    ((1, 1), {"message.timestamp.type": "Now"}, InvalidConfig, 40),
])
def test_create_topic_errors(open_storage: StorageFactory, args: tuple[int, int],
                             configs: dict[str, str] | None, error: type[KafkaError],
                             code: int) -> None:
    controller = controller_for(open_storage)
    end = controller.storage.metadata_log.end_offset
    with pytest.raises(error) as caught:
        controller.create_topic("t", *args, configs)
    assert caught.value.error_code == code
    assert controller.storage.metadata_log.end_offset == end
    assert controller.image.topic("t") is None and controller.storage.get_log("t", 0) is None


def test_create_topic_conflicts(open_storage: StorageFactory) -> None:
    controller = controller_for(open_storage)
    controller.create_topic("a.b", 1, 1)
    with pytest.raises(TopicAlreadyExists) as caught:
        controller.create_topic("a.b", 1, 1)
    assert caught.value.error_code == 36
    with pytest.raises(InvalidTopic, match="collides"):
        controller.create_topic("a_b", 1, 1)


def test_create_topic_defaults_and_validate_only(open_storage: StorageFactory) -> None:
    controller = controller_for(open_storage, num_partitions=4)
    end = controller.storage.metadata_log.end_offset
    checked = controller.create_topic("t", -1, -1, validate_only=True)
    assert checked.num_partitions == 4 and checked.replication_factor == 1
    assert controller.storage.metadata_log.end_offset == end and controller.image.topic("t") is None
    assert controller.create_topic("t").num_partitions == 4


def test_delete_topic(open_storage: StorageFactory) -> None:
    controller = controller_for(open_storage)
    old = controller.create_topic("t", 2, 1, {"retention.ms": "5"})
    controller.storage.get_log("t", 0).append(  # type: ignore[union-attr]
        make_batch(timestamp=T0), leader_epoch=0, now_ms=T0)
    start = controller.storage.metadata_log.end_offset
    controller.delete_topic("t")
    assert records_after(controller, start) == [RemoveTopicRecord(old.topic_id)]
    assert controller.image.topic("t") is None and controller.image.topic_by_id(old.topic_id) is None
    assert controller.image.configs_of_topic("t") == {}
    assert controller.storage.get_log("t", 0) is None
    with pytest.raises(UnknownTopicOrPartition):
        controller.delete_topic("t")
    new = controller.create_topic("t", 1, 1)
    assert new.topic_id != old.topic_id
    assert controller.storage.get_log("t", 0).log_end_offset == 0  # type: ignore[union-attr]
    controller.delete_topic(topic_id=new.topic_id)
    assert controller.image.topics_by_name == {}


def test_topic_deletion_can_be_disabled(open_storage: StorageFactory) -> None:
    controller = controller_for(open_storage, delete_topic_enable="false")
    controller.create_topic("t", 1, 1)
    with pytest.raises(TopicDeletionDisabled) as caught:
        controller.delete_topic("t")
    assert caught.value.error_code == 73


def test_create_partitions(open_storage: StorageFactory) -> None:
    controller = controller_for(open_storage)
    topic = controller.create_topic("t", 2, 1)
    start = controller.storage.metadata_log.end_offset
    grown = controller.create_partitions("t", 5)
    assert sorted(grown.partitions) == [0, 1, 2, 3, 4]
    assert [r.partition_id for r in records_after(controller, start)] == [2, 3, 4]
    assert all(controller.storage.get_log("t", p).topic_id == topic.topic_id  # type: ignore[union-attr]
               for p in range(5))
    with pytest.raises(InvalidPartitions, match="already has 5"):
        controller.create_partitions("t", 5)
    with pytest.raises(InvalidPartitions, match="would not be an increase"):
        controller.create_partitions("t", 3)
    with pytest.raises(UnknownTopicOrPartition):
        controller.create_partitions("nope", 3)


def test_alter_topic_configs(open_storage: StorageFactory) -> None:
    controller = controller_for(open_storage)
    controller.create_topic("t", 1, 1, {"retention.ms": "1000"})
    log = controller.storage.get_log("t", 0)
    assert log is not None and log.config.retention_ms == 1000
    start = controller.storage.metadata_log.end_offset
    controller.alter_configs(RESOURCE_TOPIC, "t", {"retention.ms": "1000",
                                                   "segment.bytes": "4096"})
    assert records_after(controller, start) == [
        ConfigRecord(RESOURCE_TOPIC, "t", "segment.bytes", "4096")]  # only real changes
    assert log.config.segment_bytes == 4096
    controller.alter_configs(RESOURCE_TOPIC, "t", {"retention.ms": None})
    assert log.config.retention_ms == 7 * 24 * 3600 * 1000
    assert controller.image.configs_of_topic("t") == {"segment.bytes": "4096"}
    with pytest.raises(InvalidConfig):
        controller.alter_configs(RESOURCE_TOPIC, "t", {"segment.bytes": "-1"})
    with pytest.raises(UnknownTopicOrPartition):
        controller.alter_configs(RESOURCE_TOPIC, "nope", {"retention.ms": "1"})
    described = {c.name: c for c in controller.describe_topic_configs("t")}
    assert described["segment.bytes"].value == "4096"
    assert described["segment.bytes"].source == "TOPIC_CONFIG"
    assert described["retention.ms"].source == "DEFAULT_CONFIG"
    assert len(described) > 25 and "max.message.bytes" in described


def test_dynamic_broker_configs_reach_the_logs(open_storage: StorageFactory) -> None:
    controller = controller_for(open_storage, log_retention_hours=2)
    controller.create_topic("t", 1, 1)
    log = controller.storage.get_log("t", 0)
    assert log is not None and log.config.retention_ms == 2 * 3600 * 1000
    controller.alter_configs(RESOURCE_BROKER, "", {"log.retention.ms": "12345"})
    assert log.config.retention_ms == 12345
    resolved = {c.name: c for c in controller.describe_topic_configs("t")}["retention.ms"]
    assert resolved.source == "DYNAMIC_DEFAULT_BROKER_CONFIG"


def test_producer_id_blocks(open_storage: StorageFactory, provider: str) -> None:
    controller = controller_for(open_storage)
    assert controller.allocate_producer_ids() == 0
    assert controller.allocate_producer_ids(10) == 1000
    assert controller.allocate_producer_ids() == 1010
    if provider == "postgres":
        return  # a cluster's brokers take ids from one counter in akfak_cluster, no record
    assert controller.image.next_producer_id == 2010
    last = records_after(controller, controller.storage.metadata_log.end_offset - 1)
    assert last == [ProducerIdsRecord(broker_id=1, broker_epoch=-1, next_producer_id=2010)]


def test_register_broker(open_storage: StorageFactory) -> None:
    controller = controller_for(open_storage)
    epoch = controller.register_broker([("PLAINTEXT", "localhost", 9092)])
    broker = controller.image.brokers[1]
    assert broker.epoch == epoch and not broker.fenced
    assert broker.endpoints[0].port == 9092
    assert controller.allocate_producer_ids() == 0
    assert records_after(controller, controller.storage.metadata_log.end_offset - 1)[0] \
        .broker_epoch == epoch


def test_partition_change_records_bump_epochs() -> None:
    topic_id = uuid.uuid4()
    image = MetadataImage().apply([
        (0, TopicRecord("t", topic_id)),
        (1, PartitionRecord(partition_id=0, topic_id=topic_id, replicas=[1, 2], isr=[1, 2],
                            leader=1, leader_epoch=4, partition_epoch=7)),
        (2, PartitionChangeRecord(partition_id=0, topic_id=topic_id, isr=[2], leader=2)),
        (3, PartitionChangeRecord(partition_id=0, topic_id=topic_id, isr=[1, 2])),
        (4, ConfigRecord(RESOURCE_TOPIC, "t", "retention.ms", "9")),
    ])
    p = image.partition("t", 0)
    assert p is not None
    assert (p.leader, p.leader_epoch, p.partition_epoch, p.isr) == (2, 5, 9, (1, 2))
    assert image.offset == 4 and image.configs_of_topic("t") == {"retention.ms": "9"}
    with pytest.raises(TypeError):
        image.topics_by_name["x"] = None  # type: ignore[index]


# -- persistence (disk) -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_metadata_survives_restart(tmp_path: Path, clock: Clock) -> None:
    config = make_config(tmp_path / "data")
    storage = DiskLogStorage(config, clock=clock)
    storage.open()
    controller = Controller(storage, config)
    orders = controller.create_topic("orders", 2, 1, {"retention.ms": "60000"})
    doomed = controller.create_topic("doomed", 1, 1)
    controller.alter_configs(RESOURCE_TOPIC, "orders", {"segment.bytes": "100000"})
    controller.delete_topic("doomed")
    first_pid = controller.allocate_producer_ids()
    storage.get_log("orders", 1).append(  # type: ignore[union-attr]
        make_batch([(None, b"kept")], timestamp=T0), leader_epoch=0, now_ms=T0)
    await storage.close()

    storage = DiskLogStorage(config, clock=clock)
    storage.open()
    controller = Controller(storage, config)
    image = controller.image
    assert set(image.topics_by_name) == {"orders"}
    assert image.topic("orders").topic_id == orders.topic_id  # type: ignore[union-attr]
    assert image.topic_by_id(doomed.topic_id) is None
    assert image.configs_of_topic("orders") == {"retention.ms": "60000",
                                                "segment.bytes": "100000"}
    log = storage.get_log("orders", 1)
    assert log is not None and log.log_end_offset == 1 and log.topic_id == orders.topic_id
    assert log.config.segment_bytes == 100000 and log.config.retention_ms == 60000
    assert controller.allocate_producer_ids() == first_pid + 1000
    assert (tmp_path / "data" / "orders-1" / "partition.metadata").read_text() == (
        f"version: 0\ntopic_id: {_b64(orders.topic_id)}")
    assert not any(p.name.startswith("doomed-") for p in (tmp_path / "data").iterdir()
                   if not p.name.endswith("-delete"))
    await storage.close()


def _b64(value: uuid.UUID) -> str:
    import base64

    return base64.urlsafe_b64encode(value.bytes).decode().rstrip("=")


@pytest_twisted.ensureDeferred
async def test_logs_unknown_to_the_metadata_are_set_aside(tmp_path: Path, clock: Clock) -> None:
    config = make_config(tmp_path / "data")
    storage = DiskLogStorage(config, clock=clock)
    storage.open()
    storage.create_log("ghost", 0, uuid.uuid4(), storage.default_log_config)
    controller = Controller(storage, config)
    assert storage.get_log("ghost", 0) is None and controller.image.topic("ghost") is None
    names = [p.name for p in (tmp_path / "data").iterdir()]
    assert any(n.startswith("ghost-0.") and n.endswith("-stray") for n in names)
    assert "ghost-0" not in names
    await storage.close()


def test_broker_config_is_used_for_defaults() -> None:
    config = BrokerConfig(properties={"log.retention.minutes": "3", "message.max.bytes": "99"})
    from akfak.log.config import LogConfig

    log_config = LogConfig.from_broker(config, {"retention.bytes": "10"})
    assert log_config.retention_ms == 180_000 and log_config.max_message_bytes == 99
    assert log_config.retention_bytes == 10 and log_config.overrides == {"retention.bytes": "10"}
