"""Kafka's LogValidator for client appends: the records inside each batch.

`batch.validate` has already checked each batch's header (magic, sizes, CRC,
lastOffsetDelta against recordCount, producer fields).  This module looks at the
records, as Kafka 4.1's LogValidator does, answering what Kafka answers (each
case compared with a Kafka 4.1.1 broker in tests/test_produce_validation.py):

- Per-record errors (KIP-467) fail the whole batch, naming the records at fault
  by their index in the batch: a record without a key on a compacted topic
  (INVALID_RECORD), a CreateTime timestamp outside
  [now - message.timestamp.before.max.ms, now + message.timestamp.after.max.ms]
  (INVALID_TIMESTAMP; a timestamp of -1 is not checked), a batch flagged
  LogAppendTime sent to a LogAppendTime topic (INVALID_TIMESTAMP, every record).
  A record's key error hides its timestamp error; any timestamp error makes the
  partition's error INVALID_TIMESTAMP.  These are the only errors whose message
  Kafka puts in the Produce answer (`RecordErrors`).
- Records that cannot be read fail the batch with INVALID_RECORD: fewer records
  than recordCount ("premature EOF"), bytes after the last one ("records still
  remaining"), a negative header count or header key size, a record running past
  its batch.  For uncompressed batches Kafka reads each record within its length
  prefix and also refuses a record whose fields do not fill it exactly; for
  compressed ones it reads the fields in sequence and ignores the prefix.
- A compressed batch Kafka cannot decompress fails with UNKNOWN_SERVER_ERROR (its
  codecs raise a plain KafkaException): unknown codec ids, corrupt data, and LZ4
  frames its KafkaLZ4BlockInputStream refuses: magic, FLG reserved bits or
  version other than 1, dependent blocks (block independence unset), BD reserved
  bits or a block size id outside 4-7, a wrong header checksum.  Content size
  and block or content checksums are accepted.
- Compressed records must carry offset deltas 0..n-1 in order: Kafka would
  rebuild the batch otherwise but fails doing so (UNKNOWN_SERVER_ERROR) when the
  codec stays the same, which is always the case on akfak (the topic's
  compression.type is not applied).  Uncompressed records keep the offset deltas
  they came with, as in Kafka.
- As Kafka, the stored batch's maxTimestamp is the largest record timestamp
  (CreateTime topics; the LogAppendTime bit of a client batch is cleared), so a
  header that lies is corrected (the header's CRC recomputed, records untouched).

Cost: every batch (compressed ones once decompressed) is first read by a fast
path (`_scan`) that accepts the common shape: each record's fields ending where
its length prefix says, offset deltas 0..n-1 (always required of
compressed batches; uncompressed ones otherwise take the slow path, which keeps
them), a key on compacted topics, timestamps within the window.  Anything else
is read field by field (`_read_records`, `_check`), so that what is refused gets
Kafka's exact answer; the fast path accepts only what that reading accepts too.
The record bytes are stored as they came in either case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from akfak.errors import (
    CorruptMessage,
    InvalidRecord,
    InvalidTimestamp,
    UnknownServerError,
    UnsupportedCompressionType,
)
from akfak.log.batch import HEADER_SIZE, NO_TIMESTAMP, TIMESTAMP_TYPE_BIT, BatchHeader
from akfak.log.config import LogConfig
from akfak.log.records import decompress

_INT64 = 1 << 64
_LZ4_MAGIC = b"\x04\x22\x4d\x18"
_EOF = "Incorrect declared batch size, premature EOF reached"
_REMAINING = "Incorrect declared batch size, records still remaining in file"


class RecordErrors:
    """A batch refused for some of its records: (index in the batch, message) of each."""

    record_errors: tuple[tuple[int, str], ...] = ()


class InvalidRecords(RecordErrors, InvalidRecord):
    pass


class InvalidTimestamps(RecordErrors, InvalidTimestamp):
    pass


class Rules(NamedTuple):
    """What a topic's configuration asks of the records appended to it."""

    topic_partition: str
    compact: bool
    log_append_time: bool
    before_ms: int
    after_ms: int

    @classmethod
    def of(cls, topic_partition: str, config: LogConfig) -> Rules:
        return cls(topic_partition, config.compact, config.log_append_time,
                   config.message_timestamp_before_max_ms, config.message_timestamp_after_max_ms)


