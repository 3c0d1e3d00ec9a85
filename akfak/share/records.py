"""The records of `__share_group_state`, in Kafka 4.1's formats.

Keys and values follow apache/kafka `share-coordinator/src/main/resources/common/message/
Share{Snapshot,Update}{Key,Value}.json` as the coordinator record serde writes them: the key an
int16 record type (0: ShareSnapshot, 1: ShareUpdate) and the non-flexible fields (group id,
topic id, partition); the value an int16 version (0) and the flexible fields.  A tombstone is
a ShareSnapshot key with a null value.  A state batch is (first offset, last offset, delivery
state, delivery count), states as SharePartition's RecordState ids.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field

from akfak.coordinator.codec import Reader, RecordFormatError, Writer, uvarint
from akfak.groups.records import java_string_hash

SNAPSHOT_TYPE = 0
UPDATE_TYPE = 1

AVAILABLE, ACQUIRED, ACKNOWLEDGED, ARCHIVED = 0, 1, 2, 4

_STATE_BATCH = struct.Struct(">qqbh")
_SNAPSHOT_HEAD = struct.Struct(">hiiiqqq")
_UPDATE_HEAD = struct.Struct(">hiiq")


@dataclass(frozen=True, slots=True)
class StateBatch:
    first_offset: int
    last_offset: int
    delivery_state: int
    delivery_count: int


@dataclass(slots=True)
class ShareState:
    """What the share coordinator holds for one share-partition (Kafka's ShareGroupOffset)."""

    snapshot_epoch: int = 0
    state_epoch: int = 0
    leader_epoch: int = -1
    start_offset: int = -1
    create_timestamp: int = -1
    write_timestamp: int = -1
    batches: list[StateBatch] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ShareKey:
    group_id: str
    topic_id: uuid.UUID
    partition: int


def java_uuid_string(value: uuid.UUID) -> str:
    """Kafka's Uuid.toString: URL-safe base64 without padding."""
    import base64

    return base64.urlsafe_b64encode(value.bytes).decode("ascii").rstrip("=")


def partition_for(key: ShareKey, num_partitions: int) -> int:
    """The `__share_group_state` partition of a share-partition, as Kafka's
    ShareCoordinatorService.partitionFor hashes "group:topicId:partition"."""
    h = java_string_hash(f"{key.group_id}:{java_uuid_string(key.topic_id)}:{key.partition}")
    return (0 if h == -(1 << 31) else abs(h)) % num_partitions


def encode_key(record_type: int, key: ShareKey) -> bytes:
    w = Writer()
    w.int16(record_type)
    w.string(key.group_id)
    w.parts.append(key.topic_id.bytes)
    w.int32(key.partition)
    return w.getvalue()


def _batches(batches: list[StateBatch]) -> bytes:
    out = bytearray(uvarint(len(batches) + 1))
    for b in batches:
        out += _STATE_BATCH.pack(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count)
        out.append(0)
    return bytes(out)


def encode_snapshot(state: ShareState) -> bytes:
    return (_SNAPSHOT_HEAD.pack(0, state.snapshot_epoch, state.state_epoch, state.leader_epoch,
                                state.start_offset, state.create_timestamp, state.write_timestamp)
            + _batches(state.batches) + b"\x00")


def encode_update(snapshot_epoch: int, leader_epoch: int, start_offset: int,
                  batches: list[StateBatch]) -> bytes:
    return _UPDATE_HEAD.pack(0, snapshot_epoch, leader_epoch, start_offset) + _batches(batches) + b"\x00"


def decode_key(data: bytes) -> tuple[int, ShareKey]:
    r = Reader(data)
    record_type = r.int16()
    if record_type not in (SNAPSHOT_TYPE, UPDATE_TYPE):
        raise RecordFormatError(f"unknown share state record type {record_type}")
    group_id = r.string()
    topic_id = uuid.UUID(bytes=r._take(16))
    return record_type, ShareKey(group_id, topic_id, r.int32())


def _read_batches(r: Reader) -> list[StateBatch]:
    batches = []
    for _ in range(r.array_length()):
        batches.append(StateBatch(r.int64(), r.int64(), r.int8(), r.int16()))
        r.tagged_fields()
    return batches


def decode_snapshot(data: bytes) -> ShareState:
    r = Reader(data, flexible=True)
    r.int16()
    state = ShareState(r.int32(), r.int32(), r.int32(), r.int64(), r.int64(), r.int64())
    state.batches = _read_batches(r)
    r.tagged_fields()
    return state


def decode_update(data: bytes) -> tuple[int, int, int, list[StateBatch]]:
    """(snapshot epoch, leader epoch, start offset, batches) of a ShareUpdate value."""
    r = Reader(data, flexible=True)
    r.int16()
    snapshot_epoch, leader_epoch, start_offset = r.int32(), r.int32(), r.int64()
    batches = _read_batches(r)
    r.tagged_fields()
    return snapshot_epoch, leader_epoch, start_offset, batches


def combine(current: list[StateBatch], new: list[StateBatch], start_offset: int) -> list[StateBatch]:
    """Overlay `new` on `current` (new wins where they overlap), drop what lies below
    `start_offset` and merge neighbours of one state and count, as Kafka's
    PersisterStateBatchCombiner leaves them."""
    runs = sorted(current, key=lambda b: b.first_offset)
    for b in sorted(new, key=lambda b: b.first_offset):
        kept: list[StateBatch] = []
        for c in runs:
            if c.last_offset < b.first_offset or c.first_offset > b.last_offset:
                kept.append(c)
                continue
            if c.first_offset < b.first_offset:
                kept.append(StateBatch(c.first_offset, b.first_offset - 1, c.delivery_state,
                                       c.delivery_count))
            if c.last_offset > b.last_offset:
                kept.append(StateBatch(b.last_offset + 1, c.last_offset, c.delivery_state,
                                       c.delivery_count))
        kept.append(b)
        runs = sorted(kept, key=lambda x: x.first_offset)
    out: list[StateBatch] = []
    for b in runs:
        if b.last_offset < start_offset:
            continue
        if b.first_offset < start_offset:
            b = StateBatch(start_offset, b.last_offset, b.delivery_state, b.delivery_count)
        if (out and out[-1].last_offset + 1 == b.first_offset
                and (out[-1].delivery_state, out[-1].delivery_count)
                == (b.delivery_state, b.delivery_count)):
            out[-1] = StateBatch(out[-1].first_offset, b.last_offset, b.delivery_state,
                                 b.delivery_count)
        else:
            out.append(b)
    return out
