"""The classic group protocol over the wire, against a broker driven by a Clock.

Each test runs a real Broker (memory storage) whose timers run on a
`twisted.internet.task.Clock`; clients are KafkaProtocol connections over
in-memory transports, so requests are real frames and responses come back in
order, and every timeout (initial rebalance delay, rebalance, session, pending
sync) is crossed by advancing the clock, never by sleeping.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i32, i32Timedelta
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from akfak.broker import Broker
from akfak.protocol import KafkaProtocol
from akfak.tap import build_config
from tests.wire import decode_response, encode_body, encode_request

# -- harness ---------------------------------------------------------------------------


def ms(value: int) -> i32Timedelta:
    return i32Timedelta.parse(timedelta(milliseconds=value))


def schema(api: str, version: int, kind: str = "request") -> Any:
    import importlib

    return importlib.import_module(f"kio.schema.{api}.v{version}.{kind}")


class Pending:
    def __init__(self, conn: Conn, correlation_id: int, api_key: int, version: int):
        self.conn = conn
        self.correlation_id = correlation_id
        self.api_key = api_key
        self.version = version

    @property
    def done(self) -> bool:
        self.conn.drain()
        return self.correlation_id in self.conn.responses

    def result(self) -> Any:
        assert self.done, f"no response yet to correlation id {self.correlation_id}"
        return self.conn.responses.pop(self.correlation_id)


class Conn:
    """A client connection: frames in through dataReceived, frames out of a StringTransport."""

    _ports = iter(range(40000, 60000))

    def __init__(self, broker: Broker, client_id: str):
        self.broker = broker
        self.client_id = client_id
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", next(self._ports)))
        self.protocol = KafkaProtocol(broker, broker.registry)
        self.protocol.makeConnection(self.transport)
        self.correlation = 0
        self.pending: dict[int, tuple[int, int]] = {}
        self.responses: dict[int, Any] = {}
        self._buffer = b""

    def send(self, entity: Any) -> Pending:
        api_key, version = int(entity.__api_key__), int(entity.__version__)
        self.correlation += 1
        self.pending[self.correlation] = (api_key, version)
        self.protocol.dataReceived(encode_request(api_key, version, self.correlation, encode_body(entity),
                                                  client_id=self.client_id))
        return Pending(self, self.correlation, api_key, version)

    def request(self, entity: Any) -> Any:
        return self.send(entity).result()

    def drain(self) -> None:
        self._buffer += self.transport.value()
        self.transport.clear()
        while len(self._buffer) >= 4:
            (size,) = struct.unpack(">i", self._buffer[:4])
            if len(self._buffer) < 4 + size:
                break
            frame, self._buffer = self._buffer[4 : 4 + size], self._buffer[4 + size :]
            (correlation_id,) = struct.unpack(">i", frame[:4])
            api_key, version = self.pending.pop(correlation_id)
            self.responses[correlation_id] = decode_response(api_key, version, frame)[1]

    def close(self) -> None:
        self.protocol.connectionLost(None)


class ClockedBroker:
    def __init__(self, data_dir: Path, overrides: Sequence[str] = (), storage: str = "memory", *,
                 load: bool = True):
        self.clock = Clock()
        config = build_config(data_dir=str(data_dir), listen=["tcp:0:interface=127.0.0.1"],
                              storage=storage, overrides=list(overrides))
        self.broker = Broker(config, clock=self.clock)
        self.broker.open()
        self.broker.advertise("PLAINTEXT", "127.0.0.1", 9092)
        if load:
            self.clock.advance(0)  # the coordinator loads __consumer_offsets a step per turn
        self.now_ms = 0
        self.conns: list[Conn] = []

    @property
    def coordinator(self) -> Any:
        return self.broker.group_coordinator

    def connect(self, client_id: str = "client") -> Conn:
        conn = Conn(self.broker, client_id)
        self.conns.append(conn)
        return conn

    def advance(self, millis: int) -> None:
        """Move time on in 100 ms steps (to whole milliseconds, so that float error
        never leaves a timer a hair short of firing), as a reactor runs timers."""
        target = self.now_ms + millis
        while self.now_ms < target:
            self.now_ms = min(self.now_ms + 100, target)
            self.clock.advance(self.now_ms / 1000.0 - self.clock.seconds())
        self.clock.advance(0)

    def close(self) -> Any:
        for conn in self.conns:
            conn.close()
        return self.broker.close()


DEFAULT_OVERRIDES = ("group.initial.rebalance.delay.ms=0", "group.min.session.timeout.ms=1000")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClockedBroker]:
    broker = ClockedBroker(tmp_path / "data", DEFAULT_OVERRIDES)
    yield broker
    broker.close()


def subscription(*topics: str, version: int = 0) -> bytes:
    """A ConsumerProtocolSubscription (v0 layout): topics and null user data."""
    out = struct.pack(">hi", version, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t)) + t.encode()
    return out + struct.pack(">i", -1)


def assignment(partitions: dict[str, list[int]]) -> bytes:
    out = struct.pack(">hi", 0, len(partitions))
    for topic, parts in partitions.items():
        out += struct.pack(">h", len(topic)) + topic.encode() + struct.pack(">i", len(parts))
        out += b"".join(struct.pack(">i", p) for p in parts)
    return out + struct.pack(">i", -1)


def join_request(group: str, member_id: str = "", *, version: int = 9, session: int = 10_000,
                 rebalance: int = 30_000, instance: str | None = None, protocol_type: str = "consumer",
                 protocols: Sequence[tuple[str, bytes]] = (("range", b"meta"),)) -> Any:
    mod = schema("join_group", version)
    fields: dict[str, Any] = dict(group_id=group, session_timeout=ms(session), member_id=member_id,
                                  protocol_type=protocol_type,
                                  protocols=tuple(mod.JoinGroupRequestProtocol(name=n, metadata=m)
                                                  for n, m in protocols))
    if version >= 1:
        fields["rebalance_timeout"] = ms(rebalance)
    if version >= 5:
        fields["group_instance_id"] = instance
    if version >= 8:
        fields["reason"] = None
    return mod.JoinGroupRequest(**fields)


def sync_request(group: str, generation: int, member_id: str, assignments: dict[str, bytes] | None = None,
                 *, version: int = 5, instance: str | None = None, protocol_type: str | None = "consumer",
                 protocol_name: str | None = "range") -> Any:
    mod = schema("sync_group", version)
    fields: dict[str, Any] = dict(
        group_id=group, generation_id=i32(generation), member_id=member_id,
        assignments=tuple(mod.SyncGroupRequestAssignment(member_id=m, assignment=a)
                          for m, a in (assignments or {}).items()))
    if version >= 3:
        fields["group_instance_id"] = instance
    if version >= 5:
        fields["protocol_type"] = protocol_type
        fields["protocol_name"] = protocol_name
    return mod.SyncGroupRequest(**fields)


def heartbeat_request(group: str, generation: int, member_id: str, *, version: int = 4,
                      instance: str | None = None) -> Any:
    mod = schema("heartbeat", version)
    fields: dict[str, Any] = dict(group_id=group, generation_id=i32(generation), member_id=member_id)
    if version >= 3:
        fields["group_instance_id"] = instance
    return mod.HeartbeatRequest(**fields)


def leave_request(group: str, *members: tuple[str, str | None], version: int = 5) -> Any:
    mod = schema("leave_group", version)
    if version < 3:
        return mod.LeaveGroupRequest(group_id=group, member_id=members[0][0])
    return mod.LeaveGroupRequest(group_id=group, members=tuple(
        mod.MemberIdentity(member_id=m, group_instance_id=i) for m, i in members))


def describe(conn: Conn, *groups: str, version: int = 5) -> Any:
    mod = schema("describe_groups", version)
    fields: dict[str, Any] = dict(groups=tuple(groups))
    if version >= 3:
        fields["include_authorized_operations"] = False
    return conn.request(mod.DescribeGroupsRequest(**fields)).groups


def join_dynamic(cluster: ClockedBroker, conn: Conn, group: str, **kwargs: Any) -> Pending:
    """A dynamic member's first join (v4+): MEMBER_ID_REQUIRED, then the join with the id."""
    first = conn.request(join_request(group, **kwargs))
    assert first.error_code == ErrorCode.member_id_required
    assert first.member_id.startswith(conn.client_id + "-")
    return conn.send(join_request(group, first.member_id, **kwargs))


