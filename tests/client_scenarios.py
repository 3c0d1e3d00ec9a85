"""Scenarios that the Go and JavaScript client programs (tests/programs.py) go through alike.

A `Program` maps a command name (admin, create, produce, consume, member, groups, ...) to the
command line that runs it for one client; every command takes key=value arguments and prints
JSON lines. The fixtures: one akfak subprocess per test module (disk storage; each test uses
topics and groups of its own) and, with AKFAK_COMPARE_KAFKA=1, one real Kafka 4.1.1
(tests/kafka_peer.py) too, which is how what the tests expect was checked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.clients import running_broker, stored_codecs
from tests.kafka_peer import start_kafka
from tests.programs import Member, Run, check_records, key, members, run, wait_for

Program = Callable[[str], list[str]]

BROKERS = ["akfak", "kafka"] if os.environ.get("AKFAK_COMPARE_KAFKA") == "1" else ["akfak"]


@dataclass
class Cluster:
    name: str
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def akfak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # as the Kafka peer: no 3 s wait for more members before a group's first rebalance
    data = tmp_path_factory.mktemp("akfak") / "data"
    with running_broker(data, "-o", "group.initial.rebalance.delay.ms=0") as b:
        yield Cluster("akfak", b.port)
        assert b.proc.poll() is None, f"akfak died:\n{b.log()[-4000:]}"


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    peer = start_kafka(tmp_path_factory.mktemp("kafka"))
    yield Cluster("kafka", peer.port)
    peer.stop()


def name(request: pytest.FixtureRequest, what: str) -> str:
    """A topic or group name of this test's own."""
    return f"{what}-{request.node.callspec.id.replace('[', '-').rstrip(']')}".replace("_", "-")


def create(program: Program, bootstrap: str, **partitions: int) -> None:
    spec = ",".join(f"{name}:{count}" for name, count in partitions.items())
    run(program("create"), f"bootstrap={bootstrap}", f"topics={spec}").check()


def produce(program: Program, bootstrap: str, topic: str, *args: str) -> Run:
    return run(program("produce"), f"bootstrap={bootstrap}", f"topic={topic}", *args).check()


def consume(program: Program, bootstrap: str, topic: str, count: int, *args: str) -> Run:
    return run(program("consume"), f"bootstrap={bootstrap}", f"topic={topic}", f"count={count}",
               *args).check()


def codec_round_trip(program: Program, bootstrap: str, port: int, prefix: str, codecs: list[str],
                     count: int = 60, partitions: int = 2) -> None:
    """For each codec: `count` records produced with it come back byte-identical (keys, values,
    headers, partitions, offsets), and the broker stored batches of that codec only."""
    topics = [f"{prefix}-{codec}" for codec in codecs]
    create(program, bootstrap, **dict.fromkeys(topics, partitions))
    # one program produces to each topic with its codec; one reads them all
    produced = produce(program, bootstrap, ",".join(topics), f"codec={','.join(codecs)}", f"count={count}",
                       f"partitions={partitions}")
    assert len(produced.of_kind("produced")) == count * len(codecs), produced.describe()
    consumed = consume(program, bootstrap, ",".join(topics), count * len(codecs))
    for topic, codec in zip(topics, codecs, strict=True):
        check_records(consumed, topic, range(count), partitions)
        for p in range(partitions):
            stored = stored_codecs(port, topic, p)
            assert set(stored) == {codec}, f"{topic}/{p} stored batches {stored}, not {codec}"


def describe_group(program: Program, bootstrap: str, group: str, topic: str) -> Run:
    """The `groups` command's lines (unchecked: a caller polling may accept a failure)."""
    return run(program("groups"), f"bootstrap={bootstrap}", f"group={group}", f"topic={topic}")


