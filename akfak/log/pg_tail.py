"""The postgres provider's bounded cache: what a partition loads, and old batches read back.

A partition log on PostgreSQL keeps in memory segments only its tail: the newest batches up
to `akfak.postgres.cache.bytes.per.partition` (plus whatever is not committed yet).  Older
segments are *hollow*: their metadata stays (offsets, size, timestamps, the aborted
transactions of their `.txnindex`), so retention, log start, OffsetForLeaderEpoch and
read_committed's aborted list work as before, but their bytes are only in `akfak_batch`.

Opening a partition (at start, or when a broker becomes its leader) reads:
- the tail's rows (`tail_start`: pages of row sizes from the end, newest first);
- one row per hollow segment, aggregated by the server (`hollow_segments`);
- the rows that rebuild the producer state of the old part (`producer_rows`): per producer
  id its last data batches, every transaction marker, and the first batch of each
  transaction, the data ones as their 61-byte header only.  The `attributes` column
  (generated from the stored header) lets the server pick them.

A read below the tail (`rows_from`) fetches up to max_bytes of consecutive rows by
`base_offset` in one query, into the `ReadBack` LRU shared by every partition (its byte
budget: `akfak.postgres.readback.bytes`), from which `read()` then serves.
"""

from __future__ import annotations

import threading
import uuid
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from akfak.log.batch import HEADER_SIZE
from akfak.log.handles import Syncable

#: The schema this module needs, over pg_writer.SCHEMA.  `attributes` is the batch header's
#: attributes (bit 4: transactional, bit 5: control), computed from `data` by the server, so
#: the writer's INSERT is unchanged and an existing table gets it on upgrade.  The partial
#: index finds the transaction markers without reading the data rows.
TAIL_SCHEMA = """
ALTER TABLE akfak_batch ADD COLUMN IF NOT EXISTS attributes integer
    GENERATED ALWAYS AS ((get_byte(data, 21) << 8) | get_byte(data, 22)) STORED;
CREATE INDEX IF NOT EXISTS akfak_batch_markers ON akfak_batch (topic_id, partition, base_offset)
    WHERE (attributes & 32) <> 0;
"""

TRANSACTIONAL = 16
CONTROL = 32
#: Producer batches remembered per producer id (Kafka's NUM_BATCHES_TO_RETAIN).
PRODUCER_BATCHES = 5
#: The most rows one read-back query returns (max_bytes stops it first for real batches).
MAX_ROWS = 10_000
#: The smallest in-memory segment of a cached partition (see cache_chunk).
MIN_CHUNK = 64 * 1024

Key = tuple[uuid.UUID, int]