def validate(view: memoryview, headers: Sequence[tuple[int, BatchHeader]], rules: Rules,
             now_ms: int) -> list[tuple[int, BatchHeader]]:
    """Check the records of each client batch; return the (position, header) pairs with
    each header as Kafka stores it (maxTimestamp and timestamp type).  Raises the
    KafkaError Kafka answers (RecordErrors for per-record errors)."""
    # Uncompressed records are scanned where they are: copying a 1 MiB batch costs as much as
    # scanning it.  (Bytes index faster than a memoryview.)
    whole = view.obj if isinstance(view.obj, bytes) and len(view.obj) == view.nbytes else None
    return [(pos, _batch(view, whole, pos, h, rules, now_ms)) for pos, h in headers]


def _batch(view: memoryview, whole: bytes | None, pos: int, h: BatchHeader, rules: Rules,
           now_ms: int) -> BatchHeader:
    codec = h.compression
    batch_lat = h.is_log_append_time
    start, stop = pos + HEADER_SIZE, pos + h.size  # the records: data[start:stop]
    if codec or whole is None:
        data = _decompress(codec, view[start:stop]) if codec else bytes(view[start:stop])
        start, stop = 0, len(data)
    else:
        data = whole
    if not (rules.log_append_time and batch_lat):  # (that one fails every record)
        span = _scan(data, start, stop, h.record_count, rules.compact)
        if span is not None:
            if rules.log_append_time:
                return h
            if batch_lat:  # every record's timestamp is the batch's maxTimestamp
                if _in_window(h.max_timestamp, now_ms, rules):
                    return _stored(h, h.max_timestamp)
            else:
                low, high = h.base_timestamp + span[0], h.base_timestamp + span[1]
                # no exemption for -1 here: one record's -1 must not hide another's error
                if now_ms - low <= rules.before_ms and high - now_ms <= rules.after_ms:
                    return _stored(h, high)
        # Something to refuse, or to look at closer: read every field to answer as Kafka.
    if data is whole:
        data = data[start:stop]
    records = _read_records(data, h.record_count, strict=codec == 0)
    errors, timestamp_error, high = _check(records, h, rules, now_ms, partial=codec != 0)
    if errors:
        cls = InvalidTimestamps if timestamp_error else InvalidRecords
        error = (cls("One or more records have been rejected due to invalid timestamp")
                 if timestamp_error else cls(
                     f"One or more records have been rejected due to {len(errors)} record errors in "
                     "total, and only showing the first three errors at most: ["
                     + ", ".join(f"RecordError(batchIndex={i}, message='{m}')" for i, m in errors[:3])
                     + "]"))
        error.record_errors = tuple(errors)
        raise error
    if codec != 0 and any(r[1] != i for i, r in enumerate(records)):
        raise UnknownServerError(
            "Compressed records with offset deltas other than 0..n-1 would be rebuilt, which Kafka "
            "fails to do for a batch it reads without keys and values")
    if rules.log_append_time:
        return h
    return _stored(h, high)


def _stored(h: BatchHeader, max_timestamp: int) -> BatchHeader:
    """The CreateTime header Kafka stores: maxTimestamp from the records, CreateTime type."""
    if h.max_timestamp == max_timestamp and not h.is_log_append_time:
        return h
    return h._replace(max_timestamp=max_timestamp, attributes=h.attributes & ~TIMESTAMP_TYPE_BIT)


def _in_window(ts: int, now_ms: int, rules: Rules) -> bool:
    return ts == NO_TIMESTAMP or (now_ms - ts <= rules.before_ms and ts - now_ms <= rules.after_ms)


def _java_long(value: int) -> int:
    """`value` wrapped to 64 bits as Java's long arithmetic leaves it."""
    return (value + (1 << 63)) % _INT64 - (1 << 63)


