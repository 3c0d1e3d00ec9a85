"""The Apache Kafka Java client (kafka-clients and kafka-streams 4.1.1) against akfak.

The programs are in tests/java (built and run by tests/jvm.py). Each test runs against an akfak
subprocess (disk storage) and against a real Kafka broker (tests/kafka_peer.py), so that what a
test expects is first shown to be what Kafka itself does.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.jvm import JavaProgram, JavaRun, build, run_java

# the first test may wait for the Maven build (tests/jvm.py), which the timeout counts
pytestmark = [pytest.mark.jvm, pytest.mark.timeout(600)]

BROKERS = ["akfak", "kafka"]
#: For the longest programs the Kafka run (which shows the test's expectations are Kafka's)
#: is opt-in (AKFAK_SLOW=1), to keep the suite inside its budget; akfak's run is always on.
BROKERS_KAFKA_SLOW = ["akfak", pytest.param("kafka", marks=pytest.mark.slow)]

Record = tuple[int, int, str, str]  # partition, offset, key, value


@dataclass
class Cluster:
    name: str
    bootstrap: str



@pytest.fixture
def cluster(request: pytest.FixtureRequest, broker_process: Any) -> Cluster:
    """The broker the test runs against: a fresh akfak subprocess, or the module's Kafka."""
    build()
    if request.param == "kafka":
        return Cluster("kafka", request.getfixturevalue("kafka_peer").bootstrap)
    # as the Kafka peer: no 3 s wait for more members before a group's first rebalance
    return Cluster("akfak", broker_process("-o", "group.initial.rebalance.delay.ms=0").bootstrap)


def create_topics(cluster: Cluster, **partitions: int) -> None:
    spec = ",".join(f"{name}:{count}" for name, count in partitions.items())
    run_java("Admin", cluster.bootstrap, f"create={spec}").check()


def records(run: JavaRun, outcome: str | None = None) -> list[Record]:
    return [(r["partition"], r["offset"], r["key"], r["value"]) for r in run.of_kind("record")
            if outcome is None or r["outcome"] == outcome]


def consume(cluster: Cluster, topic: str, isolation: str) -> tuple[list[Record], dict[int, int]]:
    """Every record of `topic` as a read_committed or read_uncommitted consumer sees it, and the
    topic's end offsets (last stable offsets for read_committed)."""
    run = run_java("ReadCommittedConsumer", cluster.bootstrap, f"topic={topic}", f"isolation={isolation}",
                   "timeout-ms=60000").check()
    done = run.last("done")
    assert done["positions"] == done["end"]
    return records(run), {int(p): n for p, n in done["end"].items()}


def offsets(cluster: Cluster, topic: str, group: str) -> dict[str, Any]:
    return run_java("Admin", cluster.bootstrap, f"offsets={topic}", f"group={group}").check().last("offsets")


@pytest.mark.parametrize("cluster", BROKERS, indirect=True)
def test_plain_round_trip(cluster: Cluster) -> None:
    """1,000 records round robin over 3 partitions from an idempotent producer, back through
    both isolation levels: all of them, in order, at offsets 0..n-1."""
    create_topics(cluster, plain=3)
    produced = run_java("TxnProducer", cluster.bootstrap, "topic=plain", "records=1000").check()
    assert produced.last("done")["committed"] == 1000
    sent = records(produced)
    assert Counter(p for p, *_ in sent) == {0: 334, 1: 333, 2: 333}
    for isolation in ("read_uncommitted", "read_committed"):
        seen, end = consume(cluster, "plain", isolation)
        assert sorted(seen) == sorted(sent)
        assert end == {0: 334, 1: 333, 2: 333}
        for partition in range(3):
            assert [o for p, o, *_ in seen if p == partition] == list(range(end[partition]))


@pytest.mark.parametrize("cluster", BROKERS_KAFKA_SLOW, indirect=True)
def test_commit_and_abort_across_partitions(cluster: Cluster) -> None:
    """Six transactions of 10 records over 3 partitions, committed, aborted, committed, ...:
    read_committed sees the 40 committed records only, read_uncommitted all 60; each transaction
    leaves a marker in each partition, which takes an offset but never reaches the consumer."""
    create_topics(cluster, txn=3)
    produced = run_java("TxnProducer", cluster.bootstrap, "topic=txn", "records=60", "per-txn=10",
                        "transactional-id=txn-commit-abort", "outcomes=commit,abort,commit").check()
    assert produced.last("done") == {"kind": "done", "committed": 40, "aborted": 20, "transactions": 6}
    committed, everything = records(produced, "commit"), records(produced)

    seen, end = consume(cluster, "txn", "read_committed")
    assert sorted(seen) == sorted(committed)
    all_seen, all_end = consume(cluster, "txn", "read_uncommitted")
    assert sorted(all_seen) == sorted(everything)
    assert end == all_end  # no transaction is open: the last stable offset is the high watermark
    txn_of = {(r["partition"], r["offset"]): r["txn"] for r in produced.of_kind("record")}
    for partition in range(3):
        data_offsets = {o for p, o, *_ in everything if p == partition}
        markers = set(range(end[partition])) - data_offsets
        assert len(data_offsets) == 20 and len(markers) == 6, (partition, sorted(markers))
        # each transaction's marker comes right after its last record in the partition
        assert markers == {max(o for o in data_offsets if txn_of[partition, o] == txn) + 1
                           for txn in range(6)}


