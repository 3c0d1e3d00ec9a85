"""What the postgres provider adds to the shared contract: what a new storage on the same
database loads is what the old one had (batches, log start, leader epochs, producer state,
compaction), a PostgreSQL restart only delays acknowledgements, and a second writer of a
partition is refused at the offset check rather than interleaving its batches."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater

from akfak.errors import KafkaStorageError
from akfak.log.config import LogConfig
from akfak.log.partition import PartitionLog
from akfak.log.postgres import PostgresLogStorage
from tests.log.conftest import T0, make_config
from tests.log.test_cleaner import NOW, compacted_log, fill, latest, stored
from tests.log.test_producer_state import batch
from tests.postgres import PostgresServer
from tests.recordbatch import make_batch


def open_pg(url: str, clock: Clock) -> PostgresLogStorage:
    config = make_config(Path("/nonexistent"))  # nothing is written there
    config.storage = url
    storage = PostgresLogStorage(config, clock=clock)
    storage.open()
    return storage


def open_small_cache(url: str, clock: Clock) -> PostgresLogStorage:
    """A storage that caches 64 KiB per partition and reads back into 100 KB at most."""
    config = make_config(Path("/nonexistent"), akfak_postgres_cache_bytes_per_partition=65536,
                         akfak_postgres_readback_bytes=100_000)
    config.storage = url
    storage = PostgresLogStorage(config, clock=clock)
    storage.open()
    return storage


def one(value: bytes) -> bytes:
    return make_batch([(None, value, None, T0)])


def read_all(log: PartitionLog) -> bytes:
    return b"".join(log.read(log.log_start_offset, 1 << 26).parts)  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_a_new_storage_loads_what_was_committed(postgres: PostgresServer,
                                                      clock: Clock) -> None:
    url = postgres.new_schema()
    storage = open_pg(url, clock)
    config = LogConfig.from_broker(storage.config, {"segment.bytes": "2048"})
    log = storage.create_log("t", 0, uuid.uuid4(), config)
    for i in range(40):
        log.append(make_batch([(b"k", b"v%d" % i + b"." * 100, None, T0 + i)]),
                   leader_epoch=i // 10, now_ms=T0 + i)
    log.append(batch(7, 0, 0, 3), leader_epoch=4, now_ms=T0)  # an idempotent producer
    await log.flush()  # DeleteRecords goes up to the high watermark: the committed end
    log.advance_log_start_offset(12)
    log.run_retention(T0)  # the segments below offset 12 go, with their rows
    await log.flush()
    data, start, epochs = read_all(log), log.log_start_offset, list(log.epochs)
    assert len(log.segments) > 1 and log.segments[0].base_offset > 0
    await storage.close()

    again = open_pg(url, clock)
    loaded = again.get_log("t", 0)
    assert loaded is not None
    assert (read_all(loaded), loaded.log_start_offset, loaded.epochs) == (data, start, epochs)
    assert loaded.log_end_offset == 43 and loaded.end_offset_for_epoch(3) == (3, 40)
    # The producer's sequence came back: its retry is recognised, its next batch goes on.
    assert loaded.append(batch(7, 0, 0, 3), leader_epoch=6, now_ms=T0).base_offset == 40
    assert loaded.append(batch(7, 0, 3, 1), leader_epoch=6, now_ms=T0).base_offset == 43
    await again.close()


@pytest_twisted.ensureDeferred
async def test_compaction_is_committed(postgres: PostgresServer, clock: Clock) -> None:
    url = postgres.new_schema()
    storage = open_pg(url, clock)
    log = compacted_log(storage)
    fill(log, 30)
    await log.flush()  # the cleaner cleans below the high watermark: the committed end
    assert await storage.run_cleaner(NOW) == 1
    cleaned = stored(log)
    assert len(cleaned) < 90
    await storage.close()
    again = open_pg(url, clock)
    loaded = again.get_log("t", 0)
    assert loaded is not None and stored(loaded) == cleaned
    assert latest(stored(loaded)) == latest(cleaned)
    await again.close()


@pytest_twisted.ensureDeferred
async def test_a_postgres_restart_delays_the_acknowledgement(
        postgres: PostgresServer, clock: Clock, log_events: list[dict[str, Any]]) -> None:
    url = postgres.new_schema()
    storage = open_pg(url, clock)
    assert storage.writer is not None
    storage.writer.retry_delay = 0.2
    log = storage.create_log("t", 0, uuid.uuid4(), storage.default_log_config)
    await log.append(one(b"before"), leader_epoch=0, now_ms=T0).settled()
    await deferLater(reactor, 0, postgres.restart)  # the writer's connection is cut
    acked = log.append(one(b"after"), leader_epoch=0, now_ms=T0).settled()
    assert acked is not None
    # not committed yet: no consumer may read it (the high watermark is the committed end)
    assert (log.log_end_offset, log.high_watermark) == (2, 1)
    assert log.read(1, 1 << 20).parts == []
    await acked  # committed once the writer has reconnected
    assert log.high_watermark == 2
    said = [e.get("log_format", "") for e in log_events]
    assert any("PostgreSQL is unavailable" in f for f in said)
    assert any("PostgreSQL is available again" in f for f in said)
    await storage.close()
    again = open_pg(url, clock)
    assert again.get_log("t", 0).log_end_offset == 2  # type: ignore[union-attr]
    await again.close()


@pytest_twisted.ensureDeferred
async def test_the_high_watermark_is_the_committed_end(postgres: PostgresServer,
                                                       clock: Clock) -> None:
    storage = open_pg(postgres.new_schema(), clock)
    assert storage.writer is not None
    woken: list[tuple[str, int]] = []
    storage.writer.on_commit = lambda topic, partition: woken.append((topic, partition))
    log = storage.create_log("t", 0, uuid.uuid4(), storage.default_log_config)
    log.append(one(b"a"), leader_epoch=0, now_ms=T0)
    info = log.append(one(b"b"), leader_epoch=0, now_ms=T0)
    assert (log.log_end_offset, log.high_watermark, log.last_stable_offset) == (2, 0, 0)
    assert log.read(0, 1 << 20).parts == []  # below the log end: empty, not out of range
    await info.settled()
    assert log.high_watermark == 2 and woken and woken[-1] == ("t", 0)
    assert log.read(0, 1 << 20).next_offset == 2
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_a_second_writer_is_refused(postgres: PostgresServer, clock: Clock) -> None:
    url = postgres.new_schema()
    first = open_pg(url, clock)
    log = first.create_log("t", 0, uuid.uuid4(), first.default_log_config)
    await log.append(one(b"a"), leader_epoch=0, now_ms=T0).settled()
    second = open_pg(url, clock)
    other = second.get_log("t", 0)
    assert other is not None
    await other.append(one(b"b"), leader_epoch=0, now_ms=T0).settled()
    # The first storage still believes offset 1 is next: PostgreSQL says otherwise.
    refused = log.append(one(b"c"), leader_epoch=0, now_ms=T0).settled()
    assert refused is not None
    try:
        await refused
    except KafkaStorageError as e:
        assert "next offset is 2" in str(e)
    else:
        raise AssertionError("the conflicting append was acknowledged")
    first.abandon()
    await second.close()


@pytest_twisted.ensureDeferred
async def test_a_metadata_commit_notifies_the_listening_brokers(postgres: PostgresServer,
                                                                clock: Clock) -> None:
    """What the cluster's brokers LISTEN for (akfak/cluster.py): the controller's metadata
    commits NOTIFY in their transaction, so the others read the log at once."""
    import threading

    from akfak.log import pg_cluster

    storage = open_pg(postgres.new_schema(), clock)
    assert storage.writer is not None
    notified = threading.Event()
    stopped = threading.Event()
    listening = threading.Thread(target=pg_cluster.listen, daemon=True,
                                 args=(storage._connect, notified.set, stopped.is_set))
    listening.start()
    try:
        await deferLater(reactor, 0.5, lambda: None)  # LISTEN is registered by then
        assert not notified.is_set()
        storage.mirror_leadership([], None)  # what Controller._commit adds to a metadata batch
        await storage.writer.barrier()
        for _ in range(40):
            if notified.is_set():
                break
            await deferLater(reactor, 0.05, lambda: None)
        assert notified.is_set()
    finally:
        stopped.set()
        listening.join(5)
        await storage.close()


@pytest_twisted.ensureDeferred
async def test_a_tiny_cache_loads_the_tail_and_reads_the_rest_back(postgres: PostgresServer,
                                                                   clock: Clock) -> None:
    """With a cache of 64 KiB, a 300 KiB log opens with only its tail in memory; reads,
    the producer state (a retry of an old batch, an open transaction that began below the
    tail), old aborted transactions and timestamp searches are served from the rows."""
    from akfak.log.pg_cached import is_hollow
    from tests.log.test_transactions_log import marker

    url = postgres.new_schema()
    storage = open_pg(url, clock)
    log = storage.create_log("t", 0, uuid.uuid4(), storage.default_log_config)
    log.append(batch(5, 0, 0, 3), leader_epoch=0, now_ms=T0)  # offsets 0-2, idempotent
    log.append(batch(6, 0, 0, 2, transactional=True), leader_epoch=0, now_ms=T0)  # 3-4
    marker(log, 6, 0, commit=False)  # 5: aborts 3-4
    log.append(batch(8, 0, 0, 1, transactional=True), leader_epoch=0, now_ms=T0)  # 6: open
    for i in range(300):
        log.append(make_batch([(None, b"%d" % i + b"." * 1000, None, T0 + 1000 + i)]),
                   leader_epoch=1, now_ms=T0 + i)
    await log.flush()
    data, end = read_all(log), log.log_end_offset
    await storage.close()

    again = open_small_cache(url, clock)
    loaded = again.get_log("t", 0)
    assert loaded is not None and loaded.log_end_offset == end
    cached = [s for s in loaded.segments if not is_hollow(s)]
    assert is_hollow(loaded.segments[0]) and sum(s.size for s in cached) <= 65536
    assert loaded.cached_from > 100  # type: ignore[attr-defined]
    # The transaction of producer 8 is open since offset 6: the last stable offset.
    assert loaded.last_stable_offset == 6
    assert [(a.producer_id, a.first_offset, a.last_offset)
            for a in loaded.collect_aborted(0, 10)] == [(6, 3, 5)]
    prepared = loaded.prepare_read(0, 1 << 20)
    assert prepared is not None
    await prepared
    queries = again.tail.readback.queries
    assert read_all(loaded) == data and again.tail.readback.queries == queries  # no more
    assert loaded.prepare_read(end - 1, 1 << 20) is None  # the tail: nothing to wait for
    # A consumer catching up, 16 KiB a fetch: one query each, the read-back LRU bounded.
    loaded.forget_read_back()  # type: ignore[attr-defined]
    offset, queries, got = 0, again.tail.readback.queries, b""
    while offset < loaded.cached_from:  # type: ignore[attr-defined]
        waiting = loaded.prepare_read(offset, 16384)
        if waiting is not None:
            await waiting
        result = loaded.read(offset, 16384)
        got += b"".join(result.parts)  # type: ignore[arg-type]
        offset = result.next_offset
        assert again.tail.readback.size <= 100_000 + 16384 + 2000
    assert data.startswith(got) and len(got) > 200_000
    assert again.tail.readback.queries - queries <= len(got) // 15000
    found = loaded.offset_for_timestamp(T0 + 1000 + 10)
    assert found is not None and found.offset == 17
    latest_found = loaded.max_timestamp()
    assert latest_found is not None and latest_found.offset == end - 1
    # A retry of the old batch of producer 5 is recognised; its next one goes on.
    assert loaded.append(batch(5, 0, 0, 3), leader_epoch=1, now_ms=T0).base_offset == 0
    assert loaded.append(batch(5, 0, 3, 1), leader_epoch=1, now_ms=T0).base_offset == end
    # DeleteRecords and retention below the tail: hollow segments and their rows go.
    await loaded.flush()
    segments = len(loaded.segments)
    loaded.advance_log_start_offset(120)
    assert loaded.run_retention(T0) > 0 and len(loaded.segments) < segments
    await loaded.flush()
    first = loaded.segments[0].base_offset
    assert 0 < first <= 120 and loaded.log_start_offset == 120

    def oldest(conn: Any) -> int:
        return int(conn.execute("SELECT min(base_offset) FROM akfak_batch").fetchone()[0])

    assert again.tail.connection.run(oldest) == first
    result = loaded.read(120, 1 << 20)
    assert result.first_offset == 120 and result.next_offset == end + 1
    await again.close()
    third = open_pg(url, clock)
    reopened = third.get_log("t", 0)
    assert reopened is not None and reopened.log_start_offset == 120
    assert b"".join(reopened.read(120, 1 << 20).parts) == b"".join(result.parts)
    await third.close()


@pytest_twisted.ensureDeferred
async def test_a_prepared_read_is_held_for_its_read(postgres: PostgresServer,
                                                    clock: Clock) -> None:
    """Two partitions read back through a cache smaller than both prepared reads: the
    second pushes the first out of the LRU, yet the first's read needs no query, as its
    log held it (until the end of that reactor turn); a prepared read nobody takes is let
    go after HOLD_SECONDS.  read_back_bytes says what a read would take from PostgreSQL."""
    from akfak.log.pg_cached import HOLD_SECONDS

    url = postgres.new_schema()
    storage = open_pg(url, clock)
    for p in (0, 1):
        log = storage.create_log("t", p, uuid.uuid4(), storage.default_log_config)
        for i in range(200):
            log.append(one(b"%d" % i + b"." * 1000), leader_epoch=0, now_ms=T0)
        await log.flush()
    await storage.close()

    again = open_small_cache(url, clock)
    first, second = again.get_log("t", 0), again.get_log("t", 1)
    assert first is not None and second is not None
    lru = again.tail.readback
    wanted = first.read_back_bytes(0, 80_000)
    assert 60_000 < wanted <= 80_000  # old enough: from the hollow segments' sizes
    assert first.read_back_bytes(first.log_end_offset - 1, 80_000) == 0  # the cached tail
    for log in (first, second):
        waiting = log.prepare_read(0, 80_000)
        assert waiting is not None
        await waiting
    assert lru.queries == 2 and lru.size <= 100_000  # the first run left the LRU
    assert first.read_back_bytes(0, 80_000) == 0  # held: nothing more to read
    result = first.read(0, 80_000)
    assert result.first_offset == 0 and result.size > 60_000
    assert first.read(result.next_offset, 1000).size > 0  # on from there, same turn
    assert lru.queries == 2 and lru.unprepared == 0
    clock.advance(0)  # the turn is over: the run is let go
    assert first.read_back_bytes(0, 80_000) > 0
    # The second's run, prepared and never read, is held HOLD_SECONDS, then let go.
    waiting = first.prepare_read(0, 80_000)  # pushes the second's run out of the LRU
    assert waiting is not None
    await waiting
    assert second.read_back_bytes(0, 80_000) == 0
    clock.advance(HOLD_SECONDS)
    assert second.read_back_bytes(0, 80_000) > 0
    await again.close()


@pytest_twisted.ensureDeferred
async def test_many_partitions_share_the_cache(postgres: PostgresServer, clock: Clock) -> None:
    """akfak.postgres.cache.bytes bounds the memory segments of all partitions together:
    with 256 KiB for 16 partitions, each caches about its share (the 64 KiB floor here),
    not the 4 MiB per partition it may have alone; what left the cache reads back whole,
    and a storage opened again loads only about that share of each."""
    from akfak.log.pg_cached import is_hollow

    def cached(log: PartitionLog) -> int:
        return sum(s.size for s in log.segments if not is_hollow(s))

    url = postgres.new_schema()
    config = make_config(Path("/nonexistent"), akfak_postgres_cache_bytes=256 * 1024)
    config.storage = url
    storage = PostgresLogStorage(config, clock=clock)
    storage.open()
    logs = [storage.create_log("t", p, uuid.uuid4(), storage.default_log_config)
            for p in range(16)]
    assert storage.tail.per_partition() == 64 * 1024
    for i in range(200):
        for log in logs:
            log.append(one(b"%d" % i + b"." * 1000), leader_epoch=0, now_ms=T0)
        if i % 20 == 19:
            await logs[-1].flush()  # one writer: everything before is committed too
    await logs[-1].flush()
    for log in logs:
        log.evict()  # type: ignore[attr-defined]
        assert log.size_in_bytes > 200_000
        # the budget, plus the active segment (a chunk of 64 KiB) rolling over it
        assert cached(log) <= 2 * 64 * 1024 + 2048, cached(log)
    data = read_all(logs[3])
    await storage.close()

    again = PostgresLogStorage(config, clock=clock)
    again.open()
    reopened = [again.get_log("t", p) for p in range(16)]
    assert all(log is not None and cached(log) <= 64 * 1024 + 2048 for log in reopened)
    waiting = reopened[3].prepare_read(0, 1 << 26)  # type: ignore[union-attr]
    if waiting is not None:
        await waiting
    assert read_all(reopened[3]) == data  # type: ignore[arg-type]
    await again.close()
