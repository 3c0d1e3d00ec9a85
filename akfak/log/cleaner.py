"""The log cleaner: compaction of every log whose `cleanup.policy` contains `compact`.

This follows Apache Kafka's LogCleaner, Cleaner and LogCleanerManager:

- Choosing a log.  Per log the cleaner remembers the first offset it has not
  cleaned (its "first dirty offset", kept in Kafka's `cleaner-offset-checkpoint`
  file by the disk provider).  The cleanable part ends at the first uncleanable
  offset: never the active segment, nor a segment holding records newer than
  `min.compaction.lag.ms`.  A log is cleaned when its dirty ratio (bytes of the
  segments from the first dirty offset to that end, over those plus the bytes
  already cleaned) is above `min.cleanable.dirty.ratio`, or when a dirty segment's
  first batch is older than `max.compaction.lag.ms`.  Dirtiest first.
- Cleaning.  A map key -> latest offset is built over the dirty section (bounded as
  Kafka bounds it by `log.cleaner.dedupe.buffer.size`; a full map ends the round
  early).  Then every segment below the map's end, grouped so that a group fits
  one segment (`segment.bytes`, `segment.index.bytes`), is rewritten into one new
  segment named by the group's first base offset, keeping a record when it is
  past the map's end, or the latest of its key and not an expired tombstone.
  Records without a key go.  Offsets never change: a batch keeps its base offset
  and offset span, its producer fields, leader epoch, timestamp type and codec
  (a batch that lost records is re-encoded and recompressed with its own codec;
  one that lost none is copied byte for byte).  Control batches are kept; the
  last batch of every active idempotent producer is kept even when all of its
  records go (an empty batch, as Kafka writes), so duplicate detection keeps
  working after a restart; so is the batch that ends the cleanable range.
- Tombstones (KIP-534).  The cleaning that first keeps a tombstone stamps its
  batch with a delete horizon, now + `delete.retention.ms` (attribute bit 6; the
  horizon is the batch's base timestamp, record timestamps keep their values
  through their deltas); a later cleaning past the horizon drops it.
- Threads.  Decompressing, scanning and re-encoding run on the reactor's thread
  pool; each segment is read through a descriptor duplicated on the reactor (or
  the buffer of a memory segment), so retention or a topic deletion meanwhile
  cannot pull the file away.  The swap of a cleaned group happens on the reactor
  thread, after checking that the log still holds exactly the segments that were
  cleaned (else the cleaned files are discarded and the round ends), through
  `PartitionLog.replace_segments` (crash-safe on disk: `.cleaned`, `.swap`,
  `.deleted`, see `disk_partition.py`).
- Appends to a compacted log must carry a key: akfak.log.validator refuses others.

- Transactions.  Cleaning stops at the last stable offset (an undecided
  transaction is never cleaned).  The records of aborted transactions (known from
  the segments' `.txnindex`) never enter the offset map and are dropped, as Kafka's
  cleaner discards them; the cleaned segment keeps the aborts of the segments it
  replaces while they still have data there.  A marker whose transaction has no
  batch left gets a delete horizon and goes after `delete.retention.ms`
  (`cleaner_txns.py`).

The work a round does on threads is in `cleaner_work.py`, the choice of logs in
`cleaner_choice.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.errors import KafkaStorageError
from akfak.log.cleaner_choice import LogToClean, log_to_clean, segments_between
from akfak.log.cleaner_txns import AbortedTransactions, CleanedTransactions
from akfak.log.cleaner_work import (
    CleanerStats,
    CleanParams,
    OffsetMap,
    SegmentSource,
    build_offset_map,
    clean_group,
    group_segments,
)
from akfak.log.segment import LogSegment
from akfak.log.threads import defer_to_thread

if TYPE_CHECKING:
    from akfak.log.partition import PartitionLog
    from akfak.log.storage import BaseLogStorage

log = Logger()

TopicPartition = tuple[str, int]

#: Kafka's SkimpyOffsetMap spends 24 bytes a key (16-byte MD5 + 8-byte offset).
OFFSET_MAP_ENTRY_BYTES = 24


class CleaningAborted(Exception):
    """The log changed (closed, deleted, reconfigured) or the cleaner stopped mid-round."""


def _open_sources(group: Sequence[LogSegment]) -> list[SegmentSource]:
    """Readers of every segment of a group (on the reactor), or none if one fails."""
    sources: list[SegmentSource] = []
    try:
        for segment in group:
            sources.append(SegmentSource(segment.base_offset, -1, segment.store.open_reader()))
    except BaseException:
        for source in sources:
            source.reader.close()
        raise
    return sources


# -- the cleaner -------------------------------------------------------------------------


@dataclass
class _Round:
    """One log's cleaning, as it goes."""

    target: LogToClean
    stats: CleanerStats = field(default_factory=CleanerStats)


