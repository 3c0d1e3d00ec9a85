"""`__transaction_state` keys and values in Kafka's formats
(transaction-coordinator/src/main/resources/common/message/TransactionLog*.json).

- key, version 0: TransactionalId string;
- value, version 0 (classic) and 1 (flexible, KIP-915): ProducerId int64,
  ProducerEpoch int16, TransactionTimeoutMs int32, TransactionStatus int8,
  TransactionPartitions nullable [Topic string, PartitionIds [int32]],
  TransactionLastUpdateTimestampMs int64, TransactionStartTimestampMs int64; v1
  adds tagged fields 0 PreviousProducerId, 1 NextProducerId (int64, default -1)
  and 2 ClientTransactionVersion (int16, default 0).

A null value (tombstone) removes an expired transactional id.  As Kafka 4 writes
them, v1 is used for transactions of clients at transaction version 2.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from akfak.coordinator.codec import Reader, RecordFormatError, Writer
from akfak.coordinator.codec import uvarint as _uvarint

KEY_VERSION = 0
EMPTY_STATE = 0
_I16 = struct.Struct(">h")
_I64 = struct.Struct(">q")


@dataclass(frozen=True)
class TransactionLogValue:
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: int
    #: topic -> partitions, in the order written
    partitions: tuple[tuple[str, tuple[int, ...]], ...]
    last_update_ms: int
    start_ms: int
    previous_producer_id: int = -1
    next_producer_id: int = -1
    client_transaction_version: int = 0


def encode_key(transactional_id: str) -> bytes:
    w = Writer()
    w.int16(KEY_VERSION)
    w.string(transactional_id)
    return w.getvalue()


def decode_key(data: bytes) -> str:
    r = Reader(data)
    version = r.int16()
    if version != KEY_VERSION:
        raise RecordFormatError(f"unknown transaction log key version {version}")
    return r.string()


def encode_value(value: TransactionLogValue) -> bytes:
    flexible = value.client_transaction_version >= 2
    out = bytearray(struct.pack(">hqhib", 1 if flexible else 0, value.producer_id,
                                value.producer_epoch, value.timeout_ms, value.state))

    def length(n: int) -> None:
        out.extend(_uvarint(n + 1) if flexible else struct.pack(">i", n))

    if value.state == EMPTY_STATE:
        out.extend(b"\x00" if flexible else struct.pack(">i", -1))  # null, as Kafka writes it
    else:
        length(len(value.partitions))
    for topic, partitions in value.partitions if value.state != EMPTY_STATE else ():
        name = topic.encode()
        out.extend(_uvarint(len(name) + 1) if flexible else _I16.pack(len(name)))
        out.extend(name)
        length(len(partitions))
        for p in partitions:
            out.extend(struct.pack(">i", p))
        if flexible:
            out.append(0)  # no tagged fields
    out.extend(struct.pack(">qq", value.last_update_ms, value.start_ms))
    if flexible:
        tags: list[tuple[int, bytes]] = []
        if value.previous_producer_id != -1:
            tags.append((0, _I64.pack(value.previous_producer_id)))
        if value.next_producer_id != -1:
            tags.append((1, _I64.pack(value.next_producer_id)))
        if value.client_transaction_version != 0:
            tags.append((2, _I16.pack(value.client_transaction_version)))
        out.extend(_uvarint(len(tags)))
        for tag, data in tags:
            out.extend(_uvarint(tag) + _uvarint(len(data)) + data)
    return bytes(out)


def decode_value(data: bytes) -> TransactionLogValue:
    version = Reader(data).int16()
    if version not in (0, 1):
        raise RecordFormatError(f"unknown transaction log value version {version}")
    r = Reader(data, flexible=version >= 1)
    r.int16()
    producer_id, epoch, timeout, state = r.int64(), r.int16(), r.int32(), r.int8()
    partitions = []
    for _ in range(r.array_length()):
        topic = r.string()
        partitions.append((topic, tuple(r.int32() for _ in range(r.array_length()))))
        r.tagged_fields()
    last_update, start = r.int64(), r.int64()
    previous = next_id = -1
    client_version = 0
    if version >= 1:
        for _ in range(r.uvarint()):
            tag, size = r.uvarint(), r.uvarint()
            field = r._take(size)
            if tag == 0 and size == 8:
                previous = _I64.unpack(field)[0]
            elif tag == 1 and size == 8:
                next_id = _I64.unpack(field)[0]
            elif tag == 2 and size == 2:
                client_version = _I16.unpack(field)[0]
    return TransactionLogValue(producer_id, epoch, timeout, state, tuple(partitions), last_update,
                               start, previous, next_id, client_version)
