"""A view of Kafka record-batch headers (magic 2): parse, validate, patch.

Only the 61-byte batch header is ever looked at here: the broker assigns
offsets by rewriting baseOffset and partitionLeaderEpoch, which the CRC does not
cover, and stores the records that follow as they came.  Nothing in this module
does work per record.

Layout (all big-endian)::

    0  baseOffset int64            | not covered by the CRC
    8  batchLength int32           | (bytes after this field)
    12 partitionLeaderEpoch int32  |
    16 magic int8
    17 crc uint32                  CRC-32C of bytes 21..end
    21 attributes int16            bits 0-2 compression, 3 timestamp type,
                                   4 transactional, 5 control, 6 delete horizon
    23 lastOffsetDelta int32
    27 baseTimestamp int64
    35 maxTimestamp int64
    43 producerId int64
    51 producerEpoch int16
    53 baseSequence int32
    57 recordCount int32
    61 records
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

import crc32c

from akfak.errors import CorruptMessage, InvalidRecord, MessageTooLarge, UnsupportedForMessageFormat

HEADER_SIZE = 61
#: baseOffset + batchLength: the part of a batch before the length-counted bytes.
LOG_OVERHEAD = 12
#: Bytes counted by batchLength that are header (batchLength of a batch without records).
MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD
CRC_START = 21
MAGIC_OFFSET = 16
CRC_OFFSET = 17
ATTRIBUTES_OFFSET = 21
MAX_TIMESTAMP_OFFSET = 35

COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08
TRANSACTIONAL_BIT = 0x10
CONTROL_BIT = 0x20

COMPRESSION_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}

NO_TIMESTAMP = -1
NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
NO_SEQUENCE = -1
INT32_MAX = 2**31 - 1

#: The whole batch header, field by field (BatchHeader order).
HEADER_STRUCT = struct.Struct(">qiibIhiqqqhii")
_PREFIX = struct.Struct(">qi")  # baseOffset, batchLength
_OFFSET_AND_EPOCH = struct.Struct(">qii")  # baseOffset, batchLength, partitionLeaderEpoch
_ATTRS_AND_MAX_TS = struct.Struct(">h")
_INT64 = struct.Struct(">q")
_UINT32 = struct.Struct(">I")


class BatchHeader(NamedTuple):
    """The fields of a magic-2 record batch header."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """The whole batch's size in bytes, header included."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK

    @property
    def is_log_append_time(self) -> bool:
        return bool(self.attributes & TIMESTAMP_TYPE_BIT)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & CONTROL_BIT)

    @property
    def has_producer_id(self) -> bool:
        return self.producer_id >= 0

    @property
    def last_sequence(self) -> int:
        """The sequence number of the batch's last record (wrapping as Kafka does), or -1."""
        if self.base_sequence == NO_SEQUENCE:
            return NO_SEQUENCE
        return (self.base_sequence + self.last_offset_delta) % (2**31)


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the header of the batch starting at `pos` (at least 61 bytes must be there)."""
    return BatchHeader._make(HEADER_STRUCT.unpack_from(buf, pos))


def read_prefix(buf: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """(baseOffset, batchLength) of the batch at `pos`."""
    return _PREFIX.unpack_from(buf, pos)  # type: ignore[return-value]


def crc_of(buf: bytes | bytearray | memoryview, pos: int, size: int) -> int:
    """The CRC-32C Kafka stores for the batch at `pos` of `size` bytes."""
    return int(crc32c.crc32c(memoryview(buf)[pos + CRC_START : pos + size]))


def scan(buf: bytes | bytearray | memoryview, start: int = 0, end: int | None = None,
         *, verify_crc: bool = False) -> Iterator[tuple[int, BatchHeader]]:
    """Yield (position, header) of each complete batch in `buf[start:end]`.

    Stops quietly at the first incomplete, malformed or (with `verify_crc`)
    CRC-invalid batch: the caller sees where the valid prefix ends from the last
    position and size yielded.  Used for recovery and for walking stored data
    that was validated on the way in.
    """
    limit = len(buf) if end is None else end
    pos = start
    while pos + HEADER_SIZE <= limit:
        header = parse_header(buf, pos)
        size = header.batch_length + LOG_OVERHEAD
        if header.magic != 2 or header.batch_length < MIN_BATCH_LENGTH or pos + size > limit:
            return
        if header.last_offset_delta < 0:
            return
        if verify_crc and crc_of(buf, pos, size) != header.crc:
            return
        yield pos, header
        pos += size


def validate(records: bytes | bytearray | memoryview, *, max_message_bytes: int,
             client: bool = True) -> list[tuple[int, BatchHeader]]:
    """Validate every batch of a produce payload; return (position, header) of each.

    Checks what Kafka checks without looking at records: magic, batchLength,
    CRC-32C, lastOffsetDelta against recordCount, size against
    max.message.bytes, and for client appends baseOffset 0, no control batches
    and a sequence number with every producer id.  Raises the matching
    `KafkaError`.
    """
    view = memoryview(records)
    total = len(view)
    if total == 0:
        raise InvalidRecord("The produce request has no record batches")
    batches: list[tuple[int, BatchHeader]] = []
    pos = 0
    while pos < total:
        if total - pos < LOG_OVERHEAD + 5:
            raise CorruptMessage(f"Truncated record batch at byte {pos} of {total}")
        base_offset, batch_length = _PREFIX.unpack_from(view, pos)
        magic = view[pos + MAGIC_OFFSET]
        if magic < 2:
            raise UnsupportedForMessageFormat(
                f"Record batch magic {magic} is not supported; only magic 2 batches are")
        if magic > 2:
            raise CorruptMessage(f"Unknown record batch magic {magic}")
        if batch_length < MIN_BATCH_LENGTH:
            raise CorruptMessage(
                f"Record batch length {batch_length} is smaller than the minimum {MIN_BATCH_LENGTH}")
        size = batch_length + LOG_OVERHEAD
        if pos + size > total:
            raise CorruptMessage(
                f"Record batch at byte {pos} claims {size} bytes but only {total - pos} remain")
        header = parse_header(view, pos)
        if client and base_offset != 0:
            raise InvalidRecord(
                f"The baseOffset of the record batch in the append should be 0, "
                f"but it is {base_offset}")
        if size > max_message_bytes:
            raise MessageTooLarge(
                f"The record batch size {size} bytes exceeds the maximum configured value of "
                f"{max_message_bytes} (max.message.bytes)")
        if crc_of(view, pos, size) != header.crc:
            raise CorruptMessage(
                f"Record batch at offset {base_offset} is corrupt (stored crc = {header.crc}, "
                f"computed crc = {crc_of(view, pos, size)})")
        if header.record_count <= 0:
            raise InvalidRecord(f"Invalid reported count for record batch: {header.record_count}")
        if header.last_offset_delta != header.record_count - 1:
            raise InvalidRecord(
                f"Inconsistent batch offset range [{base_offset}, "
                f"{base_offset + header.last_offset_delta}] and count of records "
                f"{header.record_count}")
        if client:
            if header.is_control:
                raise InvalidRecord("Clients are not allowed to write control records")
            if header.producer_id >= 0 and header.base_sequence < 0:
                raise InvalidRecord(
                    f"Invalid sequence number {header.base_sequence} in record batch with "
                    f"producerId {header.producer_id}")
        batches.append((pos, header))
        pos += size
    return batches


def patched_header(view: memoryview, pos: int, header: BatchHeader, *, base_offset: int,
                   leader_epoch: int, log_append_time: int | None = None) -> bytes:
    """The 61 header bytes of the batch at `pos` with offsets (and time) assigned.

    baseOffset and partitionLeaderEpoch change, which the CRC does not cover.  The
    attributes and maxTimestamp become `header`'s (the validator corrects them as Kafka
    does); for LogAppendTime topics the timestamp-type bit is set and maxTimestamp
    becomes the append time.  When either changes, the CRC is recomputed over the new
    header tail and the unchanged records.
    """
    out = bytearray(view[pos : pos + HEADER_SIZE])
    _OFFSET_AND_EPOCH.pack_into(out, 0, base_offset, header.batch_length, leader_epoch)
    attributes, max_timestamp = header.attributes, header.max_timestamp
    if log_append_time is not None:
        attributes, max_timestamp = attributes | TIMESTAMP_TYPE_BIT, log_append_time
    if ((attributes,) != _ATTRS_AND_MAX_TS.unpack_from(out, ATTRIBUTES_OFFSET)
            or (max_timestamp,) != _INT64.unpack_from(out, MAX_TIMESTAMP_OFFSET)):
        _ATTRS_AND_MAX_TS.pack_into(out, ATTRIBUTES_OFFSET, attributes)
        _INT64.pack_into(out, MAX_TIMESTAMP_OFFSET, max_timestamp)
        crc = crc32c.crc32c(memoryview(out)[CRC_START:])
        crc = crc32c.crc32c(view[pos + HEADER_SIZE : pos + header.size], crc)
        _UINT32.pack_into(out, CRC_OFFSET, crc)
    return bytes(out)
