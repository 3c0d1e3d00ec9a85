"""The batch-header view: validation with Kafka's error codes, offset patching, and the test helper."""

from __future__ import annotations

import struct

import crc32c
import pytest

from akfak.errors import (
    CorruptMessage,
    InvalidRecord,
    MessageTooLarge,
    UnsupportedForMessageFormat,
)
from akfak.log import batch
from akfak.log.records import encode_batch, iter_records, iter_timestamps
from tests.log.conftest import T0
from tests.recordbatch import make_batch, parse_batch_list, parse_batches

BIG = 10**9


def test_helper_round_trip() -> None:
    data = make_batch([(b"k", b"v", [("h", b"x")], T0), (None, b"w", None, T0 + 5)],
                      producer_id=7, producer_epoch=1, base_sequence=3)
    (parsed,) = parse_batch_list(data)
    assert parsed.crc_ok and parsed.record_count == 2 and parsed.last_offset_delta == 1
    assert (parsed.base_timestamp, parsed.max_timestamp) == (T0, T0 + 5)
    records = parse_batches(data)
    assert [(r.offset, r.key, r.value, r.timestamp) for r in records] == [
        (0, b"k", b"v", T0), (1, None, b"w", T0 + 5)]
    assert records[0].headers == (("h", b"x"),)
    assert records[1].producer_id == 7 and records[1].base_sequence == 3


def test_header_fields() -> None:
    data = make_batch([(None, b"a"), (None, b"b"), (None, b"c")], timestamp=T0, producer_id=9,
                      producer_epoch=2, base_sequence=2**31 - 2, transactional=True)
    header = batch.parse_header(data)
    assert header.size == len(data)
    assert header.last_offset == 2 and header.record_count == 3
    assert header.is_transactional and not header.is_control and not header.is_log_append_time
    assert (header.producer_id, header.producer_epoch) == (9, 2)
    assert header.last_sequence == 0  # sequences wrap at 2**31 as Kafka's do


def test_validate_accepts_several_batches() -> None:
    data = make_batch([(None, b"a")]) + make_batch([(None, b"b"), (None, b"c")])
    found = batch.validate(data, max_message_bytes=BIG)
    assert [h.record_count for _, h in found] == [1, 2]
    assert found[1][0] == len(make_batch([(None, b"a")]))


@pytest.mark.parametrize(("data", "error", "code"), [
    (b"", InvalidRecord, 87),
    (make_batch()[:40], CorruptMessage, 2),
    (make_batch(magic=1), UnsupportedForMessageFormat, 43),
    (make_batch(magic=3), CorruptMessage, 2),
    (make_batch(crc=12345), CorruptMessage, 2),
    (make_batch([(None, b"a"), (None, b"b")], last_offset_delta=5), InvalidRecord, 87),
    (make_batch([(None, b"a"), (None, b"b")], record_count=3), InvalidRecord, 87),
    (make_batch(record_count=0, last_offset_delta=-1), InvalidRecord, 87),
    (make_batch(base_offset=5), InvalidRecord, 87),
    (make_batch(control=True, transactional=True, producer_id=1, producer_epoch=0,
                base_sequence=-1), InvalidRecord, 87),
    (make_batch(producer_id=1, producer_epoch=0, base_sequence=-1), InvalidRecord, 87),
], ids=["empty", "truncated", "magic-1", "magic-3", "bad-crc", "last-offset-delta", "record-count",
        "no-records", "base-offset", "control", "producer-without-sequence"])
def test_validate_rejects(data: bytes, error: type[Exception], code: int) -> None:
    with pytest.raises(error) as caught:
        batch.validate(data, max_message_bytes=BIG)
    assert caught.value.error_code == code  # type: ignore[attr-defined]


def test_validate_batch_length_must_fit() -> None:
    data = bytearray(make_batch([(None, b"abc")]))
    struct.pack_into(">i", data, 8, len(data))  # claims 12 bytes more than there are
    with pytest.raises(CorruptMessage):
        batch.validate(bytes(data), max_message_bytes=BIG)
    struct.pack_into(">i", data, 8, 10)  # smaller than a header
    with pytest.raises(CorruptMessage):
        batch.validate(bytes(data), max_message_bytes=BIG)


