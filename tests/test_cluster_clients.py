"""The Java client 4.1.1 (tests/java) and franz-go (tests/go) in a cluster of three akfak
brokers over PostgreSQL (akfak/cluster.py), on one cluster for the module:

- an idempotent acks=all producer writes round-robin over a replication-factor-3 topic whose
  leaders are spread while the test kills a leader (kill -9) and, for Java, pauses another
  one past its lease (SIGSTOP, then SIGCONT): every acknowledged record is in the log once,
  at the offset it was acknowledged with, and each partition holds the producer's records in
  order; no delivery fails;
- a consumer group member (Java KIP-848 and, slow, classic; franz-go classic) reads a topic,
  committing as it goes, while its group coordinator is killed: it reads everything, and the
  new coordinator has the group's offsets at the end of the log;
- a Java transactional producer goes on across kill -9 of its transaction coordinator, and a
  read_committed consumer reads every committed transaction whole and no other record;
- a share group of two Java KafkaShareConsumers on a replication-factor-3 partition, one
  holding acquired records unacknowledged: kill -9 of the partition's leader makes them
  available at once on the new leader (not after the 30 s lock), and kill -9 of the share
  coordinator (the leader of `__share_group_state-0`) loses no acknowledgement; no record
  whose acknowledgement was answered is delivered again; over raw sockets, share requests
  elsewhere than at the group's coordinator / the partition's leader are NOT_COORDINATOR /
  NOT_LEADER_OR_FOLLOWER.

Each killed broker is restarted before the next test. CI (the suite's 15-minute budget) runs
the Java KIP-848 member, franz-go's group and the raw share requests; the rest is opt-in
(AKFAK_SLOW=1), as is test_cluster_faults' rolling restart.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from kio.schema.errors import ErrorCode

from tests.cluster import SESSION_MS, AkfakCluster
from tests.jvm import build, java_command, run_java
from tests.programs import Member, go_program, run, wait_for
from tests.recordbatch import make_batch
from tests.requests import produce
from tests.test_cluster import TIMEOUT, admin, create, create_placed, wait_leaders
from tests.test_cluster_coordinators import coordinator_of, find_coordinator, restart_dead
from tests.wire import WireClient

pytestmark = pytest.mark.timeout(600)  # the first test may wait for a build

PARTITIONS = 3


@pytest.fixture(scope="module")
def cluster(akfak_cluster: Any) -> AkfakCluster:
    # no 3 s wait for more members before a classic group's first rebalance; one partition
    # of share-group state, so that its coordinator is that partition's leader
    return akfak_cluster(3, properties={"group.initial.rebalance.delay.ms": "0",
                                        "share.coordinator.state.topic.num.partitions": "1"})


def java(main: str, *args: str) -> Member:
    """A Java program of tests/java in the background; it stops when its stdin closes."""
    return Member(java_command(build(), f"akfak.tests.{main}"), *args, stdin=True)


def franz(command: str, *args: str) -> Member:
    return Member([*go_program(), "franz", command], *args)


def acked_count(load: Member) -> Callable[[], int]:
    return lambda: len(load.of_kind("acked"))


def wait_acked(load: Member, more: int, what: str) -> None:
    count = acked_count(load)
    want = count() + more
    wait_for(lambda: count() >= want, 60, f"{more} acknowledgements {what}", load.describe)


def faults_under_load(cluster: AkfakCluster, topic: str, load: Member, pause: bool) -> None:
    """kill -9 the leader of partition 0 once the load runs, restart it once the load goes on
    without it; with `pause`, SIGSTOP the leader of partition 1 past its lease, then SIGCONT."""
    try:
        wait_acked(load, 200, "before the faults")
        victim = wait_leaders(cluster, topic)[0]
        cluster.kill(victim)
        wait_acked(load, 400, f"after kill -9 of node {victim}")
        cluster.restart(victim)
        wait_acked(load, 200, f"after node {victim} came back")
        if pause:
            paused = wait_leaders(cluster, topic)[1]
            cluster.kill(paused, signal.SIGSTOP)
            try:
                time.sleep(SESSION_MS / 1000 + 1.5)
            finally:
                cluster.kill(paused, signal.SIGCONT)
            wait_acked(load, 400, f"after SIGSTOP of node {paused}")
    finally:
        restart_dead(cluster)


def check_log(acked: list[tuple[int, int, str]], read: list[tuple[int, int, str]]) -> None:
    """Every acknowledged (partition, offset, value) is in what was read back, which has no
    value twice and each partition's values in order."""
    assert acked
    log = {(p, o): v for p, o, v in read}
    lost = [a for a in acked if log.get(a[:2]) != a[2]]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged records lost, e.g. {lost[:5]}"
    values = [v for _p, _o, v in read]
    assert len(values) == len(set(values)), "duplicated records"
    for partition in range(PARTITIONS):
        mine = [v for p, _o, v in sorted(read) if p == partition]
        assert mine == sorted(mine), f"out of order in partition {partition}"


