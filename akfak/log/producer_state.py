"""Idempotent-producer state of one partition, as Kafka's ProducerStateManager keeps it.

Per producer id the partition remembers the producer epoch and the last five
appended batches (sequence range, offsets, timestamp).  Before an append every
batch carrying a producer id is checked, from its header alone:

- a batch whose epoch and exact sequence range match one of the five is a
  retried duplicate: nothing is appended and the original offsets are answered;
- an epoch below the producer's is INVALID_PRODUCER_EPOCH;
- a new (higher) epoch must start at sequence 0, unless the producer is unknown;
- otherwise the first sequence must follow the last one (wrapping from
  2^31-1 to 0), else OUT_OF_ORDER_SEQUENCE_NUMBER; an unknown producer (no
  state: never seen, expired, or its data deleted) may start anywhere;
- a producer with a transaction open here may append only transactional batches
  (INVALID_TXN_STATE).  Whether the coordinator added the partition to the
  transaction is checked before the append (the Produce handler asks the
  transaction coordinator, as Kafka's KIP-890 verification does).

Transactions: a producer's first transactional batch opens its transaction at
that batch's offset; a COMMIT or ABORT marker (a control batch the coordinator
writes) closes it.  The earliest open transaction is the partition's first
unstable offset, which bounds its last stable offset; an aborted transaction is
reported as an `AbortedTxn` for the segment's `.txnindex`.

The state survives restarts in Kafka's own `<20-digit offset>.snapshot` files in
the partition directory (version 1, CRC-32C; per producer: id, epoch, last
sequence, last offset, offset delta, timestamp, coordinator epoch, open
transaction's first offset).  A snapshot holds the state as of its offset;
on load the latest readable one is read and the batch headers after it are
replayed.  A snapshot keeps only each producer's last batch, as Kafka's does,
so right after a restart from a snapshot only the last batch of each producer
is recognised as a duplicate (plus any batches replayed from the log).

The memory provider keeps the same state without snapshots.

The producer state is one class in parts, so that no module grows too large to read: what
is remembered per producer (producer_entries.py), the snapshot files' format
(producer_snapshots.py), the fields, the append hook and the queries (producer_state_base.py),
and here the snapshots and the rebuild after a restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from twisted.logger import Logger

from akfak.log.batch import (
    INT32_MAX,
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    NO_SEQUENCE,
    NO_TIMESTAMP,
    BatchHeader,
)
from akfak.log.producer_entries import (
    DEFAULT_EXPIRATION_MS,
    NUM_BATCHES_TO_RETAIN,
    BatchMetadata,
    InvalidTxnState,
    ProducerStateEntry,
    is_epoch_exhausted,
)
from akfak.log.producer_snapshots import (
    SNAPSHOT_SUFFIX,
    SNAPSHOT_VERSION,
    CorruptSnapshot,
    decode_snapshot,
    encode_snapshot,
    read_snapshot,
    snapshot_name,
    snapshot_offset,
    write_snapshot,
)
from akfak.log.producer_state_base import (
    ORIGIN_CLIENT,
    ORIGIN_COORDINATOR,
    ORIGIN_RAFT,
    ORIGIN_REPLICATION,
    ProducerStateBase,
)
from akfak.log.records import read_marker

if TYPE_CHECKING:
    from akfak.log.segment import LogSegment

# What producer_entries.py, producer_snapshots.py and producer_state_base.py hold is
# importable here too.
__all__ = [
    "DEFAULT_EXPIRATION_MS",
    "INT32_MAX",
    "NO_PRODUCER_EPOCH",
    "NO_PRODUCER_ID",
    "NO_SEQUENCE",
    "NO_TIMESTAMP",
    "NUM_BATCHES_TO_RETAIN",
    "ORIGIN_CLIENT",
    "ORIGIN_COORDINATOR",
    "ORIGIN_RAFT",
    "ORIGIN_REPLICATION",
    "SNAPSHOT_SUFFIX",
    "SNAPSHOT_VERSION",
    "BatchMetadata",
    "CorruptSnapshot",
    "InvalidTxnState",
    "ProducerStateEntry",
    "ProducerStateManager",
    "decode_snapshot",
    "encode_snapshot",
    "is_epoch_exhausted",
    "read_snapshot",
    "snapshot_name",
    "snapshot_offset",
    "write_snapshot",
]

log = Logger()


class ProducerStateManager(ProducerStateBase):
    """The producer state of one partition log (see the module doc).

    Used as the log's `producer_state` hook: `before_append` validates (and
    answers duplicates), `after_append` records what was appended.
    """

    # -- snapshots -----------------------------------------------------------------------

    def update_map_end_offset(self, offset: int) -> None:
        self.map_end_offset = offset

    def latest_snapshot_offset(self) -> int | None:
        return max(self.snapshots, default=None)

    def oldest_snapshot_offset(self) -> int | None:
        return min(self.snapshots, default=None)

    def load_snapshot_files(self) -> None:
        """Find the snapshot files in the partition directory."""
        self.snapshots = {}
        if self.directory is None:
            return
        for path in self.directory.iterdir():
            offset = snapshot_offset(path)
            if offset is not None and path.is_file():
                self.snapshots[offset] = path

    def take_snapshot(self) -> Path | None:
        """Write a snapshot at the map end offset, unless one is there already.

        The file is a plain write; the log's next flush fsyncs it (on a thread).
        """
        if self.directory is None or self.map_end_offset <= self.last_snap_offset:
            return None
        path = self.directory / snapshot_name(self.map_end_offset)
        try:
            write_snapshot(path, self.producers.values())
        except OSError as e:
            # A snapshot only shortens the replay of a recovery: without it, the replay
            # starts from an earlier one.  Tried again at the next roll or close.
            log.error("Cannot write producer snapshot {path}: {e}", path=str(path), e=e)
            return None
        self.snapshots[self.map_end_offset] = path
        self.last_snap_offset = self.map_end_offset
        self._unsynced.append(path)
        return path

    def take_unsynced(self) -> list[Path]:
        """Snapshots written since the last call, for the log's flush to fsync."""
        paths, self._unsynced = self._unsynced, []
        return paths

    @property
    def has_unsynced(self) -> bool:
        return bool(self._unsynced)

    def _delete_snapshot(self, offset: int) -> None:
        path = self.snapshots.pop(offset, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def delete_snapshot(self, offset: int) -> None:
        """Remove the snapshot at `offset` (a deleted segment's base offset), if any."""
        self._delete_snapshot(offset)

    def remove_snapshots_before(self, offset: int) -> list[Path]:
        """Forget the snapshots below `offset`; return their paths for the caller to delete."""
        doomed = sorted(o for o in self.snapshots if o < offset)
        return [self.snapshots.pop(o) for o in doomed]

    def remove_stray_snapshots(self, segment_bases: Iterable[int]) -> None:
        """Kafka's LogLoader step: delete snapshots that match no segment base offset,
        except the largest one above every segment (what a clean shutdown left)."""
        bases = set(segment_bases)
        latest_stray: int | None = None
        for offset in sorted(self.snapshots):
            if offset in bases:
                continue
            if latest_stray is not None:
                self._delete_snapshot(latest_stray)
            latest_stray = offset
        if latest_stray is not None and bases and latest_stray < max(bases):
            self._delete_snapshot(latest_stray)

    def on_log_start_offset_incremented(self, log_start_offset: int) -> None:
        # Producers are kept (as Kafka 2.8+ does); only the bookkeeping moves.
        if self.map_end_offset < log_start_offset:
            self.map_end_offset = log_start_offset
        latest = self.latest_snapshot_offset()
        self.last_snap_offset = latest if latest is not None else log_start_offset

    def truncate_and_reload(self, log_start_offset: int, log_end_offset: int, now_ms: int) -> None:
        """Drop snapshots outside (log start, log end]; reload from the latest if the
        state does not already end at the log end."""
        for offset in list(self.snapshots):
            if offset > log_end_offset or offset <= log_start_offset:
                self._delete_snapshot(offset)
        if log_end_offset != self.map_end_offset:
            self._set_producers(())
            self._load_latest_snapshot(log_start_offset, now_ms)
        else:
            self.on_log_start_offset_incremented(log_start_offset)

    def _load_latest_snapshot(self, log_start_offset: int, now_ms: int) -> None:
        while self.snapshots:
            offset = max(self.snapshots)
            path = self.snapshots[offset]
            try:
                entries = read_snapshot(path)
            except (CorruptSnapshot, OSError) as e:
                log.warn("Failed to load producer snapshot from {path}: {e}", path=str(path), e=e)
                self._delete_snapshot(offset)
                continue
            self._set_producers(e for e in entries
                                if not self._is_expired(now_ms, e, self.expiration_ms))
            self.last_snap_offset = self.map_end_offset = offset
            return
        self.last_snap_offset = self.map_end_offset = log_start_offset

    def rebuild(self, segments: Sequence[LogSegment], log_start_offset: int, last_offset: int,
                *, clean: bool, now_ms: int, txn_index_from: int | None = None) -> None:
        """Kafka's rebuildProducerState: load the latest snapshot, then replay the batch
        headers from its offset to `last_offset`; snapshot at the start of the last two
        segments on the way and at the end.

        `txn_index_from` is where recovery rebuilt segments (their `.txnindex` was
        reset): their aborts are listed again first (`relist_aborts`)."""
        if txn_index_from is not None:
            self.relist_aborts(segments, txn_index_from, log_start_offset, last_offset, now_ms)
        to_snapshot: list[int] = []
        if segments:
            if len(segments) > 1:
                to_snapshot.append(segments[-2].base_offset)
            to_snapshot.append(segments[-1].base_offset)
        to_snapshot.append(last_offset)
        if self.latest_snapshot_offset() is None and clean:
            # A clean shutdown without snapshots: data written before producer state
            # existed (as after Kafka's upgrade from a version without it).  Nothing is
            # replayed; empty snapshots avoid a full scan next time.
            for offset in to_snapshot:
                self.update_map_end_offset(offset)
                self.take_snapshot()
            return
        was_empty = not self.producers and self.map_end_offset >= last_offset
        self.truncate_and_reload(log_start_offset, last_offset, now_ms)
        if last_offset > self.map_end_offset and not was_empty:
            for i, segment in enumerate(segments):
                following = segments[i + 1].base_offset if i + 1 < len(segments) else None
                if following is not None and following <= self.map_end_offset:
                    continue
                if segment.base_offset >= last_offset:
                    break
                start = max(segment.base_offset, self.map_end_offset, log_start_offset)
                self.update_map_end_offset(start)
                if segment.base_offset in to_snapshot:
                    self.take_snapshot()
                for header, marker in _headers_between(segment, start, last_offset):
                    self._replay(header, marker)
        self.update_map_end_offset(last_offset)
        self.take_snapshot()

    def relist_aborts(self, segments: Sequence[LogSegment], from_offset: int,
                      log_start_offset: int, last_offset: int, now_ms: int) -> None:
        """List in the `.txnindex` of their segments the aborts whose markers are at or
        after `from_offset`, replaying the log from the latest snapshot at or before it
        (as Kafka's recovery rebuilds a segment's index from the producer state at its
        base) in a scratch state; this state is left as it is."""
        scratch = ProducerStateManager(self.topic, self.partition, expiration_ms=self.expiration_ms)
        scratch.snapshots = {o: p for o, p in self.snapshots.items() if o <= from_offset}
        scratch._load_latest_snapshot(log_start_offset, now_ms)
        start = scratch.map_end_offset
        for i, segment in enumerate(segments):
            following = segments[i + 1].base_offset if i + 1 < len(segments) else None
            if following is not None and following <= start:
                continue
            for header, marker in _headers_between(segment, max(start, segment.base_offset),
                                                    last_offset):
                abort = scratch._replay(header, marker)
                if (abort is not None and abort.last_offset >= from_offset
                        and abort not in segment.txn_index.entries):
                    segment.txn_index.append(abort)


def _headers_between(segment: LogSegment, start: int, end: int
                     ) -> Iterator[tuple[BatchHeader, tuple[int, int] | None]]:
    """Headers of the segment's batches holding offsets in [start, end), each with its
    marker (control type, coordinator epoch) when it is a control batch."""
    _, position = segment.offset_index.lookup(start)
    for pos, header in segment.headers_from(position):
        if header.base_offset >= end:
            return
        if header.last_offset >= start:
            marker = None
            if header.is_control:
                marker = read_marker(segment.read(pos, header.size)) or (-1, -1)
            yield header, marker

