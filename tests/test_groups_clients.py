"""Consumer groups with real clients against a broker subprocess.

confluent-kafka (librdkafka), kafka-python and aiokafka consumers each in their
own group (they use different assignors) over 6-partition topics; a member killed
with SIGKILL; a clean leave; a broker restart; the cooperative-sticky assignor;
the admin clients.  Short session timeouts and no initial rebalance delay keep
it quick; waits are deadlines for something that must happen, never measurements.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.brokers import BrokerProcess, start_process

PARTITIONS = 6
BROKER_OVERRIDES = (
    "group.initial.rebalance.delay.ms=0",
    "group.min.session.timeout.ms=1000",
    f"num.partitions={PARTITIONS}",
    "offsets.topic.num.partitions=5",
)
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 250,
              "topic.metadata.refresh.interval.ms": 1000}
DEADLINE = 40.0


def broker_args(*extra: str) -> list[str]:
    args: list[str] = []
    for override in (*BROKER_OVERRIDES, *extra):
        args += ["-o", override]
    return args


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker for the tests that only need a broker (each uses its own topic and group)."""
    data = tmp_path_factory.mktemp("groups") / "data"
    broker = start_process(data, *broker_args())
    yield broker
    broker.stop()


def wait_for(condition: Callable[[], Any], what: str, deadline: float = DEADLINE,
             on_timeout: Callable[[], str] | None = None) -> Any:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f": {on_timeout()}" if on_timeout else ""))


