"""Storage: partition logs in Apache Kafka's on-disk format, or in memory.

    storage = storage_for(config)          # DiskLogStorage or MemoryLogStorage
    controller = Controller(storage, config)   # akfak.metadata: opens storage (recovering it,
                                           # creating meta.properties), replays the metadata log
    log = storage.get_log("topic", 0)
    info = log.append(batch_bytes, leader_epoch=0, now_ms=now)
    result = log.read(offset, max_bytes)   # result.parts: whole batches
    yield storage.close()

Modules: `batch` (batch-header view), `records` (the record codec: internal
logs, timestamp search, compaction), `index` (.index/.timeindex), `segment`,
`partition` (the partition log), `config` (LogConfig, topic configs),
`checkpoints` (Kafka's small files), `metadata_records` and `metadata_log`
(KRaft metadata log), `producer_state` (idempotent producers), `cleaner`
(compaction), `disk`, `memory` and `postgres` (the providers; `pg_writer` commits the
last one's changes).
"""

from __future__ import annotations

from typing import Any

from akfak.config import BrokerConfig
from akfak.log.config import LogConfig
from akfak.log.partition import AppendInfo, PartitionLog, ReadResult, TimestampAndOffset
from akfak.log.storage import BaseLogStorage

__all__ = [
    "AppendInfo",
    "BaseLogStorage",
    "LogConfig",
    "PartitionLog",
    "ReadResult",
    "TimestampAndOffset",
    "storage_for",
]


def storage_for(config: BrokerConfig, *, clock: Any = None) -> BaseLogStorage:
    """The storage provider `config.storage` names ("disk", "memory" or a postgresql:// URL),
    not yet opened."""
    if config.storage == "memory":
        from akfak.log.memory import MemoryLogStorage

        return MemoryLogStorage(config, clock=clock)
    if config.storage == "disk":
        from akfak.log.disk import DiskLogStorage

        return DiskLogStorage(config, clock=clock)
    from akfak.log.postgres import PostgresLogStorage, is_postgres_url

    if is_postgres_url(config.storage):
        return PostgresLogStorage(config, clock=clock)
    raise ValueError(f"unknown storage {config.storage!r} (expected 'disk', 'memory' or "
                     f"postgresql://USER@HOST:PORT/DB)")
