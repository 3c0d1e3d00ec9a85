"""The consumer-group (KIP-848) records of `__consumer_offsets`, in Kafka 4.1's formats.

Kafka's `group-coordinator/src/main/resources/common/message/ConsumerGroup*{Key,Value}.json`:
a key is an int16 record type (Kafka writes the type where the classic records have a
version: 3 group metadata, 4 partition metadata, 5 member metadata, 6 target-assignment
metadata, 7 target-assignment member, 8 current member assignment, 16 resolved regular
expression) and then its fields, not flexible; a value is an int16 version (0) and then its
fields, flexible (compact strings and arrays, tagged fields).

Kafka 4.1 no longer writes ConsumerGroupPartitionMetadata values (the group's
`MetadataHash`, a tagged field of ConsumerGroupMetadataValue, replaced them, KIP-1101); it
writes only their tombstones, and so does akfak.  A member that joined with JoinGroup (a
classic member of a consumer group) carries its ClassicMemberMetadata in tag 0 of its
member metadata; Kafka writes that tag for every member, with a null marker for the others,
and so does akfak.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from akfak.coordinator.codec import Reader, RecordFormatError, Writer, uvarint

GROUP_METADATA = 3
PARTITION_METADATA = 4
MEMBER_METADATA = 5
TARGET_ASSIGNMENT_METADATA = 6
TARGET_ASSIGNMENT_MEMBER = 7
CURRENT_MEMBER_ASSIGNMENT = 8
REGULAR_EXPRESSION = 16
RECORD_TYPES = frozenset((GROUP_METADATA, PARTITION_METADATA, MEMBER_METADATA,
                          TARGET_ASSIGNMENT_METADATA, TARGET_ASSIGNMENT_MEMBER,
                          CURRENT_MEMBER_ASSIGNMENT, REGULAR_EXPRESSION))
VALUE_VERSION = 0

#: topic id -> partitions
Partitions = Mapping[uuid.UUID, frozenset[int]]

_I8 = struct.Struct(">b")


@dataclass(frozen=True, slots=True)
class ConsumerGroupKey:
    """Every consumer-group key: its type, the group, and a member id or a regular
    expression for the types that have one."""

    type: int
    group: str
    sub: str | None = None

    def encode(self) -> bytes:
        w = Writer()
        w.int16(self.type)
        w.string(self.group)
        if self.sub is not None:
            w.string(self.sub)
        return w.getvalue()


@dataclass(frozen=True, slots=True)
class GroupMetadataValue:
    epoch: int
    metadata_hash: int = 0


@dataclass(frozen=True, slots=True)
class ClassicMemberMetadata:
    """What a member using the classic protocol joined with: its session timeout and its
    (protocol name, metadata) in its order of preference."""

    session_timeout_ms: int
    protocols: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class MemberMetadataValue:
    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed_topic_names: tuple[str, ...]
    subscribed_topic_regex: str | None
    rebalance_timeout_ms: int
    server_assignor: str | None
    classic: ClassicMemberMetadata | None = None


@dataclass(frozen=True, slots=True)
class TargetAssignmentMetadataValue:
    assignment_epoch: int


@dataclass(frozen=True, slots=True)
class TargetAssignmentMemberValue:
    partitions: Partitions


@dataclass(frozen=True, slots=True)
class CurrentMemberAssignmentValue:
    member_epoch: int
    previous_member_epoch: int
    state: int
    assigned: Partitions
    pending_revocation: Partitions = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RegularExpressionValue:
    topics: tuple[str, ...]
    version: int
    timestamp: int


@dataclass(frozen=True, slots=True)
class PartitionMetadataValue:
    """Read only (Kafka 4.0 and earlier wrote it): nothing of it is kept."""


ConsumerGroupValue = (GroupMetadataValue | MemberMetadataValue | TargetAssignmentMetadataValue
                      | TargetAssignmentMemberValue | CurrentMemberAssignmentValue
                      | RegularExpressionValue | PartitionMetadataValue)


# -- flexible encoding ------------------------------------------------------------------


class _FlexWriter(Writer):
    def compact_string(self, v: str | None) -> None:
        if v is None:
            self.parts.append(uvarint(0))
            return
        data = v.encode("utf-8")
        self.parts.append(uvarint(len(data) + 1))
        self.parts.append(data)

    def length(self, n: int) -> None:
        self.parts.append(uvarint(n + 1))

    def int8(self, v: int) -> None:
        self.parts.append(_I8.pack(v))

    def uuid(self, v: uuid.UUID) -> None:
        self.parts.append(v.bytes)

    def partitions(self, value: Partitions) -> None:
        self.length(len(value))
        for topic_id, parts in sorted(value.items()):
            self.uuid(topic_id)
            self.length(len(parts))
            for p in sorted(parts):
                self.int32(p)
            self.no_tags()

    def no_tags(self) -> None:
        self.parts.append(uvarint(0))


def _read_uuid(r: Reader) -> uuid.UUID:
    if r.pos + 16 > len(r.data):
        raise RecordFormatError("record runs past its end")
    value = uuid.UUID(bytes=bytes(r.data[r.pos : r.pos + 16]))
    r.pos += 16
    return value


def _read_partitions(r: Reader) -> dict[uuid.UUID, frozenset[int]]:
    out: dict[uuid.UUID, frozenset[int]] = {}
    for _ in range(r.array_length()):
        topic_id = _read_uuid(r)
        out[topic_id] = frozenset(r.int32() for _ in range(r.array_length()))
        r.tagged_fields()
    return out


def encode_value(value: ConsumerGroupValue) -> bytes:
    w = _FlexWriter()
    w.int16(VALUE_VERSION)
    if isinstance(value, GroupMetadataValue):
        w.int32(value.epoch)
        if value.metadata_hash:
            w.parts.append(uvarint(1) + uvarint(0) + uvarint(8) + struct.pack(">q", value.metadata_hash))
            return w.getvalue()
    elif isinstance(value, MemberMetadataValue):
        w.compact_string(value.instance_id)
        w.compact_string(value.rack_id)
        w.compact_string(value.client_id)
        w.compact_string(value.client_host)
        w.length(len(value.subscribed_topic_names))
        for name in value.subscribed_topic_names:
            w.compact_string(name)
        w.compact_string(value.subscribed_topic_regex)
        w.int32(value.rebalance_timeout_ms)
        w.compact_string(value.server_assignor)
        w.parts.append(uvarint(1) + uvarint(0))  # tag 0: ClassicMemberMetadata, a nullable struct
        if value.classic is None:
            w.parts.append(uvarint(1) + uvarint(0))
            return w.getvalue()
        inner = _FlexWriter()
        inner.int32(value.classic.session_timeout_ms)
        inner.length(len(value.classic.protocols))
        for name, metadata in value.classic.protocols:
            inner.compact_string(name)
            inner.length(len(metadata))
            inner.parts.append(metadata)
            inner.no_tags()
        inner.no_tags()
        body = inner.getvalue()
        w.parts.append(uvarint(len(body) + 1) + uvarint(1) + body)
        return w.getvalue()
    elif isinstance(value, TargetAssignmentMetadataValue):
        w.int32(value.assignment_epoch)
    elif isinstance(value, TargetAssignmentMemberValue):
        w.partitions(value.partitions)
    elif isinstance(value, CurrentMemberAssignmentValue):
        w.int32(value.member_epoch)
        w.int32(value.previous_member_epoch)
        w.int8(value.state)
        w.partitions(value.assigned)
        w.partitions(value.pending_revocation)
    elif isinstance(value, RegularExpressionValue):
        w.length(len(value.topics))
        for name in value.topics:
            w.compact_string(name)
        w.int64(value.version)
        w.int64(value.timestamp)
    else:
        raise ValueError(f"akfak does not write {type(value).__name__}")
    w.no_tags()
    return w.getvalue()


def decode_key(record_type: int, r: Reader) -> ConsumerGroupKey:
    group = r.string()
    if record_type in (MEMBER_METADATA, TARGET_ASSIGNMENT_MEMBER, CURRENT_MEMBER_ASSIGNMENT,
                       REGULAR_EXPRESSION):
        return ConsumerGroupKey(record_type, group, r.string())
    return ConsumerGroupKey(record_type, group)


def _group_metadata_tags(r: Reader) -> int:
    metadata_hash = 0
    for _ in range(r.uvarint()):
        tag, size = r.uvarint(), r.uvarint()
        if tag == 0 and size == 8:
            metadata_hash = r.int64()
        else:
            r.pos += size
    return metadata_hash


def _classic_member_tag(r: Reader) -> ClassicMemberMetadata | None:
    classic = None
    for _ in range(r.uvarint()):
        tag, size = r.uvarint(), r.uvarint()
        end = r.pos + size
        if tag == 0 and r.uvarint() != 0:  # 0: null
            session_timeout = r.int32()
            protocols = []
            for _ in range(r.array_length()):
                protocols.append((r.string(), bytes(r.bytes_())))
                r.tagged_fields()
            r.tagged_fields()
            classic = ClassicMemberMetadata(session_timeout, tuple(protocols))
        r.pos = end
    return classic


def decode_value(key: ConsumerGroupKey, data: bytes) -> ConsumerGroupValue:
    r = Reader(data, flexible=True)
    version = r.int16()
    if version != VALUE_VERSION:
        raise RecordFormatError(f"consumer group record type {key.type} value version {version}")
    t = key.type
    if t == GROUP_METADATA:
        epoch = r.int32()
        return GroupMetadataValue(epoch, _group_metadata_tags(r))
    if t == MEMBER_METADATA:
        instance_id = r.nullable_string()
        rack_id = r.nullable_string()
        client_id = r.string()
        client_host = r.string()
        names = tuple(r.string() for _ in range(r.array_length()))
        regex = r.nullable_string()
        rebalance_timeout = r.int32()
        assignor = r.nullable_string()
        return MemberMetadataValue(instance_id, rack_id, client_id, client_host, names, regex,
                                   rebalance_timeout, assignor, _classic_member_tag(r))
    if t == TARGET_ASSIGNMENT_METADATA:
        return TargetAssignmentMetadataValue(r.int32())
    if t == TARGET_ASSIGNMENT_MEMBER:
        return TargetAssignmentMemberValue(_read_partitions(r))
    if t == CURRENT_MEMBER_ASSIGNMENT:
        epoch, previous, state = r.int32(), r.int32(), r.int8()
        assigned = _read_partitions(r)
        return CurrentMemberAssignmentValue(epoch, previous, state, assigned, _read_partitions(r))
    if t == REGULAR_EXPRESSION:
        topics = tuple(r.string() for _ in range(r.array_length()))
        return RegularExpressionValue(topics, r.int64(), r.int64())
    return PartitionMetadataValue()
