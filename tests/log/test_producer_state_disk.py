"""Producer state on disk: Kafka's `.snapshot` files, restarts, crashes, old snapshots.

Snapshot bytes are read and written here from Kafka's format description
(ProducerStateManager: version 1, CRC-32C, one 46-byte entry per producer),
independently of akfak's own codec.
"""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import crc32c
import pytest
import pytest_twisted
from twisted.internet.task import Clock

from akfak.errors import OutOfOrderSequenceNumber
from akfak.log.config import LogConfig
from akfak.log.disk import DiskLogStorage
from akfak.log.partition import PartitionLog
from tests.log.conftest import T0, make_config
from tests.log.test_producer_state import append, batch, stored_values

ENTRY = struct.Struct(">qhiqiqiq")


def open_disk(data: Path, clock: Clock, *, segment_bytes: int = 1000,
              **properties: object) -> DiskLogStorage:
    config = make_config(data, **properties)
    storage = DiskLogStorage(config, clock=clock)
    storage.open(lambda topic: LogConfig.from_broker(config, {"segment.bytes": str(segment_bytes)}))
    return storage


def topic_log(storage: DiskLogStorage, *, segment_bytes: int = 1000) -> PartitionLog:
    """Topic t, partition 0 (about a dozen of this module's batches fill a segment)."""
    existing = storage.get_log("t", 0)
    if existing is not None:
        return existing
    config = LogConfig.from_broker(storage.config, {"segment.bytes": str(segment_bytes)})
    return storage.create_log("t", 0, uuid.uuid4(), config)


def snapshots(data: Path) -> dict[int, Path]:
    return {int(p.name[:20]): p for p in (data / "t-0").glob("*.snapshot")}


def read_snapshot(path: Path) -> list[tuple[int, ...]]:
    raw = path.read_bytes()
    version, crc, count = struct.unpack_from(">hIi", raw)
    assert version == 1
    assert crc == crc32c.crc32c(raw[6:])
    assert len(raw) == 10 + count * ENTRY.size
    return [ENTRY.unpack_from(raw, 10 + i * ENTRY.size) for i in range(count)]


def write_snapshot(path: Path, entries: list[tuple[int, ...]]) -> None:
    body = struct.pack(">i", len(entries)) + b"".join(ENTRY.pack(*e) for e in entries)
    path.write_bytes(struct.pack(">hI", 1, crc32c.crc32c(body)) + body)


@pytest_twisted.ensureDeferred
async def test_a_clean_shutdown_snapshots_the_state_in_kafkas_format(tmp_path: Path,
                                                                     clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage)
    append(log, batch(40, 2, 0, 3, ts=T0 + 1))
    append(log, batch(41, 0, 100, 1, ts=T0 + 2))
    append(log, batch(40, 2, 3, 2, ts=T0 + 3))
    await storage.close()
    assert list(snapshots(data)) == [6]
    # producer id, epoch, last sequence, last offset, offset delta, timestamp,
    # coordinator epoch, current transaction's first offset
    assert sorted(read_snapshot(snapshots(data)[6])) == [
        (40, 2, 4, 5, 1, T0 + 3, -1, -1),
        (41, 0, 100, 3, 0, T0 + 2, -1, -1),
    ]

    storage = open_disk(data, clock)
    log = topic_log(storage)
    # The last batch of each producer is recognised after the restart ...
    assert append(log, batch(40, 2, 3, 2, ts=T0 + 3)) == 4
    assert append(log, batch(41, 0, 100, 1, ts=T0 + 2)) == 3
    # ... (a snapshot keeps only each producer's last batch, as Kafka's does) ...
    with pytest.raises(OutOfOrderSequenceNumber):
        append(log, batch(40, 2, 0, 3))
    assert append(log, batch(40, 2, 5)) == 6  # ... and sequences continue.
    assert log.log_end_offset == 7
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_after_a_crash_the_state_is_rebuilt_from_the_log(tmp_path: Path, clock: Clock
                                                               ) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock, segment_bytes=1 << 20)
    log = topic_log(storage, segment_bytes=1 << 20)
    sent = [batch(8, 1, i, 1, ts=T0 + i) for i in range(30)]
    for data_ in sent:
        append(log, data_)
    assert len(log.segments) == 1
    storage.abandon()  # kill -9: no snapshot at all, no clean-shutdown marker
    assert snapshots(data) == {}

    storage = open_disk(data, clock, segment_bytes=1 << 20)
    log = topic_log(storage)
    # Every one of the last five batches is a duplicate again: replayed from the log tail.
    for i in range(25, 30):
        assert append(log, sent[i]) == i
    with pytest.raises(OutOfOrderSequenceNumber):
        append(log, sent[24])
    assert log.log_end_offset == 30
    assert append(log, batch(8, 1, 30)) == 30
    assert stored_values(log) == [b"r-0"] * 31
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_a_crash_after_rolls_replays_only_after_the_latest_snapshot(tmp_path: Path,
                                                                         clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage)
    for i in range(30):
        append(log, batch(8, 1, i, ts=T0 + i))
    bases = [s.base_offset for s in log.segments]
    # Each roll snapshotted the state at the new segment's base offset.
    assert sorted(snapshots(data)) == bases[1:]
    last_roll = bases[-1]
    (entry,) = read_snapshot(snapshots(data)[last_roll])
    assert entry[:5] == (8, 1, last_roll - 1, last_roll - 1, 0)
    storage.abandon()

    # The snapshot at the last roll knows the batch before it; the ones after it are
    # replayed from the log (exactly what Kafka recognises after a crash).
    storage = open_disk(data, clock)
    log = topic_log(storage)
    for i in range(last_roll - 1, 30):
        assert append(log, batch(8, 1, i, ts=T0 + i)) == i
    with pytest.raises(OutOfOrderSequenceNumber):
        append(log, batch(8, 1, last_roll - 2, ts=T0 + last_roll - 2))
    storage.abandon()

    # Garbage where the latest snapshot should be: it is dropped, the one before is used
    # and the batches after that one replayed.
    latest = max(snapshots(data))
    snapshots(data)[latest].write_bytes(b"\x00\x01garbage")
    storage = open_disk(data, clock)
    log = topic_log(storage)
    assert append(log, batch(8, 1, 29, ts=T0 + 29)) == 29
    assert append(log, batch(8, 1, 30)) == 30
    # A fresh snapshot at the end of what was loaded replaced the garbage.
    assert latest == 30 and read_snapshot(snapshots(data)[30])[0][:4] == (8, 1, 29, 29)
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_a_snapshot_written_by_kafka_is_loaded(tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage)
    for i in range(3):
        append(log, make_plain(i))
    await storage.close()
    for path in snapshots(data).values():
        path.unlink()
    # As Kafka would have left it at offset 3: producer 99 wrote offsets 1..2, seq 10..11.
    write_snapshot(data / "t-0" / f"{3:020d}.snapshot", [(99, 4, 11, 2, 1, T0 + 50, -1, -1)])

    storage = open_disk(data, clock)
    log = topic_log(storage)
    state = log.producer_state.last_entry(99)
    assert (state.producer_epoch, state.last_seq, state.last_data_offset) == (4, 11, 2)
    assert append(log, batch(99, 4, 10, 2)) == 1  # a retry of that batch
    assert append(log, batch(99, 4, 12)) == 3
    await storage.close()


