"""The validator's fast path (`_scan`) accepts only what the field-by-field reading accepts.

tests/test_produce_validation.py compares whole answers with Kafka on hand-made cases;
here random records (keys, values and headers of every varint width) and random
damage to them check the fast path against `_read_records`, the reading that
answers as Kafka: whenever `_scan` accepts a records section, both of Kafka's
readings (compressed: fields in sequence; uncompressed: within each length
prefix) accept it too, with offset deltas 0..n-1, the same timestamp range, and a
key in every record when it checked for keys.
"""

from __future__ import annotations

import io
import random

import pytest
from kio.serial.writers import write_signed_varint, write_signed_varlong

from akfak.errors import InvalidRecord
from akfak.log.validator import _read_records, _scan

SIZES = (0, 1, 63, 64, 100, 8191, 8192, 20000)


def record(rng: random.Random, offset_delta: int, *, keyed: bool) -> bytes:
    body = io.BytesIO()
    body.write(bytes([rng.randrange(256)]))  # attributes: read and ignored
    write_signed_varlong(body, rng.choice((0, 1, -1, 63, 64, -65, 9000, 1 << 40)))
    write_signed_varint(body, offset_delta)
    for present in (keyed or rng.random() < 0.5, True):
        if present:
            data = bytes(rng.choice(SIZES[:5]) if rng.random() < 0.9 else rng.choice(SIZES))
            write_signed_varint(body, len(data))
            body.write(data)
        else:
            write_signed_varint(body, -1)
    headers = rng.choice((0, 0, 0, 1, 2))
    write_signed_varint(body, headers)
    for _ in range(headers):
        write_signed_varint(body, 3)
        body.write(b"key")
        size = rng.choice((-1, 0, 5))
        write_signed_varint(body, size)
        body.write(b"x" * max(size, 0))
    out = io.BytesIO()
    write_signed_varint(out, body.tell())
    out.write(body.getvalue())
    return out.getvalue()


def damaged(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0 and buf:
        buf[rng.randrange(len(buf))] = rng.randrange(256)
    elif kind == 1 and buf:
        del buf[rng.randrange(len(buf)):]
    elif kind == 2:
        buf.insert(rng.randrange(len(buf) + 1), rng.randrange(256))
    elif buf:  # a small byte (a length, a count, a size) made another
        i = rng.randrange(len(buf))
        buf[i] = (buf[i] + rng.choice((-2, -1, 1, 2))) % 256
    return bytes(buf)


def readings(data: bytes, count: int) -> list[list[tuple[int, int, int, int]] | None]:
    out: list[list[tuple[int, int, int, int]] | None] = []
    for strict in (False, True):
        try:
            out.append(_read_records(data, count, strict=strict))
        except InvalidRecord:
            out.append(None)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_fast_path_accepts_only_what_the_full_reading_accepts(seed: int) -> None:
    rng = random.Random(seed)
    accepted = refused = 0
    for _ in range(1500):
        count = rng.choice((1, 2, 5, 70))
        compact = rng.random() < 0.3
        data = b"".join(record(rng, i, keyed=compact and rng.random() < 0.9) for i in range(count))
        if rng.random() < 0.7:
            data = damaged(rng, data)
        claimed = count + rng.choice((0, 0, 0, 1, -1))
        span = _scan(data, 0, len(data), claimed, compact)
        # where a batch is scanned in place, what follows it changes nothing
        assert _scan(b"\x00\x02\x04" + data + data, 3, 3 + len(data), claimed, compact) == span
        if span is None:
            refused += 1
            continue
        accepted += 1
        for records in readings(data, claimed):
            assert records is not None, data.hex()
            assert [r[1] for r in records] == list(range(claimed))
            assert (min(r[0] for r in records), max(r[0] for r in records)) == span
            if compact:
                assert all(r[2] >= 0 for r in records)
    assert accepted > 300 and refused > 300  # both sides are exercised


def test_fast_path_takes_the_common_batches() -> None:
    """What clients send (any varint width, headers, keys) does not need the slow path."""
    rng = random.Random(7)
    for count in (1, 64, 8193):
        for compact in (False, True):
            data = b"".join(record(rng, i, keyed=compact) for i in range(count))
            assert _scan(data, 0, len(data), count, compact) is not None
            # in place, with other bytes around it (a batch within a request)
            assert _scan(b"\x02" + data + b"\x00\x02", 1, len(data) + 1, count, compact) is not None
