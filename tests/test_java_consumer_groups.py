"""The Java client 4.1.1's KafkaConsumer with `group.protocol=consumer` (KIP-848) in the
scenarios tests/test_consumer_groups_clients.py runs with librdkafka: scale-out from one
member to four over 12 partitions (only moving partitions revoked) and a member killed with
SIGKILL; a broker-side regex subscription (SubscriptionPattern) picking up a new topic; a
static member closing and coming back to its partitions without a rebalance.

Each runs against an akfak subprocess and (opt-in, AKFAK_SLOW=1) a Kafka 4.1.1 with the same
short heartbeat and session settings, which is how what they expect was checked.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.brokers import start_process
from tests.jvm import JavaProgram, build, run_java

pytestmark = [pytest.mark.jvm, pytest.mark.timeout(600)]

#: KIP-848 puts the heartbeat interval and the session on the broker; Kafka's 5 s / 45 s
#: would make every step of these tests that long.
FAST = {"group.initial.rebalance.delay.ms": "0", "group.consumer.heartbeat.interval.ms": "300",
        "group.consumer.min.heartbeat.interval.ms": "300",
        "group.consumer.session.timeout.ms": "4000", "group.consumer.min.session.timeout.ms": "4000"}


@pytest.fixture(scope="module", params=["akfak", pytest.param("kafka", marks=pytest.mark.slow)])
def bootstrap(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    build()
    if request.param == "kafka":
        from tests.kafka_peer import start_kafka

        peer = start_kafka(tmp_path_factory.mktemp("kafka"), properties=FAST)
        yield peer.bootstrap
        peer.stop()
    else:
        proc = start_process(tmp_path_factory.mktemp("akfak") / "data",
                             *(a for k, v in FAST.items() for a in ("-o", f"{k}={v}")))
        yield proc.bootstrap
        proc.stop()


class Member(JavaProgram):
    """tests/java GroupMember (consumer protocol) beside the test; leave() makes it leave."""

    def __init__(self, bootstrap: str, group: str, *args: str):
        super().__init__("akfak.tests.GroupMember", bootstrap, f"group={group}",
                         "config.group.protocol=consumer", *args)

    def history(self) -> tuple[set[str], list[str]]:
        """What it owns now ("topic:partition") and every partition it gave up, in order."""
        owned: set[str] = set()
        revoked: list[str] = []
        for line in list(self.lines):
            if line.get("kind") == "assigned":
                now = set(line["topic_partitions"])
                revoked += sorted(owned - now)
                owned = now
        return owned, revoked

    def owned(self) -> set[str]:
        return self.history()[0]

    def records(self) -> list[tuple[str, int, int]]:
        return [(r["topic"], r["partition"], r["offset"]) for r in list(self.lines)
                if r.get("kind") == "record"]



@pytest.fixture
def started() -> Iterator[list[Member]]:
    members: list[Member] = []
    yield members
    for m in members:
        m.kill()


def wait_until(condition: Callable[[], Any], what: str, describe: Callable[[], Any] = lambda: "",
               deadline: float = 90.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}: {describe()}"
        time.sleep(0.1)


def produce(bootstrap: str, topic: str, records: int) -> None:
    run_java("TxnProducer", bootstrap, f"topic={topic}", f"records={records}").check()


def committed(bootstrap: str, topic: str, group: str) -> bool:
    offsets = run_java("Admin", bootstrap, f"offsets={topic}", f"group={group}").check().last("offsets")
    return bool(offsets["committed"] == offsets["end"])


def balanced(members: list[Member], partitions: set[str]) -> bool:
    owned = [m.owned() for m in members]
    return (sum(map(len, owned)) == len(partitions) and set().union(*owned) == partitions
            and max(map(len, owned)) - min(map(len, owned)) <= 1)


def test_scale_out_from_one_to_four_then_a_member_killed(bootstrap: str, started: list[Member]) -> None:
    run_java("Admin", bootstrap, "create=jscale:12").check()
    produce(bootstrap, "jscale", 240)
    every = {f"jscale:{p}" for p in range(12)}
    running: list[Member] = []

    def describe() -> Any:
        return [(m.history(), len(m.records())) for m in running]

    def read() -> list[tuple[str, int, int]]:
        return [r for m in started for r in m.records()]

    for _ in range(4):
        before = [m.history() for m in running]
        newcomer = Member(bootstrap, "jscale-g", "topic=jscale")
        started.append(newcomer)
        running.append(newcomer)
        wait_until(lambda: balanced(running, every), f"{len(running)} members balanced", describe)
        # an old member gives up only what the newcomer gets
        for m, (was, gone) in zip(running, before, strict=False):
            owned, revoked = m.history()
            assert set(revoked[len(gone):]) == was - owned <= newcomer.owned(), describe()
    assert sum(len(m.history()[1]) for m in running) == 13, describe()  # 6 + 4 + 3: the least
    produce(bootstrap, "jscale", 240)
    wait_until(lambda: len(set(read())) == 480 and committed(bootstrap, "jscale", "jscale-g"),
               "every record read and committed", describe)
    before_kill = set(read())
    killed = running.pop()
    killed.kill()
    wait_until(lambda: balanced(running, every), "the survivors sharing its partitions", describe)
    produce(bootstrap, "jscale", 120)
    wait_until(lambda: len(set(read())) == 600, "the records after the kill", describe)
    counts = Counter(read())
    # members commit after each poll and before giving a partition up, and the kill came once
    # everything read was committed: nothing is read twice
    assert max(counts.values()) == 1 and before_kill < set(counts)
    for m in running:
        m.leave()


def test_regex_subscription_and_a_static_member(bootstrap: str, started: list[Member]) -> None:
    from tests.test_consumer_groups_clients import describe

    run_java("Admin", bootstrap, "create=jrx-one:2").check()
    regex = Member(bootstrap, "jrx-g", "pattern=jrx-.*")
    started.append(regex)
    wait_until(lambda: regex.owned() == {"jrx-one:0", "jrx-one:1"}, "jrx-one", regex.history)
    run_java("Admin", bootstrap, "create=jrx-two:3").check()
    produce(bootstrap, "jrx-two", 30)
    wait_until(lambda: {f"jrx-two:{p}" for p in range(3)} <= regex.owned(), "jrx-two", regex.history)
    wait_until(lambda: len({r for r in regex.records() if r[0] == "jrx-two"}) == 30,
               "jrx-two's records", regex.history)
    regex.leave()

    run_java("Admin", bootstrap, "create=jstatic:4").check()
    every = {f"jstatic:{p}" for p in range(4)}
    a = Member(bootstrap, "jstatic-g", "topic=jstatic", "config.group.instance.id=a")
    b = Member(bootstrap, "jstatic-g", "topic=jstatic", "config.group.instance.id=b")
    started += [a, b]
    wait_until(lambda: balanced([a, b], every), "two static members balanced",
               lambda: (a.history(), b.history()))
    mine = a.owned()
    b_revoked = list(b.history()[1])
    epoch = describe(bootstrap, "jstatic-g")["epoch"]
    a.leave()  # a static member's close is a temporary leave (epoch -2): its partitions wait
    back = Member(bootstrap, "jstatic-g", "topic=jstatic", "config.group.instance.id=a")
    started.append(back)
    wait_until(lambda: back.owned() == mine, "the same partitions back", back.history)
    assert describe(bootstrap, "jstatic-g")["epoch"] == epoch
    assert b.history()[1] == b_revoked and b.owned() == every - mine  # nothing moved to b
    back.leave()
    b.leave()