class LogCleaner:
    """The storage's log cleaner: `run(now_ms)` is one pass over the compacted logs.

    The broker calls it every `log.cleaner.backoff.ms` (Kafka's cleaner thread sleeps
    that long when nothing is dirty enough).  A pass cleans every log that is dirty
    enough, dirtiest first, one at a time; then, as Kafka's cleaner thread does,
    applies retention to the compacted logs (`cleanup.policy=compact,delete`).
    """

    def __init__(self, storage: BaseLogStorage) -> None:
        self.storage = storage
        #: (topic, partition) -> first dirty offset: Kafka's cleaner-offset-checkpoint.
        self.checkpoints: dict[TopicPartition, int] = {}
        #: Logs whose cleaning failed unexpectedly (Kafka's uncleanable partitions):
        #: left alone until a restart.
        self.uncleanable: set[TopicPartition] = set()
        self._running: Deferred[int] | None = None
        self._stopping = False
        #: what every round so far did, and how many logs were cleaned (metrics)
        self.totals = CleanerStats()
        self.logs_cleaned = 0
        #: the longest round of the last pass, and when the last pass ended (time.time())
        self.max_clean_seconds = 0.0
        self.last_pass_end: float | None = None

    @property
    def enabled(self) -> bool:
        return self.storage.config.get_bool("log.cleaner.enable")

    def _map_entries(self) -> int:
        config = self.storage.config
        buffer = config.get_int("log.cleaner.dedupe.buffer.size")
        factor = float(config.get("log.cleaner.io.buffer.load.factor") or 0.9)
        return int(buffer // OFFSET_MAP_ENTRY_BYTES * factor)

    # -- passes --------------------------------------------------------------------------

    def run(self, now_ms: int) -> Deferred[int]:
        """One pass; fires with how many logs were cleaned (never fails)."""
        if not self.enabled or self._stopping or self.storage.closed:
            return succeed(0)
        if self._running is not None:
            return succeed(0)  # the previous pass still runs (a manual call overlapping)
        self._running = done = self._run(now_ms)

        def finished(result: int | Failure) -> int:
            self._running = None
            if isinstance(result, Failure):
                log.failure("The log cleaner pass failed", result)
                return 0
            return result

        done.addBoth(finished)
        return done

    @inlineCallbacks
    def _run(self, now_ms: int) -> Any:
        cleaned = 0
        tried: set[TopicPartition] = set()
        longest = 0.0
        while not self._stopping:
            target = self.grab_filthiest(now_ms, exclude=tried)
            if target is None:
                break
            key = (target.log.topic, target.log.partition)
            tried.add(key)
            started = time.monotonic()
            ok = yield self._clean(target, now_ms)
            longest = max(longest, time.monotonic() - started)
            cleaned += int(bool(ok))
        self.max_clean_seconds = longest
        self.last_pass_end = time.time()
        if not self._stopping:
            for partition_log in self.storage.logs():
                if partition_log.config.compact and not partition_log.closed:
                    try:
                        self.storage.segments_deleted += partition_log.run_retention(now_ms)
                    except Exception:
                        log.failure("Retention of {log} failed", log=partition_log)
        return cleaned

    def stop(self) -> Deferred[None]:
        """Stop cleaning: the round in progress aborts at its next batch; fires when it has."""
        self._stopping = True
        running = self._running
        if running is None:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        running.addBoth(lambda result: (waiter.callback(None), result)[1])
        return waiter

    # -- choosing ------------------------------------------------------------------------

    def cleanable_logs(self, now_ms: int) -> list[LogToClean]:
        """Every compacted log a round would clean now, dirtiest first (Kafka's
        grabFilthiestCompactedLog, before it takes the first)."""
        found = []
        for partition_log in self.storage.logs():
            key = (partition_log.topic, partition_log.partition)
            if (partition_log.closed or not partition_log.config.compact
                    or key in self.uncleanable):
                continue
            target = log_to_clean(partition_log, self.checkpoints.get(key), now_ms)
            if target.reset_checkpoint:
                self.checkpoints[key] = target.first_dirty_offset
            if target.total_bytes <= 0:
                continue
            ratio = partition_log.config.min_cleanable_dirty_ratio
            if ((target.need_compaction_now and target.cleanable_bytes > 0)
                    or target.cleanable_ratio > ratio):
                found.append(target)
        found.sort(key=lambda t: t.cleanable_ratio, reverse=True)
        return found

    def grab_filthiest(self, now_ms: int, exclude: Collection[TopicPartition] = ()
                       ) -> LogToClean | None:
        for target in self.cleanable_logs(now_ms):
            if (target.log.topic, target.log.partition) not in exclude:
                return target
        return None

    # -- cleaning one log ----------------------------------------------------------------

    def _clean(self, target: LogToClean, now_ms: int) -> Deferred[bool]:
        partition_log = target.log
        key = (partition_log.topic, partition_log.partition)
        work = _Round(target)

        def failed(failure: Failure) -> bool:
            if failure.check(CleaningAborted):
                log.info("Cleaning of {log} aborted: {why}", log=partition_log,
                         why=failure.getErrorMessage())
                return False
            if failure.check(KafkaStorageError, OSError):
                # A full disk or an I/O error: the cleaned files went; the next round
                # (log.cleaner.backoff.ms) tries again, once space is back.
                log.error("Cleaning of {log} failed: {e}; retried at the next round",
                          log=partition_log, e=failure.getErrorMessage())
                return False
            # Kafka marks such a partition uncleanable rather than retrying it forever.
            self.uncleanable.add(key)
            log.failure("Cleaning of {log} failed; it is not cleaned again until a restart",
                        failure, log=partition_log)
            return False

        return self._clean_log(work, now_ms).addErrback(failed)

    def _check_done(self, partition_log: PartitionLog) -> Callable[[], None]:
        def check() -> None:
            # Read from the cleaning thread: plain attribute reads of flags the reactor sets.
            if self._stopping:
                raise CleaningAborted("the cleaner is stopping")
            if partition_log.closed:
                raise CleaningAborted("the log was closed")
        return check

    def _still_cleanable(self, partition_log: PartitionLog) -> None:
        if self._stopping:
            raise CleaningAborted("the cleaner is stopping")
        if partition_log.closed or self.storage.get_log(
                partition_log.topic, partition_log.partition) is not partition_log:
            raise CleaningAborted("the log was closed or deleted")
        if not partition_log.config.compact:
            raise CleaningAborted("its cleanup.policy no longer contains compact")

    @inlineCallbacks
    def _clean_log(self, work: _Round, now_ms: int) -> Any:
        target = work.target
        partition_log = target.log
        config = partition_log.config
        stats = work.stats
        check_done = self._check_done(partition_log)
        log.info("Beginning cleaning of {log}: offsets [{dirty}, {end}) are dirty, ratio {ratio:.2f}",
                 log=partition_log, dirty=target.first_dirty_offset,
                 end=target.first_uncleanable_offset, ratio=target.cleanable_ratio)

        # 1. The offset map over the dirty section, one segment per trip to the thread pool.
        offset_map = OffsetMap(self._map_entries())
        aborted = AbortedTransactions.of(partition_log.segments)
        start = target.first_dirty_offset
        dirty = segments_between(partition_log, start, target.first_uncleanable_offset)
        for i, segment in enumerate(dirty):
            self._still_cleanable(partition_log)
            if segment not in partition_log.segments:
                raise CleaningAborted(f"segment {segment.base_offset} went away")
            upper = (dirty[i + 1].base_offset if i + 1 < len(dirty)
                     else target.first_uncleanable_offset)
            position = segment.offset_index.lookup(start)[1] if segment.base_offset <= start else 0
            source = SegmentSource(segment.base_offset, upper, segment.store.open_reader(),
                                   position)
            full = yield defer_to_thread(partition_log.reactor, build_offset_map, source, start,
                                         offset_map, stats, check_done, aborted)
            if full:
                log.info("The offset map of {log} is full at {n} keys: this round cleans up to "
                         "offset {end}", log=partition_log, n=len(offset_map.offsets),
                         end=offset_map.latest_offset + 1)
                break
        end_offset = offset_map.latest_offset + 1
        if end_offset <= 0:
            return False

        # 2. Every segment below the map's end, group by group: clean on a thread, swap here.
        groups = group_segments(
            [s for s in partition_log.segments
             if s.base_offset < end_offset and s is not partition_log.active],
            config.segment_bytes, config.segment_index_bytes, target.first_uncleanable_offset)
        txns = CleanedTransactions(aborted)
        producers = {}
        state = partition_log.producer_state
        for entry in (state.active_producers() if state is not None else []):
            producers[entry.producer_id] = (entry.last_data_offset, entry.producer_epoch)
        for group in groups:
            self._still_cleanable(partition_log)
            if any(s not in partition_log.segments for s in group):
                raise CleaningAborted("segments were deleted meanwhile")
            params = CleanParams(now_ms=now_ms, delete_retention_ms=config.delete_retention_ms,
                                 active_producers=producers,
                                 upper_bound_offset=target.first_uncleanable_offset,
                                 last_modified_ms=group[-1].last_modified_ms, txns=txns,
                                 group_aborts=tuple(e for segment in group
                                                    for e in segment.txn_index.entries))
            sources = _open_sources(group)
            cleaned = yield defer_to_thread(
                partition_log.reactor, self._clean_group_on_thread, partition_log, group[0],
                sources, offset_map, params, stats, check_done)
            try:
                self._still_cleanable(partition_log)
                partition_log.check_replaceable(cleaned, group)
            except CleaningAborted:
                # Nothing was renamed yet: the cleaned files are ours to drop.
                yield defer_to_thread(partition_log.reactor,
                                      partition_log.discard_cleaned_segment, cleaned)
                raise
            # From here a failure leaves the files to recovery (see disk_partition.py), as Kafka does.
            yield partition_log.replace_segments(cleaned, group)
            stats.groups += 1

        key = (partition_log.topic, partition_log.partition)
        self.checkpoints[key] = end_offset
        totals = self.totals
        for name in (f.name for f in fields(CleanerStats)):
            setattr(totals, name, getattr(totals, name) + getattr(stats, name))
        self.logs_cleaned += 1
        log.info("Cleaned {log} up to offset {end}: {keys} keys mapped, {rin} records read, "
                 "{rout} kept ({bin} bytes read, {bout} written, {groups} segments swapped in, "
                 "{bad} records without a key dropped)", log=partition_log, end=end_offset,
                 keys=stats.map_records, rin=stats.records_read, rout=stats.records_retained,
                 bin=stats.bytes_read, bout=stats.bytes_written, groups=stats.groups,
                 bad=stats.invalid_records)
        yield self.storage.persist_cleaner_checkpoints()
        return True

    @staticmethod
    def _clean_group_on_thread(partition_log: PartitionLog, first: LogSegment,
                               sources: Sequence[SegmentSource], offset_map: OffsetMap,
                               params: CleanParams, stats: CleanerStats,
                               check_done: Callable[[], None]) -> LogSegment:
        try:
            cleaned = partition_log.new_cleaned_segment(first.base_offset)
        except BaseException:
            for source in sources:
                source.reader.close()
            raise
        try:
            clean_group(sources, cleaned, offset_map, params, stats, check_done)
            # Aborts with data left stay listed: fetches still skip their records.
            cleaned.txn_index.rebuild(params.txns.kept_aborts(params.group_aborts))
            partition_log.finish_cleaned_segment(cleaned)
        except BaseException:
            partition_log.discard_cleaned_segment(cleaned)
            raise
        return cleaned

    # -- checkpoints ---------------------------------------------------------------------

    def load_checkpoints(self, entries: dict[TopicPartition, int]) -> None:
        self.checkpoints = dict(entries)

    def checkpoint_entries(self) -> dict[TopicPartition, int]:
        """The checkpoint of every log still there (deleted topics drop out)."""
        return {key: offset for key, offset in self.checkpoints.items()
                if self.storage.get_log(*key) is not None}
