"""Build and parse Kafka record batches (magic 2) in tests.

Written from the protocol description, independently of akfak's own code, so
tests can check the broker's bytes against it::

    data = make_batch([(b"k", b"v"), (None, b"v2", [("h", b"x")], 1_700_000_000_000)])
    records = parse_batches(data)   # [ParsedRecord(offset=0, key=b"k", ...), ...]
"""

from __future__ import annotations

import gzip
import io
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import crc32c
from kio.serial.readers import read_signed_varint, read_signed_varlong
from kio.serial.writers import write_signed_varint, write_signed_varlong

HEADER = struct.Struct(">qiibIhiqqqhii")
CODECS = {None: 0, "none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

#: (key, value), (key, value, headers) or (key, value, headers, timestamp); or a bare value.
RecordSpec = Any


@dataclass(frozen=True)
class ParsedRecord:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    # from the batch header
    batch_base_offset: int
    partition_leader_epoch: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    log_append_time: bool
    transactional: bool
    control: bool


@dataclass(frozen=True)
class ParsedBatch:
    base_offset: int
    length: int  # whole batch size in bytes
    partition_leader_epoch: int
    crc: int
    crc_ok: bool
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    records: tuple[ParsedRecord, ...]


def _normalize(spec: RecordSpec, default_ts: int) -> tuple[bytes | None, bytes | None,
                                                             Sequence[tuple[str, bytes | None]],
                                                             int]:
    if isinstance(spec, bytes | bytearray) or spec is None:
        return None, spec, (), default_ts
    key, value, *rest = spec
    headers = rest[0] if len(rest) > 0 and rest[0] is not None else ()
    ts = rest[1] if len(rest) > 1 and rest[1] is not None else default_ts
    return key, value, headers, ts


def _put_bytes(out: io.BytesIO, data: bytes | None) -> None:
    if data is None:
        write_signed_varint(out, -1)
    else:
        write_signed_varint(out, len(data))
        out.write(data)


def _compress(codec: int, data: bytes) -> bytes:
    if codec == 0:
        return data
    if codec == 1:
        return gzip.compress(data)
    import cramjam

    if codec == 2:
        return bytes(cramjam.snappy.compress_raw(data))
    if codec == 3:
        # Kafka refuses LZ4 frames with dependent blocks (cramjam's frame compressor's).
        import lz4.frame

        return bytes(lz4.frame.compress(data, block_linked=False))
    return bytes(cramjam.zstd.compress(data))


def _decompress(codec: int, data: bytes) -> bytes:
    if codec == 0:
        return data
    if codec == 1:
        return gzip.decompress(data)
    import cramjam

    if codec == 2:
        return bytes(cramjam.snappy.decompress_raw(data))
    if codec == 3:
        return bytes(cramjam.lz4.decompress(data))
    return bytes(cramjam.zstd.decompress(data))


def make_batch(records: Iterable[RecordSpec] = ((None, b"value"),), *, base_offset: int = 0,
               partition_leader_epoch: int = -1, producer_id: int = -1,
               producer_epoch: int = -1, base_sequence: int = -1,
               compression: str | None = None, timestamp: int | None = None,
               log_append_time: bool = False, transactional: bool = False,
               control: bool = False, max_timestamp: int | None = None,
               last_offset_delta: int | None = None, record_count: int | None = None,
               magic: int = 2, crc: int | None = None, pad_records: int = 0) -> bytes:
    """Encode one record batch.

    The trailing keyword arguments exist to build *invalid* batches for tests
    (wrong lastOffsetDelta or recordCount, bad CRC, other magic).
    `pad_records` adds that many bytes of value to the first record, for size tests.
    """
    default_ts = int(time.time() * 1000) if timestamp is None else timestamp
    specs = [_normalize(s, default_ts) for s in records]
    if pad_records and specs:
        k, v, h, t = specs[0]
        specs[0] = (k, (v or b"") + b"\x00" * pad_records, h, t)
    base_ts = specs[0][3] if specs else default_ts
    body = io.BytesIO()
    for delta, (key, value, headers, ts) in enumerate(specs):
        rec = io.BytesIO()
        rec.write(b"\x00")
        write_signed_varlong(rec, ts - base_ts)
        write_signed_varint(rec, delta)
        _put_bytes(rec, key)
        _put_bytes(rec, value)
        write_signed_varint(rec, len(headers))
        for hkey, hvalue in headers:
            _put_bytes(rec, hkey.encode("utf-8"))
            _put_bytes(rec, hvalue)
        encoded = rec.getvalue()
        write_signed_varint(body, len(encoded))
        body.write(encoded)
    codec = CODECS[compression]
    payload = _compress(codec, body.getvalue())
    attributes = codec | (0x08 if log_append_time else 0) | (0x10 if transactional else 0) | (
        0x20 if control else 0)
    count = len(specs) if record_count is None else record_count
    lod = len(specs) - 1 if last_offset_delta is None else last_offset_delta
    max_ts = max((s[3] for s in specs), default=default_ts) if max_timestamp is None else max_timestamp
    header = bytearray(HEADER.pack(base_offset, 49 + len(payload), partition_leader_epoch, magic, 0,
                                   attributes, lod, base_ts, max_ts, producer_id, producer_epoch,
                                   base_sequence, count))
    computed = crc32c.crc32c(payload, crc32c.crc32c(bytes(header[21:])))
    struct.pack_into(">I", header, 17, computed if crc is None else crc)
    return bytes(header) + payload


def parse_batch_list(data: bytes) -> list[ParsedBatch]:
    """Decode every batch in `data` (a fetch response's records, a segment file ...)."""
    batches = []
    pos = 0
    while pos + 61 <= len(data):
        (base_offset, batch_length, ple, magic, crc, attrs, lod, base_ts, max_ts, pid, pepoch,
         bseq, count) = HEADER.unpack_from(data, pos)
        assert magic == 2, f"magic {magic} at byte {pos}"
        end = pos + 12 + batch_length
        assert end <= len(data), f"batch at byte {pos} is truncated"
        crc_ok = crc32c.crc32c(data[pos + 21 : end]) == crc
        body = _decompress(attrs & 0x07, data[pos + 61 : end])
        records = []
        q = 0
        for _ in range(count):
            length, n = read_signed_varint(body, q)
            q += n
            rec_end = q + length
            r = q + 1
            ts_delta, n = read_signed_varlong(body, r)
            r += n
            off_delta, n = read_signed_varint(body, r)
            r += n
            key, r = _get_bytes(body, r)
            value, r = _get_bytes(body, r)
            nheaders, n = read_signed_varint(body, r)
            r += n
            headers = []
            for _h in range(nheaders):
                hkey, r = _get_bytes(body, r)
                hvalue, r = _get_bytes(body, r)
                headers.append(((hkey or b"").decode("utf-8"), hvalue))
            assert r == rec_end, "record length mismatch"
            lat = bool(attrs & 0x08)
            records.append(ParsedRecord(
                offset=base_offset + off_delta,
                timestamp=max_ts if lat else base_ts + ts_delta,
                key=key, value=value, headers=tuple(headers), batch_base_offset=base_offset,
                partition_leader_epoch=ple, producer_id=pid, producer_epoch=pepoch,
                base_sequence=bseq, log_append_time=lat, transactional=bool(attrs & 0x10),
                control=bool(attrs & 0x20)))
            q = rec_end
        batches.append(ParsedBatch(base_offset, 12 + batch_length, ple, crc, crc_ok, attrs, lod,
                                   base_ts, max_ts, pid, pepoch, bseq, count, tuple(records)))
        pos = end
    return batches


def parse_batches(data: bytes | Iterable[bytes]) -> list[ParsedRecord]:
    """Every record of every batch in `data` (bytes, or a list of byte parts)."""
    if not isinstance(data, bytes | bytearray):
        data = b"".join(data)
    return [r for b in parse_batch_list(bytes(data)) for r in b.records]


def _get_bytes(data: bytes, pos: int) -> tuple[bytes | None, int]:
    length, n = read_signed_varint(data, pos)
    pos += n
    if length < 0:
        return None, pos
    return data[pos : pos + length], pos + length


# -- hand-made records, for the broker's validation tests --------------------------------


def record_bytes(offset_delta: int, key: bytes | None, value: bytes | None, *, ts_delta: int = 0,
                 header_count: int | None = None, length_adjust: int = 0) -> bytes:
    """One encoded record; `header_count` and `length_adjust` (added to its length
    prefix) make malformed ones."""
    rec = io.BytesIO()
    rec.write(b"\x00")
    write_signed_varlong(rec, ts_delta)
    write_signed_varint(rec, offset_delta)
    _put_bytes(rec, key)
    _put_bytes(rec, value)
    write_signed_varint(rec, 0 if header_count is None else header_count)
    body = rec.getvalue()
    out = io.BytesIO()
    write_signed_varint(out, len(body) + length_adjust)
    out.write(body)
    return out.getvalue()


def batch_of(section: bytes, count: int, *, codec: int = 0, payload: bytes | None = None,
             base_timestamp: int | None = None, max_timestamp: int | None = None,
             attributes: int = 0) -> bytes:
    """A batch (valid CRC, lastOffsetDelta count - 1) around a records section built by hand,
    compressed with `codec` (or the given `payload` as its compressed bytes)."""
    ts = int(time.time() * 1000) if base_timestamp is None else base_timestamp
    payload = _compress(codec, section) if payload is None else payload
    header = bytearray(HEADER.pack(0, 49 + len(payload), -1, 2, 0, codec | attributes, count - 1,
                                   ts, ts if max_timestamp is None else max_timestamp, -1, -1, -1,
                                   count))
    struct.pack_into(">I", header, 17, crc32c.crc32c(payload, crc32c.crc32c(bytes(header[21:]))))
    return bytes(header) + payload
