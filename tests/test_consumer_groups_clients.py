"""The consumer group protocol (KIP-848) with librdkafka (confluent-kafka,
`group.protocol=consumer`) against a broker subprocess.

Scale-out from one to four members over 12 partitions (every record processed once, a
partition revoked only when it moves); a regex subscription picking up a topic created
later; a static member that closes and comes back without a rebalance; a member killed
with SIGKILL, whose partitions go to the survivor after its session timeout; the broker
killed mid-rebalance keeps every committed offset.  Short heartbeat and session settings
(broker side, as KIP-848 puts them there) keep it quick; waits are deadlines.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from tests.brokers import BrokerProcess, start_process

BROKER_OVERRIDES = (
    "group.consumer.heartbeat.interval.ms=300",
    "group.consumer.min.heartbeat.interval.ms=300",
    "group.consumer.session.timeout.ms=4000",
    "group.consumer.min.session.timeout.ms=4000",
    "offsets.topic.num.partitions=3",
    "group.initial.rebalance.delay.ms=0",  # classic members join at once (migration test)
)
DEADLINE = 30.0


def broker_args(*extra: str) -> list[str]:
    return [arg for o in (*BROKER_OVERRIDES, *extra) for arg in ("-o", o)]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    data = tmp_path_factory.mktemp("consumer-groups") / "data"
    process = start_process(data, *broker_args())
    yield process
    process.stop()


def wait_for(condition: Callable[[], Any], what: str, step: Callable[[], None] = lambda: None,
             deadline: float = DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        step()
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(10)


def produce(bootstrap: str, topic: str, count: int, partitions: int, start: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(start, start + count):
        producer.produce(topic, value=f"{topic}-{i}".encode(), partition=i % partitions)
    assert producer.flush(10) == 0


#: Kafka 4.1.1's run of a comparison (each starts its own) is opt-in (AKFAK_SLOW=1): the budget.
KAFKA_TOO = ["akfak", pytest.param("kafka", marks=[pytest.mark.jvm, pytest.mark.slow])]


class Member:
    """A confluent-kafka consumer with the consumer protocol, recording what it was given
    and what it gave back, and committing what it processed."""

    def __init__(self, bootstrap: str, group: str, topics: list[str], name: str, **extra: Any):
        self.name = name
        self.assigned: set[tuple[str, int]] = set()
        self.revoked: list[tuple[str, int]] = []
        self.records: list[bytes] = []
        self.commit_errors: list[KafkaError] = []
        #: each commit on revocation: (partition, offset, error) of every partition it named
        self.commits: list[list[tuple[int, int, str]]] = []
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                  "group.protocol": "consumer", "auto.offset.reset": "earliest",
                                  "enable.auto.commit": False, "client.id": name, **extra})
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(p.topic, p.partition) for p in partitions}

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {(p.topic, p.partition) for p in partitions}
        self.revoked += sorted(gone)
        self.assigned -= gone
        if self.records:
            try:
                done = consumer.commit(asynchronous=False)
                self.commits.append([(t.partition, t.offset, str(t.error)) for t in done or []])
            except KafkaException as e:
                self.commit_errors.append(e.args[0])

    def poll(self) -> None:
        message = self.consumer.poll(0.05)
        if message is not None and message.error() is None:
            self.records.append(message.value())

    def close(self) -> None:
        self.consumer.close()


def poll_all(members: list[Member]) -> Callable[[], None]:
    def step() -> None:
        for m in members:
            m.poll()
    return step


def balanced(members: list[Member], total: int) -> bool:
    owned = [m.assigned for m in members]
    union = set().union(*owned)
    return (len(union) == total == sum(len(o) for o in owned)
            and max(map(len, owned)) - min(map(len, owned)) <= 1)


def commit_start(bootstrap: str, group: str, topic: str, partitions: int) -> None:
    """Commit offset 0 of each partition for `group`, so that no member resets a partition
    through ListOffsets: librdkafka 2.16.0 can re-run a reset whose answer came after a
    pause/resume of the partition (an incremental rebalance does that) once the partition is
    fetching again, from a timer the outdated answer started ("timed offset query for offset
    BEGINNING in state active" in its debug log), and so deliver what it delivered again.
    The broker's answers in such a run are right; the duplicates are the client's."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    offsets = [TopicPartition(topic, p, 0) for p in range(partitions)]
    admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(group, offsets)])[group].result(10)