def _check(records: list[tuple[int, int, int, int]], h: BatchHeader, rules: Rules, now_ms: int,
           *, partial: bool) -> tuple[list[tuple[int, str]], bool, int]:
    """Kafka's validateRecord for each record: (record errors, whether one is a timestamp
    error, the largest timestamp)."""
    errors: list[tuple[int, str]] = []
    timestamp_error = False
    high = NO_TIMESTAMP
    batch_lat = h.is_log_append_time
    before, after = rules.before_ms, rules.after_ms
    window = (f"[{_java_long(now_ms - rules.before_ms)}, {_java_long(now_ms + rules.after_ms)}]")
    for index, (ts_delta, offset_delta, key_size, value_size) in enumerate(records):
        ts = h.max_timestamp if batch_lat else h.base_timestamp + ts_delta
        if ts > high:
            high = ts
        if rules.compact and key_size < 0:
            errors.append((index, "Compacted topic cannot accept message without key in topic "
                                  f"partition {rules.topic_partition}"))
        elif not rules.log_append_time and ts != NO_TIMESTAMP:
            if now_ms - ts > before or ts - now_ms > after:
                timestamp_error = True
                errors.append((index, f"Timestamp {ts} of message with offset "
                                      f"{h.base_offset + offset_delta} is out of range. The "
                                      f"timestamp should be within {window}"))
        elif batch_lat:
            timestamp_error = True
            offset = h.base_offset + offset_delta
            shown = (f"PartialDefaultRecord(offset={offset}, timestamp={ts}, key={key_size} bytes, "
                     f"value={value_size} bytes)" if partial else
                     f"DefaultRecord(offset={offset}, timestamp={ts}, key={max(key_size, 0)} "
                     f"bytes, value={max(value_size, 0)} bytes)")
            errors.append((index, f"Invalid timestamp type in message {shown}. Producer should not "
                                  "set timestamp type to LogAppendTime."))
    return errors, timestamp_error, high


# -- reading records ------------------------------------------------------------------------


def _decompress(codec: int, body: memoryview) -> bytes:
    if codec == 3:
        _check_lz4_frame(body)
    try:
        return decompress(codec, bytes(body))
    except (CorruptMessage, UnsupportedCompressionType) as e:
        raise UnknownServerError(str(e)) from None


def _check_lz4_frame(body: memoryview) -> None:
    """The frame descriptor checks of Kafka's KafkaLZ4BlockInputStream (the codec library
    checks the header checksum)."""
    if len(body) < 6:
        raise UnknownServerError("Stream ended prematurely")
    if bytes(body[:4]) != _LZ4_MAGIC:
        raise UnknownServerError("Stream unsupported (invalid magic bytes)")
    flg, bd = body[4], body[5]
    if flg & 0x03:
        raise UnknownServerError("Reserved bits must be 0")
    if not flg & 0x20:
        raise UnknownServerError("Dependent block stream is unsupported")
    if flg >> 6 != 1:
        raise UnknownServerError(f"Version {flg >> 6} is unsupported")
    if bd & 0x0F:
        raise UnknownServerError("Reserved2 field must be 0")
    if not 4 <= (bd >> 4) & 0x07 <= 7:
        raise UnknownServerError("Block size value must be between 4 and 7")
    if bd & 0x80:
        raise UnknownServerError("Reserved3 field must be 0")


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """A zigzag varint (at most 10 bytes) at `pos`: (value, position after it)."""
    value = shift = 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7
        if shift > 63:
            raise InvalidRecord("Found invalid record structure")


def _scan(data: bytes, start: int, stop: int, count: int, compact: bool) -> tuple[int, int] | None:
    """The fast path: (smallest, largest) timestamp delta of `count` records filling
    data[start:stop] when every record is one Kafka accepts without a closer look, else None.

    Accepted: each record's fields (attributes, timestamp delta, offset delta, key, value,
    headers) end exactly where its length prefix says, so that reading the
    fields in sequence (Kafka's way for compressed batches) and within the prefixes (its
    way for uncompressed ones) agree; offset deltas 0..n-1; a key on compacted topics.
    Anything else (a negative length or header count, a record past the end) is left to
    `_read_records`.
    One- and two-byte varints are decoded inline, longer ones by `_varint`."""
    if not count:
        return None
    pos = start
    lo, hi = _INT64, -_INT64
    last = -1  # the last zigzag timestamp delta seen: most records repeat it
    try:
        for expected in range(0, count << 1, 2):  # zigzag offset deltas: 2i
            b = data[pos]
            if b < 0x80:
                length, pos = b, pos + 1
            else:
                length, pos = (b & 0x7F) | data[pos + 1] << 7, pos + 2
                if length >= 0x4000:  # three bytes or more
                    length, pos = _varint(data, pos - 2)
                    length = -1 if length < 0 else length << 1
            if length & 1:
                return None  # negative
            end = pos + (length >> 1)
            b = data[pos + 1]  # the timestamp delta, after the attributes
            if b < 0x80:
                pos += 2
            elif data[pos + 2] < 0x80:
                b, pos = (b & 0x7F) | data[pos + 2] << 7, pos + 3
            else:
                b, pos = _varint(data, pos + 1)
                b = b << 1 if b >= 0 else (-b << 1) - 1
            if b != last:
                last = b
                b = (b >> 1) ^ -(b & 1)
                if b > hi:
                    hi = b
                if b < lo:
                    lo = b
            b = data[pos]  # the offset delta
            if b == expected < 0x80:
                pos += 1
            elif expected < 0x4000 and (b & 0x7F) | data[pos + 1] << 7 == expected:
                pos += 2
            else:
                b, pos = _varint(data, pos)
                if b << 1 != expected:
                    return None
            b = data[pos]  # the key size
            if b == 1 and not compact:  # null
                pos += 1
            elif b < 0x80 and not b & 1:
                pos += 1 + (b >> 1)
            else:
                b, pos = _varint(data, pos)
                if b > 0:
                    pos += b
                elif b < 0 and compact:
                    return None
            b = data[pos]  # the value size
            if b < 0x80:
                pos += 1 if b & 1 else 1 + (b >> 1)
            else:
                b = (b & 0x7F) | data[pos + 1] << 7
                if b < 0x4000:
                    pos += 2 if b & 1 else 2 + (b >> 1)
                else:
                    b, pos = _varint(data, pos)
                    if b > 0:
                        pos += b
            if data[pos]:  # headers
                headers, pos = _varint(data, pos)
                if headers < 0:
                    return None
                for _h in range(headers):
                    b, pos = _varint(data, pos)  # the header key size
                    if b < 0:
                        return None
                    b, pos = _varint(data, pos + b)  # the header value size
                    if b > 0:
                        pos += b
                if pos != end:
                    return None
            elif pos + 1 != end:  # where the prefix says
                return None
            pos = end
    except (IndexError, InvalidRecord):
        return None
    if pos != stop:  # (reading past `stop` into what follows ends here too)
        return None
    return lo, hi