def group_restart(program: Program, bootstrap: str, topic: str, group: str, half: int = 90) -> dict[str, Any]:
    """Two members of `group` consume the 3-partition `topic` (created by the caller); once the
    first `half` records are processed, member a restarts; then `half` more are produced. Every
    record is processed (at least once), both members at the end have processed some of the
    second half, and the committed offsets end at the log end. Returns the last `groups` lines."""
    produce(program, bootstrap, topic, "partitions=3", f"count={half}")
    common = (f"bootstrap={bootstrap}", f"group={group}", f"topic={topic}")
    a, b = Member(program("member"), *common, "name=a"), Member(program("member"), *common, "name=b")
    with members(a, b) as running:
        everyone = running

        def processed(after: int = 0) -> set[str]:
            return {line["key"] for m in everyone for line in m.of_kind("record")
                    if int(line["key"].split("-")[1]) >= after}

        def describe() -> str:
            return "\n".join(f"{' '.join(m.command[1:3])}: {m.describe()}" for m in everyone)

        def stable() -> bool:
            for m in everyone:
                assert m.proc.poll() is None or m.proc.returncode == 0, describe()
            described = describe_group(program, bootstrap, group, topic)
            if described.returncode != 0:  # e.g. COORDINATOR_NOT_AVAILABLE while Kafka loads the group
                return False
            g = described.last("described-group")
            return g["state"] == "Stable" and g["members"] == 2

        wait_for(stable, 60, "stable group of two", describe)
        wait_for(lambda: len(processed()) == half, 60, f"{half} records processed", describe)
        stopped = a.stop()
        assert stopped.returncode == 0 and stopped.of_kind("closed"), stopped.describe()
        a2 = Member(program("member"), *common, "name=a2")
        running.append(a2)
        wait_for(stable, 60, "stable group of two after the restart", describe)
        produce(program, bootstrap, topic, "partitions=3", f"start={half}", f"count={half}")
        every = {key(i) for i in range(2 * half)}
        wait_for(lambda: processed() == every, 60, "every record processed", describe)
        for m in (b, a2):
            done = m.stop()
            assert done.returncode == 0 and done.of_kind("closed"), done.describe()
            assert {line["key"] for line in done.of_kind("record")} & processed(half), \
                f"member {m.command[-1]} processed none of the second half: {describe()}"
    groups = describe_group(program, bootstrap, group, topic).check()
    offsets = groups.last("offsets")["offsets"]
    assert offsets == {topic: {str(p): 2 * half // 3 for p in range(3)}}, groups.describe()
    described = groups.last("described-group")
    assert described["state"] == "Empty" and described["members"] == 0, described
    return {"groups": groups.lines}


def consumer_protocol_group(program: Program, bootstrap: str, topic: str, group: str,
                            count: int = 80) -> list[dict[str, Any]]:
    """Two members of a group.protocol=consumer (KIP-848) group over the 4-partition `topic`: once
    both hold partitions and the group is Stable, `count` records are produced; each is processed
    exactly once, each partition by one member, both members process some; at the end ListGroups
    types the group `consumer` and the committed offsets are the log ends. Returns the last
    `groups` lines."""
    create(program, bootstrap, **{topic: 4})
    common = (f"bootstrap={bootstrap}", f"group={group}", f"topic={topic}", "protocol=consumer")
    a, b = Member(program("member"), *common, "name=a"), Member(program("member"), *common, "name=b")

    def lookup() -> Run:
        return run(program("groups"), f"bootstrap={bootstrap}", f"group={group}", f"topic={topic}",
                   "type=consumer", "partitions=4")

    with members(a, b):
        def describe() -> str:
            return "\n".join(f"{m.command[-1]}: {m.describe()}" for m in (a, b))

        def stable() -> bool:
            for m in (a, b):
                assert m.proc.poll() is None, describe()
            if not all(any(line["partitions"] for line in m.of_kind("assigned")) for m in (a, b)):
                return False
            listed = lookup()
            return (listed.returncode == 0
                    and listed.last("listed-groups")["groups"].get(group, {}).get("state") == "Stable")

        wait_for(stable, 60, "a Stable group of two members holding partitions", describe)
        running = lookup().check()
        if running.of_kind("described-consumer-group"):  # the client has ConsumerGroupDescribe
            described = running.last("described-consumer-group")
            held = sorted(p for m in described["members"] for p in m["assignment"].get(topic, []))
            assert len(described["members"]) == 2 and held == [0, 1, 2, 3], described
            assert described["state"] == "Stable", described
        produce(program, bootstrap, topic, "partitions=4", f"count={count}")
        wait_for(lambda: sum(len(m.of_kind("record")) for m in (a, b)) >= count, 60,
                 f"{count} records processed", describe)
        done = [m.stop() for m in (a, b)]
    for d in done:
        assert d.returncode == 0 and d.of_kind("closed"), d.describe()
    seen = [(line["member"], line["partition"], line["key"]) for d in done for line in d.of_kind("record")]
    assert sorted(k for _, _, k in seen) == sorted(key(i) for i in range(count)), seen
    owners = {p: {m for m, q, _ in seen if q == p} for p in range(4)}
    assert all(len(o) == 1 for o in owners.values()), owners
    assert {m for o in owners.values() for m in o} == {"a", "b"}, owners
    final = lookup().check()
    listed = final.last("listed-groups")["groups"][group]
    assert listed["group_type"] == "consumer" and listed["state"] == "Empty", listed
    ends = {topic: {str(p): count // 4 for p in range(4)}}
    assert final.last("offsets")["offsets"] == ends, final.describe()
    return final.lines


#: Broker settings for the longer consumer-protocol scenarios: KIP-848 puts the heartbeat
#: interval and session on the broker, and Kafka's 5 s / 45 s would make each step that long.
FAST_CONSUMER_GROUPS = ("group.initial.rebalance.delay.ms=0", "group.consumer.heartbeat.interval.ms=300",
                        "group.consumer.min.heartbeat.interval.ms=300",
                        "group.consumer.session.timeout.ms=4000",
                        "group.consumer.min.session.timeout.ms=4000")


@pytest.fixture(scope="module")
def akfak_fast_groups(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data = tmp_path_factory.mktemp("akfak-fast") / "data"
    with running_broker(data, *(arg for o in FAST_CONSUMER_GROUPS for arg in ("-o", o))) as b:
        yield Cluster("akfak", b.port)


def owned_partitions(member: Member, topic: str, whole_sets: bool) -> tuple[set[int], list[int]]:
    """What `member` owns now and every partition it gave up, in order, from its lines: with
    `whole_sets` each "assigned" line is the whole assignment (partitions missing from the next
    one were revoked), otherwise "assigned" adds and "revoked" removes (franz-go)."""
    owned: set[int] = set()
    revoked: list[int] = []
    for line in member.lines:
        if line.get("kind") not in ("assigned", "revoked"):
            continue
        parts = set((line["partitions"] or {}).get(topic, []))
        if line["kind"] == "revoked":
            revoked += sorted(parts & owned)
            owned -= parts
        elif whole_sets:
            revoked += sorted(owned - parts)
            owned = parts
        else:
            owned |= parts
    return owned, revoked


def consumer_protocol_scale_out(program: Program, bootstrap: str, topic: str, group: str, *,
                                whole_sets: bool) -> None:
    """A KIP-848 group over the 12-partition `topic` grows from one member to four, one at a
    time: each time every partition is owned once, the owners are balanced, and an old member
    gives up only partitions the newcomer gets (6, 4 then 3: the least that can move); then
    one member is killed (SIGKILL) and, after its session, the other three share its
    partitions. Every record produced before the kill is processed exactly once; every record
    is processed, and the committed offsets end at the log ends."""
    create(program, bootstrap, **{topic: 12})
    common = (f"bootstrap={bootstrap}", f"group={group}", f"topic={topic}", "protocol=consumer")
    state = {"produced": 0}

    def add(count: int) -> None:
        produce(program, bootstrap, topic, "partitions=12", f"start={state['produced']}", f"count={count}")
        state["produced"] += count

    def committed() -> dict[str, int] | None:
        listed = run(program("groups"), f"bootstrap={bootstrap}", f"group={group}", f"topic={topic}",
                     "type=consumer", "partitions=12")
        return listed.last("offsets")["offsets"].get(topic) if listed.returncode == 0 else None

    def all_committed() -> bool:
        return committed() == {str(p): state["produced"] // 12 for p in range(12)}

    running: list[Member] = []
    with members() as started:
        def describe() -> str:
            return "\n".join(f"{m.command[-1]}: {owned_partitions(m, topic, whole_sets)} "
                             f"{m.describe()}" for m in running)

        def balanced() -> bool:
            for m in running:
                assert m.proc.poll() is None, describe()
            owned = [owned_partitions(m, topic, whole_sets)[0] for m in running]
            return (sum(map(len, owned)) == 12 and set().union(*owned) == set(range(12))
                    and max(map(len, owned)) - min(map(len, owned)) <= 1)

        def processed() -> list[str]:
            return [line["key"] for m in started for line in m.of_kind("record")]

        add(240)
        for i in range(4):
            before = {m.command[-1]: owned_partitions(m, topic, whole_sets) for m in running}
            newcomer = Member(program("member"), *common, f"name=m{i}")
            started.append(newcomer)
            running.append(newcomer)
            wait_for(balanced, 60, f"{len(running)} members balanced", describe)
            mine = owned_partitions(newcomer, topic, whole_sets)[0]
            for m in running[:-1]:
                owned, revoked = owned_partitions(m, topic, whole_sets)
                was, gone = before[m.command[-1]]
                assert set(revoked[len(gone):]) == was - owned <= mine, describe()
            wait_for(lambda: len(processed()) >= state["produced"] and all_committed(), 60,
                     "every record processed and committed", describe)
        moved = sum(len(owned_partitions(m, topic, whole_sets)[1]) for m in running)
        assert moved == 13, describe()  # 6 + 4 + 3
        add(240)
        wait_for(lambda: len(processed()) >= 480 and all_committed(), 60, "480 records committed",
                 describe)
        assert sorted(processed()) == sorted(key(i) for i in range(480)), describe()

        killed = running.pop()
        killed.proc.kill()
        killed.proc.wait()
        wait_for(balanced, 90, "the three survivors sharing the killed member's partitions", describe)
        add(120)
        wait_for(lambda: all_committed(), 60, "the records after the kill committed", describe)
        done = [m.stop() for m in running]
    for d in done:
        assert d.returncode == 0 and d.of_kind("closed"), d.describe()
    seen = [line["key"] for m in started for line in m.of_kind("record")]
    assert set(seen) == {key(i) for i in range(600)}
    assert len([k for k in seen if int(k.split("-")[1]) < 480]) == 480  # none of those twice
