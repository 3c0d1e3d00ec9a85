"""Online migration between the classic and the consumer (KIP-848) group protocols over the
wire, on a Clock-driven broker: a consumer-protocol member upgrading a live classic group,
classic members served by the consumer group (JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
offsets), the downgrade when the last consumer-protocol member leaves, each
`group.consumer.migration.policy` and the size limits refusing, and the records written to
`__consumer_offsets` (read back from the log).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from kio.schema.errors import ErrorCode

from akfak.groups import consumer_protocol
from akfak.groups.consumer_records import (
    CURRENT_MEMBER_ASSIGNMENT,
    GROUP_METADATA,
    MEMBER_METADATA,
    PARTITION_METADATA,
    TARGET_ASSIGNMENT_MEMBER,
    TARGET_ASSIGNMENT_METADATA,
    ClassicMemberMetadata,
    ConsumerGroupKey,
    MemberMetadataValue,
    encode_value,
)
from akfak.groups.records import CoordinatorRecord, GroupMetadataKey, GroupMetadataValue, decode_record
from akfak.log.batch import scan
from akfak.log.records import iter_records
from tests.test_consumer_groups_protocol import OVERRIDES, Member, commit, describe
from tests.test_groups_protocol import (
    ClockedBroker,
    Conn,
    heartbeat_request,
    join_request,
    leave_request,
    sync_request,
)
from tests.test_groups_protocol import describe as describe_classic


def subscription(topics: list[str], owned: dict[str, list[int]] | None = None) -> bytes:
    """A ConsumerProtocolSubscription v1: topics, null user data, owned partitions."""
    out = struct.pack(">hi", 1, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    out += struct.pack(">i", -1) + struct.pack(">i", len(owned or {}))
    for t, ps in (owned or {}).items():
        out += struct.pack(">h", len(t)) + t.encode() + struct.pack(">i", len(ps))
        out += b"".join(struct.pack(">i", p) for p in ps)
    return out


class Classic:
    """A classic consumer (cooperative: it reports what it owns when it rejoins)."""

    def __init__(self, broker: ClockedBroker, group: str, topics: list[str], *, protocol: str = "range",
                 instance: str | None = None):
        self.broker, self.group, self.topics = broker, group, topics
        self.conn: Conn = broker.connect(f"classic-{group}")
        self.protocol, self.instance = protocol, instance
        self.member_id, self.generation = "", -1
        self.owned: dict[str, list[int]] = {}

    def _send(self, request: Any) -> Any:
        pending = self.conn.send(request)
        self.broker.advance(0)
        return pending

    def join_request(self) -> Any:
        return join_request(self.group, self.member_id, instance=self.instance, protocols=(
            (self.protocol, subscription(self.topics, self.owned)),))

    def join(self) -> Any:
        """JoinGroup (again with the member id when it is required); the response."""
        response = self._send(self.join_request()).result()
        if response.error_code == ErrorCode.member_id_required:
            self.member_id = response.member_id
            response = self._send(self.join_request()).result()
        if response.error_code == ErrorCode.none:
            self.member_id, self.generation = response.member_id, int(response.generation_id)
        return response

    def sync(self, assignments: dict[str, bytes] | None = None) -> Any:
        response = self._send(sync_request(self.group, self.generation, self.member_id, assignments,
                                           instance=self.instance, protocol_name=self.protocol)).result()
        if response.error_code == ErrorCode.none:
            partitions, _ = consumer_protocol.parse_assignment(response.assignment)
            self.owned = {t: sorted(ps) for t, ps in partitions}
        return response

    def heartbeat(self) -> ErrorCode:
        return self._send(heartbeat_request(self.group, self.generation, self.member_id,
                                            instance=self.instance)).result().error_code

    def leave(self) -> Any:
        return self._send(leave_request(self.group, (self.member_id, self.instance))).result()

    def partitions(self) -> set[tuple[str, int]]:
        return {(t, p) for t, ps in self.owned.items() for p in ps}


def classic_group(broker: ClockedBroker, group: str, count: int) -> list[Classic]:
    """`count` classic members, Stable, the leader giving each a range of topic t's 4 partitions."""
    members = [Classic(broker, group, ["t"]) for _ in range(count)]
    pendings = []
    for m in members:
        m.member_id = m.conn.request(m.join_request()).member_id
        pendings.append(m.conn.send(m.join_request()))
    broker.advance(0)
    joined = [p.result() for p in pendings]
    for m, r in zip(members, joined, strict=True):
        m.generation = int(r.generation_id)
    leader = next(m for m in members if m.member_id == joined[0].leader)
    share = 4 // count
    plan = {m.member_id: consumer_protocol.encode_assignment(
        [("t", range(i * share, (i + 1) * share))], 1) for i, m in enumerate(members)}
    syncs = [m.conn.send(sync_request(group, m.generation, m.member_id, plan if m is leader else None))
             for m in members]
    broker.advance(0)
    for m, s in zip(members, syncs, strict=True):
        partitions, _ = consumer_protocol.parse_assignment(s.result().assignment)
        m.owned = {t: sorted(ps) for t, ps in partitions}
    return members


