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
    00000000000000000042.snapshot       producer state as of offset 42 (log/producer_snapshots.py)
    leader-epoch-checkpoint
    partition.metadata                  version: 0 / topic_id: <base64url>
```

How a partition directory is loaded (and recovered after a crash), and how the log
cleaner's segment swaps survive one: disk_partition.py.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
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
    LOG_START_OFFSET_CHECKPOINT,
    META_PROPERTIES,
    METADATA_TOPIC_ID,
    RECOVERY_POINT_CHECKPOINT,
    REPLICATION_OFFSET_CHECKPOINT,
    MetaProperties,
    format_offset_checkpoint,
    fsync_dir,
    read_offset_checkpoint,
    write_atomically,
)
from akfak.log.config import LogConfig
from akfak.log.disk_partition import (
    CLEANED_SUFFIX,
    DELETED_SUFFIX,
    SWAP_SUFFIX,
    DiskPartitionLog,
    change_file_suffixes,
)
from akfak.log.metadata_log import (
    METADATA_LOG_CONFIG,
    METADATA_PARTITION,
    METADATA_TOPIC,
    MetadataLog,
    latest_snapshot,
)
from akfak.log.partition import PartitionLog
from akfak.log.storage import BaseLogStorage, ConfigFor, TopicPartition
from akfak.log.threads import defer_to_thread

# The partition log of disk_partition.py and its file suffixes are importable here too.
__all__ = [
    "CLEANED_SUFFIX",
    "DELETED_SUFFIX",
    "SWAP_SUFFIX",
    "DiskLogStorage",
    "DiskPartitionLog",
    "change_file_suffixes",
    "parse_partition_dir",
    "partition_dir_name",
]

log = Logger()

_PARTITION_DIR = re.compile(r"^(.+)-(\d+)$")


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
