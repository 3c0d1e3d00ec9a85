"""Share groups (KIP-932) over raw sockets: ShareGroupHeartbeat, ShareFetch and ShareAcknowledge
edge cases and errors, share sessions, long polling, the `__share_group_state` records, the
share coordinator's internal API and the share-group admin APIs (one broker for the module)."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i16, i32, i64

from akfak.handlers.share_fetch import PartitionAnswer, encode_share_fetch_response
from akfak.log.batch import scan
from akfak.log.records import iter_records
from akfak.share import records as share_records
from akfak.share.partition import Acquired
from tests.brokers import BrokerProcess, start_process
from tests.recordbatch import make_batch
from tests.requests import _module, build, fetch, ms, produce
from tests.test_features import api_versions, update_features
from tests.wire import WireClient, encode_body

ACCEPT, RELEASE, REJECT = 1, 2, 3


def new_member() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def create_topic(c: WireClient, name: str, partitions: int = 1) -> uuid.UUID:
    m = _module(19, 7)
    answer = c.request(build(m.CreateTopicsRequest, topics=(build(
        m.CreatableTopic, name=name, num_partitions=i32(partitions), replication_factor=i16(1),
        assignments=(), configs=()),), timeout=ms(5000), validate_only=False))
    assert answer.topics[0].error_code == ErrorCode.none, answer
    return answer.topics[0].topic_id


def produce_values(c: WireClient, topic: str, *values: bytes) -> None:
    batch = make_batch([(None, v) for v in values])
    assert c.request(produce(topic, {0: batch})).responses[0].partition_responses[0].error_code \
        == ErrorCode.none


def heartbeat(c: WireClient, group: str, member: str, epoch: int, topics: tuple[str, ...] | None
              ) -> Any:
    m = _module(76, 1)
    return c.request(build(m.ShareGroupHeartbeatRequest, group_id=group, member_id=member,
                           member_epoch=i32(epoch), rack_id=None, subscribed_topic_names=topics))


def group_config(c: WireClient, group: str, **configs: str) -> None:
    m = _module(44, 1)
    answer = c.request(build(m.IncrementalAlterConfigsRequest, resources=(m.AlterConfigsResource(
        resource_type=i8(32), resource_name=group, configs=tuple(
            m.AlterableConfig(name=k.replace("_", "."), config_operation=i8(0), value=v)
            for k, v in configs.items())),), validate_only=False))
    assert answer.responses[0].error_code == ErrorCode.none, answer


Acks = dict[int, list[tuple[int, int, list[int]]]]


def share_fetch(c: WireClient, group: str, member: str, epoch: int, topic_id: uuid.UUID | None,
                partitions: tuple[int, ...] = (0,), acks: Acks | None = None, *,
                max_wait_ms: int = 0, max_records: int = 500, min_bytes: int = 1) -> Any:
    m = _module(78, 1)
    acks = acks or {}
    topics = () if topic_id is None else (m.FetchTopic(topic_id=topic_id, partitions=tuple(
        m.FetchPartition(partition_index=i32(p), acknowledgement_batches=tuple(
            m.AcknowledgementBatch(first_offset=i64(f), last_offset=i64(la),
                                   acknowledge_types=tuple(i8(t) for t in types))
            for f, la, types in acks.get(p, ())))
        for p in partitions)),)
    return c.request(build(m.ShareFetchRequest, group_id=group, member_id=member,
                           share_session_epoch=i32(epoch), max_wait=ms(max_wait_ms),
                           min_bytes=i32(min_bytes), max_bytes=i32(1 << 20),
                           max_records=i32(max_records), batch_size=i32(max_records),
                           topics=topics, forgotten_topics_data=()))


def share_acknowledge(c: WireClient, group: str, member: str, epoch: int, topic_id: uuid.UUID,
                      acks: Acks) -> Any:
    m = _module(79, 1)
    partitions = tuple(
        m.AcknowledgePartition(partition_index=i32(p), acknowledgement_batches=tuple(
            m.AcknowledgementBatch(first_offset=i64(f), last_offset=i64(la),
                                   acknowledge_types=tuple(i8(t) for t in ts))
            for f, la, ts in batches))
        for p, batches in acks.items())
    return c.request(build(m.ShareAcknowledgeRequest, group_id=group, member_id=member,
                           share_session_epoch=i32(epoch), topics=(
                               m.AcknowledgeTopic(topic_id=topic_id, partitions=partitions),)))


def acquired(answer: Any) -> list[tuple[int, int, int]]:
    return [(a.first_offset, a.last_offset, a.delivery_count)
            for t in answer.responses for p in t.partitions for a in p.acquired_records]


def partition_of(answer: Any) -> Any:
    return answer.responses[0].partitions[0]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = start_process(tmp_path_factory.mktemp("share") / "data")
    with WireClient(proc.port) as c:
        assert update_features(c, ("share.version", 1, 1)).error_code == ErrorCode.none
    yield proc
    proc.stop()


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[WireClient]:
    with WireClient(broker.port) as c:
        yield c


def joined(c: WireClient, group: str, topic: str, *, earliest: bool = True) -> tuple[str, uuid.UUID]:
    """A topic with a member of `group` subscribed to it."""
    topic_id = create_topic(c, topic)
    if earliest:
        group_config(c, group, share_auto_offset_reset="earliest")
    member = new_member()
    answer = heartbeat(c, group, member, 0, (topic,))
    # epoch 1 for the join, 2 once the share-partition is initialized (Kafka's numbering)
    assert (answer.error_code, answer.member_epoch) == (ErrorCode.none, 2), answer
    assert [(t.topic_id, t.partitions) for t in answer.assignment.topic_partitions] == [(topic_id, (0,))]
    return member, topic_id


def test_share_groups_need_share_version_1(broker_process: Any) -> None:
    """As Kafka 4.1: a new cluster does not finalize share.version, the share APIs are
    advertised anyway and answer UNSUPPORTED_VERSION until `share.version=1`."""
    proc = broker_process()
    with WireClient(proc.port) as c:
        versions = {int(k.api_key): (int(k.min_version), int(k.max_version))
                    for k in api_versions(c).api_keys}
        assert [versions[k] for k in (76, 77, 78, 79)] == [(1, 1)] * 4
        assert [versions[k] for k in (83, 84, 85, 86, 87, 90, 91, 92)] == [(0, 0)] * 8
        assert "share.version" not in {f.name for f in api_versions(c).finalized_features}
        assert heartbeat(c, "g", new_member(), 0, ("t",)).error_code == ErrorCode.unsupported_version
        assert share_fetch(c, "g", new_member(), 0, None).error_code == ErrorCode.unsupported_version
        assert update_features(c, ("share.version", 1, 1)).error_code == ErrorCode.none
        assert heartbeat(c, "g", "", 0, ("t",)).error_code == ErrorCode.invalid_request


def test_heartbeat_joins_and_answers_errors_as_kafka(client: WireClient) -> None:
    member, topic_id = joined(client, "hb", "hb-topic", earliest=False)
    expected = [
        (heartbeat(client, "hb", "", 0, ("x",)), ErrorCode.invalid_request, "MemberId can't be empty."),
        (heartbeat(client, "hb", new_member(), 0, None), ErrorCode.invalid_request,
         "SubscribedTopicNames must be set in first request."),
        (heartbeat(client, "hb", new_member(), -2, None), ErrorCode.invalid_request,
         "MemberEpoch is invalid."),
        (heartbeat(client, "nosuch", new_member(), 1, None), ErrorCode.group_id_not_found,
         "Share group nosuch not found."),
        (heartbeat(client, "hb", new_member(), 1, None), ErrorCode.unknown_member_id, None),
        (heartbeat(client, "hb", member, 7, None), ErrorCode.fenced_member_epoch, None),
    ]
    for answer, error, message in expected:
        assert answer.error_code == error, answer
        if message is not None:
            assert answer.error_message == message
    # a second member: the group epoch moves, both share the partition
    other = new_member()
    second = heartbeat(client, "hb", other, 0, ("hb-topic",))
    assert (second.member_epoch, second.assignment.topic_partitions[0].partitions) == (3, (0,))
    # the previous epoch is still accepted; the assignment did not change: none is sent
    again = heartbeat(client, "hb", member, 2, None)
    assert (again.error_code, again.member_epoch, again.assignment) == (ErrorCode.none, 3, None)
    full = heartbeat(client, "hb", member, 3, ("hb-topic",))  # a full request gets it
    assert [(t.topic_id, t.partitions) for t in full.assignment.topic_partitions] == [
        (topic_id, (0,))]
    left = heartbeat(client, "hb", other, -1, None)
    assert (left.error_code, left.member_epoch) == (ErrorCode.none, -1)
    m = _module(77, 1)
    described = client.request(build(m.ShareGroupDescribeRequest, group_ids=("hb", "nosuch"),
                                     include_authorized_operations=False)).groups
    assert (described[0].group_state, described[0].group_epoch, described[0].assignor_name,
            [(x.member_id, x.member_epoch) for x in described[0].members]) == (
        "Stable", 4, "simple", [(member, 3)])
    assert (described[1].error_code, described[1].error_message) == (
        ErrorCode.group_id_not_found, "Group nosuch not found.")


def test_share_session_epochs(client: WireClient) -> None:
    member, topic_id = joined(client, "sessions", "sessions-topic")
    assert share_fetch(client, "sessions", member, 1, topic_id).error_code == \
        ErrorCode.share_session_not_found
    assert share_fetch(client, "sessions", member, -1, topic_id).error_code == \
        ErrorCode.share_session_not_found
    assert share_fetch(client, "sessions", member, 0, topic_id, acks={0: [(0, 0, [ACCEPT])]}) \
        .error_code == ErrorCode.invalid_request
    opened = share_fetch(client, "sessions", member, 0, topic_id)
    assert (opened.error_code, [p.partition_index for p in opened.responses[0].partitions]) == (
        ErrorCode.none, [0])
    assert share_fetch(client, "sessions", member, 5, topic_id).error_code == \
        ErrorCode.invalid_share_session_epoch
    # a later epoch fetches the session's partitions: nothing to say, no partitions
    later = share_fetch(client, "sessions", member, 1, None)
    assert (later.error_code, later.responses) == (ErrorCode.none, ())
    assert share_acknowledge(client, "sessions", member, 0, topic_id, {0: []}).error_code == \
        ErrorCode.invalid_share_session_epoch
    assert share_acknowledge(client, "sessions", member, 2, topic_id, {0: []}).error_code == \
        ErrorCode.none
    closed = share_fetch(client, "sessions", member, -1, None)
    assert closed.error_code == ErrorCode.none
    assert share_fetch(client, "sessions", member, 4, None).error_code == \
        ErrorCode.share_session_not_found


def test_acquire_release_reject_accept(client: WireClient) -> None:
    """Records come as the stored batches with their acquired ranges; only their member may
    acknowledge them; a release brings them back with a higher delivery count; the start
    offset moves past what is accepted or rejected (the persisted one, which describes show,
    trailing by the last change, as Kafka writes it)."""
    member, topic_id = joined(client, "states", "states-topic")
    produce_values(client, "states-topic", b"a", b"b", b"c")
    produce_values(client, "states-topic", b"d", b"e")
    first = share_fetch(client, "states", member, 0, topic_id)
    stored = client.request(fetch({"states-topic": {0: 0}})).responses[0].partitions[0].records
    assert (acquired(first), partition_of(first).records) == ([(0, 4, 1)], stored)
    assert first.acquisition_lock_timeout.total_seconds() == 30
    other = new_member()
    heartbeat(client, "states", other, 0, ("states-topic",))
    with WireClient(client.sock.getpeername()[1]) as c2:
        assert acquired(share_fetch(c2, "states", other, 0, topic_id)) == []
        refused = share_acknowledge(c2, "states", other, 1, topic_id, {0: [(0, 0, [ACCEPT])]})
        assert refused.responses[0].partitions[0].error_code == ErrorCode.invalid_record_state
    errors = [
        ((0, 1, [ACCEPT, ACCEPT, ACCEPT]), ErrorCode.invalid_request),  # types not per offset
        ((2, 1, [ACCEPT]), ErrorCode.invalid_request),  # first > last
        ((0, 9, [ACCEPT]), ErrorCode.invalid_request),  # past the acquired records
        ((0, 0, [4]), ErrorCode.invalid_request),
    ]
    epoch = 1
    for batch, error in errors:
        answer = share_acknowledge(client, "states", member, epoch, topic_id, {0: [batch]})
        epoch += 1
        assert answer.responses[0].partitions[0].error_code == error, batch
    # per offset: accept 0, release 1, reject 2; release 3-4
    done = share_fetch(client, "states", member, epoch, topic_id, acks={0: [
        (0, 2, [ACCEPT, RELEASE, REJECT]), (3, 4, [RELEASE])]})
    epoch += 1
    assert partition_of(done).acknowledge_error_code == 0
    assert acquired(done) == [(1, 1, 2), (3, 4, 2)]
    assert acquired(share_fetch(client, "states", member, epoch, None)) == []
    epoch += 1
    accepted = share_acknowledge(client, "states", member, epoch, topic_id,
                                 {0: [(1, 1, [ACCEPT]), (3, 4, [ACCEPT])]})
    assert accepted.responses[0].partitions[0].error_code == ErrorCode.none
    m = _module(90, 0)
    offsets = client.request(build(m.DescribeShareGroupOffsetsRequest, groups=(
        m.DescribeShareGroupOffsetsRequestGroup(group_id="states", topics=None),)))
    assert [(t.topic_name, [(p.partition_index, p.start_offset) for p in t.partitions])
            for t in offsets.groups[0].topics] == [("states-topic", [(0, 1)])]  # Kafka's: trails


def test_long_poll_waits_for_an_append(client: WireClient, broker: BrokerProcess) -> None:
    member, topic_id = joined(client, "poll", "poll-topic")
    assert share_fetch(client, "poll", member, 0, topic_id).error_code == ErrorCode.none

    def later() -> None:
        time.sleep(0.3)
        with WireClient(broker.port) as c:
            produce_values(c, "poll-topic", b"late")

    started = time.monotonic()
    threading.Thread(target=later).start()
    answer = share_fetch(client, "poll", member, 1, None, max_wait_ms=8000)
    assert acquired(answer) == [(0, 0, 1)]
    assert time.monotonic() - started < 6  # woken by the append, not the 8 s timeout
    started = time.monotonic()
    assert acquired(share_fetch(client, "poll", member, 2, None, max_wait_ms=300)) == []
    assert time.monotonic() - started >= 0.25


def test_state_is_kept_in_share_group_state_as_kafka_writes_it(client: WireClient) -> None:
    """An initializing ShareSnapshot (start offset -1), then ShareUpdates of what changed; the
    internal API reads the state back."""
    member, topic_id = joined(client, "kept", "kept-topic")
    produce_values(client, "kept-topic", b"x", b"y")
    share_fetch(client, "kept", member, 0, topic_id)
    share_acknowledge(client, "kept", member, 1, topic_id, {0: [(0, 0, [ACCEPT]), (1, 1, [RELEASE])]})
    key = share_records.ShareKey("kept", topic_id, 0)
    partition = share_records.partition_for(key, 50)
    data = client.request(fetch({"__share_group_state": {partition: 0}})).responses[0] \
        .partitions[0].records
    found = []
    for pos, header in scan(data):
        for record in iter_records(data[pos:pos + header.size]):
            kind, got = share_records.decode_key(record.key)
            if got != key:
                continue
            if kind == share_records.SNAPSHOT_TYPE:
                snapshot = share_records.decode_snapshot(record.value)
                found.append(("snapshot", snapshot.state_epoch, snapshot.start_offset,
                              snapshot.batches))
            else:
                found.append(("update", *share_records.decode_update(record.value)[1:]))
    assert found == [
        ("snapshot", 1, -1, []),
        ("update", 0, 0, [share_records.StateBatch(0, 0, share_records.ACKNOWLEDGED, 1),
                          share_records.StateBatch(1, 1, share_records.AVAILABLE, 1)]),
    ]
    m = _module(84, 0)
    read = client.request(build(m.ReadShareGroupStateRequest, group_id="kept", topics=(
        m.ReadStateData(topic_id=topic_id, partitions=(
            m.PartitionData(partition=i32(0), leader_epoch=i32(-1)),)),
        m.ReadStateData(topic_id=uuid.uuid4(), partitions=(
            m.PartitionData(partition=i32(0), leader_epoch=i32(-1)),)))))
    result, unknown = (r.partitions[0] for r in read.results)
    assert (result.error_code, result.state_epoch, result.start_offset,
            [(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count)
             for b in result.state_batches]) == (ErrorCode.none, 1, 0, [(0, 0, 2, 1), (1, 1, 0, 1)])
    assert (unknown.error_code, unknown.error_message) == (
        ErrorCode.invalid_request, "Read operation on uninitialized share partition not allowed.")


def test_share_groups_in_the_group_admin_apis(client: WireClient) -> None:
    member, topic_id = joined(client, "admin", "admin-topic")
    produce_values(client, "admin-topic", b"1", b"2", b"3")
    m = _module(16, 5)
    listed = client.request(build(m.ListGroupsRequest, states_filter=(), types_filter=("share",)))
    assert ("admin", "share", "Stable", "share") in {
        (g.group_id, g.protocol_type, g.group_state, g.group_type) for g in listed.groups}
    assert "admin" not in {g.group_id for g in client.request(build(
        m.ListGroupsRequest, states_filter=(), types_filter=("classic",))).groups}
    d6, d5 = _module(15, 6), _module(15, 5)
    described = client.request(build(d6.DescribeGroupsRequest, groups=("admin",),
                                     include_authorized_operations=False)).groups[0]
    assert (described.error_code, described.error_message, described.group_state) == (
        ErrorCode.group_id_not_found, "Group admin is not a classic group.", "Dead")
    assert client.request(build(d5.DescribeGroupsRequest, groups=("admin",),
                                include_authorized_operations=False)).groups[0].error_code \
        == ErrorCode.none
    alter = _module(91, 0)

    def reset(offset: int) -> Any:
        return client.request(build(alter.AlterShareGroupOffsetsRequest, group_id="admin", topics=(
            alter.AlterShareGroupOffsetsRequestTopic(topic_name="admin-topic", partitions=(
                alter.AlterShareGroupOffsetsRequestPartition(partition_index=i32(0),
                                                             start_offset=i64(offset)),)),
            alter.AlterShareGroupOffsetsRequestTopic(topic_name="nosuch", partitions=(
                alter.AlterShareGroupOffsetsRequestPartition(partition_index=i32(0),
                                                             start_offset=i64(offset)),)))))

    assert reset(2).error_code == ErrorCode.non_empty_group
    deletion = _module(42, 2)
    assert client.request(build(deletion.DeleteGroupsRequest, groups_names=("admin",))) \
        .results[0].error_code == ErrorCode.non_empty_group
    heartbeat(client, "admin", member, -1, None)
    answer = reset(2)
    assert [(t.topic_name, [p.error_code for p in t.partitions]) for t in answer.responses] == [
        ("admin-topic", [ErrorCode.none]), ("nosuch", [ErrorCode.unknown_topic_or_partition])]
    member = new_member()
    heartbeat(client, "admin", member, 0, ("admin-topic",))
    assert acquired(share_fetch(client, "admin", member, 0, topic_id)) == [(2, 2, 1)]
    heartbeat(client, "admin", member, -1, None)
    delete = _module(92, 0)
    deleted = client.request(build(delete.DeleteShareGroupOffsetsRequest, group_id="admin", topics=(
        delete.DeleteShareGroupOffsetsRequestTopic(topic_name="admin-topic"),
        delete.DeleteShareGroupOffsetsRequestTopic(topic_name="nosuch"))))
    assert [(t.topic_name, t.error_code) for t in deleted.responses] == [
        ("admin-topic", ErrorCode.none), ("nosuch", ErrorCode.unknown_topic_or_partition)]
    assert client.request(build(deletion.DeleteGroupsRequest, groups_names=("admin",))) \
        .results[0].error_code == ErrorCode.none
    assert heartbeat(client, "admin", new_member(), 1, None).error_code == ErrorCode.group_id_not_found


def test_share_fetch_response_encoding_matches_kio() -> None:
    m = _module(78, 1)
    from kio.index import load_response_schema

    schema = load_response_schema(78, 1)
    module = __import__(schema.__module__, fromlist=["x"])
    batch = make_batch([(None, b"v")])
    topic_id = uuid.uuid4()
    parts = encode_share_fetch_response(0, 30000, {topic_id: [
        PartitionAnswer(0, 0, 0, (1, 3), [batch], len(batch), [Acquired(0, 0, 2)]),
        PartitionAnswer(1, ErrorCode.unknown_topic_or_partition.value, None)]})
    expected = module.ShareFetchResponse(
        throttle_time=ms(0), error_code=ErrorCode.none, error_message=None,
        acquisition_lock_timeout=ms(30000), node_endpoints=(), responses=(
            module.ShareFetchableTopicResponse(topic_id=topic_id, partitions=(
                module.PartitionData(
                    partition_index=i32(0), error_code=ErrorCode.none, error_message=None,
                    acknowledge_error_code=i16(0), acknowledge_error_message=None,
                    current_leader=module.LeaderIdAndEpoch(leader_id=i32(1), leader_epoch=i32(3)),
                    records=batch, acquired_records=(module.AcquiredRecords(
                        first_offset=i64(0), last_offset=i64(0), delivery_count=i16(2)),)),
                module.PartitionData(
                    partition_index=i32(1), error_code=ErrorCode.unknown_topic_or_partition,
                    error_message=None, acknowledge_error_code=i16(0),
                    acknowledge_error_message=None,
                    current_leader=module.LeaderIdAndEpoch(leader_id=i32(0), leader_epoch=i32(0)),
                    records=b"", acquired_records=()))),))
    assert b"".join(bytes(p) for p in parts) == encode_body(expected)
    del m


def test_groups_and_state_survive_a_crash(broker_process: Any, tmp_path: Any) -> None:
    """kill -9, then the group (epochs, member, assignment) comes back from __consumer_offsets
    and the share-partition from __share_group_state: what was accepted stays accepted, what
    was acquired is delivered again, and the member goes on with its epoch."""
    first = broker_process(data_dir=tmp_path / "crash")
    with WireClient(first.port) as c:
        assert update_features(c, ("share.version", 1, 1)).error_code == ErrorCode.none
        member, topic_id = joined(c, "crash", "crash-topic")
        produce_values(c, "crash-topic", b"a", b"b")
        produce_values(c, "crash-topic", b"c", b"d")
        assert acquired(share_fetch(c, "crash", member, 0, topic_id, max_records=1)) == [(0, 1, 1)]
        assert acquired(share_fetch(c, "crash", member, 1, topic_id, max_records=1,
                                    acks={0: [(0, 1, [ACCEPT])]})) == [(2, 3, 1)]
    first.kill()
    second = broker_process(data_dir=tmp_path / "crash", port=first.port)
    with WireClient(second.port) as c:
        m = _module(77, 1)
        deadline = time.monotonic() + 20
        while True:  # as a client: retried while the coordinator replays __consumer_offsets
            group = c.request(build(m.ShareGroupDescribeRequest, group_ids=("crash",),
                                    include_authorized_operations=False)).groups[0]
            if group.error_code != ErrorCode.coordinator_load_in_progress:
                break
            assert time.monotonic() < deadline, "the group never loaded"
            time.sleep(0.1)
        assert (group.error_code, group.group_epoch, group.assignment_epoch,
                [(x.member_id, x.member_epoch, x.subscribed_topic_names,
                  [(t.topic_name, t.partitions) for t in x.assignment.topic_partitions])
                 for x in group.members]) == (
            ErrorCode.none, 2, 2, [(member, 2, ("crash-topic",), [("crash-topic", (0,))])])
        beat = heartbeat(c, "crash", member, 2, None)
        assert (beat.error_code, beat.member_epoch) == (ErrorCode.none, 3)  # metadata re-read
        # Delivered again: with delivery count 1 when the acquisition before the crash was not
        # written, 2 when a state write after it carried it (KIP-932: an acquisition alone
        # writes nothing, so a leader's crash may lose its count).
        assert acquired(share_fetch(c, "crash", member, 0, topic_id)) in ([(2, 3, 1)], [(2, 3, 2)])


def test_read_committed_archives_aborted_transactions(client: WireClient, broker: BrokerProcess
                                                      ) -> None:
    """share.isolation.level=read_committed: the batches of an aborted transaction are archived
    at once, as Kafka filters them; they are neither acquired nor delivered again."""
    from confluent_kafka import Producer

    member, topic_id = joined(client, "committed", "committed-topic")
    group_config(client, "committed", share_isolation_level="read_committed")
    producer = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "share-txn"})
    producer.init_transactions(30)
    for values, commit in (((b"a", b"b"), True), ((b"x", b"y"), False), ((b"c",), True)):
        producer.begin_transaction()
        for value in values:
            producer.produce("committed-topic", value=value, partition=0)
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)
    # offsets: a b (0-1), COMMIT 2, x y (3-4), ABORT 5, c (6), COMMIT 7
    got = acquired(share_fetch(client, "committed", member, 0, topic_id))
    assert got == [(0, 2, 1), (5, 7, 1)]
