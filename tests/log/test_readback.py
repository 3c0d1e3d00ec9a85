"""The postgres provider's read-back LRU (akfak.log.pg_tail.ReadBack), on its own: runs found
by partition and offset, the most recently used first, evicted least recently used first
across partitions within the byte budget, dropped per partition."""

from __future__ import annotations

import uuid

from akfak.log.pg_tail import ReadBack, Run


def run(start: int, count: int, size: int = 100) -> Run:
    """`count` rows of one offset and `size` bytes each from `start`, complete to their end."""
    rows = [(o, o, bytes(size)) for o in range(start, start + count)]
    return Run.of(rows, start, start + count, 1 << 30)


def test_runs_by_partition_most_recent_first_and_evicted_across_partitions() -> None:
    a, b = (uuid.uuid4(), 0), (uuid.uuid4(), 1)
    lru = ReadBack(budget=1000)
    lru.put(a, run(0, 4))    # 400 bytes
    lru.put(b, run(10, 4))   # 400
    assert lru.find(a, 12) is None and lru.find(b, 3) is None
    found = lru.find(b, 12)
    assert found is not None and found[0].start == 10 and found[1] == 2
    assert lru.find(a, 0) is not None  # a's run is now the most recently used
    lru.put(a, run(2, 3))    # 300 more: b's run, the least recently used, goes
    assert lru.find(b, 12) is None and lru.size == 700
    found = lru.find(a, 3)   # both of a's runs hold offset 3: the newer one answers
    assert found is not None and found[0].start == 2 and found[1] == 1
    lru.put(b, run(20, 2))   # 200
    lru.drop(a)
    assert lru.find(a, 0) is None and lru.find(a, 3) is None and lru.size == 200
    assert lru.find(b, 21) is not None
    # a run larger than the budget stays alone (the read it was made for needs it)
    lru.put(a, run(0, 20))
    assert lru.find(a, 19) is not None and lru.find(b, 21) is None and lru.size == 2000
    assert lru.queries == 5 and lru.bytes_read == 400 + 400 + 300 + 200 + 2000