def produce(bootstrap: str, topic: str, count: int, *, start: int = 0) -> list[str]:
    """`count` records spread over every partition; returns their values."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    values = [f"{topic}-{i}" for i in range(start, start + count)]
    for i, value in enumerate(values):
        producer.produce(topic, value=value.encode(), key=str(i).encode(), partition=(start + i) % PARTITIONS)
    assert producer.flush(30) == 0
    return values


def kafka_python_subscribe(consumer: Any, topic: str) -> None:
    """Subscribe a kafka-python consumer once it has the topic's metadata.

    kafka-python 3.0.12 loses a rebalance that a metadata change starts (its first join
    ran before the topic's metadata came) when the poll that drives it times out mid-join:
    the JoinGroup/SyncGroup answers arrive, the join never completes, and heartbeats stay
    off for good. Having the metadata first avoids that rejoin; callers also poll with
    timeouts (1 s) far longer than a join takes.
    """
    consumer.partitions_for_topic(topic)
    consumer.subscribe([topic])


def committing_on_revoke(consumer: Consumer, partitions: list[TopicPartition]) -> None:
    # Commit what was consumed before partitions move, so that none is read twice.
    with contextlib.suppress(KafkaException):  # nothing consumed yet
        consumer.commit(asynchronous=False)


def confluent_consumer(bootstrap: str, group: str, **config: Any) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                     **FAST_GROUP, **config})


def poll_all(consumers: list[Consumer], into: dict[int, list[str]]) -> None:
    for index, consumer in enumerate(consumers):
        message = consumer.poll(0.05)
        if message is not None and message.error() is None:
            into.setdefault(index, []).append(message.value().decode())


def describe_confluent(bootstrap: str, group: str) -> Any:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_consumer_groups([group])[group].result(30)


def assert_each_partition_owned_once(description: Any, topic: str, members: int) -> None:
    owned = [(tp.topic, tp.partition) for m in description.members
             for tp in m.assignment.topic_partitions]
    assert len(description.members) == members
    assert sorted(owned) == [(topic, p) for p in range(PARTITIONS)]


def group_state(description: Any) -> str:
    return str(getattr(description.state, "name", description.state)).upper()


# -- each library in its own group ---------------------------------------------------------


def test_three_confluent_consumers_share_six_partitions(shared_broker: BrokerProcess) -> None:
    topic, group = "cf-topic", "cf-group"
    bootstrap = shared_broker.bootstrap
    values = produce(bootstrap, topic, 60)
    consumers = [confluent_consumer(bootstrap, group) for _ in range(3)]
    for consumer in consumers:
        consumer.subscribe([topic], on_revoke=committing_on_revoke)
    consumed: dict[int, list[str]] = {}
    try:
        def stable() -> bool:
            poll_all(consumers, consumed)
            description = describe_confluent(bootstrap, group)
            return group_state(description) == "STABLE" and len(description.members) == 3 and all(
                c.assignment() for c in consumers)

        wait_for(stable, "a Stable group of three members")
        # Records produced now reach every member (each owns at least one partition).
        values += produce(bootstrap, topic, 60, start=60)
        wait_for(lambda: poll_all(consumers, consumed) or sum(map(len, consumed.values())) >= len(values),
                 "every record", on_timeout=lambda: f"{sum(map(len, consumed.values()))} of {len(values)}")
        for _ in range(20):  # anything more would be a duplicate
            poll_all(consumers, consumed)
        assert Counter(v for vs in consumed.values() for v in vs) == Counter(values)  # exactly once
        assert len(consumed) == 3
        description = describe_confluent(bootstrap, group)
        assert group_state(description) == "STABLE"
        assert_each_partition_owned_once(description, topic, 3)
        assert sorted(tp.partition for c in consumers for tp in c.assignment()) == list(range(PARTITIONS))
    finally:
        for consumer in consumers:
            consumer.close()


def test_two_kafka_python_consumers_share_six_partitions(shared_broker: BrokerProcess) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer

    topic, group = "kp-topic", "kp-group"
    bootstrap = shared_broker.bootstrap
    values = produce(bootstrap, topic, 60)
    consumed: list[list[str]] = [[], []]
    assignments: list[set[int]] = [set(), set()]
    stop = threading.Event()
    errors: list[BaseException] = []

    def run(index: int) -> None:
        # Distinct client ids (and kafka_python_subscribe, below).
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, client_id=f"kp-{index}",
                                 auto_offset_reset="earliest", session_timeout_ms=6000,
                                 heartbeat_interval_ms=250)
        try:
            kafka_python_subscribe(consumer, topic)
            while not stop.is_set():
                # It also bounds the commit before a rebalance.
                for records in consumer.poll(timeout_ms=1000).values():
                    consumed[index].extend(r.value.decode() for r in records)
                assignments[index] = {tp.partition for tp in consumer.assignment()}
        except BaseException as e:  # surfaced by the test
            errors.append(e)
        finally:
            consumer.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(2)]
    for thread in threads:
        thread.start()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        def stable() -> Any:
            if errors:
                raise errors[0]
            description = admin.describe_groups([group])[group]
            owned = sorted(p for m in description["members"] if isinstance(m["member_assignment"], dict)
                           for t in m["member_assignment"]["assigned_partitions"] for p in t["partitions"])
            done = (description["group_state"] == "Stable" and len(description["members"]) == 2
                    and owned == list(range(PARTITIONS)) and all(assignments))
            return description if done else None

        wait_for(stable, "a Stable group of two kafka-python members",
                 on_timeout=lambda: f"assignments {assignments}")
        values += produce(bootstrap, topic, 60, start=60)

        def everything() -> bool:
            if errors:
                raise errors[0]
            return len(consumed[0]) + len(consumed[1]) >= len(values)

        wait_for(everything, "every record", on_timeout=lambda: f"{len(consumed[0])}+{len(consumed[1])}")
        time.sleep(0.5)  # anything more would be a duplicate
        assert Counter(consumed[0] + consumed[1]) == Counter(values)
        assert consumed[0] and consumed[1]
        assert assignments[0] | assignments[1] == set(range(PARTITIONS))
        assert not assignments[0] & assignments[1]
        # (kafka-python's leader may rejoin once its metadata changes: wait for Stable again.)
        description = wait_for(stable, "the group Stable again")
        assert description["protocol_type"] == "consumer"
        assert description["protocol_data"] == "range"
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
        admin.close()


def test_aiokafka_consumers_share_six_partitions(shared_broker: BrokerProcess) -> None:
    from aiokafka import AIOKafkaConsumer

    topic, group = "aio-topic", "aio-group"
    bootstrap = shared_broker.bootstrap
    values = produce(bootstrap, topic, 60)

    async def main() -> tuple[list[list[str]], list[set[int]]]:
        consumers = [AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                      client_id=f"aio-{i}", auto_offset_reset="earliest",
                                      session_timeout_ms=6000, heartbeat_interval_ms=250)
                     for i in range(2)]
        consumed: list[list[str]] = [[], []]
        for consumer in consumers:
            await consumer.start()

        async def poll() -> list[set[int]]:
            batches = await asyncio.gather(*(c.getmany(timeout_ms=100) for c in consumers))
            for index, batch in enumerate(batches):
                for records in batch.values():
                    consumed[index].extend(r.value.decode() for r in records)
            return [{tp.partition for tp in c.assignment()} for c in consumers]

        try:
            end = time.monotonic() + DEADLINE
            while time.monotonic() < end:
                assignments = await poll()
                if all(assignments) and sum(map(len, assignments)) == PARTITIONS:
                    break
            await asyncio.to_thread(lambda: values.extend(produce(bootstrap, topic, 60, start=60)))
            while time.monotonic() < end and sum(map(len, consumed)) < len(values):
                assignments = await poll()
            for _ in range(5):  # anything more would be a duplicate
                assignments = await poll()
            return consumed, assignments
        finally:
            for consumer in consumers:
                await consumer.stop()

    consumed, assignments = asyncio.run(main())
    assert Counter(consumed[0] + consumed[1]) == Counter(values)
    assert consumed[0] and consumed[1]
    assert assignments[0] | assignments[1] == set(range(PARTITIONS))
    assert not assignments[0] & assignments[1]


# -- members coming and going --------------------------------------------------------------

MEMBER_SCRIPT = r"""
import json, sys
from confluent_kafka import Consumer
bootstrap, topic, group = sys.argv[1:4]
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                     "session.timeout.ms": 2000, "heartbeat.interval.ms": 250,
                     "enable.auto.commit": False})
