"""A partition log whose memory segments cache only its tail (the postgres provider).

See pg_tail.py for what is loaded and read back.  Segments older than the cached tail are
hollow (HollowStore): every read of them goes to PostgreSQL, through `prepare_read` /
`prepare_timestamp` (a query on a thread; the caller waits on the Deferred, then reads on
the reactor what it prepared) or, for a caller that did not prepare, a query on the spot.
A prepared run is held by its log until its read takes it (HOLD_SECONDS at most), so that
other partitions' read-backs meanwhile cannot push it out of the LRU and turn that read
into a query on the reactor.  A Fetch prepares at most its max_bytes (`read_back_bytes`).

A segment leaves the cache, oldest first, once it is committed and the cached segments are
over the budget; the active segment always stays.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from akfak.errors import KafkaStorageError
from akfak.log import pg_tail
from akfak.log.batch import parse_header
from akfak.log.handles import FileRange
from akfak.log.index import OffsetIndex, TimeIndex
from akfak.log.memory import MemoryPartitionLog
from akfak.log.partition import ReadResult, TimestampAndOffset
from akfak.log.pg_tail import HollowStore, Key, ReadBack, ReadConnection, Run
from akfak.log.segment import LogSegment
from akfak.log.threads import defer_to_thread

#: See TailCache.read_ahead.
READ_AHEAD = 4 << 20
#: How long a prepared run waits for the read it was prepared for (which follows at once,
#: unless its request went away meanwhile).
HOLD_SECONDS = 10.0


def _no_partitions() -> int:
    return 0


@dataclass
class TailCache:
    """A storage's cache settings and its shared read-back state."""

    #: Bytes of memory segments per partition (beyond: the oldest leave, once committed).
    budget: int
    readback: ReadBack
    connection: ReadConnection
    #: Bytes of memory segments of every partition together (0: no such bound): each
    #: partition's budget is at most its share of it (`per_partition`), so that many
    #: partitions cannot take the broker's memory.
    total: int = 0
    #: How many partition logs share `total` now (the storage's count).
    count: Callable[[], int] = _no_partitions

    def per_partition(self, partitions: int | None = None) -> int:
        """A partition's budget: `budget`, or its share of `total` among `partitions` (by
        default, the storage's count) where smaller, at least MIN_CHUNK."""
        n = self.count() if partitions is None else partitions
        if self.total <= 0 or n <= 0:
            return self.budget
        return max(min(self.budget, self.total // n), pg_tail.MIN_CHUNK)

    @property
    def chunk(self) -> int:
        return pg_tail.cache_chunk(self.per_partition())

    #: Bytes the read-backs under way asked for.
    asked: int = 0

    def ask(self, max_bytes: int) -> int:
        """What a read-back for a read of `max_bytes` asks for: ahead, up to READ_AHEAD (a
        consumer catching up asks for the next rows next, and one query for several
        fetches costs less than one for each), while the read-backs under way are within
        half the read-back budget (a fetch of many partitions reads just what it needs)."""
        ahead = min(READ_AHEAD, self.readback.budget // 16)
        if max_bytes >= ahead or self.asked + ahead > self.readback.budget // 2:
            return max_bytes
        return ahead


def is_hollow(segment: LogSegment) -> bool:
    return isinstance(segment.store, HollowStore)


class TailCachedLog(MemoryPartitionLog):
    """Memory segments for the tail, hollow ones below it (see the module doc)."""

    #: None: everything cached (the metadata log; a log being built).
    tail: TailCache | None = None
    #: Segments whose rows are not committed yet although their offsets are (a compaction's
    #: cleaned segment until its swap commits): they stay cached.
    _uncommitted: set[int]
    #: Answers of prepare_timestamp, for the offset_for_timestamp / max_timestamp after it.
    _prepared: dict[tuple[Any, ...], Any]
    #: Raised whenever rows read back may be stale (a compaction swap).
    _generation = 0
    #: Prepared runs by start, each with the call that drops it if no read takes it.
    _held: dict[int, tuple[Run, Any]]

    @property
    def key(self) -> Key:
        raise NotImplementedError

    def _roll_bytes(self) -> int:
        segment_bytes = self.config.segment_bytes
        return segment_bytes if self.tail is None else min(segment_bytes, self.tail.chunk)

    # -- leaving the cache -----------------------------------------------------------------

    def hollow(self, segment: LogSegment, size: int) -> None:
        """Drop the bytes (and indexes) of a segment whose rows are committed."""
        tail = self.tail
        assert tail is not None
        key, base, stop = self.key, segment.base_offset, segment.next_offset
        segment.store = HollowStore(size, lambda: pg_tail.RowsReader(tail.connection, key,
                                                                     base, stop, size))
        segment.offset_index = OffsetIndex(base)
        segment.time_index = TimeIndex(base)

    def evict(self, *, everywhere: bool = False) -> None:
        """Hollow the oldest cached segments while the cache is over its budget (with
        `everywhere`, first any cached segment below the tail: a compaction's, once its
        swap is committed)."""
        tail = self.tail
        if tail is None or self.closed:
            return
        uncommitted = getattr(self, "_uncommitted", set())
        first = self._tail_index()
        if everywhere:
            for segment in self.segments[:first]:
                if not is_hollow(segment) and id(segment) not in uncommitted:
                    self.hollow(segment, segment.size)
        cached = self.segments[first:]
        total = sum(s.size for s in cached)
        budget = tail.per_partition()
        for segment in cached[:-1]:
            if total <= budget:
                return
            if segment.next_offset > self.recovery_point or id(segment) in uncommitted:
                return
            total -= segment.size
            self.hollow(segment, segment.size)

    def _tail_index(self) -> int:
        """The index of the first segment of the cached tail: every one after the last
        hollow segment (the segments before it are read from PostgreSQL, a compaction's
        cleaned segment among them until its swap commits)."""
        segments = self.segments
        i = len(segments)
        while i > 0 and not is_hollow(segments[i - 1]):
            i -= 1
        return i

    @property
    def cached_from(self) -> int:
        """The first offset of the cached tail (everything below is read back)."""
        i = self._tail_index()
        return self.segments[i].base_offset if i < len(self.segments) else self.log_end_offset

    # -- reads -------------------------------------------------------------------------------

    def _run_for(self, offset: int, max_bytes: int, stop: int, *, take: bool = False
                 ) -> tuple[Run, int] | None:
        """The read-back rows holding `offset`, if they serve a read of max_bytes (with
        `take`, for that read: a held run that serves it is released after this turn)."""
        assert self.tail is not None

        def serves(run: Run, i: int | None) -> bool:
            return i is not None and (run.until >= stop or run.bytes_from(i) >= max_bytes)

        for run, call in getattr(self, "_held", {}).values():
            if serves(run, i := run.index(offset)):
                if take and call.active():
                    call.reset(0)  # a reader may read on from there in this turn
                return run, i  # type: ignore[return-value]
        found = self.tail.readback.find(self.key, offset)
        return found if found is not None and serves(*found) else None

    def _hold(self, run: Run) -> None:
        """Keep a prepared run for its read (see the module doc)."""
        self._release(run.start)
        if (held := getattr(self, "_held", None)) is None:
            held = self._held = {}
        held[run.start] = (run, self.reactor.callLater(HOLD_SECONDS, self._release, run.start))

    def _release(self, start: int | None = None) -> None:
        """Drop the held run at `start` (None: every one)."""
        held = getattr(self, "_held", {})
        for key in list(held) if start is None else [start]:
            if (entry := held.pop(key, None)) is not None and entry[1].active():
                entry[1].cancel()

    def read_back_bytes(self, offset: int, max_bytes: int) -> int:
        if self.tail is None or self.closed or not (
                self.log_start_offset <= offset < self.log_end_offset):
            return 0
        stop = self.cached_from
        if offset >= stop or self._run_for(offset, max_bytes, stop) is not None:
            return 0
        # The hollow segments' sizes from the one holding `offset`, up to max_bytes.
        segments, total = self.segments, 0
        i = self._segment_index(offset)
        while i < len(segments) and is_hollow(segments[i]) and total < max_bytes:
            total += segments[i].size
            i += 1
        return max(1, min(total, max_bytes))

    def prepare_read(self, offset: int, max_bytes: int) -> Deferred[None] | None:
        if self.tail is None or self.closed or not (
                self.log_start_offset <= offset < self.log_end_offset):
            return None
        stop = self.cached_from
        if offset >= stop:
            return None
        if (found := self._run_for(offset, max_bytes, stop)) is not None:
            self._hold(found[0])  # read back already: kept for this read too
            return None
        tail, key, generation = self.tail, self.key, self._generation

        ask = tail.ask(max_bytes)

        def store(rows: list[tuple[int, int, bytes]]) -> None:
            if self._generation == generation and not self.closed:  # no compaction swap
                run = Run.of(rows, offset, stop, ask)
                tail.readback.put(key, run)
                self._hold(run)

        def done(result: object) -> object:
            tail.asked -= ask
            return result

        tail.asked += ask
        d = defer_to_thread(self.reactor, tail.connection.run, pg_tail.rows_from, key, offset,
                            stop, ask)
        return d.addBoth(done).addCallback(store)

    def _read_back(self, offset: int, max_bytes: int, stop: int) -> tuple[Run, int] | None:
        found = self._run_for(offset, max_bytes, stop, take=True)
        if found is not None:
            return found
        # Not prepared: the query on the spot.
        assert self.tail is not None
        self.tail.readback.unprepared += 1
        try:
            run = Run.of(self.tail.connection.run(pg_tail.rows_from, self.key, offset, stop,
                                                  max_bytes), offset, stop, max_bytes)
        except Exception as e:
            raise KafkaStorageError(f"Reading {self.topic}-{self.partition} from PostgreSQL "
                                    f"failed: {e}") from e
        self.tail.readback.put(self.key, run)
        i = run.index(offset)
        return None if i is None else (run, i)

    def read(self, offset: int, max_bytes: int, *, min_one: bool = True,
             max_offset: int | None = None, ranges: bool = False) -> ReadResult:
        """As PartitionLog.read, the part below the cached tail read back from PostgreSQL:
        whole batches from the one holding `offset`, on across the tail's start."""
        stop = self.cached_from if self.tail is not None else 0
        if offset >= stop or offset < self.log_start_offset or offset > self.log_end_offset:
            return super().read(offset, max_bytes, min_one=min_one, max_offset=max_offset,
                                ranges=ranges)
        self._check_open()
        hw = self.high_watermark
        limit = hw if max_offset is None else min(max_offset, hw)
        parts, size, first, next_offset = self._read_hollow(offset, max_bytes, min(stop, limit),
                                                            min_one)
        if next_offset is not None and next_offset >= stop and size < max_bytes \
                and stop < limit:
            # On into the cached tail (compacted away up to it: from there).
            more = super().read(stop, max_bytes - size, min_one=min_one and not parts,
                                max_offset=max_offset, ranges=ranges)
            parts.extend(more.parts)
            size += more.size
            first = first if first is not None else more.first_offset
            next_offset = more.next_offset if more.next_offset is not None else next_offset
        return ReadResult(parts=parts, size=size, high_watermark=hw,
                          log_start_offset=self.log_start_offset,
                          last_stable_offset=self.last_stable_offset, first_offset=first,
                          next_offset=next_offset if parts else None)

    def _read_hollow(self, offset: int, max_bytes: int, stop: int, min_one: bool
                     ) -> tuple[list[bytes | FileRange], int, int | None, int | None]:
        """Read-back batches from `offset` below `stop`: (parts, size, first offset, next
        offset); the next offset is `stop` when no row is left below it."""
        if offset >= stop or (max_bytes <= 0 and not min_one):
            return [], 0, None, None
        found = self._read_back(offset, max(max_bytes, 1), stop)
        if found is None:
            return [], 0, None, None
        run, i = found
        parts: list[bytes | FileRange] = []
        total, next_offset = 0, min(run.until, stop)
        for base, last, data in zip(run.bases[i:], run.lasts[i:], run.data[i:], strict=True):
            if base >= stop:
                next_offset = stop
                break
            if total + len(data) > max_bytes and not (min_one and not parts):
                next_offset = base
                break
            parts.append(data)
            total += len(data)
            next_offset = last + 1
        return parts, total, run.bases[i] if parts else None, next_offset

    # -- timestamps --------------------------------------------------------------------------

    def _old_row(self, memo: tuple[Any, ...], query: Callable[..., Any], *args: Any) -> Any:
        prepared = getattr(self, "_prepared", {})
        if memo in prepared:
            return prepared.pop(memo)
        assert self.tail is not None
        return self.tail.connection.run(query, self.key, *args)

    def _timestamp_query(self, timestamp: int) -> tuple[tuple[Any, ...], Any, tuple[Any, ...]
                                                        ] | None:
        """The query offset_for_timestamp (max_timestamp for -3) needs first, if any."""
        start = self.log_start_offset
        if timestamp == -3:
            candidates = [s for s in self.segments if s.next_offset > start]
            if not candidates:
                return None
            segment = max(candidates, key=lambda s: s.max_timestamp)
            if not is_hollow(segment) or segment.max_timestamp < 0:
                return None
            args = (start, segment.next_offset)
            return ("max", *args), pg_tail.max_time_row, args
        for segment in self.segments:
            if segment.next_offset <= start or segment.max_timestamp < timestamp:
                continue
            if not is_hollow(segment):
                return None
            args = (start, segment.next_offset, timestamp)
            return ("ts", *args), pg_tail.first_at_time, args
        return None

    def prepare_timestamp(self, timestamp: int) -> Deferred[None] | None:
        if self.tail is None or self.closed:
            return None
        query = self._timestamp_query(timestamp)
        if query is None:
            return None
        memo, function, args = query
        self._prepared = {}  # only the latest question's answer is kept

        def store(row: Any) -> None:
            self._prepared[memo] = row

        return defer_to_thread(self.reactor, self.tail.connection.run, function, self.key,
                               *args).addCallback(store)

    def offset_for_timestamp(self, timestamp: int) -> TimestampAndOffset | None:
        self._check_open()
        start = self.log_start_offset
        for segment in self.segments:
            if segment.next_offset <= start or segment.max_timestamp < timestamp:
                continue
            if not is_hollow(segment):
                found = self._search_segment(segment, timestamp, start)
            else:
                args = (start, segment.next_offset, timestamp)
                row = self._old_row(("ts", *args), pg_tail.first_at_time, *args)
                found = None if row is None else self._search_batch(
                    parse_header(row[1]), row[1], timestamp, start)
            if found is not None:
                return found
        return None

    def max_timestamp(self) -> TimestampAndOffset | None:
        query = self._timestamp_query(-3) if self.tail is not None else None
        if query is None:
            return super().max_timestamp()
        self._check_open()
        memo, function, args = query
        row = self._old_row(memo, function, *args)
        return None if row is None else self._max_in_batch(parse_header(row[1]), row[1])

    def forget_read_back(self) -> None:
        self._generation += 1
        self._release()
        if self.tail is not None:
            self.tail.readback.drop(self.key)

    def _close_extra(self) -> None:
        self._release()
        super()._close_extra()