def test_scale_out_from_one_to_four_members(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "scale", 12)
    produce(broker.bootstrap, "scale", 240, 12)
    commit_start(broker.bootstrap, "scale-g", "scale", 12)
    members = [Member(broker.bootstrap, "scale-g", ["scale"], "m0")]
    wait_for(lambda: len(members[0].records) >= 60, "the first member's records", poll_all(members))
    for i in range(1, 4):
        before = {m.name: set(m.assigned) for m in members}
        revoked_before = {m.name: len(m.revoked) for m in members}
        members.append(Member(broker.bootstrap, "scale-g", ["scale"], f"m{i}"))
        wait_for(lambda: balanced(members, 12), f"{len(members)} members balanced", poll_all(members))
        # A member gives up only what moves to the newcomer.
        for m in members[:-1]:
            moved = before[m.name] - m.assigned
            assert moved <= members[-1].assigned, (m.name, moved)
            assert set(m.revoked[revoked_before[m.name]:]) == moved
    produce(broker.bootstrap, "scale", 240, 12, start=240)
    wait_for(lambda: len({r for m in members for r in m.records}) >= 480, "every record", poll_all(members))
    seen = Counter(r for m in members for r in m.records)
    assert len(seen) == 480
    # Each record is processed once: no duplicates beyond what was consumed but not yet
    # committed when its partition moved (none here: revocation commits first). On one,
    # say who read it, and what each member gave up and its commits answered.
    twice = sorted(r for r, n in seen.items() if n > 1)
    assert not twice, (twice, {m.name: ([r for r in m.records if r in twice], m.revoked, m.commits,
                                        [str(e) for e in m.commit_errors]) for m in members})
    assert sum(len(m.revoked) for m in members) == 13  # 6, then 4, then 3 moved: the least
    for m in members:
        m.close()


def test_regex_subscription_picks_up_a_new_topic(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "rx-one", 2)
    member = Member(broker.bootstrap, "rx-g", ["^rx-.*"], "rx")
    wait_for(lambda: member.assigned == {("rx-one", 0), ("rx-one", 1)}, "rx-one", poll_all([member]))
    create_topic(broker.bootstrap, "rx-two", 3)
    produce(broker.bootstrap, "rx-two", 6, 3)
    wait_for(lambda: {("rx-two", p) for p in range(3)} <= member.assigned, "rx-two", poll_all([member]))
    wait_for(lambda: sum(r.startswith(b"rx-two") for r in member.records) == 6, "rx-two's records",
             poll_all([member]))
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_partitions([NewPartitions("rx-one", 4)])["rx-one"].result(10)
    wait_for(lambda: {("rx-one", 2), ("rx-one", 3)} <= member.assigned, "rx-one's new partitions",
             poll_all([member]))
    member.close()


def test_static_member_comes_back_to_its_partitions(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "static", 4)
    a = Member(broker.bootstrap, "static-g", ["static"], "sa", **{"group.instance.id": "a"})
    b = Member(broker.bootstrap, "static-g", ["static"], "sb", **{"group.instance.id": "b"})
    wait_for(lambda: balanced([a, b], 4), "two static members balanced", poll_all([a, b]))
    mine = set(a.assigned)
    # whichever joined first gave half its partitions to the other while balancing
    revoked_while_balancing = list(b.revoked)
    epoch = describe(broker.bootstrap, "static-g")["epoch"]
    a.close()  # a static member's close is a temporary leave (epoch -2)
    back = Member(broker.bootstrap, "static-g", ["static"], "sa2", **{"group.instance.id": "a"})
    wait_for(lambda: back.assigned == mine, "the same partitions back", poll_all([back, b]))
    assert describe(broker.bootstrap, "static-g")["epoch"] == epoch
    assert b.revoked == revoked_while_balancing  # nothing taken from b while a was away
    back.close()
    b.close()


def describe(bootstrap: str, group: str) -> dict[str, Any]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (future,) = admin.describe_consumer_groups([group]).values()
    d = future.result(10)
    # librdkafka's description has no epochs: use ConsumerGroupDescribe over the wire
    from tests.test_consumer_groups_protocol import schema
    from tests.wire import WireClient

    host, port = bootstrap.split(":")
    with WireClient(int(port), host) as c:
        m = schema("consumer_group_describe", 1)
        (g,) = c.request(m.ConsumerGroupDescribeRequest(group_ids=(group,),
                                                        include_authorized_operations=False)).groups
    return {"state": str(d.state), "members": len(d.members), "epoch": int(g.group_epoch),
            "type": str(getattr(d, "type", ""))}


