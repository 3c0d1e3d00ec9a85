"""The log cleaner's work on the reactor's thread pool (Kafka's Cleaner): the offset map over
a log's dirty section, and the rewrite of a group of segments into one cleaned segment.

Nothing here changes the log, so it goes on meanwhile: segments are read through readers
that outlive their files, and the cleaned segment is a new one, swapped in on the reactor
by the cleaner (cleaner.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from akfak.errors import CorruptMessage
from akfak.log.batch import HEADER_SIZE, INT32_MAX, BatchHeader, parse_header
from akfak.log.cleaner_txns import AbortedTransactions, CleanedTransactions
from akfak.log.records import (
    RawRecord,
    delete_horizon,
    empty_batch,
    iter_raw_records,
    read_marker,
    rebuild_batch,
)
from akfak.log.segment import LogSegment, SegmentReader
from akfak.log.txn_index import AbortedTxn

#: How much of a segment to read at a time while scanning it.
READ_CHUNK = 1024 * 1024


# -- batches -----------------------------------------------------------------------------


def iter_batches(reader: SegmentReader, position: int = 0
                 ) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Every whole batch of a segment from `position` (a batch boundary) on."""
    size = reader.size
    buf = b""
    buf_start = position
    pos = position
    while pos + HEADER_SIZE <= size:
        if pos + HEADER_SIZE > buf_start + len(buf):
            buf_start, buf = pos, reader.read(pos, min(READ_CHUNK, size - pos))
        header = parse_header(buf, pos - buf_start)
        if header.magic != 2 or header.size < HEADER_SIZE or pos + header.size > size:
            raise CorruptMessage(f"Malformed batch at byte {pos} of a segment")
        if pos + header.size > buf_start + len(buf):
            buf_start, buf = pos, reader.read(pos, max(READ_CHUNK, header.size))
        start = pos - buf_start
        yield header, memoryview(buf)[start : start + header.size]
        pos += header.size


# -- the offset map ----------------------------------------------------------------------


