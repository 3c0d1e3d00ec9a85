"""The log cleaner on disk: Kafka's crash-safe segment swap, indexes, the checkpoint file.

A swap goes `.cleaned` (written, fsynced) -> `.swap` -> old segments `.deleted` -> `.swap`
renamed into place -> `.deleted` removed.  For each point a crash can stop at, the files
are left exactly so by the cleaner's own steps (clean_group, change_file_suffixes), the
storage is abandoned as a kill -9 leaves it, and the reloaded log must be either the
uncleaned or the cleaned one, never a mix that loses or reorders records.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.task import Clock

from akfak.log.checkpoints import CLEANER_OFFSET_CHECKPOINT, read_offset_checkpoint
from akfak.log.cleaner import (
    CleanerStats,
    CleanParams,
    OffsetMap,
    SegmentSource,
    build_offset_map,
    clean_group,
    group_segments,
)
from akfak.log.config import LogConfig
from akfak.log.disk import (
    CLEANED_SUFFIX,
    DELETED_SUFFIX,
    SWAP_SUFFIX,
    DiskLogStorage,
    change_file_suffixes,
)
from akfak.log.partition import PartitionLog
from akfak.log.segment import LogSegment
from tests.log.conftest import T0, make_config
from tests.log.test_cleaner import NOW, append, compacted_log, latest, stored, stored_batches
from tests.log.test_disk import read_offset_index, read_time_index

TOPIC_CONFIGS = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01",
                 "segment.bytes": "1000"}


def open_disk(data: Path, clock: Clock, **topic_configs: str) -> DiskLogStorage:
    config = make_config(data)
    storage = DiskLogStorage(config, clock=clock)
    overrides = {**TOPIC_CONFIGS, **{k.replace("_", "."): v for k, v in topic_configs.items()}}
    storage.open(lambda topic: LogConfig.from_broker(config, overrides))
    return storage


def small_segments(storage: DiskLogStorage) -> PartitionLog:
    """Five inactive segments of three batches each, small enough that two or three of
    them make one cleaned group, and the active segment.  Every segment's last record
    has a key of its own, so each cleaned group ends where its last old segment ended."""
    log = compacted_log(storage, **{k.replace(".", "_"): v for k, v in TOPIC_CONFIGS.items()})
    n = 0
    for segment in range(5):
        for i in range(3):
            key = b"own-%d" % segment if i == 2 else b"k%d" % (n % 4)
            append(log, [(key, b"v%d-" % n + b"." * 40)], ts=T0 + n)
            n += 1
        log.roll(T0 + n)
    append(log, [(b"k0", b"active")], ts=T0 + n)
    return log


def clean_first_group(log: PartitionLog) -> tuple[LogSegment, list[LogSegment]]:
    """What a cleaning round does up to (not including) the swap, for the first group:
    the offset map over the dirty section, then the group written as `.cleaned` files."""
    offset_map = OffsetMap(1000)
    stats = CleanerStats()
    inactive = log.segments[:-1]
    for i, segment in enumerate(inactive):
        upper = inactive[i + 1].base_offset if i + 1 < len(inactive) else log.active.base_offset
        build_offset_map(SegmentSource(segment.base_offset, upper, segment.store.open_reader()),
                         0, offset_map, stats, lambda: None)
    group = group_segments(inactive, log.config.segment_bytes, log.config.segment_index_bytes,
                           log.active.base_offset)[0]
    assert len(group) >= 2
    cleaned = log.new_cleaned_segment(group[0].base_offset)
    params = CleanParams(now_ms=NOW, delete_retention_ms=86_400_000, active_producers={},
                         upper_bound_offset=log.active.base_offset,
                         last_modified_ms=group[-1].last_modified_ms)
    clean_group([SegmentSource(s.base_offset, -1, s.store.open_reader()) for s in group],
                cleaned, offset_map, params, stats, lambda: None)
    log.finish_cleaned_segment(cleaned)
    return cleaned, group


def records_of(log: PartitionLog) -> list[tuple[int, bytes | None, bytes | None]]:
    return [(r.offset, r.key, r.value) for r in stored(log)]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()
                  if p.name.endswith((CLEANED_SUFFIX, SWAP_SUFFIX, DELETED_SUFFIX)))


# The points a crash can stop the swap at, as the files are then.
CRASH_POINTS = {
    "cleaned files written": "before",
    "log file renamed .swap, indexes still .cleaned": "before",
    "all renamed .swap": "after",
    "first old segment renamed .deleted": "after",
    "all old segments renamed .deleted": "after",
    "swap renamed into place, .deleted left": "after",
}


def crash_at(point: str, cleaned: LogSegment, group: list[LogSegment]) -> None:
    if point == "cleaned files written":
        return
    if point == "log file renamed .swap, indexes still .cleaned":
        path = cleaned.store.path  # type: ignore[attr-defined]
        path.rename(path.with_name(path.name.replace(CLEANED_SUFFIX, SWAP_SUFFIX)))
        return
    change_file_suffixes(cleaned, CLEANED_SUFFIX, SWAP_SUFFIX)
    if point == "all renamed .swap":
        return
    change_file_suffixes(group[0], "", DELETED_SUFFIX)
    if point == "first old segment renamed .deleted":
        return
    for segment in group[1:]:
        change_file_suffixes(segment, "", DELETED_SUFFIX)
    if point == "all old segments renamed .deleted":
        return
    change_file_suffixes(cleaned, SWAP_SUFFIX, "")


@pytest.mark.parametrize("point", list(CRASH_POINTS))
@pytest_twisted.ensureDeferred
async def test_a_crash_at_any_point_of_the_swap_recovers(tmp_path: Path, clock: Clock,
                                                          point: str) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = small_segments(storage)
    before = records_of(log)
    cleaned, group = clean_first_group(log)
    group_end = log.segments[len(group)].base_offset
    expected_after = ([(r.offset, r.key, r.value) for r in _segment_records(cleaned)]
                      + [r for r in before if r[0] >= group_end])
    assert expected_after != before
    crash_at(point, cleaned, group)
    cleaned.close()
    storage.abandon()  # kill -9

    storage = open_disk(data, clock)
    log = storage.get_log("t", 0)
    assert log is not None
    expected = before if CRASH_POINTS[point] == "before" else expected_after
    assert records_of(log) == expected
    assert leftovers(data / "t-0") == []
    # Every offset is found through the indexes, and appends carry on.
    for offset, _key, _value in expected:
        assert stored_from(log, offset)[0] == offset
    assert append(log, [(b"k1", b"more")], ts=T0 + 100).start == 16
    await storage.close()


def _segment_records(segment: LogSegment) -> list:  # type: ignore[type-arg]
    from tests.recordbatch import parse_batches

    return parse_batches(segment.read(0, segment.size))


def stored_from(log: PartitionLog, offset: int) -> list[int]:
    from tests.recordbatch import parse_batches

    return [r.offset for r in parse_batches(log.read(offset, 1 << 20).parts) if r.offset >= offset]


@pytest_twisted.ensureDeferred
async def test_a_swap_interrupted_after_a_group_lost_its_tail_still_keeps_every_latest_value(
        tmp_path: Path, clock: Clock) -> None:
    # Kafka's recovery deletes the old files only up to the end of the swapped segment:
    # an old segment of the group past it (all of its records superseded) comes back.
    # Such a log is still correct: every record that comes back has a later one.
    storage = open_disk(tmp_path / "data", clock)
    log = compacted_log(storage, **{k.replace(".", "_"): v for k, v in TOPIC_CONFIGS.items()})
    for n in range(6):
        append(log, [(b"k%d" % (n % 3), b"v%d-" % n + b"." * 40)], ts=T0 + n)
        if n % 3 == 2:
            log.roll(T0 + n)
    for n in range(6, 9):  # supersede them all, in segments too big to join their group
        append(log, [(b"k%d" % (n % 3), b"v%d" % n + b"." * 300)], ts=T0 + n)
    log.roll(T0 + 9)
    append(log, [(b"tail", b"x")], ts=T0 + 10)
    before = stored(log)
    cleaned, group = clean_first_group(log)
    assert [s.base_offset for s in group] == [0, 3] and cleaned.size == 0
    change_file_suffixes(cleaned, CLEANED_SUFFIX, SWAP_SUFFIX)
    cleaned.close()
    storage.abandon()
    storage = open_disk(tmp_path / "data", clock)
    log = storage.get_log("t", 0)
    assert log is not None
    after = stored(log)
    assert [r.offset for r in after] == list(range(3, 10))  # offsets 3-5 came back
    assert latest(after) == latest(before)
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_indexes_of_cleaned_segments_are_what_recovery_would_build(
        tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "data"
    configs = {"segment_bytes": str(1 << 20), "index_interval_bytes": "100"}
    storage = open_disk(data, clock, **configs)
    log = compacted_log(storage, **configs)
    for n in range(120):
        append(log, [(b"k%d" % (n % 40), b"v%d-" % n + b"." * 30)], ts=T0 + 1000 - n % 7 * 100)
        if n % 30 == 29:
            log.roll(T0)
    append(log, [(b"tail", b"x")], ts=T0)
    assert await storage.run_cleaner(NOW) == 1
    directory = data / "t-0"
    names = sorted(p.name for p in directory.glob("*.log"))
    indexes = {name: (read_offset_index(directory / name.replace(".log", ".index")),
                      read_time_index(directory / name.replace(".log", ".timeindex")))
               for name in names}
    cleaned = log.segments[0]
    assert cleaned.size > 0 and indexes[names[0]][0], "an index worth checking"
    # Each offset index entry points at the batch holding its offset.
    data_bytes = (directory / names[0]).read_bytes()
    for relative, position in indexes[names[0]][0]:
        (base,) = struct.unpack_from(">q", data_bytes, position)
        (last_delta,) = struct.unpack_from(">i", data_bytes, position + 23)
        assert base <= cleaned.base_offset + relative <= base + last_delta
    # The time index ends with the segment's largest timestamp.
    assert indexes[names[0]][1][-1][0] == max(b.max_timestamp for b in stored_batches(log)
                                              if b.base_offset < log.segments[1].base_offset)
    records = records_of(log)
    await storage.close()
    indexes = {name: (read_offset_index(directory / name.replace(".log", ".index")),
                      read_time_index(directory / name.replace(".log", ".timeindex")))
               for name in names}

    # Rebuilt from the segments alone (as after a crash), the indexes are the same.
    for name in names:
        (directory / name.replace(".log", ".index")).unlink()
        (directory / name.replace(".log", ".timeindex")).unlink()
    storage = open_disk(data, clock, **configs)
    log = storage.get_log("t", 0)
    assert log is not None
    assert records_of(log) == records
    for name in names:
        assert (read_offset_index(directory / name.replace(".log", ".index")),
                read_time_index(directory / name.replace(".log", ".timeindex"))) == indexes[name]
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_the_cleaner_checkpoint_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = small_segments(storage)
    end = log.active.base_offset
    assert await storage.run_cleaner(NOW) == 1
    assert read_offset_checkpoint(data / CLEANER_OFFSET_CHECKPOINT) == {("t", 0): end}
    await storage.close()

    storage = open_disk(data, clock)
    assert storage.cleaner.checkpoints == {("t", 0): end}
    # Nothing is dirty: without the checkpoint the whole log would count as dirty again.
    assert await storage.run_cleaner(NOW) == 0
    log = storage.get_log("t", 0)
    assert log is not None
    append(log, [(b"k1", b"new")], ts=T0)
    log.roll(T0)
    assert await storage.run_cleaner(NOW) == 1
    assert read_offset_checkpoint(data / CLEANER_OFFSET_CHECKPOINT) == {("t", 0): end + 2}
    # A deleted topic drops out of the checkpoint at its next write.
    other = compacted_log(storage, topic="other")
    append(other, [(b"a", b"1")], ts=T0)
    other.roll(T0)
    storage.delete_logs("t")
    assert await storage.run_cleaner(NOW) == 1
    assert read_offset_checkpoint(data / CLEANER_OFFSET_CHECKPOINT) == {("other", 0): 1}
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_a_checkpoint_beyond_the_log_end_is_reset(tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = small_segments(storage)
    before = stored(log)
    await storage.close()
    (data / CLEANER_OFFSET_CHECKPOINT).write_text("0\n1\nt 0 999\n")
    storage = open_disk(data, clock)
    assert await storage.run_cleaner(NOW) == 1
    log = storage.get_log("t", 0)
    assert log is not None and len(stored(log)) < len(before)
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_duplicates_are_still_found_after_cleaning_and_a_crash(tmp_path: Path,
                                                                      clock: Clock) -> None:
    # The kept (emptied) last batch of a producer is what rebuilds its state from the log
    # when no snapshot survives.
    from tests.recordbatch import make_batch

    data = tmp_path / "data"
    storage = open_disk(data, clock)
    log = compacted_log(storage, segment_bytes=1 << 20)
    last = make_batch([(b"a", b"1"), (b"b", b"1")], producer_id=9, producer_epoch=0,
                      base_sequence=0, timestamp=T0)
    log.append(last, leader_epoch=0, now_ms=T0)
    append(log, [(b"a", b"2"), (b"b", b"2")])
    log.roll(T0)
    assert await storage.run_cleaner(NOW) == 1
    assert [b.record_count for b in stored_batches(log)] == [0, 2]
    storage.abandon()
    for snapshot in (data / "t-0").glob("*.snapshot"):
        snapshot.unlink()
    storage = open_disk(data, clock)
    log = storage.get_log("t", 0)
    assert log is not None
    retry = log.append(last, leader_epoch=0, now_ms=NOW)
    assert (retry.base_offset, retry.last_offset, log.log_end_offset) == (0, 1, 4)
    await storage.close()


@pytest_twisted.ensureDeferred
async def test_a_topic_deleted_while_its_round_runs_leaves_nothing_behind(
        tmp_path: Path, clock: Clock) -> None:
    data = tmp_path / "data"
    storage = open_disk(data, clock)
    small_segments(storage)
    running = storage.run_cleaner(NOW)  # the first step is on a thread now
    storage.delete_logs("t")
    assert await running == 0
    await storage.close()
    assert not any(p.name.startswith("t-") and not p.name.endswith("-delete")
                   for p in data.iterdir())
