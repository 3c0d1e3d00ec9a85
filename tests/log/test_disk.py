"""Disk-only behaviour: Kafka's file formats, recovery after a crash, index rebuilds, checkpoints."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from akfak.config import BrokerConfig
from akfak.errors import KafkaStorageError
from akfak.log.config import LogConfig
from akfak.log.disk import DiskLogStorage, DiskPartitionLog
from akfak.log.partition import PartitionLog
from tests.log.conftest import T0, make_config
from tests.recordbatch import make_batch, parse_batch_list, parse_batches


def open_disk(data: Path, clock: Clock, topic_configs: dict[str, str] | None = None,
              **properties: object) -> DiskLogStorage:
    """Open a disk storage; `topic_configs` are every topic's overrides while loading."""
    config = make_config(data, **properties)
    storage = DiskLogStorage(config, clock=clock)
    storage.open(lambda topic: LogConfig.from_broker(config, topic_configs or {}))
    return storage


def topic_log(storage: DiskLogStorage, name: str = "t", **topic_configs: object) -> PartitionLog:
    overrides = {k.replace("_", "."): str(v) for k, v in topic_configs.items()}
    existing = storage.get_log(name, 0)
    if existing is not None:
        existing.config = LogConfig.from_broker(storage.config, overrides)
        return existing
    return storage.create_log(name, 0, uuid.uuid4(),
                              LogConfig.from_broker(storage.config, overrides))


def fill(log: PartitionLog, batches: int, *, records: int = 2, epoch: int = 0) -> list[bytes]:
    """Append `batches` batches; return each as stored (read back)."""
    start = log.log_end_offset
    for i in range(batches):
        values = [(b"k%d" % i, b"value-%d-%d" % (i, j) + b"." * 30, None, T0 + i)
                  for j in range(records)]
        log.append(make_batch(values, timestamp=T0), leader_epoch=epoch, now_ms=T0 + i)
    data = b"".join(log.read(start, 1 << 26).parts)
    out, pos = [], 0
    while pos < len(data):
        size = struct.unpack_from(">i", data, pos + 8)[0] + 12
        out.append(data[pos : pos + size])
        pos += size
    return out


def read_offset_index(path: Path) -> list[tuple[int, int]]:
    data = path.read_bytes()
    return [struct.unpack_from(">ii", data, i) for i in range(0, len(data), 8)]


def read_time_index(path: Path) -> list[tuple[int, int]]:
    data = path.read_bytes()
    return [struct.unpack_from(">qi", data, i) for i in range(0, len(data), 12)]