def logged(broker: ClockedBroker, group: str) -> list[CoordinatorRecord]:
    """The records of `group` in its __consumer_offsets partition, in log order."""
    coordinator = broker.coordinator
    data = coordinator.store.read(coordinator.partition_for(group), 0, 1 << 24)
    view = memoryview(data)
    records = []
    for pos, header in scan(data):
        for r in iter_records(view[pos : pos + header.size]):
            record = decode_record(r.key, r.value)
            if record is not None and getattr(record.key, "group", None) == group:
                records.append(record)
    return records


def kind(record: CoordinatorRecord) -> tuple[Any, ...]:
    key = record.key
    if isinstance(key, ConsumerGroupKey):
        return (key.type, record.value is not None)
    return (type(key).__name__, record.value is not None)


def make_broker(tmp_path: Path, *extra: str, storage: str = "memory") -> ClockedBroker:
    broker = ClockedBroker(tmp_path / "data", (*OVERRIDES, *extra), storage=storage)
    broker.broker.controller.create_topic("t", 4)
    return broker


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClockedBroker]:
    broker = make_broker(tmp_path)
    yield broker
    broker.close()


def test_a_consumer_member_upgrades_a_live_classic_group_and_its_leaving_downgrades_it(
        cluster: ClockedBroker) -> None:
    a, b = classic_group(cluster, "g", 2)
    assert (a.generation, a.partitions(), b.partitions()) == (1, {("t", 0), ("t", 1)}, {("t", 2), ("t", 3)})
    c = Member(cluster, "g", names=["t"])
    joined = c.beat()
    # Converted at the classic generation, then bumped by c's subscription: c gets nothing
    # until the classic members release what its target takes from them.
    assert (joined.error_code, joined.member_epoch, c.partitions()) == (ErrorCode.none, 2, set())
    (group,) = describe(c.conn, "g")
    assert (group.group_state, group.group_epoch, group.assignment_epoch) == ("Reconciling", 2, 2)
    members = {m.member_id: m for m in group.members}
    assert [members[m.member_id].member_type for m in (a, b)] == [0, 0]
    assert members[c.member_id].member_type == 1
    assert {(t.topic_name, p) for t in members[a.member_id].assignment.topic_partitions
            for p in t.partitions} == a.partitions()
    assert describe_classic(a.conn, "g")[0].group_state == "Dead"  # not a classic group
    # A classic member commits with its generation (its member epoch), any version.
    assert commit(a.conn, "g", a.member_id, 1, {0: 5}) == {ErrorCode.none}
    assert commit(a.conn, "g", a.member_id, 0, {0: 5}) == {ErrorCode.illegal_generation}

    # The classic members are told to rejoin; each gives up what c's target takes (a
    # cooperative member first rejoins owning them: it stays in generation 1 meanwhile).
    assert (a.heartbeat(), b.heartbeat()) == (ErrorCode.rebalance_in_progress,) * 2
    revoked = 0
    for m in (a, b):
        held = m.partitions()
        first = m.join()
        assert (first.error_code, first.leader, first.members, first.protocol_name) == (
            ErrorCode.none, "", (), "range")
        assert m.sync().error_code == ErrorCode.none
        if first.generation_id == 1:  # it had partitions to give up
            revoked += 1
            assert m.partitions() < held
            assert m.heartbeat() == ErrorCode.rebalance_in_progress  # revoked: rejoin
            assert m.join().generation_id == 2
            assert m.sync().error_code == ErrorCode.none
        assert m.heartbeat() == ErrorCode.none
    assert revoked >= 1
    c.beat()
    assert c.partitions()
    assert {p for _, p in c.partitions()} | {p for _, p in a.partitions() | b.partitions()} == set(range(4))
    assert describe(c.conn, "g")[0].group_state == "Stable"

    # The last consumer-protocol member leaves: the group is classic again, rebalancing.
    assert c.leave().error_code == ErrorCode.none
    assert describe(c.conn, "g")[0].error_code == ErrorCode.group_id_not_found
    (classic,) = describe_classic(a.conn, "g")
    assert (classic.error_code, classic.group_state, classic.protocol_type) == (
        ErrorCode.none, "PreparingRebalance", "consumer")
    assert a.heartbeat() == ErrorCode.rebalance_in_progress
    pendings = [m.conn.send(m.join_request()) for m in (a, b)]
    cluster.advance(0)
    results = [p.result() for p in pendings]
    assert [(r.error_code, r.generation_id) for r in results] == [(ErrorCode.none, 3)] * 2
    assert {len(r.members) for r in results} == {0, 2}  # the leader gets the members

    records = logged(cluster, "g")
    upgrade = next(i for i, r in enumerate(records)
                   if isinstance(r.key, GroupMetadataKey) and r.value is None)
    # Kafka's convertToConsumerGroup: the classic tombstone, then createConsumerGroupRecords.
    assert [kind(r) for r in records[upgrade:upgrade + 8]] == [
        ("GroupMetadataKey", False), (MEMBER_METADATA, True), (MEMBER_METADATA, True),
        (GROUP_METADATA, True), (TARGET_ASSIGNMENT_MEMBER, True), (TARGET_ASSIGNMENT_MEMBER, True),
        (TARGET_ASSIGNMENT_METADATA, True), (CURRENT_MEMBER_ASSIGNMENT, True)]
    converted = records[upgrade + 1].value
    assert isinstance(converted, MemberMetadataValue) and converted.classic is not None
    assert converted.classic.session_timeout_ms == 10_000
    assert converted.classic.protocols[0][0] == "range"
    # The downgrade: the consumer group's tombstones, then the classic group.
    downgrade = max(i for i, r in enumerate(records) if kind(r) == (GROUP_METADATA, False))
    assert [kind(r) for r in records[downgrade - 1:downgrade + 2]] == [
        (PARTITION_METADATA, False), (GROUP_METADATA, False), ("GroupMetadataKey", True)]
    value = records[downgrade + 1].value
    assert isinstance(value, GroupMetadataValue)
    assert (value.protocol_type, value.generation, value.protocol, len(value.members)) == (
        "consumer", 2, "range", 2)
    assigned = {p for m in value.members for _, ps in consumer_protocol.parse_assignment(m.assignment)[0]
                for p in ps}
    # Each member is handed its target; c's partitions wait for the rebalance.
    assert assigned == {p for _, p in a.partitions() | b.partitions()}