def stable_group(cluster: ClockedBroker, group: str, count: int, **kwargs: Any
                 ) -> list[tuple[Conn, str, int]]:
    """`count` members joined and synced: [(connection, member id, generation)], leader first."""
    conns = [cluster.connect(f"c{i}") for i in range(count)]
    joins = [join_dynamic(cluster, c, group, **kwargs) for c in conns]
    cluster.advance(0)
    results = [j.result() for j in joins]
    assert all(r.error_code == ErrorCode.none for r in results), results
    leader_id = results[0].leader
    members = [(c, r.member_id, int(r.generation_id)) for c, r in zip(conns, results, strict=True)]
    members.sort(key=lambda m: m[1] != leader_id)
    leader = members[0]
    syncs = [c.send(sync_request(group, gen, mid)) for c, mid, gen in members[1:]]
    assert not any(s.done for s in syncs)
    leader_sync = leader[0].send(sync_request(
        group, leader[2], leader[1], {mid: f"assignment-{mid}".encode() for _, mid, _ in members}))
    for s in [leader_sync, *syncs]:
        assert s.result().error_code == ErrorCode.none
    return members


# -- FindCoordinator --------------------------------------------------------------------


@pytest.mark.parametrize("version", range(7))
def test_find_coordinator_answers_this_node_and_creates_the_offsets_topic(cluster: ClockedBroker,
                                                                         version: int) -> None:
    conn = cluster.connect()
    mod = schema("find_coordinator", version)
    if version == 0:
        response = conn.request(mod.FindCoordinatorRequest(key="g"))
    elif version < 4:
        response = conn.request(mod.FindCoordinatorRequest(key="g", key_type=i8(0)))
    else:
        response = conn.request(mod.FindCoordinatorRequest(key_type=i8(0), coordinator_keys=("g", "h")))
    entries = [response] if version < 4 else list(response.coordinators)
    assert len(entries) == (1 if version < 4 else 2)
    for entry in entries:
        assert entry.error_code == ErrorCode.none
        assert (entry.node_id, entry.host, entry.port) == (1, "127.0.0.1", 9092)
    if version >= 4:
        assert [c.key for c in response.coordinators] == ["g", "h"]
    topic = cluster.broker.image.topic("__consumer_offsets")
    assert topic is not None and topic.num_partitions == 50
    configs = cluster.broker.image.configs_of_topic("__consumer_offsets")
    assert configs["cleanup.policy"] == "compact"
    assert configs["segment.bytes"] == str(100 * 1024 * 1024)


