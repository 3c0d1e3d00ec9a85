"""Disk storage in Apache Kafka's log-directory format.

```
<log.dir>/
  meta.properties                       version=1, cluster.id, node.id, directory.id
  .lock                                 held while open (as Kafka does)
  recovery-point-offset-checkpoint      0 / count / "topic partition offset" lines
  log-start-offset-checkpoint
  replication-offset-checkpoint         (high watermarks)
  cleaner-offset-checkpoint             the log cleaner's first dirty offset per compacted log
  .kafka_cleanshutdown                  written by a clean close, removed at open
  __cluster_metadata-0/                 the KRaft metadata log
  <topic>-<partition>/
    00000000000000000000.log  .index  .timeindex
    00000000000000000042.snapshot       producer state as of offset 42 (log/producer_state.py)
    leader-epoch-checkpoint
    partition.metadata                  version: 0 / topic_id: <base64url>
```

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
import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from akfak.config import BrokerConfig
from akfak.errors import KafkaStorageError
from akfak.interfaces import ILogStorage
from akfak.log.checkpoints import (
    CLEAN_SHUTDOWN,
    CLEANER_OFFSET_CHECKPOINT,
    LEADER_EPOCH_CHECKPOINT,
    LOG_START_OFFSET_CHECKPOINT,
    META_PROPERTIES,
    METADATA_TOPIC_ID,
    PARTITION_METADATA,
    RECOVERY_POINT_CHECKPOINT,
    REPLICATION_OFFSET_CHECKPOINT,
    MetaProperties,
    format_leader_epochs,
    format_offset_checkpoint,
    format_partition_metadata,
    fsync_dir,
    read_leader_epochs,
    read_offset_checkpoint,
    read_partition_metadata,
    write_atomically,
)
from akfak.log.config import LogConfig
from akfak.log.handles import PathSync, Syncable
from akfak.log.index import CorruptIndex, OffsetIndex, TimeIndex
from akfak.log.metadata_log import (
    METADATA_LOG_CONFIG,
    METADATA_PARTITION,
    METADATA_TOPIC,
    MetadataLog,
    latest_snapshot,
)
from akfak.log.partition import PartitionLog
from akfak.log.producer_state import DEFAULT_EXPIRATION_MS, ProducerStateManager
from akfak.log.segment import FileStore, LogSegment, segment_name
from akfak.log.storage import BaseLogStorage, ConfigFor, TopicPartition
from akfak.log.threads import defer_to_thread
from akfak.log.txn_index import TransactionIndex

log = Logger()

_SEGMENT_FILE = re.compile(r"^(\d{20})\.(log|index|timeindex|txnindex)$")
_PARTITION_DIR = re.compile(r"^(.+)-(\d+)$")
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


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def parse_partition_dir(name: str) -> TopicPartition | None:
    """(topic, partition) of a partition directory name, None for anything else."""
    if name.endswith(("-delete", "-stray", "-future")):
        return None
    match = _PARTITION_DIR.match(name)
    if match is None:
        return None
    return match[1], int(match[2])


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


@implementer(ILogStorage)
class DiskLogStorage(BaseLogStorage):
    """Partition logs in Kafka's log-directory format (see the module doc)."""

    def __init__(self, config: BrokerConfig, *, clock: Any = None,
                 directory: Path | None = None) -> None:
        super().__init__(config, clock=clock)
        self.directory = directory if directory is not None else config.data_dir
        self._lock_fd: int | None = None
        self._last_checkpoint_ms = 0
        self._clean = False
        #: checkpoint file -> the entries of offline partitions, written back unchanged.
        self._offline_checkpoints: dict[str, dict[TopicPartition, int]] = {}

    # -- open ----------------------------------------------------------------------------

    def open_metadata(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            self._open_metadata()
        except BaseException:
            self.abandon()
            raise

    def _open_metadata(self) -> None:
        now_ms = self.now_ms()
        self._meta_properties = self._load_meta_properties()
        marker = self.directory / CLEAN_SHUTDOWN
        self._clean = marker.exists()
        if self._clean:
            marker.unlink()
        directory = self.directory / partition_dir_name(METADATA_TOPIC, METADATA_PARTITION)
        if directory.is_dir():
            metadata: PartitionLog = DiskPartitionLog.load(
                directory, METADATA_TOPIC, METADATA_PARTITION, METADATA_LOG_CONFIG,
                now_ms=now_ms, clean=self._clean, reactor=self.clock)
        else:
            metadata = DiskPartitionLog.create(directory, METADATA_TOPIC, METADATA_PARTITION,
                                               METADATA_TOPIC_ID, METADATA_LOG_CONFIG,
                                               now_ms=now_ms, reactor=self.clock)
        self._metadata = MetadataLog(metadata, latest_snapshot(directory))
        self._last_checkpoint_ms = now_ms

    def load_logs(self, config_for: ConfigFor | None = None) -> None:
        try:
            self._load_logs(config_for)
        except BaseException:
            self.abandon()
            raise
        self.logs_loaded = True

    def _load_logs(self, config_for: ConfigFor | None) -> None:
        now_ms = self.now_ms()
        expiration_ms = self.config.get_int("producer.id.expiration.ms")
        recovery_points = read_offset_checkpoint(self.directory / RECOVERY_POINT_CHECKPOINT)
        log_starts = read_offset_checkpoint(self.directory / LOG_START_OFFSET_CHECKPOINT)
        self.cleaner.load_checkpoints(
            read_offset_checkpoint(self.directory / CLEANER_OFFSET_CHECKPOINT))
        for child in sorted(self.directory.iterdir()):
            if not child.is_dir():
                continue
            if child.name.endswith("-delete"):
                self._remove_in_background(child)
                continue
            parsed = parse_partition_dir(child.name)
            if parsed is None or parsed == (METADATA_TOPIC, METADATA_PARTITION):
                continue
            topic, partition = parsed
            config = config_for(topic) if config_for is not None else self.default_log_config
            try:
                self._logs[parsed] = DiskPartitionLog.load(
                    child, topic, partition, config, now_ms=now_ms,
                    recovery_point=recovery_points.get(parsed, 0),
                    log_start_offset=log_starts.get(parsed, 0), clean=self._clean,
                    reactor=self.clock, producer_id_expiration_ms=expiration_ms)
            except Exception as e:
                # Kafka takes the log dir offline; here just this partition, and the
                # broker serves the others.  Its checkpoint entries are kept for a restart.
                self.set_offline(topic, partition, f"cannot open {child}: {e!r}")
                for name, offsets in ((RECOVERY_POINT_CHECKPOINT, recovery_points),
                                      (LOG_START_OFFSET_CHECKPOINT, log_starts)):
                    if parsed in offsets:
                        self._offline_checkpoints.setdefault(name, {})[parsed] = offsets[parsed]

    def _lock(self) -> None:
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # flock catches a second opener in this process; lockf is what Java's tryLock takes.
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise KafkaStorageError(
                f"Failed to acquire lock on {self.directory}/.lock: another process or "
                f"storage instance is using this log directory") from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases both locks
            self._lock_fd = None

    def _load_meta_properties(self) -> MetaProperties:
        path = self.directory / META_PROPERTIES
        node_id = self.config.node_id
        configured_cluster = self.config.get("cluster.id")
        if path.exists():
            try:
                props, made_up = MetaProperties.parse(path.read_text(encoding="utf-8"))
            except (ValueError, KeyError) as e:
                raise KafkaStorageError(f"Cannot read {path}: {e}") from None
            if props.node_id != node_id:
                raise KafkaStorageError(
                    f"Stale node.id {props.node_id} in {path}: node.id is {node_id}")
            if configured_cluster and configured_cluster != props.cluster_id:
                raise KafkaStorageError(
                    f"Invalid cluster.id in {path}: found {props.cluster_id}, but the "
                    f"configuration says {configured_cluster}")
            if made_up:
                write_atomically(path, props.to_text())
            return props
        props = MetaProperties.new(node_id, configured_cluster)
        write_atomically(path, props.to_text())
        return props

    # -- partitions ----------------------------------------------------------------------

    def create_log(self, topic: str, partition: int, topic_id: uuid.UUID,
                   config: LogConfig) -> PartitionLog:
        if (topic, partition) in self.offline:
            # Never replace a directory that could not be opened: it may hold data.
            raise KafkaStorageError(f"Partition {topic}-{partition} is offline: "
                                    f"{self.offline[(topic, partition)]}")
        existing = self._logs.get((topic, partition))
        if existing is not None:
            assert isinstance(existing, DiskPartitionLog)
            if existing.topic_id is None:
                existing.set_topic_id(topic_id)
            if existing.topic_id == topic_id:
                existing.config = config
                return existing
            self.mark_stray(topic, partition)
        directory = self.directory / partition_dir_name(topic, partition)
        if directory.exists():
            self._rename_away(directory, "stray")
        created = DiskPartitionLog.create(directory, topic, partition, topic_id, config,
                                          now_ms=self.now_ms(), reactor=self.clock)
        self._logs[(topic, partition)] = created
        return created

    def delete_logs(self, topic: str) -> None:
        """Close the topic's logs, rename their directories `-delete`, remove them on a thread."""
        for partition_log in self.topic_logs(topic):
            assert isinstance(partition_log, DiskPartitionLog)
            del self._logs[(topic, partition_log.partition)]
            partition_log.abandon()
            self._remove_in_background(self._rename_away(partition_log.directory, "delete"))
        for key in [k for k in self.offline if k[0] == topic]:
            del self.offline[key]
            self._retries.pop(key, None)
            for offsets in self._offline_checkpoints.values():
                offsets.pop(key, None)
            directory = self.directory / partition_dir_name(*key)
            try:
                self._remove_in_background(self._rename_away(directory, "delete"))
            except OSError as e:
                log.error("Cannot remove {dir} of deleted topic {topic}: {e}",
                          dir=str(directory), topic=topic, e=e)

    def mark_stray(self, topic: str, partition: int) -> None:
        """Set aside a log the metadata does not know (Kafka renames it `-stray`)."""
        partition_log = self._logs.pop((topic, partition), None)
        if partition_log is None:
            return
        assert isinstance(partition_log, DiskPartitionLog)
        partition_log.abandon()
        log.warn("Setting aside stray log {dir}", dir=str(partition_log.directory))
        self._rename_away(partition_log.directory, "stray")

    def _rename_away(self, directory: Path, suffix: str) -> Path:
        target = directory.with_name(f"{directory.name}.{uuid.uuid4().hex}-{suffix}")
        directory.rename(target)
        return target

    def _remove_in_background(self, directory: Path) -> None:
        defer_to_thread(self.clock, shutil.rmtree, directory, True).addErrback(
            lambda f: log.failure("Removing {dir} failed", f, dir=str(directory)))

    # -- checkpoints ---------------------------------------------------------------------

    def _checkpoint_files(self) -> dict[str, str]:
        logs = self._logs
        offline = self._offline_checkpoints
        return {
            RECOVERY_POINT_CHECKPOINT: format_offset_checkpoint(
                {**offline.get(RECOVERY_POINT_CHECKPOINT, {}),
                 **{k: lg.recovery_point for k, lg in logs.items()}}),
            LOG_START_OFFSET_CHECKPOINT: format_offset_checkpoint(
                {**offline.get(LOG_START_OFFSET_CHECKPOINT, {}),
                 **{k: lg.log_start_offset for k, lg in logs.items()}}),
            REPLICATION_OFFSET_CHECKPOINT: format_offset_checkpoint(
                {k: lg.high_watermark for k, lg in logs.items()}),
        }

    def write_checkpoints(self) -> Deferred[None]:
        """Write Kafka's offset checkpoint files (durably, on a thread), then delete the
        producer snapshots they make unnecessary."""
        files = self._checkpoint_files()
        obsolete = self._obsolete_snapshots()
        directory = self.directory

        def write() -> None:
            for name, text in files.items():
                write_atomically(directory / name, text, fsync=True)
            _unlink_all(obsolete)

        return defer_to_thread(self.clock, write)

    def persist_cleaner_checkpoints(self) -> Deferred[None]:
        """Write cleaner-offset-checkpoint (durably, on a thread), as Kafka's cleaner does
        after each log it cleaned."""
        path = self.directory / CLEANER_OFFSET_CHECKPOINT
        text = format_offset_checkpoint(self.cleaner.checkpoint_entries())
        return defer_to_thread(self.clock, lambda: write_atomically(path, text, fsync=True))

    def _obsolete_snapshots(self) -> list[Path]:
        # Kafka's deleteSnapshotsAfterRecoveryPointCheckpoint, for every log.
        return [path for lg in self._all_logs() for path in lg.obsolete_snapshots()]

    def _checkpoints_due(self, now_ms: int) -> list[Deferred[Any]]:
        interval = self.config.get_int("log.flush.offset.checkpoint.interval.ms")
        if now_ms - self._last_checkpoint_ms < interval:
            return []
        self._last_checkpoint_ms = now_ms

        def failed(failure: Failure) -> None:
            # The old files stay whole (write_atomically); the next interval tries again.
            log.error("Cannot write the offset checkpoints in {dir}: {e}",
                      dir=str(self.directory), e=failure.getErrorMessage())

        return [self.write_checkpoints().addErrback(failed)]

    # -- close ---------------------------------------------------------------------------

    def close(self) -> Deferred[None]:
        """Flush every log, write the checkpoints and the clean-shutdown marker, unlock."""
        if self.closed:
            return succeed(None)
        self.closed = True
        directory = self.directory

        def flushed(_: object) -> Deferred[None]:
            files = self._checkpoint_files()
            obsolete = self._obsolete_snapshots()

            def write() -> None:
                for name, text in files.items():
                    write_atomically(directory / name, text, fsync=True)
                _unlink_all(obsolete)
                write_atomically(directory / CLEAN_SHUTDOWN, '{"version":0,"brokerEpoch":-1}',
                                 fsync=True)
                fsync_dir(directory)

            return defer_to_thread(self.clock, write)

        def unlock(result: object) -> object:
            self._unlock()
            return result

        # A cleaning round in progress stops at its next batch before the logs close.
        closing = self.cleaner.stop().addCallback(lambda _: self._close_logs())
        return closing.addCallback(flushed).addBoth(unlock)

    def abandon(self) -> None:
        """Close every file at once: no flush, no checkpoints (what a kill -9 leaves)."""
        self.closed = True
        self.cleaner.stop()
        for partition_log in self._all_logs():
            partition_log.abandon()
        self._unlock()


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
