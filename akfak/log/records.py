"""Kafka's record format (magic 2): the one codec for the records inside a batch.

Producing and fetching never come here: the partition log handles batches as
opaque bytes behind their header (see `batch.py`).  What does need records:
the KRaft metadata log (akfak is its own controller: it writes the log and
replays it), the group coordinator's `__consumer_offsets` records, ListOffsets
by timestamp (like Kafka it finds the exact record in the one batch that holds
the target time) and the log cleaner, which filters the records of a batch and
rebuilds it with the batch's own codec.

A record is, in zigzag varints (kio's readers and writers)::

    length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
    key and value (varint length, -1 for null, bytes),
    header count varint, headers (key and value, each as the key above)
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import crc32c
from kio.serial.errors import BufferUnderflow
from kio.serial.readers import read_signed_varint, read_signed_varlong
from kio.serial.writers import write_signed_varint, write_signed_varlong

from akfak.errors import CorruptMessage, UnsupportedCompressionType
from akfak.log.batch import (
    CONTROL_BIT,
    CRC_OFFSET,
    CRC_START,
    HEADER_SIZE,
    HEADER_STRUCT,
    MIN_BATCH_LENGTH,
    NO_TIMESTAMP,
    TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
    BatchHeader,
    parse_header,
)

#: Kafka's "delete horizon" batch attribute (KIP-534): the base timestamp is the horizon.
DELETE_HORIZON_BIT = 0x40

_UINT32 = struct.Struct(">I")
_INT32 = struct.Struct(">i")
_LE32 = struct.Struct("<I")


class Record(NamedTuple):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


class RawRecord(NamedTuple):
    """A record as the log cleaner filters it: what it decides on, and the record's bytes
    from its offset delta on, which `rebuild_batch` copies without decoding them."""

    offset: int
    timestamp: int
    key: bytes | None
    tombstone: bool
    attributes: int
    tail: bytes


# -- compression -------------------------------------------------------------------------

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER = _XERIAL_MAGIC + struct.pack(">ii", 1, 1)
_XERIAL_BLOCK = 32 * 1024
#: An LZ4 frame as Kafka's KafkaLZ4BlockOutputStream writes it: magic, FLG 0x60 (version 1,
#: independent blocks, no checksums), BD 0x40 (64 KiB blocks), header checksum 0x82.
#: Kafka's reader refuses linked blocks, which cramjam's frame compressor writes.
_LZ4_FRAME_HEADER = bytes.fromhex("04224d18604082")
_LZ4_BLOCK = 64 * 1024
_LZ4_UNCOMPRESSED = 0x80000000


def _cramjam():  # type: ignore[no-untyped-def]
    try:
        import cramjam
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return cramjam


def decompress(codec: int, data: bytes) -> bytes:
    """Inflate the records section of a batch compressed with Kafka codec `codec`.

    gzip is always available (stdlib); snappy, lz4 and zstd need `cramjam`
    (or python-snappy, lz4, zstandard), else UnsupportedCompressionType.
    """
    if codec == 0:
        return data
    if codec == 1:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise CorruptMessage(f"gzip data is corrupt: {e}") from None
    cramjam = _cramjam()
    try:
        if codec == 2:
            return _snappy(data, cramjam)
        if codec == 3:
            if cramjam is not None:
                return bytes(cramjam.lz4.decompress(data))
            import lz4.frame

            return bytes(lz4.frame.decompress(data))
        if codec == 4:
            if cramjam is not None:
                return bytes(cramjam.zstd.decompress(data))
            import zstandard

            return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(data))
    except ImportError:
        raise UnsupportedCompressionType(
            f"No library to decompress codec {codec} (install cramjam)") from None
    except Exception as e:  # the codec libraries raise their own error types
        raise CorruptMessage(f"Cannot decompress records (codec {codec}): {e}") from None
    raise CorruptMessage(f"Unknown compression codec {codec}")


def _snappy(data: bytes, cramjam: object | None) -> bytes:
    # The Java client frames snappy xerial-style; librdkafka sends raw blocks.
    if cramjam is not None:
        raw = cramjam.snappy.decompress_raw  # type: ignore[attr-defined]
    else:
        import snappy

        raw = snappy.uncompress
    if not data.startswith(_XERIAL_MAGIC):
        return bytes(raw(data))
    out = bytearray()
    pos = 16  # magic (8), version (4), compatible version (4)
    while pos + 4 <= len(data):
        (length,) = _INT32.unpack_from(data, pos)
        pos += 4
        out += raw(data[pos : pos + length])
        pos += length
    return bytes(out)


def compress(codec: int, data: bytes, *, xerial: bool = False) -> bytes:
    """`data` compressed with Kafka codec `codec`, in a form every Kafka client reads
    (snappy in the Java client's xerial framing when `xerial`)."""
    if codec == 0:
        return data
    if codec == 1:
        return gzip.compress(data, compresslevel=6, mtime=0)
    import cramjam

    if codec == 2:
        if not xerial:
            return bytes(cramjam.snappy.compress_raw(data))
        out = bytearray(_XERIAL_HEADER)
        for start in range(0, len(data), _XERIAL_BLOCK):
            block = bytes(cramjam.snappy.compress_raw(data[start : start + _XERIAL_BLOCK]))
            out += _INT32.pack(len(block)) + block
        return bytes(out)
    if codec == 3:
        out = bytearray(_LZ4_FRAME_HEADER)
        for start in range(0, len(data), _LZ4_BLOCK):
            chunk = data[start : start + _LZ4_BLOCK]
            block = bytes(cramjam.lz4.compress_block(chunk, store_size=False))
            if len(block) >= len(chunk):
                out += _LE32.pack(len(chunk) | _LZ4_UNCOMPRESSED) + chunk
            else:
                out += _LE32.pack(len(block)) + block
        out += _LE32.pack(0)  # end mark
        return bytes(out)
    if codec == 4:
        return bytes(cramjam.zstd.compress(data, level=3))
    raise CorruptMessage(f"Unknown compression codec {codec}")


# -- decoding ----------------------------------------------------------------------------


def records_section(batch: bytes | memoryview, header: BatchHeader) -> bytes:
    """The decompressed record bytes of one whole batch."""
    body = bytes(batch[HEADER_SIZE : header.size])
    return decompress(header.compression, body)


def iter_timestamps(batch: bytes | memoryview) -> Iterator[tuple[int, int]]:
    """(offset, timestamp) of each record of one batch, without decoding keys and values."""
    header = parse_header(batch)
    if header.is_log_append_time:
        # Every record of a LogAppendTime batch has the batch's time.
        for delta in range(header.last_offset_delta + 1):
            yield header.base_offset + delta, header.max_timestamp
        return
    data = records_section(batch, header)
    base_offset, base_timestamp = header.base_offset, header.base_timestamp
    size = len(data)
    for ts_delta, offset_delta, _key, end in _skim(data, header.record_count):
        yield base_offset + offset_delta, base_timestamp + ts_delta
        if end > size:
            raise CorruptMessage("Record extends past the end of its batch")


def _skim(data: bytes, count: int) -> Iterator[tuple[int, int, int, int]]:
    """(timestamp delta, offset delta, position of the key, end) of each record of a
    records section, reading no further into a record and checking nothing."""
    pos = 0
    for _ in range(count):
        length, n = read_signed_varint(data, pos)
        pos += n
        ts_delta, n = read_signed_varlong(data, pos + 1)  # after the attributes
        q = pos + 1 + n
        offset_delta, n = read_signed_varint(data, q)
        pos += length
        yield ts_delta, offset_delta, q + n, pos


def iter_records(batch: bytes | memoryview) -> Iterator[Record]:
    """Decode every record of one batch (decompressing it first if needed)."""
    header = parse_header(batch)
    data = records_section(batch, header)
    pos = 0
    for _ in range(header.record_count):
        length, n = read_signed_varint(data, pos)
        pos += n
        end = pos + length
        if end > len(data):
            raise CorruptMessage("Record extends past the end of its batch")
        q = pos + 1
        ts_delta, n = read_signed_varlong(data, q)
        q += n
        offset_delta, n = read_signed_varint(data, q)
        q += n
        key, q = _read_bytes(data, q)
        value, q = _read_bytes(data, q)
        count, n = read_signed_varint(data, q)
        q += n
        headers = []
        for _h in range(count):
            hkey, q = _read_bytes(data, q)
            hvalue, q = _read_bytes(data, q)
            headers.append(((hkey or b"").decode("utf-8"), hvalue))
        timestamp = (header.max_timestamp if header.is_log_append_time
                     else header.base_timestamp + ts_delta)
        yield Record(header.base_offset + offset_delta, timestamp, key, value, tuple(headers))
        pos = end


def iter_raw_records(batch: bytes | memoryview, header: BatchHeader) -> Iterator[RawRecord]:
    """The records of one batch as the log cleaner filters them; CorruptMessage for a
    malformed one (the cleaner marks such a log uncleanable)."""
    data = records_section(batch, header)
    size = len(data)
    append_time = header.max_timestamp if header.is_log_append_time else None
    pos = 0
    for _ in range(header.record_count):
        try:
            length, n = read_signed_varint(data, pos)
            pos += n
            end = pos + length
            if length < 1 or end > size:
                raise CorruptMessage("Record extends past the end of its batch")
            ts_delta, n = read_signed_varlong(data, pos + 1)  # after the attributes
            tail = pos + 1 + n
            offset_delta, n = read_signed_varint(data, tail)
            q = tail + n
            key_length, n = read_signed_varint(data, q)
            q += n
            key = None if key_length < 0 else data[q : q + key_length]
            q += max(key_length, 0)
            value_length, n = read_signed_varint(data, q)
            q += n
        except BufferUnderflow:
            raise CorruptMessage("Record extends past the end of its batch") from None
        except ValueError:  # kio's "Varint is too long"
            raise CorruptMessage("Varint is too long") from None
        if q > end:
            raise CorruptMessage("Record extends past its length")
        timestamp = append_time if append_time is not None else header.base_timestamp + ts_delta
        yield RawRecord(header.base_offset + offset_delta, timestamp, key, value_length < 0,
                        data[pos], data[tail:end])
        pos = end


def _read_bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    length, n = read_signed_varint(data, pos)
    pos += n
    if length < 0:
        return None, pos
    return data[pos : pos + length], pos + length


def delete_horizon(header: BatchHeader) -> int | None:
    """The KIP-534 delete horizon a cleaning stamped on the batch, if any."""
    return header.base_timestamp if header.attributes & DELETE_HORIZON_BIT else None


# -- encoding ----------------------------------------------------------------------------


def encode_batch(entries: Sequence[tuple[bytes | None, bytes | None]], *, timestamp: int,
                 base_offset: int = 0, leader_epoch: int = -1, control: bool = False,
                 transactional: bool = False, producer_id: int = -1, producer_epoch: int = -1,
                 base_sequence: int = -1,
                 headers: Sequence[tuple[str, bytes | None]] = ()) -> bytes:
    """An uncompressed magic-2 batch of (key, value) records, all stamped `timestamp`
    (each with `headers`).

    The broker encodes records only for logs it writes itself: the KRaft metadata
    log and `__consumer_offsets` (the log assigns the real offsets on append).
    """
    # Bytes joined once: thousands of records (a large CreateTopics) encode in milliseconds.
    parts: list[bytes] = []
    encoded_headers = _zigzag(len(headers)) + b"".join(
        _sized(name.encode("utf-8")) + _sized(value) for name, value in headers)
    for delta, (key, value) in enumerate(entries):
        tail = b"".join((_zigzag(delta), _sized(key), _sized(value), encoded_headers))
        # length, attributes 0, timestamp delta 0, then the tail
        parts += (_zigzag(len(tail) + 2), b"\x00\x00", tail)
    body = b"".join(parts)
    attributes = (CONTROL_BIT if control else 0) | (TRANSACTIONAL_BIT if transactional else 0)
    # batchLength, magic and crc are _pack's to fill in.
    header = BatchHeader(base_offset, 0, leader_epoch, 2, 0, attributes, len(entries) - 1,
                         timestamp, timestamp, producer_id, producer_epoch, base_sequence,
                         len(entries))
    return _pack(header, body)


def _zigzag_varint(n: int) -> bytes:
    """A signed varint (zigzag), as Kafka's ByteUtils.writeVarint."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


#: the varints of 0..8191 (offset deltas and lengths of a large batch), made once
_SMALL_VARINTS = tuple(_zigzag_varint(n) for n in range(8192))
_NULL = _zigzag_varint(-1)


def _zigzag(n: int) -> bytes:
    return _SMALL_VARINTS[n] if 0 <= n < 8192 else _zigzag_varint(n)


def rebuild_batch(batch: bytes | memoryview, header: BatchHeader, records: Sequence[RawRecord],
                  delete_horizon_ms: int | None) -> bytes:
    """The batch holding only `records`, some of its own (Kafka's buildRetainedRecordsInto).

    Its base offset, offset span (so the last sequence too), producer fields, leader
    epoch, timestamp type and codec are the original's (snappy keeps its framing); the
    base timestamp is the delete horizon when there is one (KIP-534), else the first
    record's, and every record's timestamp delta is recomputed from it.
    """
    base_ts = delete_horizon_ms if delete_horizon_ms is not None else records[0].timestamp
    max_ts = (header.max_timestamp if header.is_log_append_time
              else max(r.timestamp for r in records))
    body = io.BytesIO()
    for r in records:
        _write_record(body, r.attributes, r.timestamp - base_ts, r.tail)
    xerial = header.compression == 2 and bytes(
        batch[HEADER_SIZE : HEADER_SIZE + len(_XERIAL_MAGIC)]) == _XERIAL_MAGIC
    attributes = header.attributes & ~DELETE_HORIZON_BIT
    if delete_horizon_ms is not None:
        attributes |= DELETE_HORIZON_BIT
    rebuilt = header._replace(attributes=attributes, base_timestamp=base_ts,
                              max_timestamp=max_ts, record_count=len(records))
    return _pack(rebuilt, compress(header.compression, body.getvalue(), xerial=xerial))


def empty_batch(header: BatchHeader) -> bytes:
    """A batch header without records, keeping the batch's offsets and producer fields
    (Kafka's DefaultRecordBatch.writeEmptyHeader)."""
    attributes = header.attributes & (TIMESTAMP_TYPE_BIT | TRANSACTIONAL_BIT | CONTROL_BIT)
    return _pack(header._replace(attributes=attributes, base_timestamp=NO_TIMESTAMP,
                                 record_count=0), b"")


def _sized(data: bytes | None) -> bytes:
    """Bytes with their varint length before them (-1: null), as record fields are."""
    return _NULL if data is None else _zigzag(len(data)) + data


def _write_record(out: io.BytesIO, attributes: int, timestamp_delta: int, tail: bytes) -> None:
    """One record: its length, attributes and timestamp delta, then `tail` (the encoded
    offset delta, key, value and headers)."""
    head = io.BytesIO()
    head.write(bytes((attributes,)))
    write_signed_varlong(head, timestamp_delta)
    write_signed_varint(out, head.tell() + len(tail))
    out.write(head.getvalue())
    out.write(tail)


def _write_bytes(out: io.BytesIO, data: bytes | None) -> None:
    if data is None:
        write_signed_varint(out, -1)
    else:
        write_signed_varint(out, len(data))
        out.write(data)


def _pack(header: BatchHeader, records: bytes) -> bytes:
    """The batch of `header`'s fields and `records` (the section as stored, compressed or
    not); batchLength, magic and the CRC-32C are computed."""
    out = bytearray(HEADER_STRUCT.pack(
        header.base_offset, MIN_BATCH_LENGTH + len(records), header.partition_leader_epoch, 2, 0,
        header.attributes, header.last_offset_delta, header.base_timestamp,
        header.max_timestamp, header.producer_id, header.producer_epoch, header.base_sequence,
        header.record_count))
    crc = crc32c.crc32c(records, crc32c.crc32c(bytes(out[CRC_START:])))
    _UINT32.pack_into(out, CRC_OFFSET, crc)
    return bytes(out) + records


# -- transaction markers (control batches) -------------------------------------------------

#: Control record types (Kafka's ControlRecordType).
CONTROL_ABORT = 0
CONTROL_COMMIT = 1
_CONTROL_KEY = struct.Struct(">hh")  # version 0, type
_MARKER_VALUE = struct.Struct(">hi")  # version 0, coordinator epoch


def encode_marker(*, commit: bool, producer_id: int, producer_epoch: int,
                  coordinator_epoch: int, timestamp: int) -> bytes:
    """A COMMIT or ABORT marker: a control batch of one EndTransactionMarker record."""
    key = _CONTROL_KEY.pack(0, CONTROL_COMMIT if commit else CONTROL_ABORT)
    value = _MARKER_VALUE.pack(0, coordinator_epoch)
    return encode_batch([(key, value)], timestamp=timestamp, control=True, transactional=True,
                        producer_id=producer_id, producer_epoch=producer_epoch)


def read_marker(batch: bytes | memoryview) -> tuple[int, int] | None:
    """(control record type, coordinator epoch) of a control batch (CONTROL_ABORT,
    CONTROL_COMMIT or another type; the epoch -1 when the value is not a marker's), None
    when the batch holds no readable control record."""
    try:
        for record in iter_records(batch):
            if record.key is None or len(record.key) < _CONTROL_KEY.size:
                return None
            kind = int(_CONTROL_KEY.unpack_from(record.key)[1])
            value = record.value
            epoch = (int(_MARKER_VALUE.unpack_from(value)[1])
                     if value is not None and len(value) >= _MARKER_VALUE.size else -1)
            return kind, epoch
    except (CorruptMessage, BufferUnderflow, ValueError, IndexError):
        return None
    return None
