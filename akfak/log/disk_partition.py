"""A partition log in its directory `<log.dir>/<topic>-<partition>/` (the whole log
directory, and the storage over it: disk.py).

At open every partition directory is loaded: segments whose index files are
missing or corrupt, and (unless the last shutdown was clean) every segment
from the one holding the recovery point on, are recovered: batches are
validated from the start, the torn tail (first incomplete or CRC-invalid
batch onwards) is cut off and both indexes are rebuilt.  Then the producer
state is loaded from the latest snapshot and the batch headers after it (Kafka's
rebuildProducerState); snapshots are written at each roll and at close, and those
older than the last two segments and the recovery point go after each
recovery-point checkpoint.

The log cleaner (cleaner.py) swaps a cleaned segment in as Kafka's replaceSegments
does, so that a crash at any point leaves a log that loads correctly: the cleaned
data is written and fsynced as `<base>.log.cleaned` (+ `.index.cleaned`,
`.timeindex.cleaned`), renamed to `.swap`, the old segments' files are renamed
`.deleted`, the `.swap` files renamed into place, then the `.deleted` files are
removed and the directory fsynced.  Loading applies Kafka's LogLoader rules first:
`.deleted` files go; `.cleaned` files go, and with them any `.swap` file at or above
the lowest `.cleaned` offset (an unfinished rename); the remaining `.swap` files
complete their swap: segment files in the offsets a swapped segment covers are
deleted and the `.swap` suffix dropped.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from akfak.errors import KafkaStorageError
from akfak.log.checkpoints import (
    LEADER_EPOCH_CHECKPOINT,
    PARTITION_METADATA,
    format_leader_epochs,
    format_partition_metadata,
    fsync_dir,
    read_leader_epochs,
    read_partition_metadata,
    write_atomically,
)
from akfak.log.config import LogConfig
from akfak.log.handles import PathSync, Syncable
from akfak.log.index import CorruptIndex, OffsetIndex, TimeIndex
from akfak.log.partition import PartitionLog
from akfak.log.producer_state import DEFAULT_EXPIRATION_MS, ProducerStateManager
from akfak.log.segment import FileStore, LogSegment, segment_name
from akfak.log.threads import defer_to_thread
from akfak.log.txn_index import TransactionIndex

# The disk provider's lines keep one namespace, whichever of its modules logs them.
log = Logger(namespace="akfak.log.disk")

_SEGMENT_FILE = re.compile(r"^(\d{20})\.(log|index|timeindex|txnindex)$")
#: Kafka's suffixes for a segment swap in progress (LogFileUtils).
CLEANED_SUFFIX = ".cleaned"
SWAP_SUFFIX = ".swap"
DELETED_SUFFIX = ".deleted"
#: Leftovers of an interrupted operation, safe to remove.
_LEFTOVER_SUFFIXES = (DELETED_SUFFIX, ".tmp")


def _offset_of(path: Path) -> int | None:
    """The base offset a segment file's name starts with."""
    prefix = path.name[:20]
    return int(prefix) if len(prefix) == 20 and prefix.isdigit() else None


def _with_suffix(path: Path, old: str, new: str) -> Path:
    name = path.name[: -len(old)] if old else path.name
    return path.with_name(name + new)


def change_file_suffixes(segment: LogSegment, old: str, new: str) -> None:
    """Rename every file of `segment` from suffix `old` to `new` (Kafka's
    changeFileSuffixes); open descriptors stay valid."""
    store = segment.store
    assert isinstance(store, FileStore)
    store.rename(_with_suffix(store.path, old, new))
    for index_file in segment.index_files():
        if index_file.path is not None:
            index_file.rename(_with_suffix(index_file.path, old, new))