def cache_chunk(budget: int) -> int:
    """The size at which a cached partition rolls its in-memory segments: a quarter of the
    budget, so that the oldest ones can leave the cache while the tail stays near it."""
    return max(budget // 4, MIN_CHUNK)


@dataclass(frozen=True)
class HollowSegment:
    """An old segment as the server aggregated it: its rows' offsets, bytes, timestamps."""

    base_offset: int
    last_offset: int
    size: int
    max_timestamp: int


@dataclass
class Loaded:
    """What opening a partition read (see the module doc)."""

    tail: list[tuple[int, bytes]]
    hollow: list[HollowSegment] = field(default_factory=list)
    producers: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def bytes_loaded(self) -> int:
        return sum(len(d) for _, d in self.tail) + sum(len(d) for _, d in self.producers)


_ROW = "topic_id = %s AND partition = %s"


def tail_start(conn: Any, key: Key, end: int, budget: int) -> int:
    """The base offset of the oldest row of the newest `budget` bytes (`end` if none fits)."""
    start, total, below = end, 0, end
    while True:
        page = conn.execute(
            f"SELECT base_offset, octet_length(data) FROM akfak_batch WHERE {_ROW} "
            "AND base_offset < %s ORDER BY base_offset DESC LIMIT 512", (*key, below)).fetchall()
        for base, size in page:
            if total + size > budget:
                return start
            total += size
            start = base
        if len(page) < 512:
            return start
        below = page[-1][0]


def load(conn: Any, key: Key, end: int, budget: int | None, chunk: int) -> Loaded:
    """The rows a partition log is built from (budget None: every row, all cached)."""
    start = tail_start(conn, key, end, budget) if budget is not None else -1
    # Batches come as binary results (as every query here that reads them): a bytea in
    # text is hex, twice its size, and unescaping it cost more than the rest of a read.
    tail = conn.execute(f"SELECT base_offset, data FROM akfak_batch WHERE {_ROW} AND "
                        "base_offset >= %s ORDER BY base_offset", (*key, start),
                        binary=True).fetchall()
    loaded = Loaded([(b, bytes(d)) for b, d in tail])
    if budget is None:
        return loaded
    loaded.hollow = [HollowSegment(*r) for r in conn.execute(
        "SELECT min(base_offset), max(last_offset), sum(size), max(max_timestamp) FROM ("
        "  SELECT base_offset, last_offset, max_timestamp, octet_length(data) AS size,"
        "    sum(octet_length(data)) OVER (ORDER BY base_offset) - octet_length(data) AS before"
        f"  FROM akfak_batch WHERE {_ROW} AND base_offset < %s) s "
        "GROUP BY before / %s ORDER BY 1", (*key, start, chunk)).fetchall()]
    loaded.producers = [(b, bytes(d)) for b, d in conn.execute(
        "SELECT b.base_offset, CASE WHEN (b.attributes & 32) <> 0 THEN b.data "
        "  ELSE substring(b.data from 1 for %s) END FROM ("
        "  SELECT base_offset, attributes,"
        "    row_number() OVER (PARTITION BY producer_id, attributes & 32"
        "      ORDER BY base_offset DESC) AS rn,"
        "    lag(attributes) OVER (PARTITION BY producer_id ORDER BY base_offset) AS prev"
        f"  FROM akfak_batch WHERE {_ROW} AND producer_id >= 0 AND base_offset < %s) t "
        f"JOIN akfak_batch b ON b.{_ROW.replace(' AND ', ' AND b.')} "
        "  AND b.base_offset = t.base_offset "
        "WHERE (t.attributes & 32) <> 0 OR t.rn <= %s OR ((t.attributes & 16) <> 0 AND "
        "  (t.prev IS NULL OR (t.prev & 32) <> 0 OR (t.prev & 16) = 0)) "
        "ORDER BY b.base_offset",
        (HEADER_SIZE, *key, start, *key, PRODUCER_BATCHES), binary=True).fetchall()]
    return loaded


def rows_from(conn: Any, key: Key, offset: int, stop: int, max_bytes: int,
              limit: int = MAX_ROWS) -> list[tuple[int, int, bytes]]:
    """(base, last, data) of the rows from the one holding `offset`, below `stop`, up to
    `max_bytes` (the first whatever its size): one query."""
    return [(b, last, bytes(d)) for b, last, d in conn.execute(
        "SELECT base_offset, last_offset, data FROM ("
        "  SELECT base_offset, last_offset, data,"
        "    sum(octet_length(data)) OVER (ORDER BY base_offset) - octet_length(data) AS before"
        "  FROM (SELECT base_offset, last_offset, data FROM akfak_batch"
        f"    WHERE {_ROW} AND base_offset < %s AND base_offset >= COALESCE("
        f"      (SELECT max(base_offset) FROM akfak_batch WHERE {_ROW} AND base_offset <= %s), %s)"
        "    ORDER BY base_offset LIMIT %s) r) w "
        "WHERE before = 0 OR before < %s ORDER BY base_offset",
        (*key, stop, *key, offset, offset, limit, max_bytes), binary=True).fetchall()]


def first_at_time(conn: Any, key: Key, low: int, stop: int, timestamp: int
                  ) -> tuple[int, bytes] | None:
    """The first row in [low, stop) whose max timestamp is >= `timestamp` (ListOffsets)."""
    row = conn.execute(
        f"SELECT base_offset, data FROM akfak_batch WHERE {_ROW} AND last_offset >= %s AND "
        "base_offset < %s AND max_timestamp >= %s ORDER BY base_offset LIMIT 1",
        (*key, low, stop, timestamp), binary=True).fetchone()
    return None if row is None else (row[0], bytes(row[1]))


def max_time_row(conn: Any, key: Key, low: int, stop: int) -> tuple[int, bytes] | None:
    """The first row in [low, stop) with the largest max timestamp (ListOffsets -3)."""
    row = conn.execute(
        f"SELECT base_offset, data FROM akfak_batch WHERE {_ROW} AND last_offset >= %s AND "
        "base_offset < %s ORDER BY max_timestamp DESC, base_offset LIMIT 1",
        (*key, low, stop), binary=True).fetchone()
    return None if row is None else (row[0], bytes(row[1]))


# -- the read-back LRU ---------------------------------------------------------------------


@dataclass
class Run:
    """Consecutive rows of one partition read back together: every row holding offsets in
    [start, until) (a range query's answer; `until` is where it stopped)."""

    start: int
    until: int
    bases: list[int]
    lasts: list[int]
    data: list[bytes]
    size: int
    #: The bytes of the rows before each row (a read ahead holds thousands of rows).
    before: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, rows: Sequence[tuple[int, int, bytes]], start: int, stop: int,
           max_bytes: int) -> Run:
        """The rows of `rows_from(start, stop, max_bytes)`: up to `stop` unless max_bytes
        (or the row limit) ended them sooner."""
        before = list(accumulate((len(r[2]) for r in rows), initial=0))
        size = before.pop()
        complete = size < max_bytes and len(rows) < MAX_ROWS
        until = stop if complete or not rows else rows[-1][1] + 1
        return cls(start, until, [r[0] for r in rows], [r[1] for r in rows],
                   [r[2] for r in rows], size, before)

    def index(self, offset: int) -> int | None:
        """The index of the first row holding `offset` or after it (len(bases): none up to
        `until`), None when the run does not cover `offset`."""
        if not self.start <= offset < self.until:
            return None
        return bisect_left(self.lasts, offset)

    def bytes_from(self, i: int) -> int:
        """The bytes of the rows from index `i` on."""
        return self.size - self.before[i] if i < len(self.before) else 0


