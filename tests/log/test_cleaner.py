"""The log cleaner (compaction), run identically against the memory and the disk provider.

Expectations are Kafka's (LogCleaner, Cleaner, LogCleanerManager, MemoryRecords.filterTo):
per key only the latest record stays, at its own offset; a batch keeps its base offset,
offset span, producer fields and codec; the active segment and records younger than
min.compaction.lag.ms are never touched; a log is cleaned when its dirty ratio is above
min.cleanable.dirty.ratio or max.compaction.lag.ms has passed; tombstones stay
delete.retention.ms after the cleaning that first kept them (KIP-534); records without a
key are refused on append and dropped by the cleaner; the last batch of every active
idempotent producer is kept.  Cleaning runs on the reactor's thread pool, hence
pytest-twisted.
"""

from __future__ import annotations

import gzip
import struct
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import pytest_twisted

from akfak.log.cleaner import CleaningAborted
from akfak.log.config import LogConfig
from akfak.log.partition import ORIGIN_COORDINATOR, PartitionLog
from akfak.log.records import DELETE_HORIZON_BIT, decompress
from akfak.log.storage import BaseLogStorage
from tests.log.conftest import T0, StorageFactory
from tests.recordbatch import ParsedBatch, ParsedRecord, make_batch, parse_batch_list, parse_batches

CODEC_NAMES = ("none", "gzip", "snappy", "lz4", "zstd")
#: When the cleaner runs in these tests: a minute after every record was written.
NOW = T0 + 60_000


def compacted_log(storage: BaseLogStorage, topic: str = "t", **topic_configs: object
                  ) -> PartitionLog:
    configs: dict[str, object] = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01",
                                  "segment.bytes": 1024}
    configs.update({k.replace("_", "."): v for k, v in topic_configs.items()})
    config = LogConfig.from_broker(storage.config, {k: str(v) for k, v in configs.items()})
    return storage.create_log(topic, 0, uuid.uuid4(), config)


def append(log: PartitionLog, records: Sequence[Any], *, ts: int = T0, **batch: Any) -> range:
    """Append one batch of (key, value[, headers[, timestamp]]) records; its offsets."""
    specs = [r if len(r) > 3 else (*r, *([None] * (3 - len(r))), ts) for r in records]
    info = log.append(make_batch(specs, timestamp=ts, **batch), leader_epoch=3, now_ms=ts,
                      **({"origin": ORIGIN_COORDINATOR} if batch.get("control") else {}))
    return range(info.base_offset, info.last_offset + 1)


def stored_batches(log: PartitionLog) -> list[ParsedBatch]:
    return parse_batch_list(b"".join(log.read(log.log_start_offset, 1 << 26).parts))


def stored(log: PartitionLog) -> list[ParsedRecord]:
    return [r for b in stored_batches(log) for r in b.records]


def latest(records: Sequence[ParsedRecord]) -> dict[bytes | None, ParsedRecord]:
    view: dict[bytes | None, ParsedRecord] = {}
    for r in records:
        view[r.key] = r
    return view


def fill(log: PartitionLog, batches: int, *, keys: int = 10, per_batch: int = 3,
         ts: int = T0) -> None:
    """Batches of keyed records with repeating keys, headers, and every codec in turn."""
    n = 0
    for i in range(batches):
        records = []
        for _ in range(per_batch):
            key = b"key-%d" % (n % keys)
            records.append((key, b"value-%d " % n + b"x" * (n % 17), [("n", b"%d" % n)], ts + n))
            n += 1
        append(log, records, ts=ts + n, compression=CODEC_NAMES[i % len(CODEC_NAMES)])


def active_base(log: PartitionLog) -> int:
    return log.active.base_offset


