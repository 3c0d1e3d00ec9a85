"""Fetch responses encoded as a list of parts, record bytes untouched.

kio's writer would copy every record batch into one buffer; here the small
fields are packed around them and the batches read from the log go to the
connection as they are (akfak.response_writer).  Versions 4-18; tests check the bytes
against kio's encoding of the same response.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from akfak.coordinator.codec import uvarint

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_PARTITION_HEAD = struct.Struct(">ihqq")  # index, error, high watermark, last stable offset
_I64 = struct.Struct(">q")
_ABORTED = struct.Struct(">qq")
_LEADER = struct.Struct(">ii")


def _compact_string(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    data = value.encode()
    return uvarint(len(data) + 1) + data


def _node_endpoints(endpoints: list[tuple[int, str, int, str | None]]) -> bytes:
    """The response's tagged fields holding only tag 0, NodeEndpoints."""
    field = bytearray(uvarint(len(endpoints) + 1))
    for node_id, host, port, rack in endpoints:
        field += _I32.pack(node_id) + _compact_string(host) + _I32.pack(port)
        field += _compact_string(rack) + b"\x00"
    return b"\x01\x00" + uvarint(len(field)) + bytes(field)


@dataclass(slots=True)
class PartitionResult:
    index: int
    error: int = 0
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1
    #: whole record batches, as read from the log (bytes, or FileRanges to send from the file)
    records: list[Any] = field(default_factory=list)
    records_size: int = 0
    #: (producer id, first offset) of aborted transactions; None unless read_committed
    aborted: list[tuple[int, int]] | None = None
    #: KIP-951: (leader id, leader epoch) for a partition another broker leads
    current_leader: tuple[int, int] | None = None


@dataclass(slots=True)
class TopicResult:
    name: str
    topic_id: uuid.UUID
    partitions: list[PartitionResult] = field(default_factory=list)


class EncodedFetch(list):  # type: ignore[type-arg]
    """The parts of an encoded Fetch response, with what they say for the request observers
    (akfak.request_events: metrics, the inspector), which see this instead of a kio entity."""

    __slots__ = ("error_code", "reads", "topics")

    def __init__(self, error_code: int, topics: list[TopicResult]) -> None:
        super().__init__()
        self.error_code = error_code
        #: what the response carries, partitions by topic
        self.topics = topics
        #: every partition read, by topic name (None: unknown id), set by the Fetch handler:
        #: an incremental fetch session's response leaves out unchanged partitions
        self.reads: list[tuple[str | None, PartitionResult]] = []


def encode_fetch_response(
    version: int, error: int, session_id: int, topics: list[TopicResult], throttle_ms: int = 0,
    node_endpoints: list[tuple[int, str, int, str | None]] | None = None,
) -> EncodedFetch:
    """`node_endpoints`: (node id, host, port, rack) of the leaders named by the partitions'
    current_leader (KIP-951, v16+)."""
    flexible = version >= 12
    parts = EncodedFetch(error, topics)
    buf = bytearray(_I32.pack(throttle_ms))

    def array_length(n: int) -> None:
        buf.extend(uvarint(n + 1) if flexible else _I32.pack(n))

    if version >= 7:
        buf += _I16.pack(error) + _I32.pack(session_id)
    array_length(len(topics))
    for topic in topics:
        if version >= 13:
            buf += topic.topic_id.bytes
        else:
            name = topic.name.encode()
            buf += (uvarint(len(name) + 1) if flexible else _I16.pack(len(name))) + name
        array_length(len(topic.partitions))
        for p in topic.partitions:
            buf += _PARTITION_HEAD.pack(p.index, p.error, p.high_watermark, p.last_stable_offset)
            if version >= 5:
                buf += _I64.pack(p.log_start_offset)
            if p.aborted is None:
                buf += b"\x00" if flexible else b"\xff\xff\xff\xff"
            else:
                array_length(len(p.aborted))
                for producer_id, first_offset in p.aborted:
                    buf += _ABORTED.pack(producer_id, first_offset)
                    if flexible:
                        buf.append(0)
            if version >= 11:
                buf += _I32.pack(-1)  # preferred read replica: none
            # Flexible versions carry empty records, never null (librdkafka rejects null).
            buf += uvarint(p.records_size + 1) if flexible else _I32.pack(p.records_size)
            if p.records_size:
                parts.append(bytes(buf))
                parts.extend(p.records)
                buf = bytearray()
            if flexible:
                if p.current_leader is None:
                    buf.append(0)  # partition tagged fields: none
                else:  # one: tag 1, current_leader (leader id, epoch, no tagged fields)
                    buf += b"\x01\x01\x09" + _LEADER.pack(*p.current_leader) + b"\x00"
        if flexible:
            buf.append(0)  # topic tagged fields
    if flexible:
        if version >= 16 and node_endpoints:
            buf += _node_endpoints(node_endpoints)
        else:
            buf.append(0)  # response tagged fields
    parts.append(bytes(buf))
    return parts