class DiskPartitionLog(PartitionLog):
    """A partition log in `<log.dir>/<topic>-<partition>/`."""

    def __init__(self, directory: Path, topic: str, partition: int, topic_id: uuid.UUID | None,
                 config: LogConfig, *, now_ms: int, reactor: Any = None) -> None:
        self.directory = directory  # before the base class makes the producer state
        super().__init__(topic, partition, topic_id, config, now_ms=now_ms, reactor=reactor)
        self._dir_dirty = False
        #: leader-epoch-checkpoint could not be written (a full disk): the next flush retries.
        self._epochs_unwritten = False

    # -- creation and loading ------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path, topic: str, partition: int, topic_id: uuid.UUID | None,
               config: LogConfig, *, now_ms: int, reactor: Any = None) -> DiskPartitionLog:
        directory.mkdir(parents=True)
        partition_log = cls(directory, topic, partition, topic_id, config, now_ms=now_ms,
                            reactor=reactor)
        try:
            if topic_id is not None:
                partition_log.set_topic_id(topic_id)
            partition_log._add_segment(partition_log._new_segment(0, now_ms))
        except (OSError, KafkaStorageError) as e:
            # Nothing half-made stays behind (a full disk): creating it again starts afresh.
            partition_log.abandon()
            shutil.rmtree(directory, ignore_errors=True)
            raise KafkaStorageError(f"Cannot create {directory}: {e}") from e
        return partition_log

    @classmethod
    def load(cls, directory: Path, topic: str, partition: int, config: LogConfig, *,
             now_ms: int, recovery_point: int = 0, log_start_offset: int = 0,
             clean: bool = False, reactor: Any = None,
             producer_id_expiration_ms: int = DEFAULT_EXPIRATION_MS) -> DiskPartitionLog:
        """Open an existing partition directory, recovering what needs it (see module doc)."""
        topic_id = read_partition_metadata(directory / PARTITION_METADATA)
        partition_log = cls(directory, topic, partition, topic_id, config, now_ms=now_ms,
                            reactor=reactor)
        try:
            recovered_from = partition_log._load(now_ms=now_ms, recovery_point=recovery_point,
                                                 log_start_offset=log_start_offset, clean=clean)
            partition_log._load_producer_state(now_ms=now_ms, clean=clean,
                                               expiration_ms=producer_id_expiration_ms,
                                               recovered_from=recovered_from)
        except BaseException:
            partition_log.abandon()
            raise
        return partition_log

    def _load_producer_state(self, *, now_ms: int, clean: bool, expiration_ms: int,
                             recovered_from: int | None) -> None:
        """Kafka's LogLoader steps: drop stray snapshots, then load the latest one and
        replay the batch headers after it (after a crash, what recovery kept; the
        replay also relists the aborts in the `.txnindex` of recovered segments)."""
        state = self._producer_state_manager()
        if state is None:
            return
        state.expiration_ms = expiration_ms
        state.load_snapshot_files()
        state.remove_stray_snapshots(self._bases)
        state.rebuild(self.segments, self.log_start_offset, self.log_end_offset, clean=clean,
                      now_ms=now_ms, txn_index_from=recovered_from)
        if state.has_unsynced:
            self.flush().addErrback(self._log_flush_failure)  # fsyncs the new snapshots

    def _complete_interrupted_swaps(self) -> None:
        """Kafka's LogLoader passes over a crash in the middle of a segment swap
        (see the module doc); before the segments are opened."""
        cleaned: list[Path] = []
        swaps: list[Path] = []
        for path in self.directory.iterdir():
            if path.name.endswith(_LEFTOVER_SUFFIXES):
                path.unlink()
            elif path.name.endswith(CLEANED_SUFFIX):
                cleaned.append(path)
            elif path.name.endswith(SWAP_SUFFIX):
                swaps.append(path)
        if not cleaned and not swaps:
            return
        lowest_cleaned = min((o for p in cleaned if (o := _offset_of(p)) is not None),
                             default=None)
        valid: list[Path] = []
        for path in swaps:
            offset = _offset_of(path)
            if offset is None or (lowest_cleaned is not None and offset >= lowest_cleaned):
                log.info("Deleting {file}: its swap did not complete", file=str(path))
                path.unlink()
            else:
                valid.append(path)
        for path in cleaned:
            log.info("Deleting {file}: left by an unfinished cleaning", file=str(path))
            path.unlink()
        low = high = None
        for path in valid:
            base = _offset_of(path)
            if base is None or not path.name.endswith(".log" + SWAP_SUFFIX):
                continue
            following = _next_offset_of(path, base)
            low = base if low is None else min(low, base)
            high = following if high is None else max(high, following)
        if low is not None and high is not None:
            for path in self.directory.iterdir():
                match = _SEGMENT_FILE.match(path.name)
                if match is not None and low <= int(match[1]) < high:
                    log.info("Deleting {file}: compacted by a swap that completes now",
                             file=str(path))
                    path.unlink()
        for path in valid:
            log.info("Completing the swap of {file}", file=str(path))
            path.rename(_with_suffix(path, SWAP_SUFFIX, ""))

    def _load(self, *, now_ms: int, recovery_point: int, log_start_offset: int,
              clean: bool) -> int | None:
        """Open the segments, recovering those that need it; return the base offset of
        the first recovered segment (None when none was)."""
        self._complete_interrupted_swaps()
        bases: set[int] = set()
        other: dict[int, set[str]] = {}
        for path in self.directory.iterdir():
            match = _SEGMENT_FILE.match(path.name)
            if match is None:
                continue
            base = int(match[1])
            if match[2] == "log":
                bases.add(base)
            else:
                other.setdefault(base, set()).add(match[2])
        for base, kinds in other.items():
            if base not in bases:  # index files of a segment that is gone
                for kind in kinds:
                    (self.directory / f"{segment_name(base)}.{kind}").unlink()
        if not bases:
            self._add_segment(self._new_segment(max(0, log_start_offset), now_ms))
            self.log_start_offset = self.recovery_point = self.log_end_offset
            self.epochs = []
            return None

        segments: list[LogSegment] = []
        broken: set[int] = set()
        for base in sorted(bases):
            segment, ok = self._open_segment(base, now_ms)
            segments.append(segment)
            if not ok:
                broken.add(base)
        if not clean:
            floor = max([b for b in sorted(bases) if b <= recovery_point], default=min(bases))
            broken |= {b for b in bases if b >= floor}

        loaded: list[LogSegment] = []
        recovered_epochs: list[tuple[int, int]] = []
        first_recovered: int | None = None
        for i, segment in enumerate(segments):
            loaded.append(segment)
            if segment.base_offset not in broken:
                segment.load_state()
                continue
            truncated, epochs = segment.recover()
            segment.dirty = True
            if first_recovered is None:
                first_recovered = segment.base_offset
            recovered_epochs.extend(epochs)
            if truncated and i + 1 < len(segments):
                # Data after a torn batch cannot be trusted to follow on from it.
                for later in segments[i + 1 :]:
                    log.warn("Deleting segment {base} of {dir}: it follows a truncated segment",
                             base=later.base_offset, dir=str(self.directory))
                    later.delete()
                break
        self._set_segments(loaded)

        epochs = read_leader_epochs(self.directory / LEADER_EPOCH_CHECKPOINT)
        if first_recovered is not None:
            epochs = [(e, o) for e, o in epochs if o < first_recovered]
        for epoch, offset in recovered_epochs:
            if not epochs or epoch > epochs[-1][0]:
                epochs.append((epoch, offset))
        end = self.log_end_offset
        self.epochs = [(e, o) for e, o in epochs if o < end]

        self.log_start_offset = min(max(log_start_offset, self.segments[0].base_offset), end)
        self.recovery_point = end if clean else min(recovery_point, end)
        self._truncate_epochs_from_start(self.log_start_offset)
        self._persist_leader_epochs()
        return first_recovered

    def _open_segment(self, base: int, now_ms: int) -> tuple[LogSegment, bool]:
        """Open a segment's files; False when an index is missing or corrupt."""
        name = segment_name(base)
        store = FileStore(self.directory / f"{name}.log")
        ok = True
        index_path = self.directory / f"{name}.index"
        time_path = self.directory / f"{name}.timeindex"
        try:
            offset_index = OffsetIndex.load(base, index_path, store.size)
        except (FileNotFoundError, CorruptIndex) as e:
            log.warn("Rebuilding the offset index of segment {base} in {dir}: {e}", base=base,
                     dir=str(self.directory), e=e)
            offset_index, ok = OffsetIndex(base, index_path), False
        try:
            time_index = TimeIndex.load(base, time_path)
        except (FileNotFoundError, CorruptIndex) as e:
            log.warn("Rebuilding the time index of segment {base} in {dir}: {e}", base=base,
                     dir=str(self.directory), e=e)
            time_index, ok = TimeIndex(base, time_path), False
        txn_path = self.directory / f"{name}.txnindex"
        try:
            txn_index = TransactionIndex.load(base, txn_path)
        except CorruptIndex as e:
            log.warn("Rebuilding the transaction index of segment {base} in {dir}: {e}",
                     base=base, dir=str(self.directory), e=e)
            txn_index, ok = TransactionIndex(base, txn_path), False
        segment = LogSegment(base, store, offset_index, time_index,
                             index_interval_bytes=self.config.index_interval_bytes,
                             created_ms=now_ms, jitter_ms=self.config.segment_jitter_ms,
                             txn_index=txn_index)
        return segment, ok

    # -- provider hooks ------------------------------------------------------------------

    def _new_segment(self, base_offset: int, now_ms: int) -> LogSegment:
        name = segment_name(base_offset)
        paths = [self.directory / f"{name}.{kind}" for kind in ("log", "index", "timeindex")]
        offset_index = OffsetIndex(base_offset, paths[1])
        time_index = TimeIndex(base_offset, paths[2])
        store: FileStore | None = None
        try:
            store = FileStore(paths[0], create=True)
            offset_index.file.ensure_exists()
            time_index.file.ensure_exists()
        except (OSError, KafkaStorageError) as e:
            # No half-made segment: the roll is tried again at the next append.
            for opened in (store, offset_index.file, time_index.file):
                if opened is not None:
                    opened.close()
            for path in paths:
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
            raise KafkaStorageError(f"Cannot create segment {name} in {self.directory}: "
                                    f"{e}") from e
        self._dir_dirty = True
        return LogSegment(base_offset, store, offset_index, time_index,
                          index_interval_bytes=self.config.index_interval_bytes,
                          created_ms=now_ms, jitter_ms=self.config.segment_jitter_ms,
                          txn_index=TransactionIndex(base_offset,
                                                     self.directory / f"{name}.txnindex"))

    def _new_cleaned_segment(self, base_offset: int) -> LogSegment:
        name = segment_name(base_offset)
        paths = [self.directory / f"{name}.{kind}{CLEANED_SUFFIX}"
                 for kind in ("log", "index", "timeindex", "txnindex")]
        for path in paths:
            path.unlink(missing_ok=True)  # left by a round that stopped
        store = FileStore(paths[0], create=True)
        offset_index = OffsetIndex(base_offset, paths[1])
        time_index = TimeIndex(base_offset, paths[2])
        offset_index.file.ensure_exists()
        time_index.file.ensure_exists()
        return LogSegment(base_offset, store, offset_index, time_index,
                          index_interval_bytes=self.config.index_interval_bytes, created_ms=0,
                          txn_index=TransactionIndex(base_offset, paths[3]))

    def _sync_cleaned_segment(self, segment: LogSegment) -> None:
        # Kafka gives the cleaned segment the last modification time of the group's last
        # segment, so time-based retention treats it as the old ones.
        seconds = segment.last_modified_ms / 1000
        paths = [segment.store.path,  # type: ignore[attr-defined]
                 *(index_file.path for index_file in segment.index_files())]
        for path in paths:
            if path is not None and path.exists():  # a .txnindex only exists with aborts
                os.utime(path, (seconds, seconds))
        for target in segment.sync_targets():
            target.fsync()

    def _swap_files(self, new: LogSegment, old: Sequence[LogSegment]) -> None:
        change_file_suffixes(new, CLEANED_SUFFIX, SWAP_SUFFIX)
        for segment in old:
            change_file_suffixes(segment, "", DELETED_SUFFIX)
        change_file_suffixes(new, SWAP_SUFFIX, "")

    def _remove_replaced(self, old: Sequence[LogSegment]) -> Deferred[None]:
        for segment in old:
            segment.close()
        directory = self.directory

        def remove() -> None:
            for segment in old:
                segment.delete()  # the .deleted files
            with contextlib.suppress(FileNotFoundError):  # the topic was deleted meanwhile
                fsync_dir(directory)

        return defer_to_thread(self.reactor, remove)

    def _new_producer_state(self) -> ProducerStateManager:
        return ProducerStateManager(self.topic, self.partition, self.directory)

    def _persist_leader_epochs(self) -> None:
        if self.closed:
            return
        try:
            write_atomically(self.directory / LEADER_EPOCH_CHECKPOINT,
                             format_leader_epochs(self.epochs))
        except OSError as e:
            # Called after an append has been written: never fail it.  The next flush
            # tries again, and recovery after a crash derives the epochs from the batches.
            if not self._epochs_unwritten:
                log.error("Cannot write {path}: {e}; retried at the next flush",
                          path=str(self.directory / LEADER_EPOCH_CHECKPOINT), e=e)
            self._epochs_unwritten = True
        else:
            self._epochs_unwritten = False

    def _sync_extra_targets(self) -> list[Syncable]:
        if self._epochs_unwritten:
            self._persist_leader_epochs()
        state = self._producer_state_manager()
        targets: list[Syncable] = [PathSync(path, missing_ok=True)
                                   for path in (state.take_unsynced() if state else [])]
        if self._dir_dirty or targets:
            # New segment or snapshot files: their directory entries need an fsync too.
            self._dir_dirty = False
            targets.append(PathSync(self.directory))
        return targets

    def set_topic_id(self, topic_id: uuid.UUID) -> None:
        self.topic_id = topic_id
        write_atomically(self.directory / PARTITION_METADATA, format_partition_metadata(topic_id))


def _next_offset_of(path: Path, base: int) -> int:
    """The offset after the last whole batch of a segment file (Kafka's readNextOffset)."""
    store = FileStore(path)
    try:
        segment = LogSegment(base, store, OffsetIndex(base), TimeIndex(base),
                             index_interval_bytes=4096, created_ms=0)
        following = base
        for _pos, header in segment.scan_valid():
            following = header.next_offset
        return following
    finally:
        store.close()