# -- what stays ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_latest_record_of_each_key_stays_at_its_offset(open_storage: StorageFactory
                                                                 ) -> None:
    storage = open_storage()
    log = compacted_log(storage)
    fill(log, 40)
    before_batches = stored_batches(log)
    before = [r for b in before_batches for r in b.records]
    end, start, cleanable_end = log.log_end_offset, log.log_start_offset, active_base(log)
    assert len(log.segments) > 4

    assert await storage.run_cleaner(NOW) == 1

    after_batches = stored_batches(log)
    after = [r for b in after_batches for r in b.records]
    assert (log.log_end_offset, log.log_start_offset) == (end, start)
    # What a consumer reading from the start ends up with is unchanged ...
    assert latest(after) == latest(before)
    # ... every record kept is the original, field for field, at its offset ...
    originals = {r.offset: r for r in before}
    assert all(r == originals[r.offset] for r in after)
    # ... and below the active segment each key is there once, at its latest offset.
    cleaned = [r for r in after if r.offset < cleanable_end]
    assert len({r.key for r in cleaned}) == len(cleaned) > 0
    latest_below = latest([r for r in before if r.offset < cleanable_end])
    assert {r.key: r.offset for r in cleaned} == {k: r.offset for k, r in latest_below.items()}
    # The active segment is as it was.
    assert [r for r in after if r.offset >= cleanable_end] == \
        [r for r in before if r.offset >= cleanable_end]
    # Batches keep base offset, offset span, leader epoch and codec; CRCs are right.
    by_base = {b.base_offset: b for b in before_batches}
    for b in after_batches:
        original = by_base[b.base_offset]
        assert b.crc_ok
        assert (b.last_offset_delta, b.partition_leader_epoch, b.attributes & 0x07) == (
            original.last_offset_delta, original.partition_leader_epoch,
            original.attributes & 0x07)
    assert any(len(b.records) < by_base[b.base_offset].record_count for b in after_batches)
    assert storage.cleaner.checkpoints[("t", 0)] == cleanable_end


@pytest_twisted.ensureDeferred
async def test_reads_and_timestamp_lookups_skip_the_removed_offsets(open_storage: StorageFactory
                                                                    ) -> None:
    storage = open_storage()
    log = compacted_log(storage)
    for i in range(30):
        append(log, [(b"k%d" % (i % 3), b"v%d" % i)], ts=T0 + i * 10)
    await storage.run_cleaner(NOW)
    kept = [r.offset for r in stored(log)]
    removed = next(o for o in range(log.log_end_offset) if o not in kept)
    following = min(o for o in kept if o > removed)
    result = log.read(removed, 1 << 20)
    assert result.first_offset == following
    assert parse_batches(result.parts)[0].offset == following
    # ListOffsets by time: the first kept record at or after the time.
    found = log.offset_for_timestamp(T0 + removed * 10)
    assert found is not None and found.offset == following
    assert found.timestamp == T0 + following * 10
    newest = log.max_timestamp()
    assert newest is not None and newest.offset == 29 and newest.timestamp == T0 + 290