CRASHING_MEMBER = """
import sys, time
from confluent_kafka import Consumer
c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2], "group.protocol": "consumer",
              "auto.offset.reset": "earliest"})
c.subscribe([sys.argv[3]], on_assign=lambda c, ps: print("assigned", len(ps), flush=True))
while True:
    c.poll(0.1)
"""


def test_a_killed_member_loses_its_partitions_after_its_session(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "crash", 4)
    survivor = Member(broker.bootstrap, "crash-g", ["crash"], "survivor")
    wait_for(lambda: len(survivor.assigned) == 4, "the survivor's partitions", poll_all([survivor]))
    child = subprocess.Popen([sys.executable, "-c", CRASHING_MEMBER, broker.bootstrap, "crash-g", "crash"],
                             stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(survivor.assigned) == 2, "the survivor giving up two", poll_all([survivor]))
        child.kill()
        child.wait()
        killed = time.monotonic()
        wait_for(lambda: len(survivor.assigned) == 4, "the survivor taking them back", poll_all([survivor]))
        assert time.monotonic() - killed > 3.0  # only once the 4 s session expired
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    survivor.close()


def test_broker_killed_mid_rebalance_keeps_committed_offsets(tmp_path: Any) -> None:
    process = start_process(tmp_path / "data", *broker_args())
    try:
        create_topic(process.bootstrap, "kill", 4)
        produce(process.bootstrap, "kill", 40, 4)
        a = Member(process.bootstrap, "kill-g", ["kill"], "ka")
        wait_for(lambda: len(a.records) == 40, "every record", poll_all([a]))
        a.consumer.commit(asynchronous=False)
        b = Member(process.bootstrap, "kill-g", ["kill"], "kb")
        wait_for(lambda: describe(process.bootstrap, "kill-g")["members"] == 2, "b joining",
                 poll_all([a, b]))
        process.kill()
        a.consumer.close()
        b.consumer.close()
        process = start_process(tmp_path / "data", *broker_args())
        reader = Consumer({"bootstrap.servers": process.bootstrap, "group.id": "kill-g",
                           "group.protocol": "consumer"})
        committed = reader.committed([TopicPartition("kill", p) for p in range(4)], timeout=10)
        assert sorted(tp.offset for tp in committed) == [10, 10, 10, 10]
        reader.close()
    finally:
        process.stop()


CLASSIC = {"group.protocol": "classic", "session.timeout.ms": 6000, "heartbeat.interval.ms": 300}


def test_upgrade_and_downgrade_of_a_live_group_with_classic_members(broker: BrokerProcess) -> None:
    """Two classic consumers (librdkafka's eager range assignor) consume; a consumer-protocol
    member joins the live classic group (the group is upgraded, the classic members rejoin
    through JoinGroup and give up partitions for it), then leaves (the group is downgraded and
    rebalances between the classic members); every record is processed once."""
    bootstrap = broker.bootstrap
    create_topic(bootstrap, "mig", 6)
    produce(bootstrap, "mig", 120, 6)
    classic = [Member(bootstrap, "mig-g", ["mig"], f"classic{i}", **CLASSIC) for i in range(2)]
    step = poll_all(classic)
    wait_for(lambda: balanced(classic, 6) and sum(len(m.records) for m in classic) >= 120,
             "the classic group consuming", step)
    assert describe(bootstrap, "mig-g")["type"] != "ConsumerGroupType.CONSUMER"

    modern = Member(bootstrap, "mig-g", ["mig"], "modern")
    members = [*classic, modern]
    wait_for(lambda: balanced(members, 6), "three members sharing the partitions", poll_all(members))
    assert describe(bootstrap, "mig-g")["type"] == "ConsumerGroupType.CONSUMER"
    produce(bootstrap, "mig", 120, 6, start=120)
    wait_for(lambda: sum(len(m.records) for m in members) >= 240, "the records after the upgrade",
             poll_all(members))

    modern.close()
    wait_for(lambda: balanced(classic, 6) and describe(bootstrap, "mig-g")["type"]
             == "ConsumerGroupType.CLASSIC", "the classic members alone, classic again", step)
    produce(bootstrap, "mig", 120, 6, start=240)
    wait_for(lambda: sum(len(m.records) for m in members) >= 360, "the records after the downgrade", step)
    seen = Counter(r for m in members for r in m.records)
    assert len(seen) == 360 and max(seen.values()) == 1
    assert modern.records  # it did take part
    for m in classic:
        m.close()


