"""The postgres storage provider: every log, the metadata log included, in PostgreSQL.

    --storage postgresql://USER@HOST:PORT/DB     (or akfak.storage=... in server.properties)

PostgreSQL holds the state (schema in pg_writer.py): one `akfak_partition` row per
partition (log start offset, next offset, the leader-epoch cache) and one `akfak_batch` row
per record batch, its bytes as the client sent them with the offsets assigned (base offset,
last offset, max timestamp, leader epoch and producer id as columns too).  The KRaft
metadata log (topics, configs, SCRAM credentials, ACLs, features) is one more partition,
`__cluster_metadata-0`, and the coordinators' `__consumer_offsets` / `__transaction_state`
are partitions like any other: all of akfak's state is in those two tables.

The broker in front of it works as with the memory provider, over a bounded cache: each log
is a `PartitionLog` whose memory segments hold its tail (pg_cached.py), the older segments
hollow and read back from the rows on demand (pg_tail.py: what is loaded, the read-back LRU).
Appends, reads of the tail, timestamp searches, retention and compaction run on the reactor
against that cache as they do in memory; every change is also handed to the `PgWriter`, which
commits it on a thread.  An append's `flushed` fires once its batches are committed, and
Produce answers (acks=1 or all) only then, so an acknowledged record is a committed one; the
coordinators' writes (offset commits, group and transaction state) wait the same way.  The
high watermark is the committed end.  Several brokers over one database: akfak/cluster.py
(each serves the partitions it leads, loaded with `load_rows` / `build_log` and fenced by
their leader epoch).

The partition log itself (how it is made from its rows, what it commits): pg_partition.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from akfak.config import BrokerConfig
from akfak.interfaces import ILogStorage
from akfak.log import pg_cluster, pg_tail
from akfak.log.batch import parse_header as batches_header
from akfak.log.checkpoints import METADATA_TOPIC_ID, MetaProperties
from akfak.log.config import LogConfig
from akfak.log.memory import MemoryPartitionLog
from akfak.log.metadata_log import (
    METADATA_LOG_CONFIG,
    METADATA_PARTITION,
    METADATA_TOPIC,
    MetadataLog,
)
from akfak.log.metadata_records import PartitionChangeRecord, PartitionRecord, RemoveTopicRecord
from akfak.log.partition import ORIGIN_RAFT, PartitionLog
from akfak.log.pg_cached import TailCache
from akfak.log.pg_partition import PostgresPartitionLog, batch_rows
from akfak.log.pg_tail import TAIL_SCHEMA, Loaded, ReadBack, ReadConnection
from akfak.log.pg_writer import SCHEMA, Key, PgWriter, Statement
from akfak.log.storage import BaseLogStorage, ConfigFor

# The partition log of pg_partition.py and its rows are importable here too.
__all__ = [
    "URL_PREFIXES",
    "PostgresLogStorage",
    "PostgresPartitionLog",
    "batch_rows",
    "is_postgres_url",
    "redacted",
]

log = Logger()

URL_PREFIXES = ("postgresql://", "postgres://")


def is_postgres_url(storage: str) -> bool:
    return storage.startswith(URL_PREFIXES)


def redacted(url: str) -> str:
    """The URL without its password, for the logs."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"


def _schema_ready(conn: Any) -> bool:
    """Whether the tables of this version exist (the last ones SCHEMA and TAIL_SCHEMA add)."""
    columns = conn.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND (table_name, column_name) IN (('akfak_partition', 'leader_epoch'), "
        "('akfak_batch', 'attributes'))").fetchone()
    index = conn.execute("SELECT to_regclass('akfak_batch_markers')").fetchone()
    broker = conn.execute("SELECT to_regclass('akfak_broker')").fetchone()
    return columns[0] == 2 and broker[0] is not None and index[0] is not None