class OffsetMap:
    """Key -> latest offset over the dirty section (Kafka's SkimpyOffsetMap).

    Kafka keeps 16-byte hashes in a fixed buffer; here a dict holds the keys, but as
    many of them as Kafka's buffer would (`max_entries`), so a round covers the same
    part of a log.
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max(1, max_entries)
        self.offsets: dict[bytes, int] = {}
        #: The last offset the map covers (-1: none).
        self.latest_offset = -1

    def put(self, key: bytes, offset: int) -> bool:
        """Record `offset` as the latest of `key`; False when the map is full."""
        if len(self.offsets) >= self.max_entries and key not in self.offsets:
            return False
        self.offsets[key] = offset
        return True

    def get(self, key: bytes) -> int:
        return self.offsets.get(key, -1)

    def update_latest_offset(self, offset: int) -> None:
        self.latest_offset = max(self.latest_offset, offset)


# -- the work on a thread ----------------------------------------------------------------


@dataclass
class CleanerStats:
    """What a cleaning round did (logged as Kafka's cleaner logs it)."""

    map_records: int = 0
    records_read: int = 0
    records_retained: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    invalid_records: int = 0
    groups: int = 0


@dataclass(frozen=True)
class SegmentSource:
    """A segment as a thread reads it: base offset, the offset after the last one it may
    hold (the next segment's base), and a reader that outlives the segment's own files."""

    base_offset: int
    upper_offset: int
    reader: SegmentReader
    start_position: int = 0


def build_offset_map(source: SegmentSource, start: int, offset_map: OffsetMap,
                     stats: CleanerStats, check_done: Callable[[], None],
                     aborted: AbortedTransactions | None = None) -> bool:
    """Add the keys of one dirty segment from offset `start` on; True once the map is full.

    As Kafka's buildOffsetMapForSegment: a full map stops in the middle of a batch,
    and the map's end is the last batch read whole (or the segment's end).
    """
    try:
        for header, batch in iter_batches(source.reader, source.start_position):
            check_done()
            stats.bytes_read += header.size
            if not header.is_control and not (aborted is not None and aborted.holds(header)):
                for record in iter_raw_records(batch, header):
                    if record.key is not None and record.offset >= start:
                        if not offset_map.put(record.key, record.offset):
                            return True
                        stats.map_records += 1
            if header.last_offset >= start:
                offset_map.update_latest_offset(header.last_offset)
        # Offsets may have gaps at a segment's end (an earlier cleaning): cover up to the next.
        offset_map.update_latest_offset(source.upper_offset - 1)
        return False
    finally:
        source.reader.close()


@dataclass(frozen=True)
class CleanParams:
    """What cleaning a group needs besides its segments; read on the reactor."""

    now_ms: int
    delete_retention_ms: int
    #: Producer id -> (last data offset or -1, epoch) of every producer the log knows.
    active_producers: dict[int, tuple[int, int]]
    #: The batch ending here is kept even if empty (Kafka's upperBoundOffsetOfCleaningRound).
    upper_bound_offset: int
    #: When the last segment of the group was last modified, for the new segment.
    last_modified_ms: int
    #: The transactions of the cleaning pass, followed batch by batch (mutable, shared by
    #: the pass's groups, which are cleaned one after the other).
    txns: CleanedTransactions = field(
        default_factory=lambda: CleanedTransactions(AbortedTransactions()))
    #: The aborts listed by the group's segments, for the cleaned segment's `.txnindex`.
    group_aborts: tuple[AbortedTxn, ...] = ()


def _keep_batch_even_if_empty(header: BatchHeader, params: CleanParams) -> bool:
    producer = params.active_producers.get(header.producer_id) if header.has_producer_id else None
    if producer is not None:
        last_data_offset, epoch = producer
        if last_data_offset >= 0:
            if header.last_offset == last_data_offset:
                return True
        elif header.is_control and header.producer_epoch == epoch:
            return True
    return header.next_offset == params.upper_bound_offset


def clean_batch(batch: memoryview, header: BatchHeader, offset_map: OffsetMap,
                params: CleanParams, stats: CleanerStats) -> bytes | None:
    """The batch as it stays in the cleaned log, or None when it goes (Kafka's filterTo
    with the cleaner's RecordFilter)."""
    if header.is_control:
        return _clean_marker(batch, header, params, stats)
    horizon = delete_horizon(header)
    retained: list[RawRecord] = []
    count = 0
    has_tombstones = False
    aborted = params.txns.on_data_batch(header)
    for record in iter_raw_records(batch, header):
        count += 1
        if aborted:
            keep = False
        elif record.offset > offset_map.latest_offset:
            keep = True
        elif record.key is None:
            stats.invalid_records += 1
            keep = False
        else:
            keep = (record.offset >= offset_map.get(record.key)
                    and (not record.tombstone or horizon is None or params.now_ms < horizon))
        if keep:
            retained.append(record)
            has_tombstones = has_tombstones or record.tombstone
    stats.records_read += count
    stats.records_retained += len(retained)
    if retained:
        set_horizon = has_tombstones and horizon is None
        if len(retained) == count and not set_horizon:
            return bytes(batch)
        new_horizon = params.now_ms + params.delete_retention_ms if set_horizon else horizon
        return rebuild_batch(batch, header, retained, new_horizon)
    if _keep_batch_even_if_empty(header, params):
        return empty_batch(header)
    return None


def _clean_marker(batch: memoryview, header: BatchHeader, params: CleanParams,
                  stats: CleanerStats) -> bytes | None:
    """A control batch: kept while its transaction has batches in the log; once empty,
    stamped with a delete horizon, and gone after it (see cleaner_txns.py)."""
    stats.records_read += header.record_count
    marker = read_marker(batch) if header.record_count else None
    empty = params.txns.on_marker(header, None if marker is None else marker[0])
    horizon = delete_horizon(header)
    if empty and (header.record_count == 0 or (horizon is not None and params.now_ms >= horizon)):
        return empty_batch(header) if _keep_batch_even_if_empty(header, params) else None
    stats.records_retained += header.record_count
    if empty and horizon is None:
        return rebuild_batch(batch, header, list(iter_raw_records(batch, header)),
                             params.now_ms + params.delete_retention_ms)
    return bytes(batch)


def clean_group(sources: Sequence[SegmentSource], cleaned: LogSegment, offset_map: OffsetMap,
                params: CleanParams, stats: CleanerStats, check_done: Callable[[], None]
                ) -> LogSegment:
    """Write the cleaned batches of a group of segments into `cleaned` (a new segment
    named by the group's first base offset), and index it as appends are indexed."""
    try:
        for source in sources:
            for header, batch in iter_batches(source.reader):
                check_done()
                stats.bytes_read += header.size
                kept = clean_batch(batch, header, offset_map, params, stats)
                if kept is None:
                    continue
                out = parse_header(kept)
                cleaned.append([kept], len(kept), last_offset=out.last_offset,
                               max_timestamp=out.max_timestamp,
                               offset_of_max_timestamp=out.last_offset, now_ms=params.now_ms)
                stats.bytes_written += len(kept)
        cleaned.on_inactive()
        cleaned.last_modified_ms = params.last_modified_ms
        return cleaned
    finally:
        for source in sources:
            source.reader.close()


def group_segments(segments: Sequence[LogSegment], max_size: int, max_index_size: int,
                   first_uncleanable: int) -> list[list[LogSegment]]:
    """Kafka's groupSegmentsBySize: runs of segments that together fit one segment (log
    bytes, index bytes, and offsets relative to the first base in 32 bits)."""
    groups: list[list[LogSegment]] = []
    i = 0
    while i < len(segments):
        group = [segments[i]]
        log_size = segments[i].size
        index_size = segments[i].offset_index.entries * 8
        time_index_size = segments[i].time_index.entries * 12
        i += 1
        while i < len(segments):
            candidate = segments[i]
            last_offset = (segments[i + 1].base_offset - 1 if i + 1 < len(segments)
                           else first_uncleanable - 1)
            if (log_size + candidate.size > max_size
                    or index_size + candidate.offset_index.entries * 8 > max_index_size
                    or time_index_size + candidate.time_index.entries * 12 > max_index_size
                    or (candidate.size > 0
                        and last_offset - group[0].base_offset > INT32_MAX)):
                break
            group.append(candidate)
            log_size += candidate.size
            index_size += candidate.offset_index.entries * 8
            time_index_size += candidate.time_index.entries * 12
            i += 1
        groups.append(group)
    return groups
