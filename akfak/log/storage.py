"""What the disk and memory storage providers share: the registry of logs and the timers' work."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.config import BrokerConfig
from akfak.errors import KafkaStorageError
from akfak.log.checkpoints import MetaProperties
from akfak.log.cleaner import LogCleaner
from akfak.log.config import LogConfig
from akfak.log.metadata_log import MetadataLog
from akfak.log.partition import PartitionLog
from akfak.log.threads import SlicedWork

log = Logger()

TopicPartition = tuple[str, int]
#: The LogConfig of a topic, by name (from the metadata image).
ConfigFor = Callable[[str], LogConfig]


class BaseLogStorage:
    """The registry of partition logs; subclasses create, load and delete them."""

    def __init__(self, config: BrokerConfig, *, clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.config = config
        self.clock = clock
        self.default_log_config = LogConfig.from_broker(config)
        self._logs: dict[TopicPartition, PartitionLog] = {}
        self._metadata: MetadataLog | None = None
        self._meta_properties: MetaProperties | None = None
        self.closed = False
        #: Whether `load_logs` has run (the partition logs are known).
        self.logs_loaded = False
        #: Compaction of the logs whose cleanup.policy contains compact (see cleaner.py).
        self.cleaner = LogCleaner(self)
        #: segments retention has deleted since the broker started (metrics)
        self.segments_deleted = 0
        #: Partition logs that could not be opened or created, with why: they answer
        #: KAFKA_STORAGE_ERROR (Kafka's answer for an offline replica) until a restart.
        self.offline: dict[TopicPartition, str] = {}
        #: Offline partitions whose log creation is retried (see `set_offline`).
        self._retries: dict[TopicPartition, Callable[[], None]] = {}
        #: Disk work of large CreateTopics / CreatePartitions, run in bounded slices.
        self.slices = SlicedWork(clock)

    # -- opening: the metadata log first, then the partition logs with their topic configs

    def open(self, config_for: ConfigFor | None = None) -> None:
        """Open everything.  `config_for(topic)` gives each log its LogConfig (default:
        the broker's defaults); the Controller instead opens the metadata log, replays it,
        and then loads the logs with the topic configs it found."""
        self.open_metadata()
        self.load_logs(config_for)

    def open_metadata(self) -> None:
        """Open the directory (meta.properties, lock) and the metadata log."""
        raise NotImplementedError

    def load_logs(self, config_for: ConfigFor | None = None) -> None:
        """Load (and recover) every partition log."""
        self.logs_loaded = True

    @property
    def metadata_opened(self) -> bool:
        return self._metadata is not None

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    @property
    def meta_properties(self) -> MetaProperties:
        if self._meta_properties is None:
            raise RuntimeError("storage is not open")
        return self._meta_properties

    @property
    def metadata_log(self) -> MetadataLog:
        if self._metadata is None:
            raise RuntimeError("storage is not open")
        return self._metadata

    def get_log(self, topic: str, partition: int) -> PartitionLog | None:
        return self._logs.get((topic, partition))

    def is_offline(self, topic: str, partition: int) -> bool:
        return (topic, partition) in self.offline

    def set_offline(self, topic: str, partition: int, reason: str,
                    retry: Callable[[], None] | None = None) -> None:
        """Record a partition whose log cannot be used (one ERROR line says why).

        `retry` (a log that could not be created, e.g. on a full disk) makes it offline
        only until `retry()` succeeds: it is tried every second (see `retry_offline`)."""
        until = "until its log can be created" if retry is not None else "until a restart"
        log.error("Partition {tp} is offline (KAFKA_STORAGE_ERROR {until}): {reason}",
                  tp=f"{topic}-{partition}", until=until, reason=reason)
        self.offline[(topic, partition)] = reason
        if retry is not None:
            self._retries[(topic, partition)] = retry

    def retry_offline(self) -> None:
        """Try again to create the logs that could not be created."""
        for key, retry in list(self._retries.items()):
            if self._retries.get(key) is not retry or self.closed:
                continue
            del self._retries[key]
            reason = self.offline.pop(key)
            try:
                retry()
            except Exception as e:
                self.offline[key] = reason
                self._retries[key] = retry
                log.debug("Creating the log of {tp} failed again: {e}", tp=f"{key[0]}-{key[1]}",
                          e=e)
            else:
                log.info("Partition {tp} is online: its log was created",
                         tp=f"{key[0]}-{key[1]}")

    def logs(self) -> Iterator[PartitionLog]:
        return iter(list(self._logs.values()))

    def topic_logs(self, topic: str) -> list[PartitionLog]:
        return sorted((lg for (t, _), lg in self._logs.items() if t == topic),
                      key=lambda lg: lg.partition)

    def create_log(self, topic: str, partition: int, topic_id: uuid.UUID,
                   config: LogConfig) -> PartitionLog:
        raise NotImplementedError

    def delete_logs(self, topic: str) -> None:
        """Delete the topic's logs (memory and postgres: their data goes at once)."""
        for partition_log in self.topic_logs(topic):
            partition_log.delete_files()
            del self._logs[(topic, partition_log.partition)]

    def mark_stray(self, topic: str, partition: int) -> None:
        """Set aside a log the metadata does not know."""
        raise NotImplementedError

    def reconfigure(self, topic: str, config: LogConfig) -> None:
        """Give every partition of `topic` a new LogConfig (after AlterConfigs)."""
        for partition_log in self.topic_logs(topic):
            partition_log.config = config

    def run_retention(self, now_ms: int) -> int:
        deleted = 0
        for partition_log in self.logs():
            try:
                deleted += partition_log.run_retention(now_ms)
            except Exception:
                log.failure("Retention of {log} failed", log=partition_log)
        self.segments_deleted += deleted
        return deleted

    def run_cleaner(self, now_ms: int) -> Deferred[int]:
        """One pass of the log cleaner (the broker runs it every log.cleaner.backoff.ms);
        fires with how many logs were cleaned.  Nothing when log.cleaner.enable is false."""
        return self.cleaner.run(now_ms)

    def persist_cleaner_checkpoints(self) -> Deferred[None]:
        """Keep the cleaner's first dirty offsets (disk: cleaner-offset-checkpoint)."""
        return succeed(None)

    def remove_expired_producers(self, now_ms: int) -> int:
        """Forget, in every log, producers idle for producer.id.expiration.ms (Kafka's
        periodic check, every producer.id.expiration.check.interval.ms); return how many."""
        expiration_ms = self.config.get_int("producer.id.expiration.ms")
        removed = 0
        for partition_log in self.logs():
            removed += partition_log.remove_expired_producers(now_ms, expiration_ms)
        return removed

    def flush_due(self, now_ms: int) -> Deferred[Any]:
        self.retry_offline()
        # A failed fsync was logged by its log (one line); the next flush tries again.
        flushes = [d.addErrback(_logged_storage_error) for lg in self._all_logs()
                   if (d := lg.flush_due(now_ms)) is not None]
        flushes.extend(self._checkpoints_due(now_ms))
        if not flushes:
            return succeed(None)
        return gatherResults(flushes, consumeErrors=True).addCallback(lambda _: None)

    def _checkpoints_due(self, now_ms: int) -> list[Deferred[Any]]:
        return []

    def _all_logs(self) -> list[PartitionLog]:
        logs = list(self._logs.values())
        if self._metadata is not None:
            logs.append(self._metadata.log)
        return logs

    def _close_logs(self) -> Deferred[Any]:
        closing = [lg.close() for lg in self._all_logs()]
        return gatherResults(closing, consumeErrors=True) if closing else succeed([])


def _logged_storage_error(failure: Failure) -> Failure | None:
    return None if failure.check(KafkaStorageError) else failure
