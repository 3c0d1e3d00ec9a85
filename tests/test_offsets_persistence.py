"""`__consumer_offsets`: Kafka's record formats, loading at start, compaction by the log cleaner.

Restart tests use disk storage in the test's directory and a Clock for the
coordinator's timers; closing storage flushes on a thread, hence pytest-twisted.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest_twisted
from kio.schema.errors import ErrorCode

from akfak.groups.consumer_records import ConsumerGroupKey
from akfak.groups.consumer_records import GroupMetadataValue as ConsumerGroupMetadataValue
from akfak.groups.records import (
    CoordinatorRecord,
    GroupMetadataKey,
    OffsetCommitKey,
    OffsetCommitValue,
    decode_record,
    java_string_hash,
    partition_for,
)
from akfak.groups.results import CommitRequestPartition
from akfak.log.batch import scan
from akfak.log.records import Record, encode_batch, iter_records
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
    return [(r.key, r.value) for r in stored_records(b"".join(log.read(0, 1 << 20).parts))]


def stored_records(data: bytes) -> list[Record]:
    return [r for pos, header in scan(data) for r in iter_records(data[pos : pos + header.size])]


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
    assert decode_record(struct.pack(">h", 10) + _s("g"), b"") is None  # a share-group record
    # a consumer-group record (KIP-848), ConsumerGroupMetadata: epoch 5, MetadataHash tag 0
    group = decode_record(struct.pack(">h", 3) + _s("g"),
                          struct.pack(">hi", 0, 5) + b"\x01\x00\x08" + struct.pack(">q", -7))
    assert group == CoordinatorRecord(ConsumerGroupKey(3, "g"), ConsumerGroupMetadataValue(5, -7))
    assert group.encode() == (struct.pack(">h", 3) + _s("g"),
                              struct.pack(">hi", 0, 5) + b"\x01\x00\x08" + struct.pack(">q", -7))


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
#
# `__consumer_offsets` has cleanup.policy=compact, so the storage's log cleaner compacts it
# as any compacted topic (tests/log/test_cleaner*.py hold the cleaner's own rules).


def offsets_records(cluster: ClockedBroker) -> list[tuple[int, bytes | None, bytes | None]]:
    log = cluster.broker.storage.get_log("__consumer_offsets", 0)
    return [(r.offset, r.key, r.value) for r in stored_records(b"".join(log.read(
        log.log_start_offset, 1 << 30).parts))]


@pytest_twisted.inlineCallbacks
def test_the_log_cleaner_compacts_offsets_and_a_restart_resumes_every_group(tmp_path: Path
                                                                           ) -> Any:
    overrides = [*DEFAULT_OVERRIDES, "offsets.topic.num.partitions=1",
                 "offsets.topic.segment.bytes=2000", "log.cleaner.delete.retention.ms=60000"]
    first = ClockedBroker(tmp_path, overrides, storage="disk")
    coordinator = first.coordinator
    storage = first.broker.storage
    for i in range(200):
        coordinator.commit_offsets("g", -1, "", None, [CommitRequestPartition("t", i % 3, i)],
                                   version=9)
        first.advance(1)
    coordinator.commit_offsets("other", -1, "", None, [CommitRequestPartition("t", 0, 5)],
                               version=9)
    coordinator.delete_groups(["other"])
    log = storage.get_log("__consumer_offsets", 0)
    before = log.size_in_bytes
    active_start = log.active.base_offset
    assert len(log.segments) > 5
    tombstones = [o for o, k, v in offsets_records(first) if v is None]
    assert tombstones and min(tombstones) >= active_start

    assert (yield storage.run_cleaner(first.now_ms)) == 1
    assert log.size_in_bytes < before / 5
    # Below the active segment at most one record per key remains, at its own offset.
    cleaned = [(offset, key) for offset, key, _value in offsets_records(first)
               if offset < active_start]
    assert len({key for _, key in cleaned}) == len(cleaned) > 0
    committed = dict(coordinator.offsets)
    yield first.close()

    second = ClockedBroker(tmp_path, overrides, storage="disk")
    try:
        assert second.coordinator.offsets == committed
        assert {o.offset for o in second.coordinator.offsets["g"].values()} == {197, 198, 199}
        assert set(second.coordinator.groups) == {"g"}
        conn = second.connect()
        assert fetched(fetch(conn, "g", None)) == {
            ("t", i % 3): (i, -1, "", ErrorCode.none) for i in (197, 198, 199)}

        def records_of_other() -> list[bytes | None]:
            return [value for _offset, key, value in offsets_records(second)
                    if key is not None and (d := decode_record(key, value)) is not None
                    and d.key == GroupMetadataKey("other")]

        def clean_at(now: int) -> Any:
            # New commits, to have something dirty: the cleaner passes over clean logs.
            for i in range(30):
                second.coordinator.commit_offsets(
                    "g", -1, "", None, [CommitRequestPartition("t", i % 3, 1000 + i)], version=9)
            log = second.broker.storage.get_log("__consumer_offsets", 0)
            log.roll(now)
            return second.broker.storage.run_cleaner(now)

        # The deleted group's tombstones (in the active segment until now) stay
        # delete.retention.ms after the cleaning that first kept them.
        assert records_of_other() == [None]
        stamped = 880_000
        assert (yield clean_at(stamped)) == 1
        assert records_of_other() == [None]
        assert (yield clean_at(stamped + 59_999)) == 1
        assert records_of_other() == [None]
        assert (yield clean_at(stamped + 60_000)) == 1
        assert records_of_other() == []
        assert {o.offset for o in second.coordinator.offsets["g"].values()} == {1027, 1028, 1029}
    finally:
        yield second.close()

    third = ClockedBroker(tmp_path, overrides, storage="disk")
    try:
        assert {o.offset for o in third.coordinator.offsets["g"].values()} == {1027, 1028, 1029}
        assert set(third.coordinator.groups) == {"g"}
    finally:
        yield third.close()


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