consumer.subscribe([topic], on_assign=lambda c, ps: print(json.dumps(
    {"assigned": [p.partition for p in ps]}), flush=True))
while True:
    m = consumer.poll(0.1)
    if m is not None and m.error() is None:
        # Printed before committing: a kill between the two re-delivers (at least once);
        # the other order could lose a committed record from the test's view.
        print(json.dumps({"value": m.value().decode()}), flush=True)
        consumer.commit(message=m, asynchronous=False)
"""


def test_a_killed_member_is_evicted_and_its_partitions_move(shared_broker: BrokerProcess,
                                                            tmp_path: Path) -> None:
    topic, group = "kill-topic", "kill-group"
    bootstrap = shared_broker.bootstrap
    values = produce(bootstrap, topic, 60)
    script = tmp_path / "member.py"
    script.write_text(MEMBER_SCRIPT)
    out_path = tmp_path / "member.out"
    with open(out_path, "wb") as out:
        victim = subprocess.Popen([sys.executable, str(script), bootstrap, topic, group], stdout=out,
                                  stderr=subprocess.STDOUT, env=os.environ.copy())
    survivors = [confluent_consumer(bootstrap, group, **{"session.timeout.ms": 2000,
                                                          "enable.auto.commit": False})
                 for _ in range(2)]
    consumed: dict[int, list[str]] = {}

    def commit_each(consumers: list[Consumer]) -> None:
        for index, consumer in enumerate(consumers):
            message = consumer.poll(0.05)
            if message is not None and message.error() is None:
                consumer.commit(message=message, asynchronous=False)
                consumed.setdefault(index, []).append(message.value().decode())

    def victim_lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in out_path.read_text().splitlines() if line.startswith("{")]

    try:
        for consumer in survivors:
            consumer.subscribe([topic])

        def three_stable_members() -> bool:
            commit_each(survivors)
            description = describe_confluent(bootstrap, group)
            return (group_state(description) == "STABLE" and len(description.members) == 3
                    and any(line.get("assigned") for line in victim_lines()))

        wait_for(three_stable_members, "a Stable group of three members")
        victim.send_signal(signal.SIGKILL)  # no LeaveGroup: only its session timeout can tell
        victim.wait(10)
        more = produce(bootstrap, topic, 60, start=60)

        def owned_and_missing() -> tuple[list[int], set[str]]:
            owned = [tp.partition for c in survivors for tp in c.assignment()]
            got = {v for vs in consumed.values() for v in vs} | {
                line["value"] for line in victim_lines() if "value" in line}
            return sorted(owned), set(values + more) - got

        def survivors_own_everything() -> bool:
            commit_each(survivors)
            owned, missing = owned_and_missing()
            return owned == list(range(PARTITIONS)) and not missing

        wait_for(survivors_own_everything, "the survivors taking over and reading every record",
                 on_timeout=lambda: "owned {}, missing {}".format(*owned_and_missing()))
        description = describe_confluent(bootstrap, group)
        assert_each_partition_owned_once(description, topic, 2)
    finally:
        if victim.poll() is None:
            victim.kill()
        for consumer in survivors:
            consumer.close()


def test_a_clean_leave_rebalances_without_waiting_for_the_session_timeout(
        shared_broker: BrokerProcess) -> None:
    topic, group = "leave-topic", "leave-group"
    bootstrap = shared_broker.bootstrap
    produce(bootstrap, topic, 12)
    # A session timeout far beyond the deadline: only the LeaveGroup can move partitions in time.
    config = {"session.timeout.ms": 120_000, "max.poll.interval.ms": 300_000}
    stay, go = (confluent_consumer(bootstrap, group, **config) for _ in range(2))
    stay.subscribe([topic])
    go.subscribe([topic])
    try:
        def both_assigned() -> bool:
            stay.poll(0.05)
            go.poll(0.05)
            return bool(stay.assignment()) and bool(go.assignment()) and len(
                stay.assignment()) + len(go.assignment()) == PARTITIONS

        wait_for(both_assigned, "two members sharing the partitions")
        go.close()  # LeaveGroup

        def stay_owns_everything() -> bool:
            stay.poll(0.05)
            return len(stay.assignment()) == PARTITIONS

        wait_for(stay_owns_everything, "the remaining member owning every partition", deadline=30)
        description = describe_confluent(bootstrap, group)
        assert group_state(description) == "STABLE" and len(description.members) == 1
    finally:
        stay.close()


def test_consumption_resumes_at_committed_offsets_after_a_broker_restart(tmp_path: Path) -> None:
    topic, group = "restart-topic", "restart-group"
    data = tmp_path / "data"
    broker = start_process(data, *broker_args())
    try:
        first_batch = produce(broker.bootstrap, topic, 60)
        consumer = confluent_consumer(broker.bootstrap, group, **{"enable.auto.commit": False})
        consumer.subscribe([topic])
        seen: list[str] = []
        wait_for(lambda: poll_all([consumer], {0: seen}) or len(seen) >= 30, "30 records")
        del seen[30:]
        # Commit exactly the first 30 records read (positions after them).
        positions: dict[int, int] = {}
        for value in seen:
            index = int(value.rsplit("-", 1)[1])
            positions[index % PARTITIONS] = max(positions.get(index % PARTITIONS, 0), index // PARTITIONS + 1)
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in positions.items()],
                        asynchronous=False)
        consumer.close()
    finally:
        assert broker.stop() in (0, 143, -signal.SIGTERM)  # a clean stop on SIGTERM

    broker = start_process(data, *broker_args(), port=None)
    try:
        second_batch = produce(broker.bootstrap, topic, 30, start=60)
        consumer = confluent_consumer(broker.bootstrap, group, **{"enable.auto.commit": False})
        consumer.subscribe([topic])
        resumed: dict[int, list[str]] = {0: []}
        remaining = [v for v in first_batch if v not in seen] + second_batch
        wait_for(lambda: poll_all([consumer], resumed) or len(resumed[0]) >= len(remaining),
                 "every record after the committed offsets")
        assert sorted(resumed[0]) == sorted(remaining)  # nothing before the commits came back
        committed = consumer.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        assert {tp.partition: tp.offset for tp in committed if tp.offset >= 0} == positions
        consumer.close()
    finally:
        broker.stop()


# -- cooperative-sticky --------------------------------------------------------------------


def test_cooperative_sticky_rebalances_incrementally(shared_broker: BrokerProcess) -> None:
    topic, group = "coop-topic", "coop-group"
    bootstrap = shared_broker.bootstrap
    values = produce(bootstrap, topic, 90)
    events: list[tuple[int, str, list[int]]] = []
    consumers: list[Consumer] = []
    consumed: dict[int, list[str]] = {}

    def add_member() -> None:
        index = len(consumers)
        consumer = confluent_consumer(bootstrap, group,
                                      **{"partition.assignment.strategy": "cooperative-sticky"})

        def on_assign(c: Consumer, parts: list[TopicPartition]) -> None:
            events.append((index, "assign", sorted(p.partition for p in parts)))

        def on_revoke(c: Consumer, parts: list[TopicPartition]) -> None:
            events.append((index, "revoke", sorted(p.partition for p in parts)))
            committing_on_revoke(c, parts)

        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        consumers.append(consumer)

    def owned() -> list[list[int]]:
        return [sorted(tp.partition for tp in c.assignment()) for c in consumers]

    def balanced(members: int) -> Callable[[], bool]:
        def check() -> bool:
            poll_all(consumers, consumed)
            sizes = sorted(len(o) for o in owned())
            return (len(sizes) == members and sum(sizes) == PARTITIONS
                    and sizes[-1] - sizes[0] <= 1
                    and sorted(p for o in owned() for p in o) == list(range(PARTITIONS)))
        return check

    try:
        add_member()
        wait_for(balanced(1), "the first member owning every partition")
        first_owned = set(owned()[0])
        add_member()
        wait_for(balanced(2), "two members, three partitions each")
        add_member()
        wait_for(balanced(3), "three members, two partitions each")
        wait_for(lambda: poll_all(consumers, consumed) or sum(map(len, consumed.values())) >= len(values),
                 "every record")
        # Incremental: a rebalance only revokes the partitions that move; a member keeps
        # (is never made to give up and take back) the rest, unlike the eager protocol.
        held: dict[int, set[int]] = {0: set(), 1: set(), 2: set()}
        for index, kind, parts in events:
            if kind == "assign":
                assert not held[index] & set(parts)  # an increment, not a whole new assignment
                held[index] |= set(parts)
            else:
                assert set(parts) < held[index], (index, parts, held[index])
                held[index] -= set(parts)
        assert [sorted(held[i]) for i in range(3)] == owned()
        assert set(owned()[0]) < first_owned  # the first member gave partitions away, kept the rest
        assert any(kind == "revoke" for i, kind, _ in events if i == 0)
        assert Counter(v for vs in consumed.values() for v in vs) == Counter(values)
        description = describe_confluent(bootstrap, group)
        assert group_state(description) == "STABLE"
        assert_each_partition_owned_once(description, topic, 3)
    finally:
        for consumer in consumers:
            consumer.close()


# -- admin ---------------------------------------------------------------------------------


def test_confluent_admin_lists_describes_alters_and_deletes_groups(shared_broker: BrokerProcess) -> None:
    from confluent_kafka import ConsumerGroupState

    topic, group = "admin-cf-topic", "admin-cf-group"
    bootstrap = shared_broker.bootstrap
    produce(bootstrap, topic, 12)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    consumer = confluent_consumer(bootstrap, group)
    consumer.subscribe([topic])
    try:
        wait_for(lambda: consumer.poll(0.05) is not None and len(consumer.assignment()) == PARTITIONS,
                 "the consumer's assignment")
        stable = admin.list_consumer_groups(states={ConsumerGroupState.STABLE}).result(30)
        assert group in {g.group_id for g in stable.valid}
        empty = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result(30)
        assert group not in {g.group_id for g in empty.valid}
        description = describe_confluent(bootstrap, group)
        assert description.partition_assignor == "range"
        assert description.is_simple_consumer_group is False
        assert_each_partition_owned_once(description, topic, 1)
        # A group with a member cannot be deleted.
        with pytest.raises(KafkaException) as refused:
            admin.delete_consumer_groups([group])[group].result(30)
        assert "NON_EMPTY_GROUP" in str(refused.value)
    finally:
        consumer.close()
    # Offsets through the admin client (simple commits: generation -1).
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 7), TopicPartition(topic, 1, 9)])
    admin.alter_consumer_group_offsets([request])[group].result(30)
    listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(30)
    offsets = {tp.partition: tp.offset for tp in listed.topic_partitions}
    assert offsets[0] == 7 and offsets[1] == 9
    empty = admin.list_consumer_groups(states={ConsumerGroupState.EMPTY}).result(30)
    assert group in {g.group_id for g in empty.valid}
    admin.delete_consumer_groups([group])[group].result(30)
    assert group not in {g.group_id for g in admin.list_consumer_groups().result(30).valid}
    described = describe_confluent(bootstrap, group)
    assert group_state(described) == "DEAD"


def test_kafka_python_admin_lists_describes_and_deletes_groups_and_offsets(
        shared_broker: BrokerProcess) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.structs import OffsetAndMetadata
    from kafka.structs import TopicPartition as KTopicPartition

    topic, group = "admin-kp-topic", "admin-kp-group"
    bootstrap = shared_broker.bootstrap
    produce(bootstrap, topic, 12)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    # A long session: on a loaded machine kafka-python's heartbeat thread has been seen to
    # miss 6 s (the broker then removed the member, and the assignment never came).
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False, session_timeout_ms=20000, heartbeat_interval_ms=250)
    try:
        kafka_python_subscribe(consumer, topic)
        wait_for(lambda: consumer.poll(timeout_ms=1000) is not None
                 and len(consumer.assignment()) == PARTITIONS, "the consumer's assignment")
        consumer.commit({KTopicPartition(topic, p): OffsetAndMetadata(p + 1, "meta", -1)
                         for p in range(PARTITIONS)})
        listed = {g["group_id"]: g for g in admin.list_groups()}
        assert listed[group]["protocol_type"] == "consumer"
        stable = {g["group_id"] for g in admin.list_groups(states_filter=["Stable"])}
        assert group in stable
        description = admin.describe_groups([group])[group]
        assert description["group_state"] == "Stable"
        assert description["protocol_data"] == "range"
        # A consumer group's offsets of a topic it subscribes to stay (partition-level error).
        refused = admin.delete_group_offsets(group, [KTopicPartition(topic, 0)])
        assert {tp.partition: err.__name__ for tp, err in refused.items()} == {
            0: "GroupSubscribedToTopicError"}
    finally:
        consumer.close()
    offsets = admin.list_group_offsets({group: None})[group]
    assert {tp.partition: (o.offset, o.metadata) for tp, o in offsets.items()} == {
        p: (p + 1, "meta") for p in range(PARTITIONS)}
    deleted = admin.delete_group_offsets(group, [KTopicPartition(topic, 0), KTopicPartition(topic, 1)])
    assert {tp.partition: err.__name__ for tp, err in deleted.items()} == {0: "NoError", 1: "NoError"}
    offsets = admin.list_group_offsets({group: None})[group]
    assert sorted(tp.partition for tp in offsets) == [2, 3, 4, 5]
    assert admin.delete_groups([group]) == {group: "OK"}
    assert admin.delete_groups([group]) == {group: "GroupIdNotFoundError"}
    assert group not in {g["group_id"] for g in admin.list_groups()}