def test_classic_members_joining_a_consumer_group(cluster: ClockedBroker) -> None:
    c = Member(cluster, "g", names=["t"])
    c.beat()
    a = Classic(cluster, "g", ["t"])
    first = a._send(a.join_request()).result()
    assert first.error_code == ErrorCode.member_id_required and len(first.member_id) == 22
    joined = a.join()
    # An eager-style member: new, it owns nothing, and gets what c has released (nothing yet).
    assert (joined.error_code, joined.generation_id) == (ErrorCode.none, 2)
    assert a.sync().error_code == ErrorCode.none and a.partitions() == set()
    assert a.heartbeat() == ErrorCode.none  # waiting on partitions c still holds
    c.beat()  # c is asked to revoke half
    c.beat()  # and has
    assert a.heartbeat() == ErrorCode.rebalance_in_progress  # released: rejoin to get them
    assert a.join().generation_id == 2 and a.sync().error_code == ErrorCode.none
    assert len(a.partitions()) == 2
    # Protocol errors, as Kafka.
    other = Classic(cluster, "g", ["t"], protocol="roundrobin")
    assert other.join().error_code == ErrorCode.inconsistent_group_protocol
    assert a._send(sync_request("g", 2, a.member_id, protocol_name="roundrobin")).result().error_code \
        == ErrorCode.inconsistent_group_protocol
    assert a._send(sync_request("g", 1, a.member_id)).result().error_code == ErrorCode.illegal_generation
    assert a._send(heartbeat_request("g", 2, "nobody")).result().error_code == ErrorCode.unknown_member_id
    # A consumer-protocol member is not a classic one.
    assert a._send(heartbeat_request("g", c.epoch, c.member_id)).result().error_code \
        == ErrorCode.unknown_member_id
    left = a.leave()
    assert [(m.member_id, m.error_code) for m in left.members] == [(a.member_id, ErrorCode.none)]
    assert a._send(leave_request("g", ("nobody", None))).result().members[0].error_code \
        == ErrorCode.unknown_member_id
    (group,) = describe(c.conn, "g")
    assert [m.member_id for m in group.members] == [c.member_id] and group.group_epoch == 3