@pytest.mark.parametrize("cluster", BROKERS_KAFKA_SLOW, indirect=True)
def test_consume_transform_produce_exactly_once(cluster: Cluster) -> None:
    """10,000 records copied input -> output in transactions that also commit the group's
    offsets: every record exactly once in the output, and the group's offsets at the input's end."""
    create_topics(cluster, copy_in=3, copy_out=3)
    run_java("TxnProducer", cluster.bootstrap, "topic=copy_in", "records=10000").check()
    copied = run_java("CopyTxn", cluster.bootstrap, "input=copy_in", "output=copy_out", "group=copier",
                      "transactional-id=copier-1", "timeout-ms=120000", timeout=180).check()
    done = copied.last("done")
    assert done["complete"] and done["copied"] == 10000

    output, _ = consume(cluster, "copy_out", "read_committed")
    assert Counter((k, v) for _, _, k, v in output) == Counter(
        (f"key-{i}", f"VALUE-{i}") for i in range(10000))
    group = offsets(cluster, "copy_in", "copier")
    assert group["committed"] == group["end"] == {"0": 3334, "1": 3333, "2": 3333}


@pytest.mark.parametrize("cluster", BROKERS_KAFKA_SLOW, indirect=True)
def test_exactly_once_with_the_consumer_group_protocol(cluster: Cluster) -> None:
    """The same copy with `group.protocol=consumer` (KIP-848): the transactions commit the
    group's offsets with the member's id and epoch; every record exactly once."""
    create_topics(cluster, kip848_in=3, kip848_out=3)
    run_java("TxnProducer", cluster.bootstrap, "topic=kip848_in", "records=3000").check()
    copied = run_java("CopyTxn", cluster.bootstrap, "input=kip848_in", "output=kip848_out",
                      "group=kip848-copier", "transactional-id=kip848-copier-1",
                      "config.group.protocol=consumer", "timeout-ms=90000", timeout=150).check()
    assert copied.last("done")["copied"] == 3000
    output, _ = consume(cluster, "kip848_out", "read_committed")
    assert Counter((k, v) for _, _, k, v in output) == Counter(
        (f"key-{i}", f"VALUE-{i}") for i in range(3000))
    group = offsets(cluster, "kip848_in", "kip848-copier")
    assert group["committed"] == group["end"] == {"0": 1000, "1": 1000, "2": 1000}


class JavaMember(JavaProgram):
    """A GroupMember program (tests/java) running beside the test; leave() makes it leave
    the group."""

    def __init__(self, cluster: Cluster, topic: str, group: str, *config: str):
        super().__init__("akfak.tests.GroupMember", cluster.bootstrap, f"topic={topic}",
                         f"group={group}", *config)

    def owned(self) -> set[int] | None:
        assigned = [line for line in list(self.lines) if line.get("kind") == "assigned"]
        return set(assigned[-1]["partitions"]) if assigned else None

    def read(self) -> set[tuple[int, int]]:
        return {(r["partition"], r["offset"]) for r in list(self.lines) if r.get("kind") == "record"}