@pytest.mark.parametrize("target", KAFKA_TOO)
def test_rebalance_protocols_without_consumer(target: str, tmp_path: Any) -> None:
    """`group.coordinator.rebalance.protocols=classic` turns the consumer protocol off, as in
    Kafka 4.1.1: a consumer-protocol member fails (UNSUPPORTED_VERSION from its heartbeat),
    ConsumerGroupDescribe answers UNSUPPORTED_VERSION for every group, classic groups work."""
    from kio.schema.errors import ErrorCode

    from tests.kafka_peer import start_kafka
    from tests.test_consumer_groups_protocol import schema
    from tests.wire import WireClient

    setting = "group.coordinator.rebalance.protocols"
    if target == "akfak":
        server: Any = start_process(tmp_path / "data", *broker_args(f"{setting}=classic"))
        bootstrap = server.bootstrap
    else:
        server = start_kafka(tmp_path / "kafka", properties={setting: "classic"})
        bootstrap = f"127.0.0.1:{server.port}"
    try:
        create_topic(bootstrap, "off", 2)
        modern = Consumer({"bootstrap.servers": bootstrap, "group.id": "off-g",
                           "group.protocol": "consumer"})
        modern.subscribe(["off"])
        error = wait_for(lambda: (m := modern.poll(0.2)) is not None and m.error(), "the error")
        assert error.code() == KafkaError._FATAL and "API version not supported" in error.str()
        modern.close()
        classic = Member(bootstrap, "off-classic", ["off"], "classic", **CLASSIC)
        wait_for(lambda: len(classic.assigned) == 2, "the classic member's partitions",
                 poll_all([classic]))
        host, port = bootstrap.split(":")
        with WireClient(int(port), host) as c:
            m = schema("consumer_group_describe", 1)
            groups = c.request(m.ConsumerGroupDescribeRequest(
                group_ids=("off-classic", "off-g"), include_authorized_operations=False)).groups
        assert [(g.group_id, g.error_code, g.error_message) for g in groups] == [
            ("off-classic", ErrorCode.unsupported_version, None),
            ("off-g", ErrorCode.unsupported_version, None)]
        classic.close()
    finally:
        server.stop()


@pytest.mark.parametrize("target", KAFKA_TOO)
def test_group_configs_set_the_members_interval_and_session(target: str, tmp_path: Any) -> None:
    """GROUP configs set with confluent-kafka's incremental_alter_configs apply to the group's
    members, as on Kafka 4.1.1: consumer.heartbeat.interval.ms is the interval the heartbeat
    hands out, consumer.session.timeout.ms the silence after which a member is fenced."""
    import uuid

    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
    from kio.schema.errors import ErrorCode

    from tests.kafka_peer import start_kafka
    from tests.test_consumer_groups_protocol import heartbeat
    from tests.wire import WireClient

    bounds = {"group.consumer.min.session.timeout.ms": "1000",
              "group.consumer.min.heartbeat.interval.ms": "500"}
    if target == "akfak":
        server: Any = start_process(tmp_path / "data", "-o", "offsets.topic.num.partitions=3",
                                    *(a for k, v in bounds.items() for a in ("-o", f"{k}={v}")))
        bootstrap = server.bootstrap
    else:
        server = start_kafka(tmp_path / "kafka", properties=bounds)
        bootstrap = f"127.0.0.1:{server.port}"
    try:
        create_topic(bootstrap, "cfg", 2)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        resource = ConfigResource(ResourceType.GROUP, "cfg-g", incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
            for name, value in (("consumer.heartbeat.interval.ms", "700"),
                                ("consumer.session.timeout.ms", "2000"))])
        admin.incremental_alter_configs([resource])[resource].result(30)
        # FindCoordinator, which makes Kafka create __consumer_offsets (the group is unknown)
        admin.describe_consumer_groups(["cfg-g"])["cfg-g"].exception(30)
        host, port = bootstrap.split(":")
        member = uuid.uuid4().hex[:22]
        with WireClient(int(port), host) as c:
            def beat(epoch: int) -> Any:
                return c.request(heartbeat("cfg-g", member, epoch, names=["cfg"] if epoch == 0 else None,
                                           owned={}, rebalance_ms=30_000))

            joined = wait_for(lambda: (r := beat(0)).error_code == ErrorCode.none and r, "a join")
            assert joined.heartbeat_interval.total_seconds() == 0.7
            time.sleep(1.0)
            assert beat(int(joined.member_epoch)).error_code == ErrorCode.none  # within 2 s
            time.sleep(3.5)  # silent past the group's 2 s session (the broker's is 45 s)
            assert beat(int(joined.member_epoch)).error_code == ErrorCode.unknown_member_id
    finally:
        server.stop()
