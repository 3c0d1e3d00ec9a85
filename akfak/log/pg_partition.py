"""The postgres provider's partition log: its tail cached in memory, its changes committed
to PostgreSQL.

`PostgresPartitionLog` is made from its rows at load (hollow segments below the cached
tail, the producer state and aborted transactions rebuilt from the rows that matter) and
hands each change (appends, the log start, leader epochs, compaction swaps, deletion) to
the `PgWriter`; its `flush` fires once that is committed, and each append's `commit` says
what to wait for (the writer's barrier; the log's own bookkeeping runs after the commit).  The
storage that makes these logs, and the design: postgres.py.
"""

from __future__ import annotations

import uuid
from bisect import bisect_right
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

from twisted.internet.defer import Deferred

from akfak.errors import NotLeaderOrFollower
from akfak.log import batch as batches
from akfak.log.batch import parse_header as batches_header
from akfak.log.config import LogConfig
from akfak.log.partition import ORIGIN_CLIENT, AppendInfo, Commit
from akfak.log.pg_cached import TailCache, TailCachedLog
from akfak.log.pg_tail import Loaded
from akfak.log.pg_writer import Append, BatchRow, Key, PgWriter, Statement
from akfak.log.producer_state import _headers_between
from akfak.log.records import read_marker
from akfak.log.segment import LogSegment


def batch_rows(data: bytes) -> list[BatchRow]:
    """The akfak_batch rows of stored batches (offsets already assigned).  One batch (a
    produce request's usual one per partition) is `data` itself, not a copy."""
    return [(h.base_offset, h.last_offset, h.max_timestamp, h.partition_leader_epoch,
             h.producer_id, data if h.size == len(data) else data[pos : pos + h.size])
            for pos, h in batches.scan(data)]


def _with_commit(info: AppendInfo, commit: Commit) -> AppendInfo:
    """`dataclasses.replace(info, flushed=None, commit=commit)` for a fraction of its cost
    (a few µs, paid for every partition of every produce)."""
    copy = object.__new__(AppendInfo)
    copy.__dict__.update(info.__dict__, flushed=None, commit=commit)
    return copy


def _epochs_text(epochs: Sequence[tuple[int, int]]) -> str:
    return ",".join(f"{e}:{o}" for e, o in epochs)


def _parse_epochs(text: str) -> list[tuple[int, int]]:
    pairs = (item.split(":") for item in text.split(",") if item)
    return [(int(e), int(o)) for e, o in pairs]