@implementer(ILogStorage)
class PostgresLogStorage(BaseLogStorage):
    """Every log in PostgreSQL (see the module doc and ILogStorage)."""

    #: The high watermark of a partition is the end of what PostgreSQL committed (reads
    #: stop there).  The storage suites shared with the synchronous providers turn it off
    #: to check the cache's behaviour read-after-append (tests/log/conftest.py).
    committed_high_watermark = True

    def __init__(self, config: BrokerConfig, *, clock: Any = None) -> None:
        super().__init__(config, clock=clock)
        self.url = config.storage
        self.writer: PgWriter | None = None
        #: A cluster of brokers over this database (akfak/cluster.py), set by open_metadata:
        #: the registration and the cluster as the first tick read it.
        self.incarnation = uuid.uuid4()
        self.first_snapshot: pg_cluster.Snapshot | None = None
        #: The partitions' bounded cache (pg_cached.py): its budget, the read-back LRU.
        self.tail = TailCache(
            config.get_int("akfak.postgres.cache.bytes.per.partition", 4 << 20),
            ReadBack(config.get_int("akfak.postgres.readback.bytes", 64 << 20)),
            ReadConnection(self._connect),
            total=config.get_int("akfak.postgres.cache.bytes", 1 << 30),
            count=lambda: len(self._logs))

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    @property
    def _writer(self) -> PgWriter:
        if self.writer is None:
            raise RuntimeError("storage is not open")
        return self.writer

    def open_metadata(self) -> None:
        """Connect, create the tables if needed, load the cluster id and the metadata log
        (blocking: this is the start, before any listener, as the disk provider's recovery)."""
        conn = self._connect()
        self.writer = PgWriter(self._connect, conn, self.clock)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(7233)")  # two first starts at once
            # The DDL only when something is missing: its ALTERs lock the tables, which
            # would deadlock with the other brokers' writes when one restarts.
            if not _schema_ready(conn):
                conn.execute(SCHEMA)
                conn.execute(TAIL_SCHEMA)
            conn.execute("INSERT INTO akfak_cluster (name, value) VALUES ('cluster.id', %s) "
                         "ON CONFLICT DO NOTHING",
                         (MetaProperties.new(0, self.config.get("cluster.id")).cluster_id,))
            row = conn.execute("SELECT value FROM akfak_cluster WHERE name = 'cluster.id'"
                               ).fetchone()
        self._meta_properties = MetaProperties.new(self.config.node_id, row[0])
        loaded = self._load(conn, METADATA_TOPIC_ID)
        metadata = loaded.get((METADATA_TOPIC, METADATA_PARTITION))
        if metadata is None:
            metadata = PostgresPartitionLog.create_in(
                self._writer, METADATA_TOPIC, METADATA_PARTITION, METADATA_TOPIC_ID,
                METADATA_LOG_CONFIG, now_ms=self.now_ms(), reactor=self.clock)
        self._metadata = MetadataLog(metadata)
        self._join(conn, metadata)
        log.info("PostgreSQL storage at {url}: cluster {cluster}, metadata log of {n} offsets",
                 url=redacted(self.url), cluster=row[0], n=metadata.log_end_offset)

    def _join(self, conn: Any, metadata: PostgresPartitionLog) -> None:
        """Register this broker (a lease) and read the cluster once, taking the controller
        role if nobody live holds it; the metadata log catches up with what others wrote."""
        conn.execute("INSERT INTO akfak_partition (topic_id, partition, topic) VALUES "
                     "(%s, %s, %s) ON CONFLICT DO NOTHING",
                     (METADATA_TOPIC_ID, METADATA_PARTITION, METADATA_TOPIC))
        lease_ms = self.lease_ms
        pg_cluster.register(conn, self.config.node_id, self.incarnation, [], None, lease_ms)
        snapshot = pg_cluster.tick(conn, self.config.node_id, self.incarnation, [], lease_ms,
                                   metadata.log_end_offset)
        self.replicate(metadata, snapshot.tail)
        if snapshot.controller == self.config.node_id:
            metadata.fence_epoch = snapshot.controller_epoch
        self.first_snapshot = snapshot

    @property
    def lease_ms(self) -> int:
        return self.config.get_int("broker.session.timeout.ms", 9000)

    def replicate(self, partition_log: PostgresPartitionLog,
                  batches: Sequence[tuple[int, bytes]]) -> int:
        """Append batches another broker committed (the metadata log's tail) to the cache,
        their offsets and epochs kept, nothing written; returns how many were new."""
        added = 0
        for base, data in batches:
            if base < partition_log.log_end_offset:
                continue
            if base != partition_log.log_end_offset:
                raise RuntimeError(f"metadata log tail at {base}, the log ends at "
                                   f"{partition_log.log_end_offset}")
            header = batches_header(data)
            MemoryPartitionLog.append(partition_log, data, now_ms=self.now_ms(),
                                      leader_epoch=header.partition_leader_epoch,
                                      origin=ORIGIN_RAFT)
            added += 1
        partition_log.recovery_point = partition_log.log_end_offset
        return added

    def mirror_leadership(self, records: Sequence[Any], image: Any) -> None:
        """The controller's records, mirrored where the appends check them, in the same
        PostgreSQL transaction as the metadata batch (submitted in the same turn, fenced by
        the controller's epoch): each new or changed partition's leader and leader epoch,
        the rows of a deleted topic."""
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for record in records:
            if isinstance(record, RemoveTopicRecord):
                statements.append(("DELETE FROM akfak_partition WHERE topic_id = %s",
                                   (record.topic_id,)))
            elif isinstance(record, PartitionRecord | PartitionChangeRecord):
                topic = image.topic_by_id(record.topic_id)
                p = topic.partitions[record.partition_id] if topic is not None else None
                if p is None:
                    continue
                statements.append((
                    "INSERT INTO akfak_partition (topic_id, partition, topic, leader, "
                    "leader_epoch) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (topic_id, partition) "
                    "DO UPDATE SET leader = EXCLUDED.leader, leader_epoch = EXCLUDED.leader_epoch",
                    (record.topic_id, record.partition_id, topic.name, p.leader, p.leader_epoch)))
        # Delivered when the metadata batch commits (the same transaction): the other
        # brokers read the log at once.
        statements.append(pg_cluster.NOTIFY)
        if statements:
            metadata = self.metadata_log.log
            self._writer.submit(Statement(metadata.key, statements,  # type: ignore[attr-defined]
                                          epoch=metadata.fence_epoch))  # type: ignore[attr-defined]

    def allocate_producer_ids(self, count: int, at_least: int) -> int:
        """A block of producer ids from the database (a short round trip on the reactor, once
        per `count` ids: InitProducerId answers with one)."""
        with self._connect() as conn:
            return pg_cluster.allocate_producer_ids(conn, count, at_least)

    def load_logs(self, config_for: ConfigFor | None = None) -> None:
        """The logs this broker leads (by their rows: the others are other brokers')."""
        conn = self._writer._conn
        self._logs.update(self._load(conn, None, config_for))
        self.logs_loaded = True

    def _load(self, conn: Any, topic_id: uuid.UUID | None, config_for: ConfigFor | None = None
              ) -> dict[tuple[str, int], PostgresPartitionLog]:
        """Load the logs of one topic id (the metadata log), or of all other topics."""
        where, params = (("topic_id = %s", (topic_id,)) if topic_id is not None
                         else ("topic_id <> %s AND leader = %s",
                               (METADATA_TOPIC_ID, self.config.node_id)))
        partitions = conn.execute(
            "SELECT topic_id, partition, topic, log_start_offset, next_offset, leader_epochs, "
            f"leader_epoch FROM akfak_partition WHERE {where} ORDER BY topic, partition",
            params).fetchall()
        loaded: dict[tuple[str, int], PostgresPartitionLog] = {}
        for tid, partition, topic, log_start, next_offset, epochs, leader_epoch in partitions:
            if topic_id is not None:
                config = METADATA_LOG_CONFIG
            else:
                config = config_for(topic) if config_for is not None else self.default_log_config
            rows = self.load_rows(conn, (tid, partition), next_offset, topic,
                                  len(self._logs) + len(partitions))
            built = loaded[(topic, partition)] = self.build_log(
                topic, partition, tid, config, (log_start, next_offset, epochs, leader_epoch),
                rows, fenced=topic_id is None)
            if built.cached_from > built.log_start_offset:
                log.info("{tp}: offsets [{start}, {end}), {loaded} bytes loaded (cached from "
                         "offset {cached})", tp=f"{topic}-{partition}",
                         start=built.log_start_offset, end=built.log_end_offset,
                         loaded=rows.bytes_loaded, cached=built.cached_from)
        return loaded

    def load_rows(self, conn: Any, key: Key, next_offset: int, topic: str,
                  partitions: int | None = None) -> Loaded:
        """The rows a log is built from: its tail and what rebuilds the rest (pg_tail.load);
        the metadata log is cached whole (its records are replayed from memory).  With
        `partitions`, the tail is its share of the cache among that many logs (those loaded
        at start), else among the storage's logs and this one."""
        if topic == METADATA_TOPIC:
            return pg_tail.load(conn, key, next_offset, None, self.tail.chunk)
        budget = self.tail.per_partition(
            partitions if partitions is not None else len(self._logs) + 1)
        return pg_tail.load(conn, key, next_offset, budget, pg_tail.cache_chunk(budget))

    def build_log(self, topic: str, partition: int, topic_id: uuid.UUID, config: LogConfig,
                  row: tuple[int, int, str, int], loaded: Loaded, *,
                  fenced: bool = True) -> PostgresPartitionLog:
        """A log from its rows (load_rows), leading in the row's epoch."""
        log_start, next_offset, epochs, leader_epoch = row
        built = PostgresPartitionLog.load(
            self._writer, topic, partition, topic_id, config, log_start_offset=log_start,
            next_offset=next_offset, epochs=epochs, loaded=loaded,
            tail=None if topic == METADATA_TOPIC else self.tail, now_ms=self.now_ms(),
            expiration_ms=self.config.get_int("producer.id.expiration.ms"), reactor=self.clock)
        if fenced:
            built.fence_epoch = leader_epoch
        self._commit_high_watermark(built)
        return built

    def _commit_high_watermark(self, partition_log: PostgresPartitionLog) -> None:
        """The log's high watermark is the committed end from now on (what it has now is
        committed: loaded from the rows, or new)."""
        if self.committed_high_watermark and partition_log.topic != METADATA_TOPIC:
            partition_log.committed_offset = partition_log.log_end_offset

    def adopt(self, partition_log: PostgresPartitionLog) -> None:
        """Serve a log this broker now leads (built by build_log)."""
        self.release(partition_log.topic, partition_log.partition)
        self._logs[(partition_log.topic, partition_log.partition)] = partition_log

    def release(self, topic: str, partition: int) -> None:
        """Stop serving a log another broker leads now (its rows stay, its cache goes)."""
        partition_log = self._logs.pop((topic, partition), None)
        if partition_log is not None:
            partition_log.abandon()

    def create_log(self, topic: str, partition: int, topic_id: uuid.UUID,
                   config: LogConfig) -> PartitionLog:
        existing = self._logs.get((topic, partition))
        if existing is not None and existing.topic_id == topic_id:
            existing.config = config
            return existing
        if existing is not None:
            existing.delete_files()
        created = PostgresPartitionLog.create_in(self._writer, topic, partition, topic_id,
                                                 config, now_ms=self.now_ms(),
                                                 leader=self.config.node_id, reactor=self.clock,
                                                 tail=self.tail)
        self._commit_high_watermark(created)
        self._logs[(topic, partition)] = created
        return created

    def mark_stray(self, topic: str, partition: int) -> None:
        """A log the metadata does not know (its topic's deletion did not commit before a
        crash): its rows go."""
        partition_log = self._logs.pop((topic, partition), None)
        if partition_log is not None:
            log.info("Deleting the rows of {tp}: no topic of the metadata has them",
                     tp=f"{topic}-{partition}")
            partition_log.delete_files()

    def close(self) -> Deferred[Any]:
        self.closed = True
        closing = self.cleaner.stop().addCallback(lambda _: self._close_logs())
        if self.writer is not None:
            writer = self.writer
            closing.addBoth(lambda _: writer.close())
        closing.addBoth(lambda _: self.tail.connection.close())
        return closing.addCallback(lambda _: None)

    def abandon(self) -> None:
        self.closed = True
        self.cleaner.stop()
        for partition_log in self._all_logs():
            partition_log.abandon()
        if self.writer is not None:
            self.writer.abandon()
        self.tail.connection.close()