def make_plain(i: int) -> bytes:
    from tests.recordbatch import make_batch

    return make_batch([b"plain-%d" % i], timestamp=T0)


@pytest_twisted.ensureDeferred
async def test_expired_producers_are_not_loaded(tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock, producer_id_expiration_ms=60_000)
    log = topic_log(storage)
    append(log, batch(1, 0, 0, ts=T0 - 60_000))  # idle for the whole expiration time
    append(log, batch(2, 0, 0, ts=T0 - 59_999))
    await storage.close()
    storage = open_disk(data, clock, producer_id_expiration_ms=60_000)
    log = topic_log(storage)
    assert [e.producer_id for e in log.producer_state.active_producers()] == [2]
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_old_snapshots_go_with_checkpoints_and_deleted_segments(tmp_path: Path,
                                                                      clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage)
    for i in range(60):
        append(log, batch(8, 1, i, ts=T0 + i))
    bases = [s.base_offset for s in log.segments]
    assert len(bases) >= 5 and sorted(snapshots(data)) == bases[1:]
    await log.flush()
    assert log.recovery_point == log.log_end_offset
    await storage.write_checkpoints()
    # Kafka keeps the snapshots of the last two segments (and any from the one before the
    # recovery point on).
    assert sorted(snapshots(data)) == bases[-2:]

    # Stray snapshots (no segment starts there) go at load, but for the newest one when it
    # is beyond every segment (what a clean shutdown leaves).
    storage.abandon()
    write_snapshot(data / "t-0" / f"{bases[1] + 1:020d}.snapshot", [])
    storage = open_disk(data, clock)
    assert sorted(snapshots(data)) == [*bases[-2:], 60]

    # Retention deleting a segment deletes the snapshot named after it.
    log = topic_log(storage)
    log.advance_log_start_offset(bases[-1])
    log.run_retention(T0)
    assert [s.base_offset for s in log.segments] == [bases[-1]]
    assert sorted(snapshots(data)) == [bases[-1], 60]
    # The producer is still known, though its batches before the log start are gone.
    assert append(log, batch(8, 1, 59, ts=T0 + 59)) == 59
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_a_log_without_producers_restarts_without_replay(tmp_path: Path, clock: Clock
                                                               ) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage)
    for i in range(5):
        append(log, make_plain(i))
    await storage.close()
    assert read_snapshot(snapshots(data)[5]) == []
    storage = open_disk(data, clock)
    assert topic_log(storage).producer_state.map_end_offset == 5
    await storage.close()