def wait_until(condition: Callable[[], Any], what: str, deadline: float = 90.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.slow  # in CI, test_java_consumer_groups' scale-out covers the same reconciliation
@pytest.mark.parametrize("cluster", BROKERS_KAFKA_SLOW, indirect=True)
def test_consumer_group_protocol_members_scale_and_leave(cluster: Cluster) -> None:
    """Java consumers with `group.protocol=consumer` (KIP-848): one member takes the 4
    partitions, a second joins and gets a share (nothing owned twice), the second leaves and the
    first takes everything back; every record is read, and the group's offsets reach the end."""
    create_topics(cluster, kip848_scale=4)
    run_java("TxnProducer", cluster.bootstrap, "topic=kip848_scale", "records=400").check()
    everything = {(p, o) for p in range(4) for o in range(100)}
    members: list[JavaMember] = []
    try:
        a = JavaMember(cluster, "kip848_scale", "kip848-scale", "config.group.protocol=consumer")
        members.append(a)
        wait_until(lambda: a.owned() == {0, 1, 2, 3} and a.read() == everything, "the first member")
        b = JavaMember(cluster, "kip848_scale", "kip848-scale", "config.group.protocol=consumer")
        members.append(b)

        def shared() -> bool:
            mine, theirs = a.owned(), b.owned()
            return bool(mine and theirs and not mine & theirs and mine | theirs == {0, 1, 2, 3})

        wait_until(shared, "the partitions shared by the two members")
        run_java("TxnProducer", cluster.bootstrap, "topic=kip848_scale", "records=400").check()
        everything = {(p, o) for p in range(4) for o in range(200)}
        wait_until(lambda: a.read() | b.read() == everything, "the second batch read")
        b.leave()
        wait_until(lambda: a.owned() == {0, 1, 2, 3}, "the first member taking everything back")
        a.leave()
    finally:
        for member in members:
            member.kill()
    group = offsets(cluster, "kip848_scale", "kip848-scale")
    assert group["committed"] == group["end"] == {str(p): 200 for p in range(4)}


@pytest.mark.parametrize("cluster", BROKERS, indirect=True)
def test_second_producer_fences_the_first(cluster: Cluster) -> None:
    """A second producer with the same transactional.id fences the first, whose open transaction
    is aborted; the first's next send fails, and only the second's record is committed."""
    create_topics(cluster, fenced=1)
    run = run_java("Fencing", cluster.bootstrap, "topic=fenced", "transactional-id=zombie").check()
    fenced = run.last("fenced")
    assert {"org.apache.kafka.common.errors.ProducerFencedException",
            "org.apache.kafka.common.errors.InvalidProducerEpochException"} & set(fenced["causes"]), fenced
    seen, _ = consume(cluster, "fenced", "read_committed")
    assert [(k, v) for _, _, k, v in seen] == [("second", "committed")]
    all_seen, _ = consume(cluster, "fenced", "read_uncommitted")
    assert ("first", "before-fencing") in [(k, v) for _, _, k, v in all_seen]


def word_counts(lines: int) -> Counter[str]:
    """What tests/java StreamsWordCount's input of `lines` lines holds: line i is
    "w(i%50) w(i%20) w(i%7)"."""
    return Counter(word for i in range(lines) for word in (f"w{i % 50}", f"w{i % 20}", f"w{i % 7}"))


@pytest.mark.parametrize("guarantee", ["exactly_once_v2",
                                       pytest.param("at_least_once", marks=pytest.mark.slow)])
@pytest.mark.parametrize("cluster", BROKERS_KAFKA_SLOW, indirect=True)
def test_streams_word_count_with_restart(cluster: Cluster, tmp_path: Path, guarantee: str) -> None:
    """A Kafka Streams word count (lines split into words, re-keyed through a repartition topic,
    counted in a KTable with a changelog) over 3,000 lines, crashed (JVM halt, no close) once its
    committed output counts 3,000 of their 9,000 words, and restarted after 2,000 more lines: the
    new instance restores the store from the changelog and goes on from the committed offsets.

    exactly_once_v2 (restarted on its state directory: the same transactional.id fences the
    crashed producer, and EOS wipes the uncheckpointed store): each word's counts in the output
    rise strictly to exactly its number. at_least_once (restarted on a new state directory, as on
    another machine): counts at least that, reprocessing may count twice; the output's latest
    count of each word is the changelog's."""
    app = f"words-{guarantee}"  # the Kafka peer is shared: names of the test's own
    common = [cluster.bootstrap, f"application-id={app}", f"input={app}-lines", f"output={app}-counts",
              "lines=5000", f"guarantee={guarantee}"]
    crashed = run_java("StreamsWordCount", *common, f"state-dir={tmp_path / 'state'}", "produce=3",
                       "produce-lines=0-3000", "halt-after=3000", timeout=120)
    halted = crashed.last("halted")
    # Usually mid-way; on a quiet machine the app may have committed all 9,000 words before
    # its output watcher saw the first 3,000 (the restart then only adds the later lines).
    assert 3000 <= halted["words"] <= 9000, crashed.describe()
    restart_dir = tmp_path / ("state" if guarantee == "exactly_once_v2" else "state-2")
    done = run_java("StreamsWordCount", *common, f"state-dir={restart_dir}", "produce=3",
                    "produce-lines=3000-5000", "timeout-ms=120000", timeout=180).check().last("done")
    assert done["restored"] > 0
    expected = word_counts(5000)
    history: dict[str, list[int]] = done["history"]
    assert set(history) == set(expected) == set(done["changelog"])
    latest = {word: counts[-1] for word, counts in history.items()}
    assert latest == done["changelog"]
    if guarantee == "exactly_once_v2":
        assert latest == expected
        for word, counts in history.items():
            assert counts == sorted(set(counts)), (word, counts)
    else:
        assert all(latest[word] >= n for word, n in expected.items()), (latest, expected)
