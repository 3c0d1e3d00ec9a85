"""The consumer group protocol (KIP-848) over the wire, on a Clock-driven broker:
ConsumerGroupHeartbeat and ConsumerGroupDescribe, epochs, reconciliation (revoke before
assign), leaving, static members, session and rebalance timeouts, the assignors, regular
expressions and topic changes, offsets with member epochs, listing, describing, deleting,
and the group's records replayed after a restart.

Uses the in-memory connections of test_groups_protocol.  `Member` plays a client that
acknowledges every assignment at once (its next heartbeat owns what it was given).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i32Timedelta, i64
from twisted.internet import defer

from tests.test_groups_protocol import ClockedBroker, Conn, join_request, schema

OVERRIDES = ("group.initial.rebalance.delay.ms=0", "group.min.session.timeout.ms=1000",
             "offsets.topic.num.partitions=3")
SESSION_MS = 45_000  # Kafka's group.consumer.session.timeout.ms default

Owned = dict[uuid.UUID, set[int]]


def heartbeat(group: str, member_id: str, epoch: int, *, names: list[str] | None = None,
              regex: str | None = None, owned: Owned | None = None, instance: str | None = None,
              rebalance_ms: int = -1, assignor: str | None = None, version: int = 1) -> Any:
    m = schema("consumer_group_heartbeat", version)
    fields: dict[str, Any] = {}
    if version >= 1:
        fields["subscribed_topic_regex"] = regex
    return m.ConsumerGroupHeartbeatRequest(
        group_id=group, member_id=member_id, member_epoch=i32(epoch), instance_id=instance, rack_id=None,
        rebalance_timeout=i32Timedelta.parse(timedelta(milliseconds=rebalance_ms)),
        subscribed_topic_names=None if names is None else tuple(names), server_assignor=assignor,
        topic_partitions=None if owned is None else tuple(
            m.TopicPartitions(topic_id=t, partitions=tuple(i32(p) for p in sorted(ps)))
            for t, ps in owned.items()),
        **fields)


class Member:
    """A consumer-protocol client that owns whatever it was last assigned."""

    def __init__(self, broker: ClockedBroker, group: str, *, names: list[str] | None = None,
                 regex: str | None = None, instance: str | None = None, assignor: str | None = None,
                 rebalance_ms: int = 60_000):
        self.broker = broker
        self.conn: Conn = broker.connect(f"client-{group}")
        self.group = group
        self.member_id = uuid.uuid4().hex[:22]
        self.epoch = 0
        self.owned: Owned = {}
        self.names, self.regex, self.instance = names, regex, instance
        self.assignor, self.rebalance_ms = assignor, rebalance_ms

    def beat(self, *, ack: bool = True) -> Any:
        joining = self.epoch == 0
        answer = self.conn.send(heartbeat(
            self.group, self.member_id, self.epoch, names=self.names if joining else None,
            regex=self.regex if joining else None, owned={} if joining else self.owned,
            instance=self.instance, rebalance_ms=self.rebalance_ms if joining else -1,
            assignor=self.assignor))
        self.broker.advance(0)
        response = answer.result()
        if response.error_code == ErrorCode.none:
            self.epoch = int(response.member_epoch)
            if response.assignment is not None and ack:
                self.owned = {t.topic_id: set(t.partitions) for t in response.assignment.topic_partitions
                              if t.partitions}
        return response

    def leave(self, epoch: int = -1) -> Any:
        answer = self.conn.send(heartbeat(self.group, self.member_id, epoch, instance=self.instance))
        self.broker.advance(0)
        return answer.result()

    def partitions(self) -> set[tuple[uuid.UUID, int]]:
        return {(t, p) for t, ps in self.owned.items() for p in ps}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClockedBroker]:
    broker = ClockedBroker(tmp_path / "data", OVERRIDES)
    broker.broker.controller.create_topic("t", 4)
    yield broker
    broker.close()


def topic_id(broker: ClockedBroker, name: str) -> uuid.UUID:
    return broker.broker.controller.image.topic(name).topic_id


def describe(conn: Conn, *groups: str, version: int = 1) -> Any:
    m = schema("consumer_group_describe", version)
    return conn.request(m.ConsumerGroupDescribeRequest(group_ids=groups,
                                                       include_authorized_operations=False)).groups


def all_of(broker: ClockedBroker, name: str) -> set[tuple[uuid.UUID, int]]:
    tid = topic_id(broker, name)
    return {(tid, p) for p in range(broker.broker.controller.image.topic(name).num_partitions)}


def test_a_partition_moves_only_once_its_owner_released_it(cluster: ClockedBroker) -> None:
    a = Member(cluster, "g", names=["t"])
    first = a.beat()
    assert (first.error_code, first.member_id, first.member_epoch) == (ErrorCode.none, a.member_id, 1)
    assert first.heartbeat_interval == timedelta(milliseconds=5000)
    assert a.partitions() == all_of(cluster, "t")
    b = Member(cluster, "g", names=["t"])
    joined = b.beat()
    # b is in epoch 2 but its target partitions are still a's: it gets nothing yet.
    assert joined.member_epoch == 2 and b.partitions() == set()
    assert describe(b.conn, "g")[0].group_state == "Reconciling"
    # a is asked to give up half: it keeps epoch 1 until it no longer owns them.
    revoking = a.beat(ack=False)
    assert revoking.member_epoch == 1
    kept = {(t.topic_id, p) for t in revoking.assignment.topic_partitions for p in t.partitions}
    assert len(kept) == 2 and kept < a.partitions()
    assert b.beat().assignment is None  # still unreleased
    a.owned = {topic_id(cluster, "t"): {p for _, p in kept}}
    assert a.beat().member_epoch == 2
    given = b.beat()
    assert given.member_epoch == 2 and b.partitions() == all_of(cluster, "t") - kept
    (group,) = describe(a.conn, "g")
    assert (group.group_state, group.group_epoch, group.assignment_epoch, group.assignor_name) == (
        "Stable", 2, 2, "uniform")
    members = {m.member_id: m for m in group.members}
    assert members[a.member_id].member_type == 1 and members[a.member_id].client_host == "/127.0.0.1"
    assert {(t.topic_name, p) for t in members[b.member_id].assignment.topic_partitions
            for p in t.partitions} == {("t", p) for _, p in b.partitions()}


def test_epochs_and_request_errors(cluster: ClockedBroker) -> None:
    a = Member(cluster, "g", names=["t"])
    a.beat()
    conn = a.conn

    def error(request: Any) -> tuple[ErrorCode, str | None]:
        answer = conn.send(request)
        cluster.advance(0)
        response = answer.result()
        return response.error_code, response.error_message

    owned = a.owned
    assert error(heartbeat("g", a.member_id, 2, owned=owned))[0] == ErrorCode.fenced_member_epoch
    assert error(heartbeat("g", "nobody", 1, owned={}))[0] == ErrorCode.unknown_member_id
    assert error(heartbeat("nogroup", "m", 3, owned={})) == (
        ErrorCode.group_id_not_found, "Consumer group nogroup not found.")
    assert error(heartbeat("g", "", 0, names=["t"], owned={}, rebalance_ms=1000)) == (
        ErrorCode.invalid_request, "MemberId can't be empty.")
    assert error(heartbeat("g", "m2", 0, names=["t"], owned={}))[1] == (
        "RebalanceTimeoutMs must be provided in first request.")
    assert error(heartbeat("g", "m2", 0, owned={}, rebalance_ms=1000))[0] == ErrorCode.invalid_request
    assert error(heartbeat("g", "m2", -3))[0] == ErrorCode.invalid_request
    assert error(heartbeat("g", "m2", 0, names=["t"], owned={}, rebalance_ms=1000, assignor="sticky"))[0] \
        == ErrorCode.unsupported_assignor
    assert error(heartbeat("g", "m2", 0, regex="(", owned={}, rebalance_ms=1000))[0] == \
        ErrorCode.invalid_regular_expression
    # v0 may leave the member id to the coordinator.
    answer = conn.send(heartbeat("g", "", 0, names=["t"], owned={}, rebalance_ms=1000, version=0))
    cluster.advance(0)
    assert len(answer.result().member_id) == 22
    # A classic group whose metadata is not the consumer protocol's cannot be upgraded, and
    # a classic member of another protocol type cannot join a consumer group (the migration
    # cases are in test_consumer_groups_migration).
    classic = cluster.connect()
    joined = classic.send(join_request("classic", member_id="", version=3))
    cluster.advance(0)
    assert joined.result().error_code == ErrorCode.none
    assert error(heartbeat("classic", "m", 0, names=["t"], owned={}, rebalance_ms=1000)) == (
        ErrorCode.group_id_not_found, "Cannot upgrade classic group classic to consumer group because "
                                      "the embedded consumer protocol is malformed.")
    assert describe(conn, "classic")[0].error_code == ErrorCode.group_id_not_found
    assert classic.send(join_request("g", member_id="", version=3, protocol_type="other")).result(
        ).error_code == ErrorCode.inconsistent_group_protocol


def test_leave_session_and_rebalance_timeouts(cluster: ClockedBroker) -> None:
    a = Member(cluster, "g", names=["t"], rebalance_ms=5000)
    a.beat()
    b = Member(cluster, "g", names=["t"])
    b.beat()
    # a never lets go of what it must revoke: fenced after its rebalance timeout.
    assert a.beat(ack=False).member_epoch == 1
    cluster.advance(4000)
    assert a.beat(ack=False).member_epoch == 1
    cluster.advance(1100)
    assert a.beat().error_code == ErrorCode.unknown_member_id
    assert b.beat().member_epoch == 3 and b.partitions() == all_of(cluster, "t")
    # c joins and leaves: the group epoch moves on and b keeps everything.
    c = Member(cluster, "g", names=["t"])
    c.beat()
    left = c.leave()
    assert (left.error_code, left.member_epoch) == (ErrorCode.none, -1)
    assert b.beat().member_epoch == 5 and b.partitions() == all_of(cluster, "t")
    # b goes silent: gone after the session timeout, and the group is Empty.
    cluster.advance(SESSION_MS - 1000)
    assert describe(b.conn, "g")[0].group_state == "Stable"
    cluster.advance(1100)
    (group,) = describe(b.conn, "g")
    assert (group.group_state, group.members) == ("Empty", ())


def test_static_member_rejoins_with_its_assignment(cluster: ClockedBroker) -> None:
    s1 = Member(cluster, "g", names=["t"], instance="i1")
    s1.beat()
    s2 = Member(cluster, "g", names=["t"], instance="i2")
    s2.beat()
    for m in (s1, s2, s1, s2):  # s1 revokes half, then s2 gets it
        m.beat()
    before = describe(s1.conn, "g")[0]
    assert before.group_state == "Stable"
    mine = s1.partitions()
    paused = s1.leave(-2)
    assert (paused.error_code, paused.member_epoch) == (ErrorCode.none, -2)
    taken = Member(cluster, "g", names=["t"], instance="i2")
    assert taken.beat().error_code == ErrorCode.unreleased_instance_id
    back = Member(cluster, "g", names=["t"], instance="i1")
    again = back.beat()
    assert again.error_code == ErrorCode.none and back.partitions() == mine
    assert again.member_epoch == before.group_epoch  # no rebalance
    assert s1.beat().error_code == ErrorCode.fenced_instance_id
    after = describe(back.conn, "g")[0]
    assert (after.group_epoch, after.group_state) == (before.group_epoch, "Stable")
    assert back.member_id in {m.member_id for m in after.members}
    assert s1.member_id not in {m.member_id for m in after.members}


def test_range_assignor_regex_and_topic_changes(cluster: ClockedBroker) -> None:
    controller = cluster.broker.controller
    controller.create_topic("rx-a", 2)
    a = Member(cluster, "g", regex="rx-.*", assignor="range")
    b = Member(cluster, "g", regex="rx-.*", assignor="range")
    a.beat()
    b.beat()
    for _ in range(2):
        a.beat()
        b.beat()
    assert a.partitions() | b.partitions() == all_of(cluster, "rx-a")
    epoch = describe(a.conn, "g")[0].group_epoch
    controller.create_topic("rx-b", 2)
    controller.create_topic("other", 1)
    a.beat()
    assert describe(a.conn, "g")[0].group_epoch == epoch + 1
    for _ in range(2):
        a.beat()
        b.beat()
    # range: each member gets one partition of each topic.
    for m in (a, b):
        assert {t for t, _ in m.partitions()} == {topic_id(cluster, "rx-a"), topic_id(cluster, "rx-b")}
    controller.create_partitions("rx-a", 4)
    b.beat()
    assert describe(a.conn, "g")[0].group_epoch == epoch + 2
    for _ in range(2):
        a.beat()
        b.beat()
    assert a.partitions() | b.partitions() == all_of(cluster, "rx-a") | all_of(cluster, "rx-b")
    (group,) = describe(a.conn, "g")
    assert group.assignor_name == "range"
    assert {m.subscribed_topic_regex for m in group.members} == {"rx-.*"}


def commit(conn: Conn, group: str, member_id: str, epoch: int, offsets: dict[int, int], *,
           version: int = 9, topic: str = "t") -> set[ErrorCode]:
    m = schema("offset_commit", version)
    request = m.OffsetCommitRequest(
        group_id=group, generation_id_or_member_epoch=i32(epoch), member_id=member_id,
        group_instance_id=None, topics=(m.OffsetCommitRequestTopic(name=topic, partitions=tuple(
            m.OffsetCommitRequestPartition(partition_index=i32(p), committed_offset=i64(o),
                                           committed_leader_epoch=i32(-1), committed_metadata="")
            for p, o in offsets.items())),))
    return {p.error_code for t in conn.request(request).topics for p in t.partitions}


def fetch(conn: Conn, group: str, member_id: str | None, epoch: int) -> Any:
    m = schema("offset_fetch", 9)
    (answer,) = conn.request(m.OffsetFetchRequest(groups=(m.OffsetFetchRequestGroup(
        group_id=group, member_id=member_id, member_epoch=i32(epoch), topics=None),),
        require_stable=False)).groups
    return answer


def test_offsets_list_describe_delete(cluster: ClockedBroker) -> None:
    a = Member(cluster, "g", names=["t"])
    a.beat()
    conn = a.conn
    assert commit(conn, "g", a.member_id, 1, {0: 5}) == {ErrorCode.none}
    assert commit(conn, "g", a.member_id, 0, {0: 6}) == {ErrorCode.stale_member_epoch}
    assert commit(conn, "g", "nobody", 1, {0: 6}) == {ErrorCode.unknown_member_id}
    assert commit(conn, "g", a.member_id, 1, {0: 6}, version=8) == {ErrorCode.unsupported_version}
    assert commit(conn, "g", "", -1, {0: 6}) == {ErrorCode.unknown_member_id}  # not while it has members
    assert fetch(conn, "g", a.member_id, 0).error_code == ErrorCode.stale_member_epoch
    assert fetch(conn, "g", "nobody", 1).error_code == ErrorCode.unknown_member_id
    for member_id, epoch in ((a.member_id, 1), (None, -1)):
        fetched = fetch(conn, "g", member_id, epoch)
        assert [(p.partition_index, p.committed_offset) for t in fetched.topics for p in t.partitions] \
            == [(0, 5)]
    listing = schema("list_groups", 5)

    def listed(states: tuple[str, ...] = (), types: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
        answer = conn.request(listing.ListGroupsRequest(states_filter=states, types_filter=types))
        return {(g.group_id, g.protocol_type, g.group_state, g.group_type) for g in answer.groups}

    joined = cluster.connect().send(join_request("classic", member_id="", version=3))
    cluster.advance(0)
    assert joined.result().error_code == ErrorCode.none
    assert ("g", "consumer", "Stable", "consumer") in listed()
    assert {g[0] for g in listed(types=("Consumer",))} == {"g"}
    assert "g" not in {g[0] for g in listed(types=("classic",))}
    assert {g[0] for g in listed(states=("stable",))} >= {"g"}
    assert "g" not in {g[0] for g in listed(states=("empty",))}
    described = conn.request(schema("describe_groups", 6).DescribeGroupsRequest(
        groups=("g",), include_authorized_operations=False)).groups[0]
    assert (described.error_code, described.group_state, described.error_message) == (
        ErrorCode.group_id_not_found, "Dead", "Group g is not a classic group.")
    delete = schema("delete_groups", 2).DeleteGroupsRequest(groups_names=("g",))
    assert conn.request(delete).results[0].error_code == ErrorCode.non_empty_group
    a.leave()
    assert commit(conn, "g", "", -1, {1: 7}) == {ErrorCode.none}  # an Empty group takes simple commits
    answer = conn.send(delete)
    cluster.advance(0)
    assert answer.result().results[0].error_code == ErrorCode.none
    assert describe(conn, "g")[0].error_code == ErrorCode.group_id_not_found
    assert fetch(conn, "g", None, -1).topics == ()


def committed(conn: Conn, group: str) -> set[tuple[str, int, int]]:
    return {(t.name, int(p.partition_index), int(p.committed_offset))
            for t in fetch(conn, group, None, -1).topics for p in t.partitions}


def test_offsets_expire_unless_subscribed_then_the_empty_group_goes(tmp_path: Path) -> None:
    """offsets.retention.minutes counts from the commit: an offset of a topic no member
    subscribes to expires, a subscribed one stays while the member does; once the group is
    Empty its offsets expire and the group is deleted with them (Kafka's cleanupGroupMetadata)."""
    broker = ClockedBroker(tmp_path / "data", (*OVERRIDES, "offsets.retention.minutes=1"))
    try:
        broker.broker.controller.create_topic("t", 1)
        broker.broker.controller.create_topic("other", 1)
        a = Member(broker, "g", names=["t"])
        a.beat()
        assert commit(a.conn, "g", a.member_id, 1, {0: 5}) == {ErrorCode.none}
        assert commit(a.conn, "g", a.member_id, 1, {0: 9}, topic="other") == {ErrorCode.none}

        def cleanup() -> int:
            done = broker.coordinator.cleanup_group_metadata()
            broker.advance(0)
            return done.result

        for _ in range(4):  # past the retention, the member heartbeating
            broker.advance(20_000)
            a.beat()
        assert cleanup() == 1
        assert committed(a.conn, "g") == {("t", 0, 5)}
        a.leave()
        assert cleanup() == 1
        assert committed(a.conn, "g") == set()
        assert describe(a.conn, "g")[0].error_code == ErrorCode.group_id_not_found
    finally:
        broker.close()


class StorageError(Exception):
    error_code = ErrorCode.kafka_storage_error.value


def test_a_failed_write_answers_the_error_and_undoes_the_change(cluster: ClockedBroker) -> None:
    """A heartbeat whose records cannot be written gets the error (NOT_COORDINATOR for a storage
    error, as Kafka maps it), and the group is as it was: the next heartbeat starts from there."""
    a = Member(cluster, "g", names=["t"])
    a.beat()
    before = describe(a.conn, "g")[0]
    store = cluster.coordinator.store
    append = store.append
    store.append = lambda *args: defer.fail(StorageError("disk gone"))  # a disk fault, injected
    try:
        b = Member(cluster, "g", names=["t"])
        assert b.beat().error_code == ErrorCode.not_coordinator
        a.leave()  # fenced in memory, then undone
    finally:
        store.append = append
    after = describe(a.conn, "g")[0]
    assert (after.group_epoch, after.assignment_epoch, [m.member_id for m in after.members]) == (
        before.group_epoch, before.assignment_epoch, [a.member_id])
    b.epoch = 0
    joined = b.beat()
    assert (joined.error_code, joined.member_epoch) == (ErrorCode.none, before.group_epoch + 1)
    assert a.beat().error_code == ErrorCode.none


@pytest_twisted.inlineCallbacks
def test_group_state_is_replayed_after_a_restart(tmp_path: Path) -> Any:
    first = ClockedBroker(tmp_path, OVERRIDES, storage="disk")
    first.broker.controller.create_topic("t", 4)
    first.broker.controller.create_topic("rx-1", 1)
    a = Member(first, "g", names=["t"], instance="ia")
    b = Member(first, "g", regex="rx-.*|t")
    a.beat()
    b.beat()
    a.beat(ack=False)  # a is mid-rebalance: half of its partitions pending revocation
    assert commit(a.conn, "g", a.member_id, a.epoch, {0: 42}) == {ErrorCode.none}
    before = describe(a.conn, "g")[0]
    yield first.close()

    second = ClockedBroker(tmp_path, OVERRIDES, storage="disk")
    try:
        after = describe(second.connect(), "g")[0]
        assert (after.group_epoch, after.assignment_epoch, after.group_state) == (
            before.group_epoch, before.assignment_epoch, "Reconciling")
        assert sorted(after.members, key=lambda m: m.member_id) == sorted(
            before.members, key=lambda m: m.member_id)
        group = second.coordinator.consumer.groups["g"]
        assert group.resolved_regexes["rx-.*|t"].topics == {"rx-1", "t"}
        assert group.members[a.member_id].pending_revocation
        # The members carry on with their epochs: a acknowledges, b gets the rest.
        for m in (a, b):
            m.broker, m.conn = second, second.connect()
        a.owned = {topic_id(second, "t"): {p for _, p in a.partitions()} - {
            p for p in group.members[a.member_id].pending_revocation[topic_id(second, "t")]}}
        assert a.beat().member_epoch == before.group_epoch
        b.beat()
        assert b.partitions() | a.partitions() == all_of(second, "t") | all_of(second, "rx-1")
        assert [p.committed_offset for t in fetch(a.conn, "g", None, -1).topics for p in t.partitions] \
            == [42]
    finally:
        yield second.close()