@pytest_twisted.ensureDeferred
async def test_directory_layout_is_kafkas(tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    topic_id = uuid.uuid4()
    config = LogConfig.from_broker(storage.config, {"segment.bytes": "1500",
                                                    "index.interval.bytes": "200"})
    log = storage.create_log("my-topic", 3, topic_id, config)
    stored = fill(log, 40, epoch=6)
    await storage.close()

    props = dict(line.split("=", 1) for line in (data / "meta.properties").read_text()
                 .splitlines() if line and not line.startswith("#"))
    assert set(props) == {"version", "cluster.id", "node.id", "directory.id"}
    assert props["version"] == "1" and props["node.id"] == "1"
    assert len(props["cluster.id"]) == 22 and len(props["directory.id"]) == 22
    part = data / "my-topic-3"
    names = sorted(p.name for p in part.iterdir())
    logs = [n for n in names if n.endswith(".log")]
    assert len(logs) > 3 and all(len(n) == 24 and n[:20].isdigit() for n in logs)
    for name in logs:
        stem = name[:20]
        assert f"{stem}.index" in names and f"{stem}.timeindex" in names
    assert "partition.metadata" in names and "leader-epoch-checkpoint" in names
    assert (part / "leader-epoch-checkpoint").read_text() == "0\n1\n6 0\n"
    assert (data / "recovery-point-offset-checkpoint").read_text() == "0\n1\nmy-topic 3 80\n"
    assert (data / "log-start-offset-checkpoint").read_text() == "0\n1\nmy-topic 3 0\n"
    assert (data / "replication-offset-checkpoint").read_text() == "0\n1\nmy-topic 3 80\n"
    assert (data / ".kafka_cleanshutdown").exists()
    # The segments hold exactly the batches read back, in order, with valid CRCs.
    on_disk = b"".join((part / n).read_bytes() for n in logs)
    assert on_disk == b"".join(stored)
    assert all(b.crc_ok for b in parse_batch_list(on_disk))

    # Index entries: (offset relative to the segment, position of the batch holding it).
    for name in logs:
        base = int(name[:20])
        segment = (part / name).read_bytes()
        entries = read_offset_index(part / f"{name[:20]}.index")
        assert entries, f"segment {name} has no index entries"
        for relative, position in entries:
            (batch,) = parse_batch_list(segment[position : position + struct.unpack_from(
                ">i", segment, position + 8)[0] + 12])
            assert batch.base_offset <= base + relative <= batch.base_offset + batch.last_offset_delta
        times = read_time_index(part / f"{name[:20]}.timeindex")
        assert times == sorted(times) and len({t for t, _ in times}) == len(times)
        last_ts = max(r.timestamp for r in parse_batches(segment))
        assert times[-1][0] == last_ts  # closed segments end with their max timestamp


@pytest_twisted.ensureDeferred
async def test_torn_tail_is_cut_and_appends_continue(tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage, index_interval_bytes=100)
    stored = fill(log, 10)  # offsets 0..19, one segment
    storage.abandon()  # a kill -9: no flush, no checkpoints, no clean-shutdown marker

    segment = data / "t-0" / "00000000000000000000.log"
    raw = bytearray(segment.read_bytes())
    seventh = sum(len(b) for b in stored[:7])
    raw[seventh + 70] ^= 0x55  # garble a record byte of batch 7 (offsets 14, 15)
    raw = raw[: sum(len(b) for b in stored[:9]) + 30]  # and tear batch 9 in half
    segment.write_bytes(bytes(raw))

    storage = open_disk(data, clock)
    log = topic_log(storage)
    assert log.log_end_offset == 14
    assert segment.stat().st_size == seventh
    assert b"".join(log.read(0, 1 << 20).parts) == b"".join(stored[:7])
    assert [r.offset for r in parse_batches(log.read(0, 1 << 20).parts)] == list(range(14))
    for offset in range(14):
        assert parse_batches(log.read(offset, 1).parts)[0].offset == offset - offset % 2
    info = log.append(make_batch([(None, b"after")], timestamp=T0), leader_epoch=0, now_ms=T0)
    assert info.base_offset == 14
    assert [r.value for r in parse_batches(log.read(13, 1 << 20).parts)][-1] == b"after"
    # The rebuilt index only points into what is left.
    assert all(pos < seventh for _, pos in read_offset_index(segment.with_suffix(".index")))
    await storage.close()

    storage = open_disk(data, clock)
    assert topic_log(storage).log_end_offset == 15
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_truncated_middle_segment_drops_the_segments_after_it(tmp_path: Path,
                                                                    clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage, segment_bytes=600)
    fill(log, 20)
    bases = [s.base_offset for s in log.segments]
    assert len(bases) >= 4
    storage.abandon()
    second = data / "t-0" / f"{bases[1]:020d}.log"
    second.write_bytes(second.read_bytes()[:-10])

    storage = open_disk(data, clock)
    log = topic_log(storage)
    assert [s.base_offset for s in log.segments] == bases[:2]
    assert log.log_end_offset == log.segments[1].next_offset < bases[2]
    assert not (data / "t-0" / f"{bases[2]:020d}.log").exists()
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_missing_or_corrupt_indexes_are_rebuilt(tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage, segment_bytes=2000, index_interval_bytes=150)
    fill(log, 40)
    await storage.close()
    part = data / "t-0"
    originals = {p.name: p.read_bytes() for p in part.iterdir()
                 if p.suffix in (".index", ".timeindex")}
    names = sorted(originals)
    assert len(names) >= 6
    (part / names[0]).unlink()  # missing .index
    (part / names[3]).write_bytes(b"\x07" * 13)  # not a whole number of entries
    offsets = part / names[4] if names[4].endswith(".index") else part / names[2]
    offsets.write_bytes(struct.pack(">ii", 5, 100) + struct.pack(">ii", 2, 300))  # decreasing

    storage = open_disk(data, clock, {"segment.bytes": "2000", "index.interval.bytes": "150"})
    log = topic_log(storage, segment_bytes=2000, index_interval_bytes=150)
    assert {p.name: p.read_bytes() for p in part.iterdir()
            if p.suffix in (".index", ".timeindex")} == originals
    assert [r.offset for r in parse_batches(log.read(0, 1 << 20).parts)] == list(range(80))
    for offset in range(0, 80, 3):
        records = parse_batches(log.read(offset, 1).parts)
        assert records[0].offset <= offset <= records[-1].offset
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_log_start_offset_and_epochs_survive_restart(tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage, segment_bytes=500)
    fill(log, 5, epoch=1)
    fill(log, 5, epoch=3)
    log.advance_log_start_offset(7)
    await storage.close()
    assert "t 0 7" in (data / "log-start-offset-checkpoint").read_text()

    storage = open_disk(data, clock)
    log = topic_log(storage)
    assert log.log_start_offset == 7 and log.log_end_offset == 20
    assert log.epochs == [(1, 7), (3, 10)]
    assert log.end_offset_for_epoch(1) == (1, 10)
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_unclean_restart_recovers_from_the_recovery_point(tmp_path: Path,
                                                                clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage, segment_bytes=600)
    fill(log, 6)
    await log.flush()
    await storage.write_checkpoints()
    assert f"t 0 {log.log_end_offset}" in (data / "recovery-point-offset-checkpoint").read_text()
    fill(log, 10, epoch=2)
    storage.abandon()

    storage = open_disk(data, clock)
    log = topic_log(storage)
    assert log.log_end_offset == 32 and log.epochs == [(0, 0), (2, 12)]
    assert not (data / ".kafka_cleanshutdown").exists()
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_retention_removes_segment_files(tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = topic_log(storage, segment_bytes=500, retention_ms=1000)
    fill(log, 12)
    first = log.segments[0].base_offset
    assert storage.run_retention(T0 + 10**6) > 0
    assert not (data / "t-0" / f"{first:020d}.log").exists()
    assert not (data / "t-0" / f"{first:020d}.index").exists()
    remaining = sorted(p.name for p in (data / "t-0").glob("*.log"))
    assert remaining == [f"{log.log_end_offset:020d}.log"]
    await storage.close()


def test_one_storage_per_directory(tmp_path: Path, clock: Clock) -> None:
    storage = open_disk(tmp_path / "data", clock)
    with pytest.raises(KafkaStorageError, match="lock"):
        open_disk(tmp_path / "data", clock)
    storage.abandon()
    open_disk(tmp_path / "data", clock).abandon()


def test_stale_node_id_is_refused(tmp_path: Path, clock: Clock) -> None:
    open_disk(tmp_path / "data", clock).abandon()
    storage = DiskLogStorage(BrokerConfig(properties={"log.dir": str(tmp_path / "data"),
                                                      "node.id": "2"}), clock=clock)
    with pytest.raises(KafkaStorageError, match=r"Stale node\.id"):
        storage.open()


@pytest_twisted.ensureDeferred
async def test_delete_logs_removes_the_directories(tmp_path: Path, clock: Clock) -> None:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    data = tmp_path / "data"
    storage = open_disk(data, clock)
    fill(topic_log(storage, "gone"), 3)
    storage.delete_logs("gone")
    assert not (data / "gone-0").exists()
    for _ in range(100):
        if not any(p.name.startswith("gone-0") for p in data.iterdir()):
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert not any(p.name.startswith("gone-0") for p in data.iterdir())
    await storage.close()


def test_segments_are_named_by_base_offset(tmp_path: Path, clock: Clock) -> None:
    storage = open_disk(tmp_path / "data", clock)
    log = topic_log(storage, segment_bytes=400)
    fill(log, 10)
    assert isinstance(log, DiskPartitionLog)
    for segment in log.segments:
        assert (log.directory / f"{segment.base_offset:020d}.log").stat().st_size == segment.size
        first = parse_batch_list((log.directory / f"{segment.base_offset:020d}.log")
                                 .read_bytes())[0]
        assert first.base_offset == segment.base_offset
    storage.abandon()
