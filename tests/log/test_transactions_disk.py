"""Transactions on disk: `.txnindex` files in Kafka's format, and what a restart or a
crash leaves (open transactions stay open, aborts are listed again by recovery)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest_twisted
from twisted.internet.task import Clock

from akfak.log.txn_index import AbortedTxn
from tests.log.test_producer_state import append, batch
from tests.log.test_producer_state_disk import open_disk, topic_log
from tests.log.test_transactions_log import marker

TXN_ENTRY = struct.Struct(">hqqqq")


def txn_indexes(data: Path) -> dict[int, list[tuple[int, ...]]]:
    """Every .txnindex of t-0, decoded independently of akfak's codec."""
    found = {}
    for path in sorted((data / "t-0").glob("*.txnindex")):
        raw = path.read_bytes()
        assert len(raw) % TXN_ENTRY.size == 0
        found[int(path.name[:20])] = [TXN_ENTRY.unpack_from(raw, i)
                                      for i in range(0, len(raw), TXN_ENTRY.size)]
    return found


def fill(log: object) -> None:
    """Two aborted and one committed transaction over several segments, one left open."""
    for i in range(12):
        pid = 100 + i % 3
        append(log, batch(pid, 0, (i // 3) * 4, 4, transactional=True))  # type: ignore[arg-type]
        if i % 3 == 2:
            for p in (100, 101, 102):
                marker(log, p, 0, commit=p == 101)  # type: ignore[arg-type]
    append(log, batch(200, 0, 0, 2, transactional=True))  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_aborts_are_written_to_txnindex_files_in_kafkas_format(tmp_path: Path,
                                                                     clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage)
    fill(log)
    expected = [a for s in log.segments for a in s.txn_index.entries]
    assert len(expected) == 8 and all(a.producer_id in (100, 102) for a in expected)
    on_disk = [e for entries in txn_indexes(data).values() for e in entries]
    assert on_disk == [(0, *a) for a in expected]
    # Each file holds the aborts whose markers are in its segment (and only those have one).
    for base, entries in txn_indexes(data).items():
        segment = next(s for s in log.segments if s.base_offset == base)
        assert all(base <= e[3] < segment.next_offset for e in entries)
    open_lso = log.last_stable_offset
    assert open_lso == log.log_end_offset - 2  # producer 200's transaction is open
    await storage.close()

    storage = open_disk(data, clock)
    log = topic_log(storage)
    assert [a for s in log.segments for a in s.txn_index.entries] == expected
    assert log.last_stable_offset == open_lso  # still open after a clean restart
    marker(log, 200, 0, commit=False)
    assert log.collect_aborted(open_lso, log.log_end_offset)[-1] == AbortedTxn(
        200, open_lso, log.log_end_offset - 1, log.log_end_offset)
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_a_crash_relists_the_aborts_of_recovered_segments(tmp_path: Path,
                                                                clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage)
    fill(log)
    expected = [a for s in log.segments for a in s.txn_index.entries]
    open_lso, end = log.last_stable_offset, log.log_end_offset
    storage.abandon()
    # A crash that lost the index files' tails (they are written after the log).
    for path in (data / "t-0").glob("*.txnindex"):
        path.write_bytes(b"")
    storage = open_disk(data, clock)
    log = topic_log(storage)
    assert log.log_end_offset == end
    assert [a for s in log.segments for a in s.txn_index.entries] == expected
    assert [e for entries in txn_indexes(data).values() for e in entries] == [
        (0, *a) for a in expected]
    assert log.last_stable_offset == open_lso
    await storage.close()