def end_offsets(cluster: AkfakCluster, topic: str) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": "watermarks"})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), TIMEOUT)[1]
                for p in range(PARTITIONS)}
    finally:
        c.close()


def committed(cluster: AkfakCluster, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets, as its coordinator answers them (retried while it
    moves)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": group})
    deadline = time.monotonic() + TIMEOUT
    try:
        while True:
            try:
                return {tp.partition: tp.offset for tp in c.committed(
                    [TopicPartition(topic, p) for p in range(PARTITIONS)], 10)}
            except KafkaException:
                assert time.monotonic() < deadline
                time.sleep(0.3)
    finally:
        c.close()


def fill(cluster: AkfakCluster, topic: str, total: int) -> None:
    from confluent_kafka import Producer

    create(cluster, topic, PARTITIONS)
    wait_leaders(cluster, topic)
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5})
    for i in range(total):
        p.produce(topic, f"{i:05d}".encode(), partition=i % PARTITIONS)
    assert p.flush(TIMEOUT) == 0


def member_survives_coordinator_kill(cluster: AkfakCluster, topic: str, group: str,
                                     member: Member, total: int) -> None:
    """`member` (of `group`, reading `topic` of `total` records) reads everything across
    kill -9 of the group's coordinator; its commits end at the end of the log."""
    def read() -> set[tuple[int, int]]:
        return {(r["partition"], r["offset"]) for r in member.of_kind("record")}

    end = end_offsets(cluster, topic)
    try:
        wait_for(lambda: len(read()) >= total // 3, 60, "records before the kill", member.describe)
        cluster.kill(coordinator_of(cluster, group))
        wait_for(lambda: len(read()) >= total, 90, "every record after the kill", member.describe)
        # its last commits may still be on their way to the new coordinator
        wait_for(lambda: committed(cluster, group, topic) == end, 60, "the commits at the end",
                 lambda: f"{committed(cluster, group, topic)} != {end}")
        stopped = member.stop(60)
        assert stopped.returncode == 0, stopped.describe()
    finally:
        if member.proc.poll() is None:
            member.proc.kill()
        restart_dead(cluster)


# -- the Java client ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.jvm
def test_java_idempotent_producer_across_kill_and_pause(cluster: AkfakCluster) -> None:
    topic = "java-load"
    build()
    create(cluster, topic, PARTITIONS)
    assert sorted(wait_leaders(cluster, topic).values()) == [1, 2, 3]  # spread
    load = java("ClusterProducer", cluster.bootstrap, f"topic={topic}", "name=j")
    faults_under_load(cluster, topic, load, pause=True)
    done = load.stop(150)
    assert done.returncode == 0, done.describe()
    assert done.last("done")["failed"] == 0, done.of_kind("failed")[:5]
    acked = [(r["partition"], r["offset"], r["value"]) for r in done.of_kind("acked")]
    back = run_java("ReadCommittedConsumer", cluster.bootstrap, f"topic={topic}",
                    "isolation=read_uncommitted", "timeout-ms=60000").check()
    check_log(acked, [(r["partition"], r["offset"], r["value"]) for r in back.of_kind("record")])


@pytest.mark.jvm
# classic: also shown with confluent-kafka (test_cluster_coordinators.py) and franz-go (below)
@pytest.mark.parametrize("protocol", [pytest.param("classic", marks=pytest.mark.slow), "consumer"])
def test_java_group_across_coordinator_kill(cluster: AkfakCluster, protocol: str) -> None:
    topic, group, total = f"java-grouped-{protocol}", f"java-group-{protocol}", 3000
    build()
    fill(cluster, topic, total)
    member = java("GroupMember", cluster.bootstrap, f"topic={topic}", f"group={group}",
                  f"config.group.protocol={protocol}", "config.max.poll.records=50")
    member_survives_coordinator_kill(cluster, topic, group, member, total)


@pytest.mark.slow
@pytest.mark.jvm
def test_java_transactions_across_coordinator_kill(cluster: AkfakCluster) -> None:
    topic, txn_id = "java-transacted", "java-txn"
    build()
    create(cluster, topic, PARTITIONS)
    wait_leaders(cluster, topic)
    producer = java("ClusterProducer", cluster.bootstrap, f"topic={topic}",
                    f"transactional-id={txn_id}", "per-txn=6")
    count = lambda: len(producer.of_kind("committed"))  # noqa: E731

    def brokers() -> str:
        return f"\nbrokers:\n{cluster.log_lines(txn_id, 'transaction', 'Loaded')}"

    def describe() -> str:
        return producer.describe() + brokers()

    try:
        wait_for(lambda: count() >= 5, 60, "transactions before the kill", describe)
        victim = coordinator_of(cluster, txn_id, key_type=1)
        cluster.kill(victim)
        before = count()
        wait_for(lambda: count() >= before + 5, 90, "transactions after the kill", describe)
        done = producer.stop(120)
    finally:
        if producer.proc.poll() is None:
            producer.proc.kill()
        restart_dead(cluster)
    assert done.returncode == 0, done.describe() + brokers()
    commits = {r["txn"] for r in done.of_kind("committed")}
    back = run_java("ReadCommittedConsumer", cluster.bootstrap, f"topic={topic}",
                    "isolation=read_committed", "timeout-ms=60000").check()
    got: dict[int, list[str]] = {}
    for r in back.of_kind("record"):
        txn, _, i = r["value"].partition("-")
        got.setdefault(int(txn), []).append(i)
    whole = [str(i) for i in range(6)]
    for txn in commits:
        assert sorted(got.get(txn, [])) == whole, txn
    aborted = {r["txn"] for r in done.of_kind("aborted")}
    assert not aborted & set(got), aborted & set(got)
    for txn, records in got.items():  # one whose commit did not return may have committed
        assert sorted(records) == whole, txn


# -- franz-go -----------------------------------------------------------------------------


@pytest.mark.slow
def test_franz_idempotent_producer_across_kill(cluster: AkfakCluster) -> None:
    topic = "franz-load"
    prog = go_program()
    create(cluster, topic, PARTITIONS)
    wait_leaders(cluster, topic)
    load = franz("load", f"bootstrap={cluster.bootstrap}", f"topic={topic}",
                 f"partitions={PARTITIONS}", "name=g")
    faults_under_load(cluster, topic, load, pause=False)
    done = load.stop(150)
    assert done.returncode == 0, done.describe()
    assert not done.of_kind("failed"), done.of_kind("failed")[:5]
    acked = [(r["partition"], r["offset"], r["key"]) for r in done.of_kind("acked")]
    back = run([*prog, "franz", "consume"], f"bootstrap={cluster.bootstrap}", f"topic={topic}",
               f"count={len(acked)}", "settle-ms=1000", timeout=90).check()
    check_log(acked, [(r["partition"], r["offset"], r["key"]) for r in back.of_kind("record")])


def test_franz_group_across_coordinator_kill(cluster: AkfakCluster) -> None:
    topic, group, total = "franz-grouped", "franz-group", 3000
    go_program()
    fill(cluster, topic, total)
    member = franz("member", f"bootstrap={cluster.bootstrap}", f"topic={topic}",
                   f"group={group}", "name=m1", "retry-errors=1")
    member_survives_coordinator_kill(cluster, topic, group, member, total)


# -- share groups -------------------------------------------------------------------------


def replicas(cluster: AkfakCluster, topic: str) -> dict[int, list[int]]:
    md = admin(cluster).list_topics(topic, timeout=TIMEOUT)
    return {p: list(m.replicas) for p, m in md.topics[topic].partitions.items()}


def share_coordinator(cluster: AkfakCluster, key: str) -> int:
    """FindCoordinator (v6, key type SHARE) of a share-partition key, from every broker
    (which creates `__share_group_state`): the node all of them answer."""
    import importlib

    from kio.static.primitive import i8

    m = importlib.import_module("kio.schema.find_coordinator.v6.request")
    found = set()
    for port in cluster.ports.values():
        deadline = time.monotonic() + TIMEOUT
        while True:
            with WireClient(port, timeout=TIMEOUT) as c:
                (entry,) = c.request(m.FindCoordinatorRequest(
                    key_type=i8(2), coordinator_keys=(key,))).coordinators
            if entry.error_code == ErrorCode.none:
                break
            assert entry.error_code == ErrorCode.coordinator_not_available, entry
            assert time.monotonic() < deadline, entry
            time.sleep(0.2)
        found.add(int(entry.node_id))
    assert len(found) == 1, found
    return found.pop()


def enable_share_groups(cluster: AkfakCluster) -> None:
    from tests.test_features import update_features

    with WireClient(cluster.ports[cluster.controller()], timeout=TIMEOUT) as c:
        assert update_features(c, ("share.version", 1, 1)).error_code == ErrorCode.none


def test_share_requests_go_to_the_leader_and_the_coordinator(cluster: AkfakCluster) -> None:
    """Over raw sockets: ShareGroupHeartbeat is served by the group's coordinator only
    (NOT_COORDINATOR elsewhere); ShareFetch and ShareAcknowledge by the partition's leader
    only (NOT_LEADER_OR_FOLLOWER elsewhere, naming the leader and its endpoint), which
    acquires the records."""
    from tests.test_share_protocol import (
        acquired,
        group_config,
        heartbeat,
        new_member,
        partition_of,
        share_acknowledge,
        share_fetch,
    )

    topic, group, member = "shared-wire", "wire-sharers", new_member()
    enable_share_groups(cluster)
    with WireClient(cluster.ports[cluster.controller()], timeout=TIMEOUT) as c:
        group_config(c, group, share_auto_offset_reset="earliest")
    create_placed(cluster, topic, [2, 3, 1])
    (topic_id,) = cluster.query("SELECT topic_id FROM akfak_partition WHERE topic = %s", topic)
    with WireClient(cluster.ports[2], timeout=TIMEOUT) as c:
        # The partition rows name the leader a moment before it has loaded the log; until
        # then it answers NOT_LEADER_OR_FOLLOWER, which a client retries.
        batch = make_batch([(None, v) for v in (b"a", b"b", b"c")])
        errors: list[ErrorCode] = []

        def produced() -> bool:
            errors.append(c.request(produce(topic, {0: batch})).responses[0]
                          .partition_responses[0].error_code)
            return errors[-1] != ErrorCode.not_leader_or_follower

        wait_for(produced, TIMEOUT, f"node 2 serving {topic}")
        assert errors[-1] == ErrorCode.none, errors
    find_coordinator(cluster.ports[1], group)  # creates __consumer_offsets, as clients do
    coordinator = coordinator_of(cluster, group)
    for node, port in cluster.ports.items():
        with WireClient(port, timeout=TIMEOUT) as c:
            answer = heartbeat(c, group, member, 0, (topic,))
            if node != coordinator:
                assert answer.error_code == ErrorCode.not_coordinator, (node, answer)
                continue
            deadline = time.monotonic() + TIMEOUT
            while answer.error_code == ErrorCode.coordinator_load_in_progress:
                assert time.monotonic() < deadline
                time.sleep(0.2)
                answer = heartbeat(c, group, member, 0, (topic,))
            assert answer.error_code == ErrorCode.none, answer
    for node, port in cluster.ports.items():
        with WireClient(port, timeout=TIMEOUT) as c:
            fetched = share_fetch(c, group, member, 0, topic_id, max_wait_ms=3000)
            if node != 2:
                # with the leader and its endpoint, so the client goes there at once (KIP-951)
                assert partition_of(fetched).error_code == ErrorCode.not_leader_or_follower
                assert partition_of(fetched).current_leader.leader_id == 2, fetched
                assert [(e.node_id, e.port) for e in fetched.node_endpoints] \
                    == [(2, cluster.ports[2])], fetched
                acked = share_acknowledge(c, group, member, 1, topic_id, {0: [(0, 0, [1])]})
                answer = acked.responses[0].partitions[0]
                assert answer.error_code == ErrorCode.not_leader_or_follower
                assert answer.current_leader.leader_id == 2, acked
                assert answer.current_leader.leader_epoch \
                    == partition_of(fetched).current_leader.leader_epoch
                assert [(e.node_id, e.port) for e in acked.node_endpoints] \
                    == [(2, cluster.ports[2])], acked
                continue
            deadline = time.monotonic() + TIMEOUT  # the state comes from its coordinator
            epoch = 0
            while not acquired(fetched):
                # (a later epoch answers only partitions with records or errors)
                assert all(p.error_code == ErrorCode.none
                           for t in fetched.responses for p in t.partitions), fetched
                assert time.monotonic() < deadline
                epoch += 1
                fetched = share_fetch(c, group, member, epoch, topic_id, max_wait_ms=1000)
            assert acquired(fetched) == [(0, 2, 1)]


@pytest.mark.slow
@pytest.mark.jvm
def test_java_share_group_across_leader_and_coordinator_kill(cluster: AkfakCluster) -> None:
    from confluent_kafka import Producer

    topic, group = "shared-cluster", "sharers-cluster"
    build()
    enable_share_groups(cluster)
    # `__share_group_state` has one partition: replicas C (its leader, the share
    # coordinator), N (the next), X.  The topic is led by X, then (X killed) by N, then by X
    # again while C is killed and N coordinates: the leader always writes the state through
    # another broker, across the coordinator's failover.
    coordinator = share_coordinator(cluster, f"{group}:AAAAAAAAAAAAAAAAAAAAAA:0")
    c, n, x = replicas(cluster, "__share_group_state")[0]
    assert c == coordinator
    create_placed(cluster, topic, [x, n, c])
    holder = java("ShareConsumers", cluster.bootstrap, f"topic={topic}", f"group={group}",
                  "setup=true", "records=200", "batch=10", "mode=stall", "consumers=2",
                  "idle-ms=2000", "hold=true", "timeout-ms=90000",
                  "config.max.poll.records=10")

    def delivered(consumer: int) -> list[int]:
        return [r["offset"] for r in holder.of_kind("record") if r["consumer"] == consumer]

    try:
        wait_for(lambda: holder.of_kind("done") or holder.proc.poll() is not None, 90,
                 "the share consumers settled", holder.describe)
        assert holder.of_kind("done"), holder.describe()
        stalled = set(delivered(0))
        assert stalled and not stalled & set(delivered(1)), holder.describe()
        # the stalled records are locked for 30 s: only the failover brings them back sooner
        killed_at = time.monotonic()
        cluster.kill(x)
        wait_for(lambda: set(delivered(1)) >= set(range(200)), 25,
                 "the stalled records on the new leader", holder.describe)
        assert time.monotonic() - killed_at < 25
        restart_dead(cluster)
        wait_for(lambda: cluster.leaders(topic) == {0: x}, TIMEOUT, f"node {x} leading again")
        cluster.kill(c)
        p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all"})
        for i in range(200, 300):
            p.produce(topic, f"v{i}".encode(), partition=0)
            if i % 10 == 9:
                p.flush(TIMEOUT)
        assert p.flush(TIMEOUT) == 0
        wait_for(lambda: set(delivered(1)) >= set(range(300)), 60,
                 "the records produced while the share coordinator moved", holder.describe)
        done = holder.stop(30)
    finally:
        if holder.proc.poll() is None:
            holder.proc.kill()
        restart_dead(cluster)
    unanswered = {o for r in done.of_kind("ack-failed") for o in r["offsets"]}
    accepted = delivered(1)
    again = {o for o in accepted if accepted.count(o) > 1}
    assert again <= unanswered, f"accepted records delivered again: {sorted(again - unanswered)}"


@pytest.mark.slow
@pytest.mark.jvm
def test_java_share_group_offsets_admin_across_brokers(cluster: AkfakCluster) -> None:
    """The Java Admin's listShareGroupOffsets, alterShareGroupOffsets and
    deleteShareGroupOffsets at a group coordinator that is not the share coordinator (the
    leader of `__share_group_state-0`): it asks that broker for the state (the summary, a new
    state epoch, the deletion)."""
    topic = "shared-admin"
    build()
    enable_share_groups(cluster)
    share = share_coordinator(cluster, "probe:AAAAAAAAAAAAAAAAAAAAAA:0")
    wait_for(lambda: find_coordinator(cluster.ports[share], "probe").error_code
             == ErrorCode.none, TIMEOUT, "__consumer_offsets")  # made at the first look-up
    group = next(g for g in (f"share-admin-{i}" for i in range(100))
                 if coordinator_of(cluster, g) != share)
    create(cluster, topic, 1)

    def offsets() -> dict[str, int]:
        run = run_java("Admin", cluster.bootstrap, f"share-offsets={group}").check()
        return run.last("share-offsets")["offsets"]

    run_java("ShareConsumers", cluster.bootstrap, f"topic={topic}", f"group={group}",
             "consumers=1", "idle-ms=1500", "setup=true", "records=20", "batch=10",
             "mode=accept", "expect=20").check()
    # The share-partition, with its start offset as the share coordinator holds it (as
    # Kafka's, the persisted start trails the last acknowledgement until the next write;
    # the group coordinator's own share state has nothing for it).
    assert offsets() == {f"{topic}-0": 0}
    run_java("Admin", cluster.bootstrap, f"share-reset={group}:{topic}:0:5").check()
    assert offsets() == {f"{topic}-0": 5}
    run_java("Admin", cluster.bootstrap, f"share-delete={group}:{topic}").check()
    assert offsets() == {}
    # Consumed again (from the start: its state was deleted), then DeleteGroups: the state
    # goes from the share coordinator too.
    run_java("ShareConsumers", cluster.bootstrap, f"topic={topic}", f"group={group}",
             "consumers=1", "idle-ms=1500", "setup=true", "records=5", "batch=10",
             "mode=accept", "expect=25").check()
    (topic_id,) = cluster.query("SELECT topic_id FROM akfak_partition WHERE topic = %s", topic)
    assert share_summary(cluster.ports[share], group, topic_id) == ErrorCode.none
    run_java("Admin", cluster.bootstrap, f"share-delete-group={group}").check()
    assert share_summary(cluster.ports[share], group, topic_id) \
        == ErrorCode.unknown_topic_or_partition


def share_summary(port: int, group: str, topic_id: Any) -> ErrorCode:
    """ReadShareGroupStateSummary (the share coordinator's internal API) of `topic_id`-0."""
    import importlib

    from kio.static.primitive import i32

    m = importlib.import_module("kio.schema.read_share_group_state_summary.v0.request")
    with WireClient(port, timeout=TIMEOUT) as c:
        (result,) = c.request(m.ReadShareGroupStateSummaryRequest(group_id=group, topics=(
            m.ReadStateSummaryData(topic_id=topic_id, partitions=(
                m.PartitionData(partition=i32(0), leader_epoch=i32(-1)),)),))).results
    return ErrorCode(int(result.partitions[0].error_code))