def _read_records(data: bytes, count: int, *, strict: bool) -> list[tuple[int, int, int, int]]:
    """(timestamp delta, offset delta, key size, value size) of each record.

    `strict` reads as Kafka reads an uncompressed batch (each record within its length
    prefix, which its fields must fill exactly); otherwise as it streams a decompressed
    one (the fields in sequence, the prefix read and ignored).  One-byte varints, the
    common case, are decoded inline (this loop is the cost of validating)."""
    out = []
    append = out.append
    size = len(data)
    pos = 0
    try:
        for _ in range(count):
            b = data[pos]
            if b < 0x80:
                length, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif data[pos + 1] < 0x80:
                v = (b & 0x7F) | data[pos + 1] << 7
                length, pos = (v >> 1) ^ -(v & 1), pos + 2
            else:
                length, pos = _varint(data, pos)
            start = pos
            if strict and (length < 0 or pos + length > size):
                raise InvalidRecord(
                    f"Invalid record size: expected {length} bytes in record payload, but instead "
                    f"the buffer has only {size - pos} remaining bytes.")
            b = data[pos + 1]  # after the attributes
            if b < 0x80:
                ts_delta, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                ts_delta, pos = _varint(data, pos + 1)
            b = data[pos]
            if b < 0x80:
                offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif data[pos + 1] < 0x80:
                v = (b & 0x7F) | data[pos + 1] << 7
                offset_delta, pos = (v >> 1) ^ -(v & 1), pos + 2
            else:
                offset_delta, pos = _varint(data, pos)
            b = data[pos]
            if b < 0x80:
                key_size, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                key_size, pos = _varint(data, pos)
            if key_size > 0:
                pos += key_size
            b = data[pos]
            if b < 0x80:
                value_size, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif data[pos + 1] < 0x80:
                v = (b & 0x7F) | data[pos + 1] << 7
                value_size, pos = (v >> 1) ^ -(v & 1), pos + 2
            else:
                value_size, pos = _varint(data, pos)
            if value_size > 0:
                pos += value_size
            headers = data[pos]
            if headers == 0:
                pos += 1
            else:
                headers, pos = _varint(data, pos)
                if headers < 0:
                    raise InvalidRecord(f"Found invalid number of record headers {headers}")
                for _h in range(headers):
                    key_length, pos = _varint(data, pos)
                    if key_length < 0:
                        raise InvalidRecord(f"Invalid negative header key size {key_length}")
                    value_length, pos = _varint(data, pos + key_length)
                    pos += max(value_length, 0)
            if pos > size:
                raise IndexError
            if strict and pos - start != length:
                raise InvalidRecord(
                    f"Invalid record size: expected to read {length} bytes in record payload, but "
                    f"instead read {pos - start}")
            append((ts_delta, offset_delta, key_size, value_size))
    except IndexError:
        raise InvalidRecord(_EOF) from None
    if pos != size:
        raise InvalidRecord(_REMAINING)
    return out