def test_a_silent_classic_member_is_fenced_at_its_session_timeout(cluster: ClockedBroker) -> None:
    c = Member(cluster, "g", names=["t"])
    c.beat()
    a = Classic(cluster, "g", ["t"])
    a.join()
    a.sync()
    for _ in range(3):
        cluster.advance(4_000)
        c.beat()
        if a.heartbeat() == ErrorCode.rebalance_in_progress:  # c released a's partitions
            a.join()
            a.sync()
    assert a.partitions() and a.heartbeat() == ErrorCode.none
    cluster.advance(11_000)  # past its 10 s JoinGroup session timeout
    c.beat()
    assert [m.member_id for m in describe(c.conn, "g")[0].members] == [c.member_id]
    assert a.heartbeat() == ErrorCode.unknown_member_id


@pytest.mark.parametrize(("policy", "upgrades", "downgrades"), [
    ("bidirectional", True, True), ("upgrade", True, False), ("downgrade", False, True),
    ("DISABLED", False, False)])
def test_migration_policies(tmp_path: Path, policy: str, upgrades: bool, downgrades: bool) -> None:
    broker = make_broker(tmp_path, f"group.consumer.migration.policy={policy}")
    try:
        classic_group(broker, "g", 2)
        c = Member(broker, "g", names=["t"])
        joined = c.beat()
        if not upgrades:
            assert (joined.error_code, joined.error_message) == (
                ErrorCode.group_id_not_found,
                "Cannot upgrade classic group g to consumer group because online upgrade is disabled.")
            assert describe_classic(c.conn, "g")[0].group_state == "Stable"
        else:
            assert joined.error_code == ErrorCode.none
            c.leave()
            still_consumer = describe(c.conn, "g")[0].error_code == ErrorCode.none
            assert still_consumer is not downgrades
        # A classic member joining a consumer group with consumer members only.
        Member(broker, "h", names=["t"]).beat()
        assert Classic(broker, "h", ["t"]).join().error_code == ErrorCode.none
    finally:
        broker.close()


