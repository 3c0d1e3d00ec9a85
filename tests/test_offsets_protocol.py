"""OffsetCommit, OffsetFetch and OffsetDelete over the wire; offset expiry on a Clock.

Uses the Clock-driven broker and in-memory connections of test_groups_protocol.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from kio.static.primitive import i32, i64, i64Timedelta

from tests.test_groups_protocol import (
    DEFAULT_OVERRIDES,
    ClockedBroker,
    Conn,
    join_request,
    leave_request,
    schema,
    stable_group,
    subscription,
    sync_request,
)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClockedBroker]:
    broker = ClockedBroker(tmp_path / "data", [*DEFAULT_OVERRIDES, "offsets.retention.minutes=10",
                                               "offsets.retention.check.interval.ms=60000"])
    broker.broker.controller.create_topic("t", 3)
    broker.broker.controller.create_topic("u", 1)
    yield broker
    broker.close()


def commit_request(group: str, offsets: dict[tuple[str, int], tuple[int, int, str | None]], *,
                   version: int = 9, generation: int = -1, member_id: str = "",
                   instance: str | None = None, retention_ms: int = -1,
                   topic_ids: dict[str, uuid.UUID] | None = None) -> Any:
    """offsets: (topic, partition) -> (offset, leader epoch, metadata)."""
    mod = schema("offset_commit", version)
    by_topic: dict[str, list[Any]] = {}
    for (topic, partition), (offset, epoch, metadata) in offsets.items():
        fields: dict[str, Any] = dict(partition_index=i32(partition), committed_offset=i64(offset),
                                      committed_metadata=metadata)
        if version >= 6:
            fields["committed_leader_epoch"] = i32(epoch)
        by_topic.setdefault(topic, []).append(mod.OffsetCommitRequestPartition(**fields))
    topics = []
    for topic, parts in by_topic.items():
        if version >= 10:
            topics.append(mod.OffsetCommitRequestTopic(topic_id=(topic_ids or {})[topic],
                                                       partitions=tuple(parts)))
        else:
            topics.append(mod.OffsetCommitRequestTopic(name=topic, partitions=tuple(parts)))
    fields = dict(group_id=group, generation_id_or_member_epoch=i32(generation), member_id=member_id,
                  topics=tuple(topics))
    if 2 <= version <= 4:
        fields["retention_time"] = i64Timedelta.parse(timedelta(milliseconds=retention_ms))
    if version >= 7:
        fields["group_instance_id"] = instance
    return mod.OffsetCommitRequest(**fields)


def commit_errors(response: Any) -> dict[tuple[Any, int], ErrorCode]:
    return {(getattr(t, "name", None) or getattr(t, "topic_id", None), p.partition_index): p.error_code
            for t in response.topics for p in t.partitions}


def fetch(conn: Conn, group: str, partitions: dict[str, list[int]] | None, *, version: int = 7) -> Any:
    mod = schema("offset_fetch", version)
    topics = None if partitions is None else tuple(
        mod.OffsetFetchRequestTopic(name=t, partition_indexes=tuple(i32(p) for p in ps))
        for t, ps in partitions.items())
    fields: dict[str, Any] = dict(group_id=group, topics=topics)
    if version >= 7:
        fields["require_stable"] = True
    return conn.request(mod.OffsetFetchRequest(**fields))


def fetched(response: Any) -> dict[tuple[str, int], tuple[int, int, str | None, ErrorCode]]:
    return {(t.name, p.partition_index): (p.committed_offset, getattr(p, "committed_leader_epoch", -1),
                                          p.metadata, p.error_code)
            for t in response.topics for p in t.partitions}


@pytest.mark.parametrize("version", range(2, 10))
def test_simple_commit_and_fetch_round_trip(cluster: ClockedBroker, version: int) -> None:
    conn = cluster.connect()
    response = conn.request(commit_request("simple", {("t", 0): (42, 7, "meta-0"), ("t", 2): (9, -1, None),
                                                      ("u", 0): (1, 3, "")}, version=version))
    assert set(commit_errors(response).values()) == {ErrorCode.none}
    got = fetched(fetch(conn, "simple", {"t": [0, 1, 2], "u": [0]}, version=7))
    epoch = 7 if version >= 6 else -1
    assert got == {("t", 0): (42, epoch, "meta-0", ErrorCode.none),
                   ("t", 1): (-1, -1, "", ErrorCode.none),
                   ("t", 2): (9, -1, "", ErrorCode.none),  # null metadata is stored as ""
                   ("u", 0): (1, 3 if version >= 6 else -1, "", ErrorCode.none)}
    # A simple group is an Empty group without protocol type.
    (listed,) = conn.request(schema("list_groups", 4).ListGroupsRequest(states_filter=())).groups
    assert (listed.group_id, listed.protocol_type, listed.group_state) == ("simple", "", "Empty")


@pytest.mark.parametrize("version", range(1, 11))
def test_fetch_versions(cluster: ClockedBroker, version: int) -> None:
    conn = cluster.connect()
    conn.request(commit_request("g", {("t", 1): (5, 2, "m"), ("u", 0): (6, 2, "n")}))
    topic_ids = {name: cluster.broker.image.topic(name).topic_id for name in ("t", "u")}
    mod = schema("offset_fetch", version)
    if version < 8:
        response = fetch(conn, "g", {"t": [0, 1]}, version=version)
        got = fetched(response)
        if version >= 2:
            assert response.error_code == ErrorCode.none
    else:
        topic_type = mod.OffsetFetchRequestTopics

        def topics(parts: dict[str, list[int]]) -> tuple[Any, ...]:
            if version >= 10:
                return tuple(topic_type(topic_id=topic_ids[t], partition_indexes=tuple(ps))
                             for t, ps in parts.items())
            return tuple(topic_type(name=t, partition_indexes=tuple(ps)) for t, ps in parts.items())

        groups = (mod.OffsetFetchRequestGroup(group_id="g", topics=topics({"t": [0, 1]})),
                  mod.OffsetFetchRequestGroup(group_id="g", topics=None),
                  mod.OffsetFetchRequestGroup(group_id="other", topics=topics({"u": [0]})))
        response = conn.request(mod.OffsetFetchRequest(groups=groups, require_stable=False))
        assert [g.group_id for g in response.groups] == ["g", "g", "other"]
        names = {v: k for k, v in topic_ids.items()}

        def as_dict(group: Any) -> dict[tuple[str, int], tuple[int, str | None]]:
            return {(t.topic_id and names[t.topic_id] if version >= 10 else t.name, p.partition_index):
                    (p.committed_offset, p.metadata) for t in group.topics for p in t.partitions}

        assert as_dict(response.groups[1]) == {("t", 1): (5, "m"), ("u", 0): (6, "n")}
        assert as_dict(response.groups[2]) == {("u", 0): (-1, "")}
        got = {k: (v[0], 2 if v[0] >= 0 else -1, v[1], ErrorCode.none)
               for k, v in as_dict(response.groups[0]).items()}
    epoch = 2 if version >= 5 else -1
    assert got[("t", 1)][:3] == (5, epoch, "m")
    assert got[("t", 0)][:3] == (-1, -1, "")


def test_fetch_all_topics_when_topics_is_null(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    conn.request(commit_request("g", {("t", 0): (1, -1, "a"), ("t", 2): (3, -1, "b"), ("u", 0): (4, -1, "")}))
    assert fetched(fetch(conn, "g", None)) == {
        ("t", 0): (1, -1, "a", ErrorCode.none), ("t", 2): (3, -1, "b", ErrorCode.none),
        ("u", 0): (4, -1, "", ErrorCode.none)}
    assert fetch(conn, "unknown-group", None).topics == ()


def test_commit_to_unknown_topics_and_partitions(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    response = conn.request(commit_request("g", {("t", 0): (1, -1, ""), ("t", 3): (1, -1, ""),
                                                 ("nope", 0): (1, -1, "")}))
    assert commit_errors(response) == {("t", 0): ErrorCode.none,
                                       ("t", 3): ErrorCode.unknown_topic_or_partition,
                                       ("nope", 0): ErrorCode.unknown_topic_or_partition}
    assert fetched(fetch(conn, "g", None)) == {("t", 0): (1, -1, "", ErrorCode.none)}


def test_commit_v10_by_topic_id(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    t_id = cluster.broker.image.topic("t").topic_id
    unknown = uuid.uuid4()
    response = conn.request(commit_request("g", {("t", 1): (8, -1, "x"), ("ghost", 0): (1, -1, "")},
                                           version=10, topic_ids={"t": t_id, "ghost": unknown}))
    assert commit_errors(response) == {(t_id, 1): ErrorCode.none, (unknown, 0): ErrorCode.unknown_topic_id}
    assert fetched(fetch(conn, "g", {"t": [1]}))[("t", 1)][0] == 8


def test_metadata_too_large(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    response = conn.request(commit_request("g", {("t", 0): (1, -1, "x" * 4097),
                                                 ("t", 1): (2, -1, "x" * 4096)}))
    assert commit_errors(response) == {("t", 0): ErrorCode.offset_metadata_too_large,
                                       ("t", 1): ErrorCode.none}


def test_member_commits_are_checked_against_the_group(cluster: ClockedBroker) -> None:
    members = stable_group(cluster, "g", 2)
    (lconn, leader, gen), (fconn, follower, _) = members
    offsets = {("t", 0): (10, -1, "")}

    def commit(**kwargs: Any) -> ErrorCode:
        return next(iter(commit_errors(fconn.request(commit_request("g", offsets, **kwargs))).values()))

    assert commit(generation=gen, member_id=follower) == ErrorCode.none
    assert commit(generation=gen + 1, member_id=follower) == ErrorCode.illegal_generation
    assert commit(generation=gen, member_id="ghost") == ErrorCode.unknown_member_id
    # A simple commit (no member, generation -1) to a group with members.
    assert commit() == ErrorCode.unknown_member_id
    # While the group prepares a rebalance commits are still accepted ...
    lconn.send(join_request("g", leader))
    assert commit(generation=gen, member_id=follower) == ErrorCode.none
    # ... not while it completes one.
    fconn.send(join_request("g", follower))
    cluster.advance(0)
    assert cluster.coordinator.groups["g"].state.value == "CompletingRebalance"
    assert commit(generation=gen + 1, member_id=follower) == ErrorCode.rebalance_in_progress


def test_commit_with_a_generation_to_an_unknown_group(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    offsets = {("t", 0): (1, -1, "")}
    v8 = commit_errors(conn.request(commit_request("nope", offsets, version=8, generation=3, member_id="m")))
    assert set(v8.values()) == {ErrorCode.illegal_generation}
    v9 = commit_errors(conn.request(commit_request("nope", offsets, version=9, generation=3, member_id="m")))
    assert set(v9.values()) == {ErrorCode.group_id_not_found}


def test_static_member_commit_with_a_stale_member_id_is_fenced(cluster: ClockedBroker) -> None:
    conn = cluster.connect("a")
    joined = conn.send(join_request("g", instance="i"))
    cluster.advance(0)
    member = joined.result().member_id
    conn.request(sync_request("g", 1, member, {member: b""}, instance="i"))
    errors = commit_errors(conn.request(commit_request("g", {("t", 0): (1, -1, "")}, generation=1,
                                                       member_id="stale", instance="i")))
    assert set(errors.values()) == {ErrorCode.fenced_instance_id}


def test_offset_fetch_group_errors(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    cluster.coordinator.active = False
    try:
        v1 = fetch(conn, "g", {"t": [0]}, version=1)
        assert fetched(v1) == {("t", 0): (-1, -1, "", ErrorCode.coordinator_not_available)}
        v2 = fetch(conn, "g", {"t": [0]}, version=2)
        assert v2.error_code == ErrorCode.coordinator_not_available and v2.topics == ()
    finally:
        cluster.coordinator.active = True


# -- OffsetDelete ------------------------------------------------------------------------


def offset_delete(conn: Conn, group: str, partitions: dict[str, list[int]]) -> Any:
    mod = schema("offset_delete", 0)
    return conn.request(mod.OffsetDeleteRequest(group_id=group, topics=tuple(
        mod.OffsetDeleteRequestTopic(name=t, partitions=tuple(
            mod.OffsetDeleteRequestPartition(partition_index=i32(p)) for p in ps))
        for t, ps in partitions.items())))


def delete_errors(response: Any) -> dict[tuple[str, int], ErrorCode]:
    return {(t.name, p.partition_index): p.error_code for t in response.topics for p in t.partitions}


def test_offset_delete_in_an_empty_group(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    conn.request(commit_request("g", {("t", 0): (1, -1, ""), ("t", 1): (2, -1, ""), ("u", 0): (3, -1, "")}))
    response = offset_delete(conn, "g", {"t": [0, 2], "nope": [0]})
    assert response.error_code == ErrorCode.none
    assert delete_errors(response) == {("t", 0): ErrorCode.none, ("t", 2): ErrorCode.none,
                                       ("nope", 0): ErrorCode.unknown_topic_or_partition}
    assert fetched(fetch(conn, "g", None)) == {("t", 1): (2, -1, "", ErrorCode.none),
                                              ("u", 0): (3, -1, "", ErrorCode.none)}
    assert offset_delete(conn, "unknown", {"t": [0]}).error_code == ErrorCode.group_id_not_found
    assert offset_delete(conn, "", {"t": [0]}).error_code == ErrorCode.invalid_group_id


def test_offset_delete_in_a_consumer_group_spares_subscribed_topics(cluster: ClockedBroker) -> None:
    conn = cluster.connect("a")
    joined = conn.send(join_request("g", protocols=(("range", subscription("t")),), version=3))
    cluster.advance(0)
    member = joined.result().member_id
    conn.request(sync_request("g", 1, member, {member: b""}))
    conn.request(commit_request("g", {("t", 0): (1, -1, ""), ("u", 0): (2, -1, "")}, generation=1,
                                member_id=member))
    response = offset_delete(conn, "g", {"t": [0], "u": [0]})
    assert delete_errors(response) == {("t", 0): ErrorCode.group_subscribed_to_topic,
                                       ("u", 0): ErrorCode.none}
    assert fetched(fetch(conn, "g", None)) == {("t", 0): (1, -1, "", ErrorCode.none)}


def test_offset_delete_refused_for_a_non_consumer_group_with_members(cluster: ClockedBroker) -> None:
    conn = cluster.connect("a")
    joined = conn.send(join_request("g", protocol_type="connect", version=3))
    cluster.advance(0)
    assert joined.result().error_code == ErrorCode.none
    assert offset_delete(conn, "g", {"t": [0]}).error_code == ErrorCode.non_empty_group


def test_delete_group_removes_its_offsets(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    conn.request(commit_request("g", {("t", 0): (1, -1, "")}))
    response = conn.request(schema("delete_groups", 2).DeleteGroupsRequest(groups_names=("g",)))
    assert response.results[0].error_code == ErrorCode.none
    assert fetched(fetch(conn, "g", {"t": [0]})) == {("t", 0): (-1, -1, "", ErrorCode.none)}


# -- expiry (KIP-211) --------------------------------------------------------------------


def test_simple_group_offsets_expire_after_the_retention(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    conn.request(commit_request("g", {("t", 0): (1, -1, "")}))
    cluster.advance(5 * 60_000)
    conn.request(commit_request("g", {("t", 1): (2, -1, "")}))
    cluster.advance(5 * 60_000)  # t=10min: the first commit is 10 minutes old
    assert fetched(fetch(conn, "g", None)) == {("t", 1): (2, -1, "", ErrorCode.none)}
    cluster.advance(5 * 60_000)  # every offset expired: the empty group goes too
    assert fetch(conn, "g", None).topics == ()
    assert "g" not in cluster.coordinator.groups


def test_explicit_retention_time_v2_to_v4(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    conn.request(commit_request("g", {("t", 0): (1, -1, "")}, version=4, retention_ms=90_000))
    conn.request(commit_request("g", {("t", 1): (1, -1, "")}, version=4))  # -1: the broker's retention
    cluster.advance(120_000)
    assert set(fetched(fetch(conn, "g", None))) == {("t", 1)}


def test_consumer_group_offsets_expire_only_once_the_group_is_empty(cluster: ClockedBroker) -> None:
    conn = cluster.connect("a")
    joined = conn.send(join_request("g", protocols=(("range", subscription("t")),), session=30_000,
                                    version=3))
    cluster.advance(0)
    member = joined.result().member_id
    conn.request(sync_request("g", 1, member, {member: b""}))
    conn.request(commit_request("g", {("t", 0): (1, -1, "")}, generation=1, member_id=member))
    for _ in range(45):  # 15 minutes of heartbeats: subscribed offsets of a live group stay
        cluster.advance(20_000)
        conn.request(schema("heartbeat", 4).HeartbeatRequest(group_id="g", generation_id=i32(1),
                                                             member_id=member, group_instance_id=None))
    assert set(fetched(fetch(conn, "g", None))) == {("t", 0)}
    conn.request(leave_request("g", (member, None)))
    cluster.advance(9 * 60_000)
    assert set(fetched(fetch(conn, "g", None))) == {("t", 0)}  # counted from when it became Empty
    cluster.advance(2 * 60_000)
    assert fetch(conn, "g", None).topics == ()
    assert "g" not in cluster.coordinator.groups
