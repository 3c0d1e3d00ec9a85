"""The records the group coordinator keeps in `__consumer_offsets`, in Kafka's formats.

Keys and values follow apache/kafka `group-coordinator/src/main/resources/common/
message/{OffsetCommit,GroupMetadata}{Key,Value}.json`: an int16 version, then the
fields.  A key's version names its type (0 and 1: an offset commit, 2: group
metadata), as Kafka's coordinator record serde does.  Values are written as Kafka
4 writes them (OffsetCommitValue v3, or v1 when an explicit expiry was asked for;
GroupMetadataValue v3); every version 0-4 is read.  A tombstone is a null value.

The records travel in magic-2 record batches, encoded and decoded by the broker's
record codec, `akfak.log.records` (the coordinator writes them uncompressed, Kafka's
default `offsets.topic.compression.codec`; Apache Kafka's may carry any codec).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from akfak.coordinator.codec import Reader, Writer
from akfak.groups import consumer_records
from akfak.groups.consumer_records import ConsumerGroupKey, ConsumerGroupValue

OFFSET_COMMIT_KEY_VERSION = 1  # Kafka writes 1; 0 is read as the same layout
GROUP_METADATA_KEY_VERSION = 2
OFFSET_COMMIT_VALUE_VERSION = 3
OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY = 1
GROUP_METADATA_VALUE_VERSION = 3

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


# -- keys and values --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetCommitKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupMetadataKey:
    group: str


CoordinatorKey = OffsetCommitKey | GroupMetadataKey | ConsumerGroupKey


@dataclass(frozen=True, slots=True)
class OffsetCommitValue:
    offset: int
    leader_epoch: int = -1
    metadata: str = ""
    commit_timestamp: int = -1
    #: only in value version 1 (an OffsetCommit v2-v4 retention time); -1 when absent
    expire_timestamp: int = -1


@dataclass(frozen=True, slots=True)
class MemberMetadataValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout: int
    session_timeout: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupMetadataValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int = -1
    members: tuple[MemberMetadataValue, ...] = field(default=())


CoordinatorValue = OffsetCommitValue | GroupMetadataValue | ConsumerGroupValue


def encode_key(key: CoordinatorKey) -> bytes:
    if isinstance(key, ConsumerGroupKey):
        return key.encode()
    w = Writer()
    if isinstance(key, OffsetCommitKey):
        w.int16(OFFSET_COMMIT_KEY_VERSION)
        w.string(key.group)
        w.string(key.topic)
        w.int32(key.partition)
    else:
        w.int16(GROUP_METADATA_KEY_VERSION)
        w.string(key.group)
    return w.getvalue()


def decode_key(data: bytes) -> CoordinatorKey | None:
    """The key, or None for record types the coordinator does not keep (share-group and
    streams records written by Kafka 4)."""
    r = Reader(data)
    version = r.int16()
    if version in (0, 1):
        return OffsetCommitKey(r.string(), r.string(), r.int32())
    if version == 2:
        return GroupMetadataKey(r.string())
    if version in consumer_records.RECORD_TYPES:
        return consumer_records.decode_key(version, r)
    return None


def encode_offset_commit_value(value: OffsetCommitValue) -> bytes:
    w = Writer()
    if value.expire_timestamp >= 0:
        # Kafka keeps v1 for commits that carry their own expiry (KIP-211).
        w.int16(OFFSET_COMMIT_VALUE_VERSION_WITH_EXPIRY)
        w.int64(value.offset)
        w.string(value.metadata)
        w.int64(value.commit_timestamp)
        w.int64(value.expire_timestamp)
    else:
        w.int16(OFFSET_COMMIT_VALUE_VERSION)
        w.int64(value.offset)
        w.int32(value.leader_epoch)
        w.string(value.metadata)
        w.int64(value.commit_timestamp)
    return w.getvalue()


def decode_offset_commit_value(data: bytes) -> OffsetCommitValue:
    version = Reader(data).int16()
    r = Reader(data, flexible=version >= 4)
    r.pos = 2
    offset = r.int64()
    leader_epoch = r.int32() if version >= 3 else -1
    metadata = r.nullable_string() or ""
    commit_timestamp = r.int64()
    expire_timestamp = r.int64() if version == 1 else -1
    r.tagged_fields()
    return OffsetCommitValue(offset, leader_epoch, metadata, commit_timestamp, expire_timestamp)


def encode_group_metadata_value(value: GroupMetadataValue) -> bytes:
    w = Writer()
    w.int16(GROUP_METADATA_VALUE_VERSION)
    w.string(value.protocol_type)
    w.int32(value.generation)
    w.string(value.protocol)
    w.string(value.leader)
    w.int64(value.current_state_timestamp)
    w.int32(len(value.members))
    for m in value.members:
        w.string(m.member_id)
        w.string(m.group_instance_id)
        w.string(m.client_id)
        w.string(m.client_host)
        w.int32(m.rebalance_timeout)
        w.int32(m.session_timeout)
        w.bytes_(m.subscription)
        w.bytes_(m.assignment)
    return w.getvalue()


def decode_group_metadata_value(data: bytes) -> GroupMetadataValue:
    version = Reader(data).int16()
    r = Reader(data, flexible=version >= 4)
    r.pos = 2
    protocol_type = r.nullable_string() or ""
    generation = r.int32()
    protocol = r.nullable_string()
    leader = r.nullable_string()
    current_state_timestamp = r.int64() if version >= 2 else -1
    members = []
    for _ in range(r.array_length()):
        member_id = r.string()
        instance_id = r.nullable_string() if version >= 3 else None
        client_id = r.string()
        client_host = r.string()
        rebalance_timeout = r.int32() if version >= 1 else -1
        session_timeout = r.int32()
        subscription = r.bytes_()
        assignment = r.bytes_()
        r.tagged_fields()
        members.append(MemberMetadataValue(member_id, instance_id, client_id, client_host,
                                           rebalance_timeout, session_timeout, subscription, assignment))
    r.tagged_fields()
    return GroupMetadataValue(protocol_type, generation, protocol, leader, current_state_timestamp,
                              tuple(members))


def encode_value(value: CoordinatorValue | None) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, OffsetCommitValue):
        return encode_offset_commit_value(value)
    if isinstance(value, GroupMetadataValue):
        return encode_group_metadata_value(value)
    return consumer_records.encode_value(value)


def decode_value(key: CoordinatorKey, data: bytes | None) -> CoordinatorValue | None:
    if data is None:
        return None
    if isinstance(key, OffsetCommitKey):
        return decode_offset_commit_value(data)
    if isinstance(key, ConsumerGroupKey):
        return consumer_records.decode_value(key, data)
    return decode_group_metadata_value(data)


@dataclass(frozen=True, slots=True)
class CoordinatorRecord:
    """One key and its value (None: a tombstone)."""

    key: CoordinatorKey
    value: CoordinatorValue | None

    def encode(self) -> tuple[bytes, bytes | None]:
        return encode_key(self.key), encode_value(self.value)


def decode_record(key: bytes | None, value: bytes | None) -> CoordinatorRecord | None:
    """A coordinator record, or None for one the classic coordinator ignores."""
    if key is None:
        return None
    decoded = decode_key(key)
    if decoded is None:
        return None
    return CoordinatorRecord(decoded, decode_value(decoded, value))


def java_string_hash(s: str) -> int:
    """Java's String.hashCode: over UTF-16 code units, in 32-bit arithmetic."""
    h = 0
    units = s.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (31 * h + ((units[i] << 8) | units[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(group_id: str, num_partitions: int) -> int:
    """The `__consumer_offsets` partition of a group, as Kafka computes it
    (`Utils.abs(groupId.hashCode()) % numPartitions`; abs(MIN_VALUE) is 0)."""
    h = java_string_hash(group_id)
    return (0 if h == -(1 << 31) else abs(h)) % num_partitions