def test_validate_size_limit_is_per_batch() -> None:
    one = make_batch([(None, b"x" * 100)])
    batch.validate(one + one, max_message_bytes=len(one))
    with pytest.raises(MessageTooLarge) as caught:
        batch.validate(one, max_message_bytes=len(one) - 1)
    assert caught.value.error_code == 10


def test_internal_appends_may_carry_offsets_and_control_batches() -> None:
    data = make_batch(base_offset=42, control=True, transactional=True, producer_id=3,
                      producer_epoch=0)
    assert batch.validate(data, max_message_bytes=BIG, client=False)[0][1].base_offset == 42


def test_patch_touches_only_offset_and_epoch() -> None:
    data = make_batch([(b"k", b"v"), (b"k2", b"v2")], timestamp=T0, producer_id=5,
                      producer_epoch=1, base_sequence=0)
    header = batch.parse_header(data)
    patched = batch.patched_header(memoryview(data), 0, header, base_offset=1234,
                                   leader_epoch=7)
    whole = patched + data[batch.HEADER_SIZE:]
    assert whole[12:] != data[12:] and whole[16:] == data[16:]  # only bytes 0..15 change
    (parsed,) = parse_batch_list(whole)
    assert parsed.crc_ok and parsed.base_offset == 1234 and parsed.partition_leader_epoch == 7
    assert [r.offset for r in parsed.records] == [1234, 1235]


def test_patch_log_append_time_recomputes_crc() -> None:
    data = make_batch([(None, b"a"), (None, b"b")], timestamp=T0)
    header = batch.parse_header(data)
    patched = batch.patched_header(memoryview(data), 0, header, base_offset=10, leader_epoch=0,
                                   log_append_time=T0 + 999)
    whole = patched + data[batch.HEADER_SIZE:]
    (parsed,) = parse_batch_list(whole)
    assert parsed.crc_ok
    assert parsed.attributes & 0x08 and parsed.max_timestamp == T0 + 999
    assert parsed.base_timestamp == T0  # Kafka leaves the base timestamp alone
    assert all(r.timestamp == T0 + 999 and r.log_append_time for r in parsed.records)
    assert crc32c.crc32c(whole[21:]) == parsed.crc


def test_scan_stops_at_torn_or_corrupt_batch() -> None:
    a, b = make_batch([(None, b"a")]), make_batch([(None, b"b")])
    assert [p for p, _ in batch.scan(a + b[:-3])] == [0]
    garbled = bytearray(a + b)
    garbled[-2] ^= 0xFF  # inside the second batch's record
    assert [p for p, _ in batch.scan(bytes(garbled), verify_crc=True)] == [0]
    assert [p for p, _ in batch.scan(bytes(garbled))] == [0, len(a)]


def test_record_codec_matches_the_test_helper() -> None:
    data = encode_batch([(b"k", b"v"), (None, None)], timestamp=T0, leader_epoch=3)
    (parsed,) = parse_batch_list(data)
    assert parsed.crc_ok and parsed.partition_leader_epoch == 3
    assert [(r.key, r.value) for r in parsed.records] == [(b"k", b"v"), (None, None)]
    theirs = make_batch([(b"k", b"v", [("h", b"1")], T0), (None, b"x", None, T0 + 3)],
                        compression="gzip")
    assert [(r.offset, r.key, r.value, r.timestamp, r.headers) for r in iter_records(theirs)] == [
        (0, b"k", b"v", T0, (("h", b"1"),)), (1, None, b"x", T0 + 3, ())]
    assert list(iter_timestamps(theirs)) == [(0, T0), (1, T0 + 3)]


@pytest.mark.parametrize("codec", ["snappy", "lz4", "zstd"])
def test_record_codec_decompresses(codec: str) -> None:
    pytest.importorskip("cramjam")
    theirs = make_batch([(None, b"x" * 50, None, T0), (None, b"y", None, T0 + 1)],
                        compression=codec)
    assert [(r.value, r.timestamp) for r in iter_records(theirs)] == [(b"x" * 50, T0),
                                                                     (b"y", T0 + 1)]