def test_size_limits_refuse_the_conversions(tmp_path: Path) -> None:
    broker = make_broker(tmp_path, "group.consumer.max.size=2")
    try:
        classic_group(broker, "big", 3)
        refused = Member(broker, "big", names=["t"]).beat()
        assert (refused.error_code, refused.error_message) == (
            ErrorCode.group_id_not_found, "Cannot upgrade classic group big to consumer group because "
                                          "the group size exceeds the consumer group maximum size.")
        classic_group(broker, "full", 2)
        refused = Member(broker, "full", names=["t"]).beat()
        # Convertible (2 members), but then full for a third.
        assert (refused.error_code, refused.error_message) == (
            ErrorCode.group_max_size_reached,
            "The consumer group has reached its maximum capacity of 2 members.")
        assert describe_classic(broker.connect(), "full")[0].group_state == "Stable"
        # A classic member into a full consumer group.
        c = Member(broker, "g", names=["t"])
        c.beat()
        assert Classic(broker, "g", ["t"]).join().error_code == ErrorCode.none
        assert Classic(broker, "g", ["t"]).join().error_code == ErrorCode.group_max_size_reached
    finally:
        broker.close()


def test_over_the_classic_max_size_the_group_stays_a_consumer_group(tmp_path: Path) -> None:
    broker = make_broker(tmp_path, "group.max.size=1")
    try:
        c = Member(broker, "g", names=["t"])
        c.beat()
        for _ in range(2):
            assert Classic(broker, "g", ["t"]).join().error_code == ErrorCode.none
        c.leave()
        (group,) = describe(c.conn, "g")
        assert (group.error_code, len(group.members)) == (ErrorCode.none, 2)
    finally:
        broker.close()


def test_upgrade_refused_for_a_custom_assignors_user_data(cluster: ClockedBroker) -> None:
    a = Classic(cluster, "g", ["t"])
    a.join()
    custom = consumer_protocol.encode_assignment([("t", [0])], 1)[:-4] + struct.pack(">i", 2) + b"ud"
    assert a.sync({a.member_id: custom}).error_code == ErrorCode.none
    refused = Member(cluster, "g", names=["t"]).beat()
    assert refused.error_code == ErrorCode.group_id_not_found
    assert "unsupported custom assignor" in refused.error_message


def test_classic_member_metadata_is_encoded_as_kafka_writes_it() -> None:
    value = MemberMetadataValue(None, None, "c", "/h", ("t",), None, 30_000, None,
                                ClassicMemberMetadata(10_000, (("range", b"\x00\x01"),)))
    encoded = encode_value(value)
    # ... then tag 0: size 15, non-null marker, session timeout, one protocol (name, bytes, no
    # tags), no tags; a consumer-protocol member has the tag with its null marker.
    tail = (b"\x01\x00\x11\x01" + struct.pack(">i", 10_000) + b"\x02\x06range\x03\x00\x01\x00\x00")
    assert encoded.endswith(b"\x00" + tail)
    plain = encode_value(MemberMetadataValue(None, None, "c", "/h", ("t",), None, 30_000, None))
    assert plain.endswith(b"\x00\x01\x00\x01\x00")


@pytest_twisted.inlineCallbacks
def test_classic_members_of_a_consumer_group_are_replayed_after_a_restart(tmp_path: Path) -> Any:
    first = make_broker(tmp_path, storage="disk")
    a, _ = classic_group(first, "g", 2)
    Member(first, "g", names=["t"]).beat()
    before = describe(first.connect(), "g")[0]
    yield first.close()
    second = ClockedBroker(tmp_path / "data", OVERRIDES, storage="disk")
    try:
        after = describe(second.connect(), "g")[0]
        assert sorted(after.members, key=lambda m: m.member_id) == sorted(
            before.members, key=lambda m: m.member_id)
        member = second.coordinator.consumer.groups["g"].members[a.member_id]
        assert member.classic is not None and member.classic.session_timeout_ms == 10_000
        a.broker, a.conn = second, second.connect()
        assert a.heartbeat() == ErrorCode.rebalance_in_progress
    finally:
        yield second.close()