def test_find_coordinator_key_types(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    mod = schema("find_coordinator", 4)
    txn = conn.request(mod.FindCoordinatorRequest(key_type=i8(1), coordinator_keys=("tx",)))
    assert txn.coordinators[0].error_code == ErrorCode.none
    assert txn.coordinators[0].node_id == 1
    share = conn.request(mod.FindCoordinatorRequest(key_type=i8(2), coordinator_keys=("s",)))
    assert share.coordinators[0].error_code == ErrorCode.invalid_request
    assert share.coordinators[0].node_id == -1
    # v6 knows share coordinators, but share groups are not enabled (share.version 0)
    v6 = schema("find_coordinator", 6)
    share = conn.request(v6.FindCoordinatorRequest(key_type=i8(2), coordinator_keys=("s:x:0",)))
    assert share.coordinators[0].error_code == ErrorCode.invalid_request


# -- JoinGroup ---------------------------------------------------------------------------


def test_first_join_from_v4_requires_a_member_id(cluster: ClockedBroker) -> None:
    conn = cluster.connect("my-client")
    first = conn.request(join_request("g", version=4))
    assert first.error_code == ErrorCode.member_id_required
    assert first.member_id.startswith("my-client-") and len(first.member_id) == len("my-client-") + 36
    joined = conn.send(join_request("g", first.member_id, version=4))
    cluster.advance(0)
    response = joined.result()
    assert response.error_code == ErrorCode.none
    assert response.member_id == first.member_id
    assert response.leader == first.member_id
    assert response.generation_id == 1
    assert response.protocol_name == "range"
    assert [(m.member_id, m.metadata) for m in response.members] == [(first.member_id, b"meta")]


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_join_below_v4_gets_a_member_id_at_once(cluster: ClockedBroker, version: int) -> None:
    conn = cluster.connect("old")
    joined = conn.send(join_request("g", version=version))
    cluster.advance(0)
    response = joined.result()
    assert response.error_code == ErrorCode.none
    assert response.member_id.startswith("old-")
    assert response.generation_id == 1
    assert response.leader == response.member_id


def test_join_v0_uses_the_session_timeout_as_rebalance_timeout(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    joined = conn.send(join_request("g", version=0, session=5000))
    cluster.advance(0)
    member_id = joined.result().member_id
    member = cluster.coordinator.groups["g"].members[member_id]
    assert member.rebalance_timeout_ms == 5000 == member.session_timeout_ms


def test_initial_rebalance_delay_waits_for_more_members(tmp_path: Path) -> None:
    cluster = ClockedBroker(tmp_path, ["group.initial.rebalance.delay.ms=3000",
                                       "group.min.session.timeout.ms=1000"])
    try:
        a, b = cluster.connect("a"), cluster.connect("b")
        join_a = join_dynamic(cluster, a, "g", rebalance=10_000)
        cluster.advance(2000)
        join_b = join_dynamic(cluster, b, "g", rebalance=10_000)
        cluster.advance(1000)  # t=3s: a member arrived during the delay: wait another 3s
        assert not join_a.done and not join_b.done
        cluster.advance(2900)
        assert not join_a.done
        cluster.advance(100)  # t=6s
        ra, rb = join_a.result(), join_b.result()
        assert ra.error_code == rb.error_code == ErrorCode.none
        assert ra.generation_id == rb.generation_id == 1
        leader = ra if ra.members else rb
        assert {m.member_id for m in leader.members} == {ra.member_id, rb.member_id}
    finally:
        cluster.close()


def test_initial_rebalance_delay_is_bounded_by_the_rebalance_timeout(tmp_path: Path) -> None:
    cluster = ClockedBroker(tmp_path, ["group.initial.rebalance.delay.ms=3000",
                                       "group.min.session.timeout.ms=1000"])
    try:
        first = join_dynamic(cluster, cluster.connect("a"), "g", rebalance=4000)
        late = []
        for i in range(5):  # a new member every second keeps extending the delay ...
            cluster.advance(1000)
            if not first.done:
                late.append(join_dynamic(cluster, cluster.connect(f"m{i}"), "g", rebalance=4000))
        # ... but never past the rebalance timeout: 3s, then min(3s, 1s left) = 4s.
        assert first.done
        assert first.result().generation_id == 1
    finally:
        cluster.close()


def test_protocol_selected_by_votes_among_common_protocols(cluster: ClockedBroker) -> None:
    conns = [cluster.connect(f"c{i}") for i in range(3)]
    preferences = [
        (("range", b"r0"), ("roundrobin", b"rr0"), ("sticky", b"s0")),
        (("roundrobin", b"rr1"), ("range", b"r1")),
        (("roundrobin", b"rr2"), ("range", b"r2"), ("sticky", b"s2")),
    ]
    joins = [join_dynamic(cluster, c, "g", protocols=p) for c, p in zip(conns, preferences, strict=True)]
    cluster.advance(0)
    results = [j.result() for j in joins]
    assert {r.protocol_name for r in results} == {"roundrobin"}
    leader = next(r for r in results if r.members)
    assert sorted(m.metadata for m in leader.members) == [b"rr0", b"rr1", b"rr2"]
    assert sum(1 for r in results if r.members) == 1


def test_inconsistent_protocols_are_refused(cluster: ClockedBroker) -> None:
    stable_group(cluster, "g", 1)
    conn = cluster.connect("other")
    wrong_protocol = conn.request(join_request("g", protocols=(("roundrobin", b""),)))
    assert wrong_protocol.error_code == ErrorCode.inconsistent_group_protocol
    wrong_type = conn.request(join_request("g", protocol_type="connect"))
    assert wrong_type.error_code == ErrorCode.inconsistent_group_protocol
    empty_type = cluster.connect().request(join_request("new-group", protocol_type=""))
    assert empty_type.error_code == ErrorCode.inconsistent_group_protocol


def test_join_errors(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    assert conn.request(join_request("")).error_code == ErrorCode.invalid_group_id
    assert conn.request(join_request("g", session=999)).error_code == ErrorCode.invalid_session_timeout
    assert conn.request(join_request("g", session=1_800_001)).error_code == ErrorCode.invalid_session_timeout
    unknown = conn.request(join_request("nobody-here", "made-up-id"))
    assert unknown.error_code == ErrorCode.unknown_member_id
    assert unknown.member_id == "made-up-id"


def test_protocol_name_is_empty_below_v7_and_null_from_v7_on_errors(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    assert conn.request(join_request("", version=6)).protocol_name == ""
    response = conn.request(join_request("", version=7))
    assert response.protocol_name is None and response.protocol_type is None


def test_group_max_size(tmp_path: Path) -> None:
    cluster = ClockedBroker(tmp_path, [*DEFAULT_OVERRIDES, "group.max.size=1"])
    try:
        stable_group(cluster, "g", 1)
        refused = cluster.connect("extra").request(join_request("g", version=3))
        assert refused.error_code == ErrorCode.group_max_size_reached
        assert refused.member_id == ""
    finally:
        cluster.close()


def test_rejoin_with_same_metadata_in_completing_rebalance_returns_the_generation(
        cluster: ClockedBroker) -> None:
    a, b = cluster.connect("a"), cluster.connect("b")
    ja, jb = join_dynamic(cluster, a, "g"), join_dynamic(cluster, b, "g")
    cluster.advance(0)
    ra, rb = ja.result(), jb.result()
    follower, follower_conn = (rb, b) if ra.members else (ra, a)
    again = follower_conn.request(join_request("g", follower.member_id))
    assert again.error_code == ErrorCode.none
    assert again.generation_id == follower.generation_id and again.members == ()


# -- SyncGroup ---------------------------------------------------------------------------


def test_sync_distributes_the_leaders_assignment(cluster: ClockedBroker) -> None:
    members = stable_group(cluster, "g", 3)
    observer = cluster.connect()
    (group,) = describe(observer, "g")
    assert group.error_code == ErrorCode.none
    assert group.group_state == "Stable"
    assert group.protocol_type == "consumer" and group.protocol_data == "range"
    assert {m.member_id: m.member_assignment for m in group.members} == {
        mid: f"assignment-{mid}".encode() for _, mid, _ in members}
    assert {m.member_metadata for m in group.members} == {b"meta"}
    assert {m.client_host for m in group.members} == {"/127.0.0.1"}
    assert {m.client_id for m in group.members} == {"c0", "c1", "c2"}
    # A member syncing again in Stable gets its assignment at once.
    conn, member_id, generation = members[1]
    again = conn.request(sync_request("g", generation, member_id))
    assert again.assignment == f"assignment-{member_id}".encode()
    assert (again.protocol_type, again.protocol_name) == ("consumer", "range")


def test_members_left_out_of_the_assignment_get_an_empty_one(cluster: ClockedBroker) -> None:
    a, b = cluster.connect("a"), cluster.connect("b")
    ja, jb = join_dynamic(cluster, a, "g"), join_dynamic(cluster, b, "g")
    cluster.advance(0)
    ra, rb = ja.result(), jb.result()
    (leader, lconn), (follower, fconn) = sorted([(ra, a), (rb, b)], key=lambda x: not x[0].members)
    fsync = fconn.send(sync_request("g", 1, follower.member_id))
    lsync = lconn.send(sync_request("g", 1, leader.member_id, {leader.member_id: b"all"}))
    assert lsync.result().assignment == b"all"
    assert fsync.result().assignment == b""


def test_sync_errors(cluster: ClockedBroker) -> None:
    members = stable_group(cluster, "g", 1)
    conn, member_id, generation = members[0]
    wrong_generation = conn.request(sync_request("g", generation + 1, member_id))
    assert wrong_generation.error_code == ErrorCode.illegal_generation
    assert conn.request(sync_request("g", generation, "who")).error_code == ErrorCode.unknown_member_id
    assert conn.request(sync_request("nope", 1, "who")).error_code == ErrorCode.unknown_member_id
    bad_name = conn.request(sync_request("g", generation, member_id, protocol_name="roundrobin"))
    assert bad_name.error_code == ErrorCode.inconsistent_group_protocol
    bad_type = conn.request(sync_request("g", generation, member_id, protocol_type="connect"))
    assert bad_type.error_code == ErrorCode.inconsistent_group_protocol
    # Below v5 nothing is checked, and null means "not checked" in v5.
    assert conn.request(sync_request("g", generation, member_id, version=4)).error_code == ErrorCode.none
    unchecked = conn.request(sync_request("g", generation, member_id, protocol_type=None, protocol_name=None))
    assert unchecked.error_code == ErrorCode.none


def test_sync_during_preparing_rebalance(cluster: ClockedBroker) -> None:
    members = stable_group(cluster, "g", 2)
    (lconn, leader, gen), (fconn, follower, _) = members
    rejoin = lconn.send(join_request("g", leader))  # the leader rejoining starts a rebalance
    response = fconn.request(sync_request("g", gen, follower))
    assert response.error_code == ErrorCode.rebalance_in_progress
    assert not rejoin.done


def test_a_rebalance_answers_waiting_syncs_rebalance_in_progress(cluster: ClockedBroker) -> None:
    a, b = cluster.connect("a"), cluster.connect("b")
    ja, jb = join_dynamic(cluster, a, "g"), join_dynamic(cluster, b, "g")
    cluster.advance(0)
    ra, rb = ja.result(), jb.result()
    follower, fconn = (rb, b) if ra.members else (ra, a)
    waiting = fconn.send(sync_request("g", 1, follower.member_id))
    assert not waiting.done
    newcomer = cluster.connect("c").send(join_request("g", version=3))  # v3: no member id round trip
    assert waiting.result().error_code == ErrorCode.rebalance_in_progress
    assert not newcomer.done


def test_pending_sync_expiry_removes_members_that_never_sync(cluster: ClockedBroker) -> None:
    a, b = cluster.connect("a"), cluster.connect("b")
    ja, jb = join_dynamic(cluster, a, "g", rebalance=5000), join_dynamic(cluster, b, "g", rebalance=5000)
    cluster.advance(0)
    ra, rb = ja.result(), jb.result()
    (leader, lconn), (follower, _fconn) = sorted([(ra, a), (rb, b)], key=lambda x: not x[0].members)
    lconn.request(sync_request("g", 1, leader.member_id, {leader.member_id: b"x", follower.member_id: b"y"}))
    cluster.advance(4900)
    assert set(cluster.coordinator.groups["g"].members) == {leader.member_id, follower.member_id}
    cluster.advance(100)
    group = cluster.coordinator.groups["g"]
    assert set(group.members) == {leader.member_id}
    assert group.state.value == "PreparingRebalance"


# -- Heartbeat ---------------------------------------------------------------------------


def test_heartbeat_answers(cluster: ClockedBroker) -> None:
    members = stable_group(cluster, "g", 2)
    (lconn, leader, gen), (fconn, follower, _) = members
    assert fconn.request(heartbeat_request("g", gen, follower)).error_code == ErrorCode.none
    assert fconn.request(heartbeat_request("g", gen + 1, follower)).error_code == ErrorCode.illegal_generation
    assert fconn.request(heartbeat_request("g", gen, "ghost")).error_code == ErrorCode.unknown_member_id
    assert fconn.request(heartbeat_request("nope", gen, "ghost")).error_code == ErrorCode.unknown_member_id
    assert fconn.request(heartbeat_request("", gen, follower)).error_code == ErrorCode.invalid_group_id
    lconn.send(join_request("g", leader))
    assert fconn.request(heartbeat_request("g", gen, follower)).error_code == ErrorCode.rebalance_in_progress
    for version in range(5):
        response = fconn.request(heartbeat_request("g", gen, follower, version=version))
        assert response.error_code == ErrorCode.rebalance_in_progress


def test_heartbeats_keep_a_member_and_silence_evicts_it(cluster: ClockedBroker) -> None:
    members = stable_group(cluster, "g", 2, session=3000)
    (lconn, leader, gen), (fconn, follower, _) = members
    for _ in range(5):  # 10s of heartbeats every 2s: well past one session timeout
        cluster.advance(2000)
        assert lconn.request(heartbeat_request("g", gen, leader)).error_code == ErrorCode.none
        assert fconn.request(heartbeat_request("g", gen, follower)).error_code == ErrorCode.none
    # The follower goes silent; the leader keeps heartbeating.
    cluster.advance(2000)
    assert lconn.request(heartbeat_request("g", gen, leader)).error_code == ErrorCode.none
    cluster.advance(1000)  # the follower's session (3s) has expired
    assert follower not in cluster.coordinator.groups["g"].members
    assert lconn.request(heartbeat_request("g", gen, leader)).error_code == ErrorCode.rebalance_in_progress
    rejoin = lconn.send(join_request("g", leader))
    cluster.advance(0)
    response = rejoin.result()
    assert response.generation_id == gen + 1
    assert [m.member_id for m in response.members] == [leader]


def test_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout(cluster: ClockedBroker) -> None:
    members = stable_group(cluster, "g", 2, session=30_000, rebalance=6000)
    (lconn, leader, gen), (fconn, follower, _) = members
    rejoin = lconn.send(join_request("g", leader, session=30_000, rebalance=6000))
    cluster.advance(3000)
    # Still heartbeating (told to rejoin) but never rejoining.
    assert fconn.request(heartbeat_request("g", gen, follower)).error_code == ErrorCode.rebalance_in_progress
    assert not rejoin.done
    cluster.advance(3000)
    response = rejoin.result()
    assert response.error_code == ErrorCode.none
    assert response.generation_id == gen + 1
    assert [m.member_id for m in response.members] == [leader]
    assert fconn.request(heartbeat_request("g", gen, follower)).error_code == ErrorCode.unknown_member_id


def test_pending_member_expires_after_its_session_timeout(cluster: ClockedBroker) -> None:
    members = stable_group(cluster, "g", 1)
    lconn, leader, _gen = members[0]
    first = cluster.connect("x").request(join_request("g", session=2000))
    assert first.error_code == ErrorCode.member_id_required
    rejoin = lconn.send(join_request("g", leader))  # rebalance: waits for the pending member too
    cluster.advance(1900)
    assert not rejoin.done
    cluster.advance(100)
    assert rejoin.result().generation_id == 2


# -- LeaveGroup --------------------------------------------------------------------------


def test_leaving_cleanly_rebalances_at_once(cluster: ClockedBroker) -> None:
    members = stable_group(cluster, "g", 2)
    (lconn, leader, gen), (fconn, follower, _) = members
    left = fconn.request(leave_request("g", (follower, None)))
    assert left.error_code == ErrorCode.none
    assert [(m.member_id, m.error_code) for m in left.members] == [(follower, ErrorCode.none)]
    assert cluster.coordinator.groups["g"].state.value == "PreparingRebalance"
    assert lconn.request(heartbeat_request("g", gen, leader)).error_code == ErrorCode.rebalance_in_progress
    rejoin = lconn.send(join_request("g", leader))
    response = rejoin.result()  # everyone left has rejoined: no waiting
    assert response.generation_id == gen + 1


def test_last_member_leaving_empties_the_group(cluster: ClockedBroker) -> None:
    (conn, member_id, gen), = stable_group(cluster, "g", 1)
    conn.request(leave_request("g", (member_id, None), version=0))
    (group,) = describe(conn, "g")
    assert group.group_state == "Empty"
    assert group.protocol_type == "consumer"  # Kafka keeps the protocol type of an empty group
    assert cluster.coordinator.groups["g"].generation_id == gen + 1


@pytest.mark.parametrize("version", [0, 1, 2])
def test_leave_v0_to_v2_carry_the_member_error_at_the_top(cluster: ClockedBroker, version: int) -> None:
    stable_group(cluster, "g", 1)
    conn = cluster.connect()
    assert conn.request(leave_request("g", ("ghost", None), version=version)).error_code == \
        ErrorCode.unknown_member_id
    assert conn.request(leave_request("", ("ghost", None), version=version)).error_code == \
        ErrorCode.invalid_group_id


def test_batched_leave_with_unknown_members_and_unknown_group(cluster: ClockedBroker) -> None:
    members = stable_group(cluster, "g", 3)
    conn = cluster.connect()
    response = conn.request(leave_request("g", (members[1][1], None), ("ghost", None), ("", "no-such")))
    assert [m.error_code for m in response.members] == [
        ErrorCode.none, ErrorCode.unknown_member_id, ErrorCode.unknown_member_id]
    unknown_group = conn.request(leave_request("nope", ("a", None), ("b", "i")))
    assert unknown_group.error_code == ErrorCode.none
    assert [(m.member_id, m.group_instance_id, m.error_code) for m in unknown_group.members] == [
        ("a", None, ErrorCode.unknown_member_id), ("b", "i", ErrorCode.unknown_member_id)]


# -- static membership --------------------------------------------------------------------


def join_static(cluster: ClockedBroker, conn: Conn, group: str, instance: str, member_id: str = "",
                **kwargs: Any) -> Pending:
    return conn.send(join_request(group, member_id, instance=instance, **kwargs))


def test_static_member_restarts_without_a_rebalance_and_fences_its_old_id(cluster: ClockedBroker) -> None:
    a, b = cluster.connect("a"), cluster.connect("b")
    ja = join_static(cluster, a, "g", "instance-a")
    jb = join_static(cluster, b, "g", "instance-b")
    cluster.advance(0)
    ra, rb = ja.result(), jb.result()
    assert ra.error_code == rb.error_code == ErrorCode.none  # no MEMBER_ID_REQUIRED for static members
    assert ra.member_id.startswith("instance-a-")
    (leader, lconn, linst), (follower, fconn, finst) = sorted(
        [(ra, a, "instance-a"), (rb, b, "instance-b")], key=lambda x: not x[0].members)
    fsync = fconn.send(sync_request("g", 1, follower.member_id, instance=finst))
    lconn.request(sync_request("g", 1, leader.member_id,
                               {leader.member_id: b"L", follower.member_id: b"F"}, instance=linst))
    assert fsync.result().assignment == b"F"
    # The follower restarts: it rejoins with its instance id and no member id.
    restarted = cluster.connect("b2")
    again = join_static(cluster, restarted, "g", finst).result()
    assert again.error_code == ErrorCode.none
    assert again.member_id != follower.member_id and again.member_id.startswith(finst)
    assert again.generation_id == 1  # no new generation
    assert again.leader == leader.member_id and again.members == ()
    group = cluster.coordinator.groups["g"]
    assert group.state.value == "Stable"
    assert restarted.request(sync_request("g", 1, again.member_id, instance=finst)).assignment == b"F"
    # Its old member id is fenced.
    old = fconn.request(heartbeat_request("g", 1, follower.member_id, instance=finst))
    assert old.error_code == ErrorCode.fenced_instance_id
    assert fconn.request(sync_request("g", 1, follower.member_id, instance=finst)).error_code == \
        ErrorCode.fenced_instance_id
    fenced_join = fconn.request(join_request("g", follower.member_id, instance=finst))
    assert fenced_join.error_code == ErrorCode.fenced_instance_id
    # The leader never noticed.
    assert lconn.request(heartbeat_request("g", 1, leader.member_id, instance=linst)).error_code == \
        ErrorCode.none


def test_static_leader_rejoining_v9_skips_assignment(cluster: ClockedBroker) -> None:
    conn = cluster.connect("a")
    first = join_static(cluster, conn, "g", "i")
    cluster.advance(0)
    member = first.result().member_id
    conn.request(sync_request("g", 1, member, {member: b"A"}, instance="i"))
    v9 = join_static(cluster, cluster.connect("a2"), "g", "i").result()
    assert v9.skip_assignment is True
    assert v9.leader == v9.member_id and [m.member_id for m in v9.members] == [v9.member_id]
    v8 = join_static(cluster, cluster.connect("a3"), "g", "i", version=8).result()
    assert v8.leader == v9.member_id  # the old leader id: the client does not assign
    assert v8.members == ()


def test_static_member_changing_protocols_triggers_a_rebalance(cluster: ClockedBroker) -> None:
    conn = cluster.connect("a")
    first = join_static(cluster, conn, "g", "i", protocols=(("range", b""), ("roundrobin", b"")))
    cluster.advance(0)
    member = first.result().member_id
    conn.request(sync_request("g", 1, member, {member: b"A"}, instance="i"))
    changed = join_static(cluster, cluster.connect("a2"), "g", "i", protocols=(("roundrobin", b""),))
    cluster.advance(0)
    response = changed.result()
    assert response.generation_id == 2
    assert response.protocol_name == "roundrobin"


def test_static_members_are_not_dropped_for_not_rejoining(cluster: ClockedBroker) -> None:
    a, b = cluster.connect("a"), cluster.connect("b")
    ja = join_static(cluster, a, "g", "ia", session=60_000, rebalance=5000)
    jb = join_static(cluster, b, "g", "ib", session=60_000, rebalance=5000)
    cluster.advance(0)
    ra, rb = ja.result(), jb.result()
    (leader, lconn, linst) = (ra, a, "ia") if ra.members else (rb, b, "ib")
    lconn.request(sync_request("g", 1, leader.member_id, {}, instance=linst))
    rejoin = a.send(join_request("g", ra.member_id, instance="ia", session=60_000, rebalance=5000))
    cluster.advance(4900)
    assert not rejoin.done
    cluster.advance(100)
    response = rejoin.result()
    assert response.generation_id == 2
    assert rb.member_id in cluster.coordinator.groups["g"].members


def test_leave_by_group_instance_id(cluster: ClockedBroker) -> None:
    conn = cluster.connect("a")
    joined = join_static(cluster, conn, "g", "i")
    cluster.advance(0)
    member = joined.result().member_id
    admin = cluster.connect("admin")
    response = admin.request(leave_request("g", ("", "i")))
    assert [(m.group_instance_id, m.error_code) for m in response.members] == [("i", ErrorCode.none)]
    assert member not in cluster.coordinator.groups["g"].members
    fenced = admin.request(leave_request("g", ("wrong-id", "i")))
    assert fenced.members[0].error_code == ErrorCode.unknown_member_id


def test_static_member_with_a_wrong_member_id_is_fenced(cluster: ClockedBroker) -> None:
    conn = cluster.connect("a")
    joined = join_static(cluster, conn, "g", "i")
    cluster.advance(0)
    member = joined.result().member_id
    response = cluster.connect().request(leave_request("g", ("not-" + member, "i")))
    assert response.members[0].error_code == ErrorCode.fenced_instance_id


# -- ListGroups, DescribeGroups, DeleteGroups --------------------------------------------


def test_list_groups_with_state_and_type_filters(cluster: ClockedBroker) -> None:
    stable_group(cluster, "stable", 1)
    (conn, member, _), = stable_group(cluster, "emptied", 1)
    conn.request(leave_request("emptied", (member, None)))
    admin = cluster.connect()
    v0 = admin.request(schema("list_groups", 0).ListGroupsRequest())
    assert sorted((g.group_id, g.protocol_type) for g in v0.groups) == [
        ("emptied", "consumer"), ("stable", "consumer")]
    v4 = admin.request(schema("list_groups", 4).ListGroupsRequest(states_filter=("STABLE",)))
    assert [(g.group_id, g.group_state) for g in v4.groups] == [("stable", "Stable")]
    v5 = schema("list_groups", 5).ListGroupsRequest
    classic = admin.request(v5(states_filter=(), types_filter=("Classic",)))
    assert sorted(g.group_id for g in classic.groups) == ["emptied", "stable"]
    assert {g.group_type for g in classic.groups} == {"classic"}
    assert admin.request(v5(states_filter=(), types_filter=("consumer",))).groups == ()
    empty = admin.request(v5(states_filter=("empty",), types_filter=()))
    assert [g.group_id for g in empty.groups] == ["emptied"]


def test_describe_unknown_groups(cluster: ClockedBroker) -> None:
    conn = cluster.connect()
    (v5,) = describe(conn, "nope", version=5)
    assert (v5.error_code, v5.group_state) == (ErrorCode.none, "Dead")
    (v6,) = describe(conn, "nope", version=6)
    assert (v6.error_code, v6.group_state) == (ErrorCode.group_id_not_found, "Dead")
    assert v6.error_message == "Group nope not found."


def test_describe_a_rebalancing_group_has_no_member_metadata(cluster: ClockedBroker) -> None:
    members = stable_group(cluster, "g", 2)
    members[0][0].send(join_request("g", members[0][1]))
    (group,) = describe(cluster.connect(), "g")
    assert group.group_state == "PreparingRebalance"
    assert group.protocol_data == ""
    assert {m.member_metadata for m in group.members} == {b""}
    assert {m.member_assignment for m in group.members} == {b""}


def test_describe_authorized_operations(cluster: ClockedBroker) -> None:
    stable_group(cluster, "g", 1)
    mod = schema("describe_groups", 5)
    conn = cluster.connect()
    asked = conn.request(mod.DescribeGroupsRequest(groups=("g",), include_authorized_operations=True))
    # READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS: Kafka 4.1's AclEntry for groups
    assert asked.groups[0].authorized_operations == sum(1 << op for op in (3, 6, 8, 10, 11))
    not_asked = conn.request(mod.DescribeGroupsRequest(groups=("g",), include_authorized_operations=False))
    assert not_asked.groups[0].authorized_operations == -(2**31)


def test_delete_groups(cluster: ClockedBroker) -> None:
    (conn, _member, _), = stable_group(cluster, "busy", 1)
    (conn2, member2, _), = stable_group(cluster, "idle", 1)
    conn2.request(leave_request("idle", (member2, None)))
    mod = schema("delete_groups", 2)
    response = conn.request(mod.DeleteGroupsRequest(groups_names=("busy", "idle", "nope", "idle")))
    assert [(r.group_id, r.error_code) for r in response.results] == [
        ("busy", ErrorCode.non_empty_group), ("idle", ErrorCode.none), ("nope", ErrorCode.group_id_not_found)]
    assert "idle" not in cluster.coordinator.groups
    (gone,) = describe(conn, "idle")
    assert gone.group_state == "Dead"
