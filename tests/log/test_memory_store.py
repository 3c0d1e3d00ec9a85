"""The memory segment store (akfak/log/memory.py): bytes kept as appended chunks read,
cut and snapshot as one contiguous buffer would be."""

from __future__ import annotations

import random

from akfak.log.memory import MemoryStore


def test_reads_and_truncation_match_a_contiguous_buffer() -> None:
    rng = random.Random(7)
    store, model = MemoryStore(), bytearray()
    for _ in range(300):
        parts = [rng.randbytes(rng.randrange(0, 40)) for _ in range(rng.randrange(1, 4))]
        if rng.random() < 0.5:
            parts = [memoryview(p) for p in parts]
        store.append(parts)
        for p in parts:
            model += p
        if rng.random() < 0.1:
            cut = rng.randrange(0, len(model) + 1)
            store.truncate(cut)
            del model[cut:]
        assert store.size == len(model)
        for _ in range(5):
            position = rng.randrange(-2, len(model) + 3)
            length = rng.randrange(0, 200)
            expected = bytes(model[position : position + length]) if position >= 0 else b""
            assert store.read(position, length) == expected
            assert b"".join(store.range(position, length)) == expected


def test_a_whole_append_is_read_back_without_a_copy() -> None:
    store = MemoryStore()
    store.append([b"first"])
    batch = b"x" * 100
    store.append([batch])
    assert store.read(5, 100) is batch
    assert store.range(0, 105)[1] is batch  # a Fetch sends it as it is


def test_a_reader_keeps_what_the_segment_had() -> None:
    store = MemoryStore()
    store.append([b"abc", b"def"])
    store.append([b"ghi"])
    reader = store.open_reader()
    store.truncate(2)
    store.append([b"zz"])
    assert reader.size == 9 and reader.read(0, 100) == b"abcdefghi"
    assert store.read(0, 100) == b"abzz"
    store.delete()
    assert store.size == 0 and store.read(0, 10) == b"" and reader.read(3, 3) == b"def"
