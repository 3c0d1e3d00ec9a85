"""Kafka's `.txnindex`: the aborted transactions whose ABORT marker is in a segment.

Each entry is 34 bytes: version int16 (0), producer id int64, first offset int64
(the transaction's first batch), last offset int64 (its ABORT marker) and last
stable offset int64 (the partition's LSO once the abort completed).  A
read_committed Fetch lists the aborted transactions overlapping the range it
returns, so the client can drop their records.

Like Kafka, the file is created only when a segment gets its first entry.  The
entries are also kept in memory: an index only ever holds the aborts of one
segment, and a fetch asks for those overlapping its range.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from akfak.log.index import CorruptIndex, IndexFile

ENTRY = struct.Struct(">hqqqq")
VERSION = 0


class AbortedTxn(NamedTuple):
    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int

    def encode(self) -> bytes:
        return ENTRY.pack(VERSION, *self)


class TransactionIndex:
    """The aborted transactions of one segment (see the module doc)."""

    def __init__(self, base_offset: int, path: Path | None = None) -> None:
        self.base_offset = base_offset
        self.entries: list[AbortedTxn] = []
        self.file = IndexFile(path)

    @classmethod
    def load(cls, base_offset: int, path: Path) -> TransactionIndex:
        """Read a `.txnindex` (a missing file is an empty index); CorruptIndex for a file
        that is not whole entries of version 0 in offset order."""
        index = cls(base_offset, path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return index
        if len(data) % ENTRY.size:
            raise CorruptIndex(f"{path}: size {len(data)} is not a multiple of {ENTRY.size}")
        for pos in range(0, len(data), ENTRY.size):
            version, *fields = ENTRY.unpack_from(data, pos)
            entry = AbortedTxn(*fields)
            if version != VERSION or entry.first_offset > entry.last_offset:
                raise CorruptIndex(f"{path}: entry {pos // ENTRY.size} is not a valid abort")
            if index.entries and entry.last_offset < index.entries[-1].last_offset:
                raise CorruptIndex(f"{path}: entry {pos // ENTRY.size} is out of order")
            index.entries.append(entry)
        return index

    def append(self, entry: AbortedTxn) -> None:
        if self.entries and entry.last_offset < self.entries[-1].last_offset:
            raise ValueError(f"{entry} is older than the last abort of the index")
        self.entries.append(entry)
        self.file.write(entry.encode())

    def collect(self, fetch_offset: int, upper_bound: int) -> tuple[list[AbortedTxn], bool]:
        """The aborts overlapping [fetch_offset, upper_bound), and whether the search may
        stop here (Kafka's TxnIndexSearchResult.isComplete: an abort that completed at or
        past the upper bound means no later segment holds an earlier-starting one)."""
        found = []
        for entry in self.entries:
            if entry.last_offset >= fetch_offset and entry.first_offset < upper_bound:
                found.append(entry)
            if entry.last_stable_offset >= upper_bound:
                return found, True
        return found, False

    def truncate_to(self, offset: int) -> None:
        """Drop the aborts whose marker is at or after `offset`."""
        keep = [e for e in self.entries if e.last_offset < offset]
        if len(keep) != len(self.entries):
            self.rebuild(keep)

    def rebuild(self, entries: Iterable[AbortedTxn]) -> None:
        self.entries = list(entries)
        if self.entries or (self.file.path is not None and self.file.path.exists()):
            self.file.rewrite(b"".join(e.encode() for e in self.entries))

    def reset(self) -> None:
        self.rebuild([])
