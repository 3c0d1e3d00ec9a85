"""Record-level decoding and encoding, for the few places the broker looks inside a batch.

Producing and fetching never come here: the partition log handles batches as
opaque bytes behind their header (see `batch.py`).  What does need records:
replaying the KRaft metadata log (record values are metadata records), writing
it (akfak is its own controller), and ListOffsets by timestamp, which like
Kafka finds the exact record in the one batch that holds the target time.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import crc32c
from kio.serial.readers import read_signed_varint, read_signed_varlong
from kio.serial.writers import write_signed_varint, write_signed_varlong

from akfak.errors import CorruptMessage, UnsupportedCompressionType
from akfak.log.batch import (
    CONTROL_BIT,
    CRC_OFFSET,
    CRC_START,
    HEADER_SIZE,
    LOG_OVERHEAD,
    TRANSACTIONAL_BIT,
    BatchHeader,
    parse_header,
)

_HEADER_FIELDS = struct.Struct(">qiibIhiqqqhii")
_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_INT32 = struct.Struct(">i")


class Record(NamedTuple):
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


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
    pos = 0
    for _ in range(header.record_count):
        length, n = read_signed_varint(data, pos)
        pos += n
        end = pos + length
        q = pos + 1  # attributes
        ts_delta, n = read_signed_varlong(data, q)
        q += n
        offset_delta, n = read_signed_varint(data, q)
        yield header.base_offset + offset_delta, header.base_timestamp + ts_delta
        pos = end
        if pos > len(data):
            raise CorruptMessage("Record extends past the end of its batch")


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


def _read_bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    length, n = read_signed_varint(data, pos)
    pos += n
    if length < 0:
        return None, pos
    return data[pos : pos + length], pos + length


def encode_batch(entries: Sequence[tuple[bytes | None, bytes | None]], *, timestamp: int,
                 base_offset: int = 0, leader_epoch: int = -1, control: bool = False,
                 transactional: bool = False, producer_id: int = -1, producer_epoch: int = -1,
                 base_sequence: int = -1) -> bytes:
    """An uncompressed magic-2 batch of (key, value) records, all stamped `timestamp`.

    The broker encodes records only for logs it writes itself (the KRaft
    metadata log, and later control markers and internal topics).
    """
    body = io.BytesIO()
    for delta, (key, value) in enumerate(entries):
        rec = io.BytesIO()
        rec.write(b"\x00")  # attributes
        write_signed_varlong(rec, 0)  # timestamp delta
        write_signed_varint(rec, delta)
        _write_bytes(rec, key)
        _write_bytes(rec, value)
        write_signed_varint(rec, 0)  # no headers
        encoded = rec.getvalue()
        write_signed_varint(body, len(encoded))
        body.write(encoded)
    records = body.getvalue()
    attributes = (CONTROL_BIT if control else 0) | (TRANSACTIONAL_BIT if transactional else 0)
    header = bytearray(
        _HEADER_FIELDS.pack(base_offset, HEADER_SIZE - LOG_OVERHEAD + len(records), leader_epoch,
                            2, 0, attributes, len(entries) - 1, timestamp, timestamp,
                            producer_id, producer_epoch, base_sequence, len(entries)))
    crc = crc32c.crc32c(records, crc32c.crc32c(bytes(header[CRC_START:])))
    struct.pack_into(">I", header, CRC_OFFSET, crc)
    return bytes(header) + records


def _write_bytes(out: io.BytesIO, data: bytes | None) -> None:
    if data is None:
        write_signed_varint(out, -1)
    else:
        write_signed_varint(out, len(data))
        out.write(data)