class ReadBack:
    """Runs of old rows, least recently used first out, within a byte budget for all
    partitions; on the reactor only."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._runs: OrderedDict[tuple[Key, int], Run] = OrderedDict()
        #: The same runs by partition, each partition's most recently used last: a look-up
        #: reads only its partition's (a fetch of many partitions looks up each).
        self._by_key: dict[Key, dict[int, Run]] = {}
        #: Rows read back since the start (queries and bytes), for the metrics and tests;
        #: `unprepared`: the queries of those that ran on the reactor, for a read that was
        #: not prepared.
        self.queries = 0
        self.bytes_read = 0
        self.unprepared = 0

    def find(self, key: Key, offset: int) -> tuple[Run, int] | None:
        """The most recently read run covering `offset` (and the index of its row)."""
        runs = self._by_key.get(key)
        if not runs:
            return None
        for first, run in reversed(runs.items()):
            if (i := run.index(offset)) is not None:
                self._runs.move_to_end((key, first))
                runs[first] = runs.pop(first)
                return run, i
        return None

    def put(self, key: Key, run: Run) -> None:
        self.queries += 1
        self.bytes_read += run.size
        self._remove(key, run.start)
        self._runs[(key, run.start)] = run
        self._by_key.setdefault(key, {})[run.start] = run
        self.size += run.size
        while self.size > self.budget and len(self._runs) > 1:
            self._remove(*next(iter(self._runs)))

    def drop(self, key: Key) -> None:
        for first in list(self._by_key.get(key, ())):
            self._remove(key, first)

    def _remove(self, key: Key, first: int) -> None:
        run = self._runs.pop((key, first), None)
        if run is None:
            return
        self.size -= run.size
        runs = self._by_key[key]
        del runs[first]
        if not runs:
            del self._by_key[key]


class ReadConnection:
    """One connection for the reads of old rows, shared by threads (psycopg serialises
    its use), made again after a failure."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._conn: Any = None
        self._lock = threading.Lock()

    def run(self, query: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            try:
                return query(self._conn, *args)
            except Exception:
                self._conn.close()
                self._conn = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


# -- hollow segments -------------------------------------------------------------------------


class HollowStore:
    """The store of a segment whose bytes left the cache: its size, no bytes.  The log
    reads such segments from PostgreSQL (PostgresPartitionLog); the cleaner, on its
    thread, through `open_reader`."""

    def __init__(self, size: int, reader: Callable[[], Any]) -> None:
        self._size = size
        self._reader = reader

    @property
    def size(self) -> int:
        return self._size

    def append(self, parts: Sequence[Any]) -> None:
        raise RuntimeError("append to a segment that left the cache")

    def read(self, position: int, length: int) -> bytes:
        raise RuntimeError("a segment that left the cache is read from PostgreSQL")

    range = read

    def open_reader(self) -> Any:
        return self._reader()

    def truncate(self, size: int) -> None:
        raise RuntimeError("truncating a segment that left the cache")

    def sync_target(self) -> Syncable | None:
        return None

    def mtime_ms(self) -> int | None:
        return None

    def close(self) -> None:
        pass

    def delete(self) -> None:
        pass  # its rows go with the log's DELETE


class RowsReader:
    """A hollow segment's bytes for the log cleaner's thread: its rows, read at the first
    read (a segment is at most a cache chunk, or a cleaned segment)."""

    def __init__(self, connection: ReadConnection, key: Key, base: int, stop: int,
                 size: int) -> None:
        self._args = (connection, key, base, stop)
        self.size = size
        self._data: bytes | None = None

    def read(self, position: int, length: int) -> bytes:
        if self._data is None:
            connection, key, base, stop = self._args
            rows = connection.run(rows_from, key, base, stop, 1 << 62, 1 << 62)
            self._data = b"".join(d for _, _, d in rows)
        return self._data[position : position + length]

    def close(self) -> None:
        self._data = None
