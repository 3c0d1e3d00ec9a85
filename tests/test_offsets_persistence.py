"""`__consumer_offsets`: Kafka's record formats, loading at start, compaction.

Restart tests use disk storage in the test's directory and a Clock for the
coordinator's timers; closing storage flushes on a thread, hence pytest-twisted.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest_twisted
from kio.schema.errors import ErrorCode
from twisted.internet.task import Clock

from akfak.config import BrokerConfig
from akfak.groups.compaction import OffsetsCompactor, clean
from akfak.groups.coordinator import GroupCoordinator
from akfak.groups.records import (
    CoordinatorRecord,
    GroupMetadataKey,
    OffsetCommitKey,
    OffsetCommitValue,
    decode_record,
    encode_batch,
    encode_records,
    iter_batch_records,
    iter_batches,
    java_string_hash,
    partition_for,
)
from akfak.groups.results import CommitRequestPartition
from akfak.groups.store import MemoryOffsetsTopic
from tests.test_groups_protocol import (
    DEFAULT_OVERRIDES,
    ClockedBroker,
    heartbeat_request,
    join_request,
    stable_group,
    sync_request,
)
from tests.test_offsets_protocol import commit_request, fetch, fetched


def test_group_partition_is_kafkas() -> None:
    # Java's String.hashCode, including overflow and a surrogate pair.
    assert java_string_hash("abc") == 96354
    assert java_string_hash("Aa") == java_string_hash("BB") == 2112
    assert java_string_hash("polygenelubricants") == -(2**31)  # Utils.abs(MIN_VALUE) is 0
    assert java_string_hash("\U0001f600") == 0xD83D * 31 + 0xDE00
    assert partition_for("abc", 50) == 96354 % 50
    assert partition_for("polygenelubricants", 50) == 0
    assert partition_for("console-consumer", 50) == abs(java_string_hash("console-consumer")) % 50


def _s(text: str) -> bytes:
    return struct.pack(">h", len(text)) + text.encode()


def offsets_log_records(cluster: ClockedBroker, group: str) -> list[tuple[bytes, bytes | None]]:
    partition = partition_for(group, 50)
    log = cluster.broker.storage.get_log("__consumer_offsets", partition)
    data = b"".join(log.read(0, 1 << 20).parts)
    return [(r.key, r.value) for _info, batch in iter_batches(data) for r in iter_batch_records(batch)]


def test_records_use_kafkas_key_and_value_formats(tmp_path: Path) -> None:
    cluster = ClockedBroker(tmp_path, DEFAULT_OVERRIDES)
    try:
        cluster.broker.controller.create_topic("t", 1)
        cluster.advance(1234)
        (conn, member, generation), = stable_group(cluster, "grp", 1)
        conn.request(commit_request("grp", {("t", 0): (77, 5, "md")}, generation=generation,
                                    member_id=member))
        records = offsets_log_records(cluster, "grp")
        group_key = struct.pack(">h", 2) + _s("grp")
        offset_key = struct.pack(">h", 1) + _s("grp") + _s("t") + struct.pack(">i", 0)
        assert [k for k, _ in records] == [group_key, group_key, offset_key]
        # The new group's empty record: GroupMetadataValue v3, no protocol type, generation 0.
        assert records[0][1] == (struct.pack(">h", 3) + _s("") + struct.pack(">i", 0) + b"\xff\xff" * 2
                                 + struct.pack(">q", 1234) + struct.pack(">i", 0))
        # The Stable generation: protocol, leader and the member with its assignment.
        value = records[1][1]
        assert value is not None
        expected_head = (struct.pack(">h", 3) + _s("consumer") + struct.pack(">i", 1) + _s("range")
                         + _s(member))
        assert value.startswith(expected_head)
        member_part = (_s(member) + b"\xff\xff" + _s("c0") + _s("/127.0.0.1")
                       + struct.pack(">ii", 30000, 10000)
                       + struct.pack(">i", 4) + b"meta" + struct.pack(">i", len(f"assignment-{member}"))
                       + f"assignment-{member}".encode())
        assert value.endswith(struct.pack(">i", 1) + member_part)
        # OffsetCommitValue v3: offset, leader epoch, metadata, commit timestamp.
        assert records[2][1] == (struct.pack(">hqi", 3, 77, 5) + _s("md") + struct.pack(">q", 1234))
    finally:
        cluster.close()


def test_explicit_expiry_is_written_as_value_version_1(tmp_path: Path) -> None:
    cluster = ClockedBroker(tmp_path, DEFAULT_OVERRIDES)
    try:
        cluster.broker.controller.create_topic("t", 1)
        conn = cluster.connect()
        conn.request(commit_request("g", {("t", 0): (5, -1, "")}, version=3, retention_ms=1000))
        (_key, value), = [r for r in offsets_log_records(cluster, "g") if r[0][:2] == b"\x00\x01"]
        assert value == struct.pack(">hq", 1, 5) + _s("") + struct.pack(">qq", 0, 1000)
    finally:
        cluster.close()


def test_values_of_every_kafka_version_are_read() -> None:
    key = struct.pack(">h", 0) + _s("g") + _s("t") + struct.pack(">i", 3)  # key version 0
    v0 = struct.pack(">hq", 0, 10) + _s("m") + struct.pack(">q", 100)
    v2 = struct.pack(">hq", 2, 10) + _s("m") + struct.pack(">q", 100)
    # v4: flexible, compact string, then tagged fields.
    v4 = struct.pack(">hqi", 4, 10, 6) + bytes([2]) + b"m" + struct.pack(">q", 100) + b"\x00"
    for value, epoch in ((v0, -1), (v2, -1), (v4, 6)):
        record = decode_record(key, value)
        assert record == CoordinatorRecord(OffsetCommitKey("g", "t", 3),
                                           OffsetCommitValue(10, epoch, "m", 100, -1))
    assert decode_record(struct.pack(">h", 3) + _s("g"), b"") is None  # a consumer-group record


# -- restart -----------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_offsets_and_groups_survive_a_restart(tmp_path: Path) -> Any:
    overrides = [*DEFAULT_OVERRIDES, "offsets.topic.num.partitions=5"]
    first = ClockedBroker(tmp_path, overrides, storage="disk")
    first.broker.controller.create_topic("t", 2)
    members = stable_group(first, "g", 2, session=10_000)
    (_lconn, leader, gen), (fconn, follower, _) = members
    fconn.request(commit_request("g", {("t", 0): (11, 1, "a"), ("t", 1): (12, 2, "b")}, generation=gen,
                                 member_id=follower))
    first.connect().request(commit_request("simple", {("t", 0): (3, -1, "")}))
    yield first.close()

    second = ClockedBroker(tmp_path, overrides, storage="disk", load=False)
    try:
        conn = second.connect()
        # Until its partition is loaded a group cannot be served.
        assert fetch(conn, "g", None).error_code == ErrorCode.coordinator_load_in_progress
        assert conn.request(join_request("g")).error_code == ErrorCode.coordinator_load_in_progress
        assert conn.request(heartbeat_request("g", gen, follower)).error_code == ErrorCode.none
        assert conn.request(sync_request("g", gen, follower)).error_code == ErrorCode.rebalance_in_progress
        second.advance(0)
        assert fetched(fetch(conn, "g", None)) == {("t", 0): (11, 1, "a", ErrorCode.none),
                                                   ("t", 1): (12, 2, "b", ErrorCode.none)}
        assert fetched(fetch(conn, "simple", None)) == {("t", 0): (3, -1, "", ErrorCode.none)}
        group = second.coordinator.groups["g"]
        assert group.state.value == "Stable" and group.generation_id == gen
        assert set(group.members) == {leader, follower}
        assert group.members[follower].assignment == f"assignment-{follower}".encode()
        # A member still alive carries on with its generation ...
        assert fconn_heartbeat(second, follower, gen) == ErrorCode.none
        # ... and the one that never came back is evicted after its session timeout.
        second.advance(6000)
        assert fconn_heartbeat(second, follower, gen) == ErrorCode.none
        second.advance(4000)
        assert leader not in group.members
        assert fconn_heartbeat(second, follower, gen) == ErrorCode.rebalance_in_progress
    finally:
        yield second.close()


def fconn_heartbeat(cluster: ClockedBroker, member: str, generation: int) -> ErrorCode:
    response = cluster.connect("again").request(heartbeat_request("g", generation, member))
    return ErrorCode(response.error_code)


@pytest_twisted.inlineCallbacks
def test_deletions_survive_a_restart(tmp_path: Path) -> Any:
    overrides = [*DEFAULT_OVERRIDES, "offsets.topic.num.partitions=3"]
    first = ClockedBroker(tmp_path, overrides, storage="disk")
    first.broker.controller.create_topic("t", 1)
    conn = first.connect()
    conn.request(commit_request("gone", {("t", 0): (1, -1, "")}))
    conn.request(commit_request("kept", {("t", 0): (2, -1, "")}))
    from tests.test_groups_protocol import schema

    conn.request(schema("delete_groups", 2).DeleteGroupsRequest(groups_names=("gone",)))
    yield first.close()
    second = ClockedBroker(tmp_path, overrides, storage="disk")
    try:
        assert set(second.coordinator.groups) == {"kept"}
        assert set(second.coordinator.offsets) == {"kept"}
    finally:
        yield second.close()


# -- compaction --------------------------------------------------------------------------


def batch(records: list[tuple[int, bytes, bytes | None]], *, horizon: int | None = None) -> bytes:
    from akfak.groups.records import LogRecord

    base = records[0][0]
    return encode_records(base, records[-1][0] - base, [LogRecord(o, 1000 + o, k, v) for o, k, v in records],
                          delete_horizon_ms=horizon)


def offsets_of(batches: list[bytes]) -> list[tuple[int, bytes | None, bytes | None]]:
    return [(r.offset, r.key, r.value) for b in batches for _i, v in iter_batches(b)
            for r in iter_batch_records(v)]


def test_clean_keeps_the_latest_record_per_key_at_its_offset() -> None:
    batches = [batch([(0, b"a", b"1"), (1, b"b", b"1")]), batch([(2, b"a", b"2"), (3, b"c", b"1")]),
               batch([(4, b"b", b"2")])]
    cleaned, stats = clean(batches, now_ms=0, delete_retention_ms=1000)
    assert offsets_of(cleaned) == [(2, b"a", b"2"), (3, b"c", b"1"), (4, b"b", b"2")]
    assert (stats.records_in, stats.records_out, stats.batches_out) == (5, 3, 2)
    # The batch that lost records keeps its base offset and offset span.
    (info, _view), = iter_batches(cleaned[0])
    assert (info.base_offset, info.last_offset) == (2, 3)
    assert cleaned[1] == batches[2]  # untouched batches are kept byte for byte


def test_tombstones_stay_for_delete_retention_after_the_first_cleaning() -> None:
    batches = [batch([(0, b"a", b"1"), (1, b"b", b"1")]), batch([(2, b"a", None)])]
    once, _ = clean(batches, now_ms=5000, delete_retention_ms=1000)
    assert offsets_of(once) == [(1, b"b", b"1"), (2, b"a", None)]
    (info, _view), = list(iter_batches(once[1]))
    assert info.delete_horizon_ms == 6000
    # Record timestamps survive the horizon in the base timestamp.
    assert [r.timestamp for _i, v in iter_batches(once[1]) for r in iter_batch_records(v)] == [1002]
    assert offsets_of(clean(once, now_ms=5999, delete_retention_ms=1000)[0]) == offsets_of(once)
    assert offsets_of(clean(once, now_ms=6000, delete_retention_ms=1000)[0]) == [(1, b"b", b"1")]


def test_compaction_of_a_coordinators_partitions_keeps_its_state() -> None:
    clock = Clock()
    config = BrokerConfig(properties={"offsets.topic.num.partitions": "1"})
    store = MemoryOffsetsTopic(segment_bytes=2000)
    coordinator = GroupCoordinator(config, clock, store)
    coordinator.start()
    for i in range(200):
        coordinator.commit_offsets("g", -1, "", None, [CommitRequestPartition("t", i % 3, i)], version=9)
        clock.advance(1)
    coordinator.commit_offsets("other", -1, "", None, [CommitRequestPartition("t", 0, 5)], version=9)
    coordinator.delete_groups(["other"])
    before = len(store.read(0, 0, 1 << 30))
    compactor = OffsetsCompactor(coordinator, delete_retention_ms=60_000, min_cleanable_ratio=0.5)
    assert compactor.run().result == 1
    after = store.read(0, 0, 1 << 30)
    assert len(after) < before / 5
    # Below the active segment, at most one record per key remains.
    _inactive, active_start = store.cleanable(0)
    cleaned = [decode_record(r.key, r.value) for _i, v in iter_batches(after) for r in iter_batch_records(v)
               if r.offset < active_start]
    cleaned_keys = [r.key for r in cleaned if r is not None]
    assert len(cleaned_keys) == len(set(cleaned_keys)) > 0
    reloaded = GroupCoordinator(config, clock, store)
    reloaded.start()
    clock.advance(0)
    assert reloaded.offsets == coordinator.offsets
    assert {o.offset for o in reloaded.offsets["g"].values()} == {197, 198, 199}
    assert set(reloaded.groups) == {"g"}

    def records_of_other() -> list[Any]:
        return [r for _i, v in iter_batches(store.read(0, 0, 1 << 30)) for r in iter_batch_records(v)
                if (d := decode_record(r.key, r.value)) is not None and d.key == GroupMetadataKey("other")]

    for i in range(30):  # fill segments so that the tombstones are in an inactive one
        coordinator.commit_offsets("g", -1, "", None, [CommitRequestPartition("t", i % 3, 1000 + i)],
                                   version=9)
    compactor.run()  # the first cleaning to see the tombstones stamps their delete horizon
    assert [r.value for r in records_of_other()] == [None]
    clock.advance(59)
    compactor.first_dirty.clear()
    compactor.run()
    assert [r.value for r in records_of_other()] == [None]
    clock.advance(1)  # delete.retention.ms after that cleaning, they go
    compactor.first_dirty.clear()
    compactor.run()
    assert records_of_other() == []


def test_encode_batch_is_a_valid_kafka_batch() -> None:
    import crc32c

    data = encode_batch([(b"k", b"v"), (b"k2", None)], timestamp=99)
    (base, length, _epoch, magic, crc, attributes, last_delta, base_ts, max_ts, pid, pepoch, seq,
     count) = struct.unpack_from(">qiibIhiqqqhii", data)
    assert (base, length + 12, magic, attributes, last_delta, base_ts, max_ts, pid, pepoch, seq, count) == (
        0, len(data), 2, 0, 1, 99, 99, -1, -1, -1, 2)
    assert crc == crc32c.crc32c(data[21:])
    records = data[61:]
    # First record: length 8, attributes 0, timestamp delta 0, offset delta 0, key "k", value "v", 0 headers.
    assert records[:9] == bytes([16, 0, 0, 0, 2]) + b"k" + bytes([2]) + b"v" + bytes([0])
