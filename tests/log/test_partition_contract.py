"""The partition-log contract, run identically against the memory, disk and postgres providers."""

from __future__ import annotations

import uuid

import pytest
import pytest_twisted

from akfak.errors import (
    InvalidTimestamp,
    KafkaStorageError,
    MessageTooLarge,
    OffsetOutOfRange,
    RecordListTooLarge,
)
from akfak.interfaces import ILogStorage, IMetadataLog, IPartitionLog
from akfak.log.config import LogConfig
from akfak.log.metadata_records import FeatureLevelRecord, TopicRecord
from akfak.log.partition import PartitionLog
from akfak.log.storage import BaseLogStorage
from tests.log.conftest import T0, StorageFactory
from tests.recordbatch import make_batch as _make_batch
from tests.recordbatch import parse_batch_list, parse_batches


def make_batch(*args: object, **kwargs: object) -> bytes:
    """A batch stamped at the fake clock's time unless told otherwise."""
    kwargs.setdefault("timestamp", T0)
    return _make_batch(*args, **kwargs)  # type: ignore[arg-type]


def new_log(storage: BaseLogStorage, topic: str = "t", partition: int = 0,
            **topic_configs: object) -> PartitionLog:
    overrides = {k.replace("_", "."): str(v) for k, v in topic_configs.items()}
    config = LogConfig.from_broker(storage.config, overrides)
    return storage.create_log(topic, partition, uuid.uuid4(), config)


def produce(log: PartitionLog, n: int, *, records: int = 1, ts: int = T0, epoch: int = 0,
            size: int = 10) -> list[int]:
    """Append n batches of `records` records each; return the base offsets."""
    bases = []
    for i in range(n):
        data = make_batch([(None, b"%d" % i + b"." * size, None, ts + i)] * records)
        bases.append(log.append(data, leader_epoch=epoch, now_ms=ts + i).base_offset)
    return bases


def test_providers_implement_the_interfaces(open_storage: StorageFactory) -> None:
    from zope.interface.verify import verifyObject

    storage = open_storage()
    assert verifyObject(ILogStorage, storage)
    assert verifyObject(IMetadataLog, storage.metadata_log)
    assert verifyObject(IPartitionLog, new_log(storage))


def test_append_assigns_offsets_and_stores_batches_unchanged(open_storage: StorageFactory
                                                             ) -> None:
    log = new_log(open_storage())
    first = make_batch([(b"a", b"1", None, T0), (b"b", b"2", [("h", b"x")], T0 + 1)],
                       producer_id=11, producer_epoch=3, base_sequence=0)
    second = make_batch([(None, b"3", None, T0 + 2)])
    info = log.append(first + second, leader_epoch=4, now_ms=T0 + 10)
    assert (info.base_offset, info.last_offset, info.record_count) == (0, 2, 3)
    assert info.log_append_time == -1 and info.max_timestamp == T0 + 2
    assert info.size == len(first) + len(second)
    b1, b2 = info.batches
    assert (b1.base_offset, b1.last_offset, b2.base_offset, b2.last_offset) == (0, 1, 2, 2)
    assert (b1.producer_id, b1.producer_epoch, b1.base_sequence, b1.last_sequence) == (11, 3, 0, 1)
    assert b2.producer_id == -1 and not b2.is_transactional
    assert log.log_end_offset == log.high_watermark == 3
    info = log.append(make_batch([(None, b"4")]), leader_epoch=4, now_ms=T0 + 11)
    assert (info.base_offset, info.last_offset) == (3, 3)

    result = log.read(0, 1 << 20)
    data = b"".join(result.parts)
    assert result.size == len(data) and result.first_offset == 0 and result.next_offset == 4
    assert result.high_watermark == 4 and result.log_start_offset == 0
    # Offsets are assigned by patching baseOffset and the leader epoch only.
    assert data[16 : len(first)] == first[16:]
    assert data[:8] == (0).to_bytes(8, "big") and data[12:16] == (4).to_bytes(4, "big")
    batches = parse_batch_list(data)
    assert all(b.crc_ok for b in batches)
    assert [b.base_offset for b in batches] == [0, 2, 3]
    records = parse_batches(data)
    assert [(r.offset, r.key, r.value) for r in records] == [
        (0, b"a", b"1"), (1, b"b", b"2"), (2, None, b"3"), (3, None, b"4")]
    assert records[1].headers == (("h", b"x"),) and records[0].partition_leader_epoch == 4