class PostgresPartitionLog(TailCachedLog):
    """A partition log whose tail is cached in memory segments (pg_cached.py), its changes
    committed to PostgreSQL."""

    writer: PgWriter
    #: The leader epoch this broker leads the partition in (a cluster; None: unfenced):
    #: every change it commits is conditional on the row still having it.
    fence_epoch: int | None = None
    #: The high watermark: the end of what PostgreSQL committed, so a consumer never reads
    #: a record that is not durable yet.  None for the metadata log (its end: the controller
    #: applies its records as it writes them, the others replay committed ones).
    committed_offset: int | None = None

    @property
    def high_watermark(self) -> int:
        committed = self.committed_offset
        return self.active.next_offset if committed is None else committed

    @cached_property
    def _commit(self) -> Commit:
        """Every append's: the writer's barrier, then whether this partition's appends were
        refused (a deposed leader's are not acknowledged)."""
        return Commit(self.writer.barrier, self._check_fenced)

    @property
    def key(self) -> Key:
        assert self.topic_id is not None
        return (self.topic_id, self.partition)

    @classmethod
    def create_in(cls, writer: PgWriter, topic: str, partition: int, topic_id: uuid.UUID,
                  config: LogConfig, *, now_ms: int, leader: int = -1, reactor: Any = None,
                  tail: TailCache | None = None) -> PostgresPartitionLog:
        partition_log = cls.create(topic, partition, topic_id, config, now_ms=now_ms,
                                   reactor=reactor)
        partition_log.writer = writer
        partition_log.tail = tail
        # In a cluster the controller made the row already (leader and epoch): it stays.
        writer.submit(Statement(partition_log.key, [(
            "INSERT INTO akfak_partition (topic_id, partition, topic, leader) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", (topic_id, partition, topic, leader))]))
        return partition_log

    def _submit_statements(self, statements: list[tuple[str, tuple[Any, ...]]],
                           rows: Sequence[BatchRow] = ()) -> None:
        self.writer.submit(Statement(self.key, statements, rows, self.fence_epoch))

    @classmethod
    def load(cls, writer: PgWriter, topic: str, partition: int, topic_id: uuid.UUID,
             config: LogConfig, *, log_start_offset: int, next_offset: int, epochs: str,
             loaded: Loaded, tail: TailCache | None, now_ms: int, expiration_ms: int,
             reactor: Any = None) -> PostgresPartitionLog:
        """The log from its rows (pg_tail.load): hollow segments below the tail, memory
        segments of the tail, the producer state and aborted transactions rebuilt from
        the rows that matter (as Kafka's recovery rebuilds them from segments)."""
        partition_log = cls(topic, partition, topic_id, config, now_ms=now_ms, reactor=reactor)
        partition_log.writer = writer
        partition_log.tail = tail
        segments: list[LogSegment] = []
        for old in loaded.hollow:
            # The first segment starts at the log start (compaction may have emptied its
            # first offsets; they stay in the log, as in a compacted segment).
            segment = partition_log._new_segment(
                old.base_offset if segments else min(old.base_offset, log_start_offset), now_ms)
            segment.next_offset = old.last_offset + 1
            segment.max_timestamp = old.max_timestamp
            segment.offset_of_max_timestamp = old.base_offset
            partition_log.hollow(segment, old.size)
            segments.append(segment)
        hollow = len(segments)
        roll = partition_log._roll_bytes()
        current: LogSegment | None = None
        for base, batch in loaded.tail:
            if current is None or (current.size and current.size + len(batch) > roll):
                current = partition_log._new_segment(
                    min(base, log_start_offset) if not segments else base, now_ms)
                segments.append(current)
            current.store.append([batch])
        recovered: list[tuple[int, int]] = []
        for segment in segments[hollow:]:
            recovered.extend(segment.recover()[1])
        if not segments or segments[-1].next_offset < next_offset:
            segments.append(partition_log._new_segment(next_offset, now_ms))
        partition_log._set_segments(segments)
        end = partition_log.log_end_offset
        # The stored cache (it has the epochs of DeleteRecords' truncation), else the batches'.
        partition_log.epochs = [(e, o) for e, o in _parse_epochs(epochs) or recovered if o < end]
        partition_log.log_start_offset = min(max(log_start_offset, segments[0].base_offset), end)
        partition_log.recovery_point = end
        partition_log._rebuild_producer_state(loaded, hollow, expiration_ms)
        return partition_log

    def _rebuild_producer_state(self, loaded: Loaded, hollow: int, expiration_ms: int) -> None:
        """Replay the old part's producer rows, then the tail's batches; each abort goes to
        the `.txnindex` of the segment holding its marker."""
        state = self._producer_state_manager()
        if state is None:
            return
        state.expiration_ms = expiration_ms
        start, end = self.log_start_offset, self.log_end_offset
        bases = [s.base_offset for s in self.segments]

        def replay(header: Any, marker: tuple[int, int] | None) -> None:
            abort = state._replay(header, marker)
            if abort is not None:
                segment = self.segments[max(0, bisect_right(bases, abort.last_offset) - 1)]
                segment.txn_index.append(abort)

        for _, blob in loaded.producers:
            header = batches_header(blob)
            if header.last_offset >= start:
                replay(header, (read_marker(blob) or (-1, -1)) if header.is_control else None)
        for segment in self.segments[hollow:]:
            for header, marker in _headers_between(segment, max(segment.base_offset, start),
                                                   end):
                replay(header, marker)
        state.update_map_end_offset(end)

    # -- the changes, committed ------------------------------------------------------------

    def append(self, records: bytes | bytearray | memoryview, *, leader_epoch: int, now_ms: int,
               origin: str = ORIGIN_CLIENT) -> AppendInfo:
        self._check_fenced()
        end = self.log_end_offset
        info = super().append(records, leader_epoch=leader_epoch, now_ms=now_ms, origin=origin)
        if self.log_end_offset > end:
            store = self.active.store
            written = store.read(store.size - info.size, info.size)  # type: ignore[attr-defined]
            self.writer.submit(Append(self.key, end, self.log_end_offset, batch_rows(written),
                                      self.fence_epoch))
            self.writer.after_commit(self._settler(self.log_end_offset))
        # A duplicate (idempotence) is acknowledged once its original is committed too.
        return _with_commit(info, self._commit)

    def _persist_leader_epochs(self) -> None:
        if getattr(self, "writer", None) is None:  # still being made
            return
        self._submit_statements([(
            "UPDATE akfak_partition SET leader_epochs = %s WHERE topic_id = %s AND partition = %s",
            (_epochs_text(self.epochs), *self.key))])

    def _persist_log_start(self, delete_below: int | None = None) -> None:
        statements = [("UPDATE akfak_partition SET log_start_offset = GREATEST(log_start_offset, %s)"
                       " WHERE topic_id = %s AND partition = %s", (self.log_start_offset, *self.key))]
        if delete_below is not None:
            statements.append(("DELETE FROM akfak_batch WHERE topic_id = %s AND partition = %s "
                               "AND base_offset < %s", (*self.key, delete_below)))
        self._submit_statements(statements)

    def _check_fenced(self) -> None:
        if self.writer.is_fenced(self.key, self.fence_epoch):
            raise NotLeaderOrFollower(f"This broker no longer leads {self.topic}-{self.partition}"
                                      f" (leader epoch {self.fence_epoch} is fenced)")

    def advance_log_start_offset(self, offset: int) -> int:
        before = self.log_start_offset
        start = super().advance_log_start_offset(offset)
        if start > before:
            self._persist_log_start()
        return start

    def _delete_old(self, predicate: Any, now_ms: int) -> int:
        deleted = super()._delete_old(predicate, now_ms)
        if deleted:
            self._persist_log_start(delete_below=self.segments[0].base_offset)
        return deleted

    def _remove_replaced(self, old: Sequence[LogSegment]) -> Deferred[None]:
        """A compaction swap: the rows of the replaced segments give way to the cleaned
        segment's batches, in one transaction; fires once it is committed."""
        new = next(s for s in self.segments if s.base_offset == old[0].base_offset)
        rows = batch_rows(new.store.read(0, new.size))
        self._submit_statements([(
            "DELETE FROM akfak_batch WHERE topic_id = %s AND partition = %s "
            "AND base_offset >= %s AND base_offset < %s",
            (*self.key, old[0].base_offset, old[-1].next_offset))], rows)
        super()._remove_replaced(old)
        self.forget_read_back()  # its rows are replaced
        self._uncommitted = {*getattr(self, "_uncommitted", ()), id(new)}

        def committed(result: object) -> object:
            self._uncommitted.discard(id(new))
            self.evict(everywhere=True)
            return result

        return self.writer.barrier().addBoth(committed)

    def flush(self) -> Deferred[None]:
        """Fires once everything appended so far is committed in PostgreSQL."""
        self._unflushed_messages = 0
        return self._committed()

    def _committed(self) -> Deferred[None]:
        settle = self._settler(self.log_end_offset)

        def committed(_: object) -> None:
            self._check_fenced()  # refused, not committed: the append is not acknowledged
            settle()

        return self.writer.barrier().addCallback(committed)

    def _settler(self, target: int) -> Callable[[], None]:
        """What follows the commit of everything up to `target`: the high watermark moves
        (unless the partition's appends were refused: a deposed leader's)."""

        def settle() -> None:
            if self.writer.is_fenced(self.key, self.fence_epoch):
                return
            self.recovery_point = max(self.recovery_point, target)
            self.evict()
            if self.committed_offset is not None and target > self.committed_offset:
                self.committed_offset = target
                if self.writer.on_commit is not None:  # long-polling fetches may read it now
                    self.writer.on_commit(self.topic, self.partition)

        return settle

    def delete_files(self) -> None:
        """The topic is deleted: so are its rows (the batches by cascade)."""
        if not self._abandoned:
            self.writer.submit(Statement(self.key, [(
                "DELETE FROM akfak_partition WHERE topic_id = %s AND partition = %s",
                self.key)]))
        self.forget_read_back()
        super().delete_files()

    def abandon(self) -> None:
        self.forget_read_back()
        super().abandon()