@pytest_twisted.ensureDeferred
async def test_batches_that_lose_records_are_reencoded_with_their_codec(
        open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = compacted_log(storage, segment_bytes=1 << 20)
    for codec in CODEC_NAMES:
        append(log, [(b"a", b"1" * 200), (b"b", b"2" * 200), (b"a", b"3" * 200),
                     (b"c", b"4" * 200)], compression=codec, ts=T0)
    log.roll(T0)
    before = {b.base_offset: b for b in stored_batches(log)}
    await storage.run_cleaner(NOW)
    after = stored_batches(log)
    # Only the last batch keeps a, b, c; it lost its first "a" and is re-encoded.
    (only,) = after
    assert only.base_offset == 16 and only.last_offset_delta == 3
    assert only.attributes & 0x07 == 4 and only.crc_ok and only.record_count == 3
    assert [(r.offset, r.key) for r in only.records] == [(17, b"b"), (18, b"a"), (19, b"c")]
    assert only.records == before[16].records[1:]


@pytest.mark.parametrize("codec", CODEC_NAMES[1:])
@pytest_twisted.ensureDeferred
async def test_every_codec_is_rewritten_as_clients_read_it(open_storage: StorageFactory,
                                                           codec: str) -> None:
    storage = open_storage()
    log = compacted_log(storage, segment_bytes=1 << 20)
    values = [b"%d " % i * 50 for i in range(300)]  # > 64 KiB: several lz4/snappy blocks
    append(log, [(b"k%d" % (i % 150), v) for i, v in enumerate(values)], compression=codec)
    log.roll(T0)
    await storage.run_cleaner(NOW)
    (only,) = stored_batches(log)
    assert only.attributes & 0x07 == CODEC_NAMES.index(codec)
    assert [(r.offset, r.value) for r in only.records] == list(enumerate(values))[150:]
    body = b"".join(log.read(0, 1 << 26).parts)[61:]
    if codec == "lz4":
        import lz4.frame

        # Kafka's KafkaLZ4BlockInputStream reads only frames of independent blocks.
        assert body[:7] == bytes.fromhex("04224d18604082")
        assert lz4.frame.decompress(body) == decompress(3, body)
    if codec == "gzip":
        assert gzip.decompress(body) == decompress(1, body)


@pytest_twisted.ensureDeferred
async def test_xerial_snappy_batches_stay_xerial(open_storage: StorageFactory) -> None:
    import cramjam

    storage = open_storage()
    log = compacted_log(storage, segment_bytes=1 << 20)
    plain = make_batch([(b"a", b"1"), (b"a", b"2"), (b"b", b"3")], timestamp=T0)
    raw = plain[61:]
    # The Java client's framing: magic, version 1, compatible version 1, sized blocks.
    block = bytes(cramjam.snappy.compress_raw(raw))
    framed = b"\x82SNAPPY\x00" + struct.pack(">iii", 1, 1, len(block)) + block
    header = bytearray(plain[:61])
    struct.pack_into(">i", header, 8, 49 + len(framed))
    struct.pack_into(">h", header, 21, 2)
    import crc32c

    struct.pack_into(">I", header, 17, crc32c.crc32c(framed, crc32c.crc32c(bytes(header[21:]))))
    log.append(bytes(header) + framed, leader_epoch=0, now_ms=T0)
    log.roll(T0)
    await storage.run_cleaner(NOW)
    data = b"".join(log.read(0, 1 << 20).parts)
    assert data[61:69] == b"\x82SNAPPY\x00"
    assert [(r.offset, r.value) for r in _records_of(data)] == [(1, b"2"), (2, b"3")]


def _records_of(batch: bytes) -> list[ParsedRecord]:
    """Parse one batch whose records section may be xerial-framed snappy."""
    body = decompress(batch[22] & 0x07, batch[61:])
    header = bytearray(batch[:61])
    struct.pack_into(">h", header, 21, struct.unpack_from(">h", batch, 21)[0] & ~0x07)
    struct.pack_into(">i", header, 8, 49 + len(body))
    return parse_batches(bytes(header) + body)


@pytest_twisted.ensureDeferred
async def test_log_append_time_batches_keep_their_time(open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = compacted_log(storage, message_timestamp_type="LogAppendTime", segment_bytes=1 << 20)
    log.append(make_batch([(b"a", b"1"), (b"b", b"2"), (b"a", b"3")], timestamp=T0),
               leader_epoch=0, now_ms=T0 + 500)
    log.roll(T0 + 500)
    await storage.run_cleaner(NOW)
    (only,) = stored_batches(log)
    assert only.attributes & 0x08 and only.max_timestamp == T0 + 500
    assert [(r.offset, r.timestamp, r.log_append_time) for r in only.records] == [
        (1, T0 + 500, True), (2, T0 + 500, True)]


@pytest_twisted.ensureDeferred
async def test_control_batches_are_kept(open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = compacted_log(storage, segment_bytes=1 << 20)
    append(log, [(b"a", b"1")])
    marker = append(log, [(b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x00")], control=True,
                    producer_id=5, producer_epoch=0, transactional=True)
    append(log, [(b"a", b"2")])
    log.roll(T0)
    await storage.run_cleaner(NOW)
    assert [(b.base_offset, bool(b.attributes & 0x20)) for b in stored_batches(log)] == [
        (marker.start, True), (2, False)]


def end_txn(log: PartitionLog, pid: int, *, commit: bool) -> int:
    info = log.append_marker(producer_id=pid, producer_epoch=0, commit=commit,
                             coordinator_epoch=0, leader_epoch=3, now_ms=T0)
    return int(info.base_offset)


@pytest_twisted.ensureDeferred
async def test_markers_of_emptied_transactions_go_after_delete_retention(
        open_storage: StorageFactory) -> None:
    """As Kafka's cleaner: a marker stays while a batch of its transaction is in the log;
    the cleaning that finds the transaction empty stamps the marker with a delete horizon,
    and the first cleaning past it removes the marker (and the abort from `.txnindex`)."""
    storage = open_storage()
    log = compacted_log(storage, delete_retention_ms=5000, segment_bytes=1 << 20)
    txn = {"producer_epoch": 0, "transactional": True}
    append(log, [(b"a", b"1")], producer_id=7, base_sequence=0, **txn)
    commit = end_txn(log, 7, commit=True)
    append(log, [(b"b", b"1")], producer_id=8, base_sequence=0, **txn)
    abort = end_txn(log, 8, commit=False)
    append(log, [(b"a", b"2")])  # a=1 of the committed transaction is superseded
    # later transactions of both producers: the markers above are not their last batches
    append(log, [(b"c", b"1")], producer_id=7, base_sequence=1, **txn)
    later = end_txn(log, 7, commit=True)
    append(log, [(b"d", b"1")], producer_id=8, base_sequence=1, **txn)
    end_txn(log, 8, commit=True)
    log.roll(T0)

    def markers() -> dict[int, bool]:
        """Base offset -> whether it carries a delete horizon, of every control batch."""
        return {b.base_offset: bool(b.attributes & DELETE_HORIZON_BIT)
                for b in stored_batches(log) if b.attributes & 0x20}

    def data() -> list[tuple[bytes | None, bytes | None]]:
        return [(r.key, r.value) for b in stored_batches(log) if not b.attributes & 0x20
                for r in b.records]

    async def clean(now: int, key: bytes) -> None:
        append(log, [(key, b"x")], ts=T0)  # something dirty, else the log is not cleaned
        log.roll(T0)
        assert await storage.run_cleaner(now) == 1

    assert await storage.run_cleaner(NOW) == 1
    # The batches of both transactions were still there in this pass: markers unchanged.
    assert markers() == {commit: False, abort: False, later: False, later + 2: False}
    assert data() == [(b"a", b"2"), (b"c", b"1"), (b"d", b"1")]
    assert [e.producer_id for e in log.collect_aborted(0, log.log_end_offset)] == [8]
    second = NOW + 1000
    await clean(second, b"e")
    assert markers() == {commit: True, abort: True, later: False, later + 2: False}
    assert log.collect_aborted(0, log.log_end_offset) == []
    horizons = {b.base_offset: b.base_timestamp for b in stored_batches(log)
                if b.attributes & DELETE_HORIZON_BIT}
    assert horizons == {commit: second + 5000, abort: second + 5000}
    await clean(second + 4999, b"f")
    assert set(markers()) == {commit, abort, later, later + 2}
    await clean(second + 5000, b"g")
    assert markers() == {later: False, later + 2: False}
    assert data() == [
        (b"a", b"2"), (b"c", b"1"), (b"d", b"1"), (b"e", b"x"), (b"f", b"x"), (b"g", b"x")]


# -- when a log is cleaned -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_dirty_ratio_decides_and_the_checkpoint_moves(open_storage: StorageFactory
                                                                ) -> None:
    storage = open_storage()
    log = compacted_log(storage, min_cleanable_dirty_ratio=0.5, segment_bytes=1 << 20)
    for i in range(20):
        append(log, [(b"k%d" % i, b"v" * 100)])
    log.roll(T0)
    assert await storage.run_cleaner(NOW) == 1  # never cleaned: everything is dirty
    assert storage.cleaner.checkpoints[("t", 0)] == 20
    assert await storage.run_cleaner(NOW) == 0  # nothing new
    for i in range(3):  # new keys: 3 of 23 records dirty, under half
        append(log, [(b"new%d" % i, b"v" * 100)])
    log.roll(T0)
    assert storage.cleaner.cleanable_logs(NOW) == []
    assert await storage.run_cleaner(NOW) == 0
    for i in range(30):
        append(log, [(b"k%d" % (i % 20), b"w" * 100)])
    log.roll(T0)
    assert await storage.run_cleaner(NOW) == 1
    assert storage.cleaner.checkpoints[("t", 0)] == 53
    assert {r.key: r.value for r in stored(log)} == {
        **{b"k%d" % i: b"w" * 100 for i in range(20)},
        **{b"new%d" % i: b"v" * 100 for i in range(3)}}


@pytest_twisted.ensureDeferred
async def test_the_active_segment_and_the_min_compaction_lag_are_left_alone(
        open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = compacted_log(storage, min_compaction_lag_ms=60_000)
    for i in range(40):
        append(log, [(b"same", b"v%d" % i + b"." * 40)], ts=T0 + i)
    segments = len(log.segments)
    assert segments > 2
    # Every record is younger than a minute: nothing may be cleaned yet.
    assert await storage.run_cleaner(T0 + 30_000) == 0
    assert len(stored(log)) == 40
    assert await storage.run_cleaner(T0 + 120_000) == 1
    # Only the active segment's records stay besides the one latest "same" below it.
    below = [r for r in stored(log) if r.offset < active_base(log)]
    assert [r.value[:3] for r in below] == [b"v%d" % (active_base(log) - 1)]
    assert len(stored(log)) == 1 + log.log_end_offset - active_base(log)


@pytest_twisted.ensureDeferred
async def test_max_compaction_lag_forces_a_cleaning(open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = compacted_log(storage, min_cleanable_dirty_ratio=0.9, segment_bytes=1 << 20)
    for i in range(20):
        append(log, [(b"k%d" % i, b"v" * 100)], ts=T0)
    log.roll(T0)
    assert await storage.run_cleaner(NOW) == 1
    append(log, [(b"k1", b"again")], ts=T0 + 1000)
    log.roll(T0)
    assert await storage.run_cleaner(NOW) == 0  # 1 of 21 dirty
    storage.reconfigure("t", log.config.with_overrides(max_compaction_lag_ms=30_000))
    assert await storage.run_cleaner(T0 + 1000 + 29_999) == 0
    assert await storage.run_cleaner(T0 + 1000 + 30_001) == 1
    assert [r.value for r in stored(log) if r.key == b"k1"] == [b"again"]


@pytest_twisted.ensureDeferred
async def test_the_offset_map_limit_cleans_in_several_rounds(open_storage: StorageFactory
                                                             ) -> None:
    # Kafka's sizing: log.cleaner.dedupe.buffer.size / 24 bytes * load factor keys a round.
    storage = open_storage(log_cleaner_dedupe_buffer_size=24 * 10,
                           log_cleaner_io_buffer_load_factor="1.0")
    log = compacted_log(storage, segment_bytes=1 << 20)
    for i in range(60):
        append(log, [(b"k%d" % (i % 30), b"v%d" % i)])
        if i % 6 == 5:
            log.roll(T0)
    before = stored(log)
    assert await storage.run_cleaner(NOW) == 1
    first_round = storage.cleaner.checkpoints[("t", 0)]
    assert 0 < first_round < 60
    assert latest(stored(log)) == latest(before)
    for _ in range(10):
        await storage.run_cleaner(NOW)
    assert storage.cleaner.checkpoints[("t", 0)] == 60
    assert [r.offset for r in stored(log)] == list(range(30, 60))


@pytest_twisted.ensureDeferred
async def test_a_disabled_cleaner_and_delete_only_topics_are_left_alone(
        open_storage: StorageFactory) -> None:
    storage = open_storage(log_cleaner_enable="false")
    log = compacted_log(storage)
    fill(log, 20)
    plain = compacted_log(storage, topic="plain", cleanup_policy="delete")
    fill(plain, 20)
    assert await storage.run_cleaner(NOW) == 0
    assert len(stored(log)) == 60
    storage.config.override("log.cleaner.enable", "true")
    assert await storage.run_cleaner(NOW) == 1
    assert len(stored(log)) < 60 and len(stored(plain)) == 60


@pytest_twisted.ensureDeferred
async def test_compact_delete_topics_also_apply_retention(open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = compacted_log(storage, cleanup_policy="compact,delete", retention_ms=10_000)
    for i in range(30):
        append(log, [(b"k%d" % i, b"v" * 50)], ts=T0 + (0 if i < 15 else 50_000))
        if i == 14:
            log.roll(T0)
    assert log.log_start_offset == 0
    await storage.run_cleaner(T0 + 55_000)
    # The old records are past retention.ms: their segments went (Kafka's cleaner thread
    # deletes old segments of the compacted logs it looks after, too).
    assert log.log_start_offset == 15
    assert [r.key for r in stored(log)] == [b"k%d" % i for i in range(15, 30)]


# -- tombstones, keys, producers -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tombstones_stay_delete_retention_after_the_cleaning_that_kept_them(
        open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = compacted_log(storage, delete_retention_ms=5000, segment_bytes=1 << 20)
    append(log, [(b"a", b"1"), (b"b", b"1")], ts=T0)
    append(log, [(b"a", None)], ts=T0 + 7)
    log.roll(T0)
    first = NOW
    await storage.run_cleaner(first)
    tombstone_batch = next(b for b in stored_batches(log) if b.base_offset == 2)
    # The cleaning that first kept the tombstone stamped its batch's delete horizon.
    assert tombstone_batch.attributes & DELETE_HORIZON_BIT
    assert tombstone_batch.base_timestamp == first + 5000
    assert [(r.key, r.value, r.timestamp) for r in tombstone_batch.records] == [(b"a", None, T0 + 7)]

    async def clean_again(now: int, key: bytes) -> None:
        append(log, [(key, b"x")], ts=T0)  # something dirty, else the log is not cleaned
        log.roll(T0)
        assert await storage.run_cleaner(now) == 1

    await clean_again(first + 4999, b"c")
    assert [(r.key, r.value) for r in stored(log)] == [
        (b"b", b"1"), (b"a", None), (b"c", b"x")]
    await clean_again(first + 5000, b"d")
    assert [(r.key, r.value) for r in stored(log)] == [(b"b", b"1"), (b"c", b"x"), (b"d", b"x")]


@pytest_twisted.ensureDeferred
async def test_a_tombstone_superseded_by_a_value_goes_at_once(open_storage: StorageFactory
                                                              ) -> None:
    storage = open_storage()
    log = compacted_log(storage, segment_bytes=1 << 20)
    append(log, [(b"a", b"1")])
    append(log, [(b"a", None)])
    append(log, [(b"a", b"2")])
    log.roll(T0)
    await storage.run_cleaner(NOW)
    assert [(r.offset, r.value) for r in stored(log)] == [(2, b"2")]
    assert not stored_batches(log)[0].attributes & DELETE_HORIZON_BIT


@pytest_twisted.ensureDeferred
async def test_keyless_records_written_before_compaction_was_enabled_are_dropped(
        open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = compacted_log(storage, cleanup_policy="delete", segment_bytes=1 << 20)
    append(log, [(None, b"1"), (b"a", b"2"), (None, b"3")])
    log.roll(T0)
    storage.reconfigure("t", log.config.with_overrides(cleanup_policy=("compact",)))
    await storage.run_cleaner(NOW)
    assert [(r.offset, r.key) for r in stored(log)] == [(1, b"a")]


@pytest_twisted.ensureDeferred
async def test_the_last_batch_of_an_active_producer_stays(open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = compacted_log(storage, segment_bytes=1 << 20)
    first = make_batch([(b"a", b"1")], producer_id=42, producer_epoch=2, base_sequence=0,
                       timestamp=T0)
    last = make_batch([(b"b", b"1"), (b"c", b"1")], producer_id=42, producer_epoch=2,
                      base_sequence=1, timestamp=T0)
    log.append(first, leader_epoch=0, now_ms=T0)
    log.append(last, leader_epoch=0, now_ms=T0)
    append(log, [(b"a", b"2"), (b"b", b"2"), (b"c", b"2")])
    log.roll(T0)
    await storage.run_cleaner(NOW)
    batches = stored_batches(log)
    # The producer's first batch is gone; its last one stays, empty, with its offsets and
    # sequence range, so a retry of it is still recognised as a duplicate.
    assert [(b.base_offset, b.last_offset_delta, b.record_count, b.producer_id,
             b.producer_epoch, b.base_sequence) for b in batches] == [
        (1, 1, 0, 42, 2, 1), (3, 2, 3, -1, -1, -1)]
    assert batches[0].crc_ok and batches[0].attributes & 0x07 == 0
    retry = log.append(last, leader_epoch=0, now_ms=NOW)
    assert (retry.base_offset, retry.last_offset) == (1, 2) and log.log_end_offset == 6
    following = make_batch([(b"d", b"1")], producer_id=42, producer_epoch=2, base_sequence=3,
                           timestamp=T0)
    assert log.append(following, leader_epoch=0, now_ms=NOW).base_offset == 6


# -- the swap ------------------------------------------------------------------------------


def test_a_swap_is_refused_when_the_log_changed_meanwhile(open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = compacted_log(storage, cleanup_policy="compact,delete", segment_bytes=1 << 20)
    append(log, [(b"a", b"1")])
    log.roll(T0)
    append(log, [(b"a", b"2")])
    log.roll(T0)
    old = log.segments[0]
    cleaned = log.new_cleaned_segment(old.base_offset)
    log.check_replaceable(cleaned, [old])  # as things stand, it could go in
    with pytest.raises(CleaningAborted):
        log.check_replaceable(cleaned, [log.segments[1], log.active])  # never the active one
    log.advance_log_start_offset(1)
    log.run_retention(NOW)  # meanwhile, DeleteRecords and retention removed the segment
    with pytest.raises(CleaningAborted):
        log.check_replaceable(cleaned, [old])
    with pytest.raises(CleaningAborted):
        log.replace_segments(cleaned, [old])
    log.discard_cleaned_segment(cleaned)
    assert [r.value for r in stored(log)] == [b"2"]