def test_read_from_inside_a_batch_returns_that_whole_batch(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    produce(log, 3, records=5)
    result = log.read(7, 1 << 20)
    assert result.first_offset == 5
    assert [r.offset for r in parse_batches(result.parts)] == list(range(5, 15))


def test_read_max_bytes_returns_whole_batches(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    produce(log, 10)
    size = len(b"".join(log.read(0, 1).parts))  # one batch
    result = log.read(0, int(size * 2.5))
    assert result.size == 2 * size and result.next_offset == 2
    assert [r.offset for r in parse_batches(result.parts)] == [0, 1]
    result = log.read(3, size * 3)
    assert [r.offset for r in parse_batches(result.parts)] == [3, 4, 5]


def test_read_returns_an_oversized_first_batch_kip74(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    log.append(make_batch([(None, b"x" * 5000)]), leader_epoch=0, now_ms=T0)
    produce(log, 2)
    result = log.read(0, 100)
    assert result.size > 5000 and [r.offset for r in parse_batches(result.parts)] == [0]
    empty = log.read(0, 100, min_one=False)
    assert empty.parts == [] and empty.size == 0


def test_read_bounds(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    produce(log, 3)
    at_end = log.read(3, 1000)
    assert at_end.parts == [] and at_end.high_watermark == 3
    with pytest.raises(OffsetOutOfRange) as caught:
        log.read(4, 1000)
    assert caught.value.error_code == 1
    with pytest.raises(OffsetOutOfRange):
        log.read(-1, 1000)
    limited = log.read(0, 1 << 20, max_offset=2)
    assert [r.offset for r in parse_batches(limited.parts)] == [0, 1]


def test_segments_roll_by_size_and_every_offset_is_found(open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = new_log(storage, segment_bytes=2048, index_interval_bytes=100)
    produce(log, 150, records=2, size=40)
    assert len(log.segments) > 5
    bases = [s.base_offset for s in log.segments]
    assert bases[0] == 0 and bases == sorted(bases)
    for previous, following in zip(log.segments, log.segments[1:], strict=False):
        assert previous.next_offset == following.base_offset
        assert previous.size <= 2048
        assert previous.offset_index.entries > 0
    for offset in range(0, 300, 7):
        result = log.read(offset, 1)
        records = parse_batches(result.parts)
        assert records[0].offset <= offset <= records[-1].offset
    everything = parse_batches(log.read(0, 1 << 24).parts)
    assert [r.offset for r in everything] == list(range(300))
    assert everything[-1].value.startswith(b"149.")  # type: ignore[union-attr]


def test_segments_roll_by_time(open_storage: StorageFactory) -> None:
    log = new_log(open_storage(), segment_ms=1000)
    produce(log, 3, ts=T0)
    assert len(log.segments) == 1
    produce(log, 1, ts=T0 + 5000)
    assert len(log.segments) == 2 and log.active.base_offset == 3


def test_log_append_time_topics(open_storage: StorageFactory) -> None:
    log = new_log(open_storage(), message_timestamp_type="LogAppendTime")
    info = log.append(make_batch([(None, b"a", None, 5), (None, b"b", None, 6)]),
                      leader_epoch=0, now_ms=T0 + 42)
    assert info.log_append_time == T0 + 42 and info.max_timestamp == T0 + 42
    (stored,) = parse_batch_list(b"".join(log.read(0, 1000).parts))
    assert stored.crc_ok and stored.attributes & 0x08 and stored.max_timestamp == T0 + 42
    assert [r.timestamp for r in stored.records] == [T0 + 42, T0 + 42]
    assert log.offset_for_timestamp(T0 + 42) == (0, T0 + 42, 0)


def test_size_limits(open_storage: StorageFactory) -> None:
    log = new_log(open_storage(), max_message_bytes=500, segment_bytes=1000)
    log.append(make_batch([(None, b"x" * 300)]), leader_epoch=0, now_ms=T0)
    with pytest.raises(MessageTooLarge):
        log.append(make_batch([(None, b"x" * 600)]), leader_epoch=0, now_ms=T0)
    four = make_batch([(None, b"x" * 300)]) * 4
    with pytest.raises(RecordListTooLarge) as caught:
        log.append(four, leader_epoch=0, now_ms=T0)
    assert caught.value.error_code == 18
    assert log.log_end_offset == 1  # nothing of a rejected append is written


def test_future_timestamps_are_rejected(open_storage: StorageFactory) -> None:
    log = new_log(open_storage(), message_timestamp_after_max_ms=1000)
    log.append(make_batch([(None, b"a", None, T0 + 1000)]), leader_epoch=0, now_ms=T0)
    with pytest.raises(InvalidTimestamp) as caught:
        log.append(make_batch([(None, b"a", None, T0 + 1001)]), leader_epoch=0, now_ms=T0)
    assert caught.value.error_code == 32


def test_offset_for_timestamp(open_storage: StorageFactory) -> None:
    log = new_log(open_storage(), segment_bytes=600, index_interval_bytes=50)
    # batch i holds offsets 3i..3i+2 at timestamps T0+10i, +1, +2
    for i in range(20):
        records = [(None, b"v", None, T0 + 10 * i + j) for j in range(3)]
        log.append(make_batch(records, compression="gzip" if i % 2 else None),
                   leader_epoch=1, now_ms=T0)
    assert len(log.segments) > 2
    assert log.offset_for_timestamp(0) == (0, T0, 1)
    assert log.offset_for_timestamp(T0 + 1) == (1, T0 + 1, 1)
    assert log.offset_for_timestamp(T0 + 52) == (17, T0 + 52, 1)  # inside a gzip batch
    assert log.offset_for_timestamp(T0 + 53) == (18, T0 + 60, 1)
    assert log.offset_for_timestamp(T0 + 192) == (59, T0 + 192, 1)
    assert log.offset_for_timestamp(T0 + 193) is None
    log.advance_log_start_offset(31)
    assert log.offset_for_timestamp(T0) == (31, T0 + 101, 1)


def test_offset_for_timestamp_out_of_order_batches(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    for ts in (T0 + 50, T0 + 10, T0 + 60, T0 + 20):
        log.append(make_batch([(None, b"v", None, ts)]), leader_epoch=0, now_ms=T0)
    # Kafka's answer: the first offset whose timestamp is >= the target.
    assert log.offset_for_timestamp(T0 + 15) == (0, T0 + 50, 0)
    assert log.offset_for_timestamp(T0 + 55) == (2, T0 + 60, 0)


def test_max_timestamp(open_storage: StorageFactory) -> None:
    log = new_log(open_storage(), segment_bytes=400)
    assert log.max_timestamp() is None
    log.append(make_batch([(None, b"a", None, T0 + 5)]), leader_epoch=0, now_ms=T0)
    log.append(make_batch([(None, b"b", None, T0 + 1), (None, b"c", None, T0 + 90),
                           (None, b"d", None, T0 + 90), (None, b"e", None, T0 + 3)]),
               leader_epoch=2, now_ms=T0)
    produce(log, 5, ts=T0 + 10)
    assert log.max_timestamp() == (2, T0 + 90, 2)


def test_retention_by_time_deletes_whole_old_segments(open_storage: StorageFactory) -> None:
    log = new_log(open_storage(), segment_bytes=500, retention_ms=60_000)
    produce(log, 12, ts=T0)
    produce(log, 12, ts=T0 + 100_000)
    segments = len(log.segments)
    assert segments >= 4
    assert log.run_retention(T0 + 60_000) == 0
    deleted = log.run_retention(T0 + 100_000 + 60_000 - 50)
    assert deleted > 0 and len(log.segments) == segments - deleted
    assert log.log_start_offset == log.segments[0].base_offset > 0
    assert log.segments[0].max_timestamp >= T0 + 100_000  # every old segment went, no new one
    with pytest.raises(OffsetOutOfRange):
        log.read(0, 100)
    assert parse_batches(log.read(log.log_start_offset, 100).parts)[0].offset == \
        log.log_start_offset
    # Everything expires: the active segment is rolled first, the log end offset stays.
    end = log.log_end_offset
    assert log.run_retention(T0 + 10**9) > 0
    assert log.log_start_offset == log.log_end_offset == end
    assert len(log.segments) == 1 and log.active.size == 0
    assert log.read(end, 100).parts == []
    assert log.append(make_batch(), leader_epoch=0, now_ms=T0 + 10**9).base_offset == end


def test_retention_by_size(open_storage: StorageFactory) -> None:
    log = new_log(open_storage(), segment_bytes=500, retention_bytes=1200, retention_ms=-1)
    produce(log, 30)
    total = log.size_in_bytes
    assert total > 2000
    log.run_retention(T0 + 10**9)
    assert log.size_in_bytes <= 1200 + 500 and log.size_in_bytes >= 1200 - 500
    assert log.log_start_offset == log.segments[0].base_offset
    assert [r.offset for r in parse_batches(log.read(log.log_start_offset, 1 << 20).parts)] == \
        list(range(log.log_start_offset, 30))


def test_compact_only_topics_keep_their_segments(open_storage: StorageFactory) -> None:
    log = new_log(open_storage(), segment_bytes=500, retention_ms=1, cleanup_policy="compact")
    for i in range(20):  # a compacted topic takes only keyed records
        log.append(make_batch([(b"k%d" % i, b"v" * 10)]), leader_epoch=0, now_ms=T0 + i)
    assert log.run_retention(T0 + 10**9) == 0 and log.log_start_offset == 0


def test_delete_records(open_storage: StorageFactory) -> None:
    log = new_log(open_storage(), segment_bytes=500)
    produce(log, 20, records=2)
    assert log.advance_log_start_offset(15) == 15
    assert log.advance_log_start_offset(3) == 15  # never goes back
    with pytest.raises(OffsetOutOfRange):
        log.advance_log_start_offset(41)
    with pytest.raises(OffsetOutOfRange):
        log.read(14, 100)
    result = log.read(15, 100)
    assert result.first_offset == 14 and result.log_start_offset == 15  # whole batch 14-15
    before = len(log.segments)
    deleted = log.run_retention(T0)
    assert deleted > 0 and len(log.segments) == before - deleted
    assert log.segments[0].base_offset <= 15 < log.segments[0].next_offset
    assert log.log_start_offset == 15
    assert log.advance_log_start_offset(40) == 40 and log.read(40, 10).parts == []


def test_leader_epochs(open_storage: StorageFactory) -> None:
    log = new_log(open_storage())
    assert log.end_offset_for_epoch(0) == (-1, -1)
    produce(log, 3, epoch=0)
    produce(log, 2, epoch=2)
    produce(log, 1, epoch=5)
    assert log.leader_epoch == 5
    assert log.end_offset_for_epoch(5) == (5, 6)
    assert log.end_offset_for_epoch(2) == (2, 5)
    assert log.end_offset_for_epoch(1) == (0, 3)
    assert log.end_offset_for_epoch(0) == (0, 3)
    assert log.end_offset_for_epoch(7) == (-1, -1)
    assert [r.partition_leader_epoch for r in parse_batches(log.read(0, 1 << 20).parts)] == [
        0, 0, 0, 2, 2, 5]
    log.advance_log_start_offset(4)
    assert log.end_offset_for_epoch(0) == (0, 4)  # epoch 0 now starts before the log
    assert log.epochs == [(2, 4), (5, 5)]


@pytest_twisted.ensureDeferred
async def test_flush_messages_fsyncs_and_advances_the_recovery_point(
        open_storage: StorageFactory, provider: str) -> None:
    log = new_log(open_storage(), flush_messages=3)
    first = log.append(make_batch([(None, b"a")] * 2), leader_epoch=0, now_ms=T0)
    # postgres: every append is acknowledged once committed, whatever flush.messages says
    assert (first.settled() is not None) == (provider == "postgres")
    second = log.append(make_batch([(None, b"b")]), leader_epoch=0, now_ms=T0)
    assert second.flushed is not None or second.commit is not None
    await second.settled()
    assert log.recovery_point == 3


@pytest_twisted.ensureDeferred
async def test_flush_due_follows_flush_ms(open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = new_log(storage, flush_ms=1000)
    produce(log, 2, ts=T0)
    assert log.flush_due(T0 + 500) is None
    flushed = log.flush_due(T0 + 2000)
    assert flushed is not None
    await flushed
    assert log.recovery_point == 2
    assert log.flush_due(T0 + 5000) is None  # nothing new
    await storage.flush_due(T0 + 10_000)


def test_create_log_is_idempotent_and_delete_logs_removes(open_storage: StorageFactory) -> None:
    storage = open_storage()
    topic_id = uuid.uuid4()
    config = storage.default_log_config
    a = storage.create_log("x", 0, topic_id, config)
    storage.create_log("x", 1, topic_id, config)
    produce(a, 2)
    assert storage.create_log("x", 0, topic_id, config) is a
    assert {(lg.topic, lg.partition) for lg in storage.logs()} == {("x", 0), ("x", 1)}
    storage.delete_logs("x")
    assert storage.get_log("x", 0) is None and list(storage.logs()) == []
    assert a.closed
    with pytest.raises(KafkaStorageError):
        a.append(make_batch(), leader_epoch=0, now_ms=T0)
    fresh = storage.create_log("x", 0, uuid.uuid4(), config)
    assert fresh.log_end_offset == 0


def test_metadata_log_append_and_replay(open_storage: StorageFactory) -> None:
    storage = open_storage()
    metadata = storage.metadata_log
    topic_id = uuid.uuid4()
    first = metadata.append([FeatureLevelRecord("metadata.version", 20)], T0)
    second = metadata.append([TopicRecord("a", topic_id), TopicRecord("b", topic_id)], T0)
    assert (first, second, metadata.end_offset) == (0, 1, 3)
    assert list(metadata.replay()) == [
        (0, FeatureLevelRecord("metadata.version", 20)), (1, TopicRecord("a", topic_id)),
        (2, TopicRecord("b", topic_id))]
    # Stored as Kafka's raft does: null keys, uncompressed, stamped with the epoch.
    records = parse_batches(metadata.log.read(0, 1 << 20).parts)  # type: ignore[attr-defined]
    assert all(r.key is None and r.partition_leader_epoch == 1 for r in records)


@pytest_twisted.ensureDeferred
async def test_close_refuses_further_appends(open_storage: StorageFactory) -> None:
    storage = open_storage()
    log = new_log(storage)
    produce(log, 1)
    await storage.close()
    assert log.closed
    with pytest.raises(KafkaStorageError):
        log.append(make_batch(), leader_epoch=0, now_ms=T0)
