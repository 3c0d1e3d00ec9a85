"""Kafka 4.1.1's everyday command-line tools against akfak and against a real Kafka 4.1.1 broker
(tests/kafka_peer.py): each tool must print the same on both, up to ids, times, sizes and ports,
or fail with the same error.

kafka-topics, kafka-consumer-groups, kafka-get-offsets, kafka-delete-records,
kafka-broker-api-versions (the APIs akfak serves; DELIBERATE lists the differences),
kafka-transactions, the console producer and consumer, the verifiable producer and consumer, the
producer and consumer perf tests; kafka-dump-log over akfak's data directory (akfak only: it must
find nothing wrong). One akfak broker and one Kafka broker serve the whole module, each test on
topics and groups of its own; the tool runs against the two brokers go at once.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.brokers import start_process
from tests.kafka_peer import KafkaPeer
from tests.kafka_tools import ToolRun, assert_same, lines, on_both, run_tool

pytestmark = [pytest.mark.jvm, pytest.mark.timeout(600)]

GROUPS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
CONSOLE_CONSUMER = "org.apache.kafka.tools.consumer.ConsoleConsumer"
DUMP_LOG = "kafka.tools.DumpLogSegments"


@pytest.fixture(scope="module")
def brokers(kafka_peer: KafkaPeer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Bootstrap addresses: one akfak subprocess and the module's Kafka broker."""
    akfak = start_process(tmp_path_factory.mktemp("akfak") / "data")
    yield {"akfak": akfak.bootstrap, "kafka": kafka_peer.bootstrap}
    akfak.stop()


#: the first test record's timestamp; the ith is i ms later, on both brokers
BASE_TIME = int(time.time() * 1000) - 3_600_000


def create_topic(brokers: dict[str, str], topic: str, partitions: int, records: int = 0) -> None:
    """Creates `topic` on both brokers, then writes `records` keyed records round-robin, each
    in a batch of its own and at BASE_TIME + i: the same offsets and timestamps on both."""
    for bootstrap in brokers.values():
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
        if records:
            producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
            for i in range(records):
                producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                                 partition=i % partitions, timestamp=BASE_TIME + i)
                producer.flush(30)
            assert producer.flush(30) == 0


def consume_all(bootstrap: str, topic: str, group: str, records: int, close: bool = True,
                **config: Any) -> Consumer:
    """A member of `group` reads `records` records of `topic` and commits; left in the group
    unless `close`.  `config`: more consumer settings, dots written as underscores."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "client.id": "cli",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         **{k.replace("_", "."): v for k, v in config.items()}})
    consumer.subscribe([topic])
    seen = 0
    while seen < records:
        message = consumer.poll(30)
        assert message is not None, f"{seen} of {records} records read"
        if not message.error():
            seen += 1
    consumer.commit(asynchronous=False)
    if close:
        consumer.close()
    return consumer


def masked(brokers: dict[str, str]) -> Callable[[str], str]:
    """A normalizer: ports, topic ids, member ids, times masked; runs of blanks made one."""
    def normalize(line: str) -> str:
        for bootstrap in brokers.values():
            line = line.replace(bootstrap, "<host:port>")
        line = re.sub(r"TopicId: \S+", "TopicId: <id>", line)
        line = re.sub(r"\b(\w+)-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}\b", r"\1-<member>", line)
        line = re.sub(r"\b1[0-9]{12}\b", "<time>", line)  # epoch milliseconds
        return " ".join(line.split())
    return normalize


# -- kafka-topics ---------------------------------------------------------------------------


def test_topics_tool(brokers: dict[str, str]) -> None:
    """`kafka-topics`: create (configs, partitions; refusals), list, describe by name and by id,
    the health filters, grow, refuse to shrink, delete."""
    norm = masked(brokers)
    topics = "org.apache.kafka.tools.TopicCommand"
    created = assert_same(on_both(brokers, "--create", "--topic", "cli-topics", "--partitions", "3",
                                  "--replication-factor", "1", "--config", "retention.ms=1000000",
                                  "--config", "cleanup.policy=compact", tool=topics))
    assert created == ["Created topic cli-topics."]
    refused = assert_same(on_both(brokers, "--create", "--topic", "cli-topics-rf", "--partitions", "1",
                                  "--replication-factor", "3", tool=topics))
    assert "only 1 broker(s) are registered" in refused[0]
    exists = assert_same(on_both(brokers, "--create", "--topic", "cli-topics", "--partitions", "1",
                                 tool=topics))
    assert exists[0] == "Error while executing topic command : Topic 'cli-topics' already exists."
    for name, config in (("bad name", "retention.ms=1"), ("..", "retention.ms=1"),
                         ("cli-topics-bad", "retention.ms=forever"), ("cli-topics-bad", "colour=blue")):
        refused = assert_same(on_both(brokers, "--create", "--topic", name, "--config", config, tool=topics))
        assert any(line.startswith("Error while executing topic command : ") for line in refused), refused
    listed = assert_same(on_both(brokers, "--list", "--exclude-internal", tool=topics))
    assert "cli-topics" in listed
    described = assert_same(on_both(brokers, "--describe", "--topic", "cli-topics", tool=topics), norm)
    assert described == [
        "Topic: cli-topics TopicId: <id> PartitionCount: 3 ReplicationFactor: 1 Configs: "
        "min.insync.replicas=1,cleanup.policy=compact,retention.ms=1000000",
        *(f"Topic: cli-topics Partition: {p} Leader: 1 Replicas: 1 Isr: 1 Elr: LastKnownElr:"
          for p in range(3))]
    for flag in ("--under-replicated-partitions", "--unavailable-partitions", "--under-min-isr-partitions"):
        assert assert_same(on_both(brokers, "--describe", flag, tool=topics)) == []
    assert assert_same(on_both(brokers, "--alter", "--topic", "cli-topics", "--partitions", "5",
                               tool=topics)) == []
    shrink = assert_same(on_both(brokers, "--alter", "--topic", "cli-topics", "--partitions", "2",
                                 tool=topics))
    assert shrink[0] == ("Error while executing topic command : The topic cli-topics currently has 5 "
                         "partition(s); 2 would not be an increase.")
    # by topic id: each broker's own id
    by_id = {}
    for name, bootstrap in brokers.items():
        first = run_tool(topics, "--bootstrap-server", bootstrap, "--describe", "--topic", "cli-topics")
        topic_id = re.search(r"TopicId: (\S+)", first.stdout).group(1)
        run = run_tool(topics, "--bootstrap-server", bootstrap, "--describe", "--topic-id", topic_id)
        assert run.returncode == 0, run.stderr
        by_id[name] = [norm(line) for line in lines(run)]
    assert by_id["akfak"] == by_id["kafka"]
    assert len(by_id["akfak"]) == 6 and "PartitionCount: 5" in by_id["akfak"][0]
    assert assert_same(on_both(brokers, "--delete", "--topic", "cli-topics", tool=topics)) == []
    for action in ("--delete", "--describe"):
        missing = assert_same(on_both(brokers, action, "--topic", "cli-topics-none", tool=topics))
        assert missing[0] == ("Error while executing topic command : Topic 'cli-topics-none' does not "
                              "exist as expected")


# -- kafka-consumer-groups ------------------------------------------------------------------


def test_consumer_groups_tool(brokers: dict[str, str]) -> None:
    """`kafka-consumer-groups` on an empty and a live group: list, describe (offsets, members,
    state), every kind of reset, deleting offsets and groups, and the refusals a live group gets."""
    norm = masked(brokers)
    create_topic(brokers, "cli-groups", 3, records=30)
    live: list[Consumer] = []
    try:
        for bootstrap in brokers.values():
            consume_all(bootstrap, "cli-groups", "cli-empty", 30)
            live.append(consume_all(bootstrap, "cli-groups", "cli-live", 30, close=False))
        groups = ["--group", "cli-empty", "--group", "cli-live"]
        listed = assert_same(on_both(brokers, "--list", "--state", tool=GROUPS), norm, ordered=False)
        assert {"cli-live Stable", "cli-empty Empty"} <= set(listed)
        offsets = assert_same(on_both(brokers, "--describe", *groups, "--offsets", tool=GROUPS), norm,
                              ordered=False)
        assert "cli-live cli-groups 2 10 10 0 cli-<member> /127.0.0.1 cli" in offsets
        assert "cli-empty cli-groups 0 10 10 0 - - -" in offsets
        assert "Consumer group 'cli-empty' has no active members." in offsets
        members = assert_same(on_both(brokers, "--describe", *groups, "--members", "--verbose",
                                      tool=GROUPS), norm, ordered=False)
        assert "cli-live cli-<member> /127.0.0.1 cli 3 - cli-groups:0,1,2 - -" in members
        state = assert_same(on_both(brokers, "--describe", *groups, "--state", tool=GROUPS), norm,
                            ordered=False)
        assert "cli-live <host:port> (1) range Stable 1" in state
        assert "cli-empty <host:port> (1) - Empty 0" in state
        missing = assert_same(on_both(brokers, "--describe", "--group", "cli-none", tool=GROUPS))
        assert missing[0] == ("Error: Executing consumer group command failed due to org.apache.kafka."
                              "common.errors.GroupIdNotFoundException: Group cli-none not found.")

        reset = ["--reset-offsets", "--group", "cli-empty"]
        busy = assert_same(on_both(brokers, "--reset-offsets", "--group", "cli-live", "--topic",
                                   "cli-groups", "--to-earliest", "--execute", tool=GROUPS))
        assert busy[0] == ("Error: Assignments can only be reset if the group 'cli-live' is inactive, "
                           "but the current state is Stable.")
        for how in (["--topic", "cli-groups", "--to-earliest", "--dry-run"],
                    ["--all-topics", "--shift-by", "-3", "--execute"],
                    ["--topic", "cli-groups:0,1", "--to-datetime", "2020-01-01T00:00:00.000", "--execute"],
                    ["--topic", "cli-groups", "--to-datetime", "2100-01-01T00:00:00.000", "--dry-run"],
                    ["--topic", "cli-groups", "--to-latest", "--execute"],
                    ["--topic", "cli-groups:2", "--to-offset", "4", "--execute"]):
            assert_same(on_both(brokers, *reset, *how, tool=GROUPS), norm, ordered=False)
        after = assert_same(on_both(brokers, "--describe", "--group", "cli-empty", tool=GROUPS), norm,
                            ordered=False)
        assert "cli-empty cli-groups 2 4 10 6 - - -" in after

        deleted = assert_same(on_both(brokers, "--delete-offsets", "--group", "cli-empty", "--topic",
                                      "cli-groups:0", tool=GROUPS), norm)
        assert deleted == ["Request succeeded for deleting offsets from group cli-empty.",
                           "TOPIC PARTITION STATUS", "cli-groups 0 Successful"]
        subscribed = assert_same(on_both(brokers, "--delete-offsets", "--group", "cli-live", "--topic",
                                         "cli-groups", tool=GROUPS), norm, ordered=False)
        assert "Error: Encountered some partition-level error, see the follow-up details." in subscribed
        not_empty = assert_same(on_both(brokers, "--delete", "--group", "cli-live", tool=GROUPS))
        assert "GroupNotEmptyException" in not_empty[-1]
        assert assert_same(on_both(brokers, "--delete", "--group", "cli-empty", "--group", "cli-none",
                                   tool=GROUPS), ordered=False) == sorted([
            "Error: Deletion of some consumer groups failed:",
            "* Group 'cli-none' could not be deleted due to: org.apache.kafka.common.errors."
            "GroupIdNotFoundException: The group id does not exist.",
            "These consumer groups were deleted successfully: 'cli-empty'"])
    finally:
        for consumer in live:
            consumer.close()


def test_consumer_groups_tool_with_the_consumer_protocol(brokers: dict[str, str]) -> None:
    """`kafka-consumer-groups` on groups of the consumer protocol (KIP-848, confluent-kafka with
    `group.protocol=consumer`): list, describe (offsets, members, state), reset, delete."""
    norm = masked_member(masked(brokers))
    create_topic(brokers, "cli-kip848", 3, records=30)
    live: list[Consumer] = []
    try:
        for bootstrap in brokers.values():
            consume_all(bootstrap, "cli-kip848", "cli-kip848-empty", 30, group_protocol="consumer")
            live.append(consume_all(bootstrap, "cli-kip848", "cli-kip848-live", 30, close=False,
                                    group_protocol="consumer"))
        groups = ["--group", "cli-kip848-empty", "--group", "cli-kip848-live"]
        listed = assert_same(on_both(brokers, "--list", "--state", "--type", tool=GROUPS), norm,
                             ordered=False)
        assert {"cli-kip848-live Consumer Stable", "cli-kip848-empty Consumer Empty"} <= set(listed)
        offsets = assert_same(on_both(brokers, "--describe", *groups, "--offsets", tool=GROUPS), norm,
                              ordered=False)
        assert "Consumer group 'cli-kip848-empty' has no active members." in offsets
        assert_same(on_both(brokers, "--describe", *groups, "--members", "--verbose", tool=GROUPS),
                    norm, ordered=False)
        assert_same(on_both(brokers, "--describe", *groups, "--members", tool=GROUPS),
                    norm, ordered=False)
        state = assert_same(on_both(brokers, "--describe", *groups, "--state", "--verbose", tool=GROUPS),
                            norm, ordered=False)
        assert any(line.startswith("cli-kip848-live <host:port> (1)") for line in state), state
        busy = assert_same(on_both(brokers, "--reset-offsets", "--group", "cli-kip848-live", "--topic",
                                   "cli-kip848", "--to-earliest", "--execute", tool=GROUPS))
        assert "the current state is Stable" in busy[0]
        reset = assert_same(on_both(brokers, "--reset-offsets", "--group", "cli-kip848-empty",
                                    "--topic", "cli-kip848:1", "--to-offset", "4", "--execute",
                                    tool=GROUPS), norm, ordered=False)
        assert "cli-kip848-empty cli-kip848 1 4" in reset
        not_empty = assert_same(on_both(brokers, "--delete", "--group", "cli-kip848-live", tool=GROUPS))
        assert "GroupNotEmptyException" in not_empty[-1]
        assert assert_same(on_both(brokers, "--delete", "--group", "cli-kip848-empty", tool=GROUPS)) == [
            "Deletion of requested consumer groups ('cli-kip848-empty') was successful."]
    finally:
        for consumer in live:
            consumer.close()


def masked_member(norm: Callable[[str], str]) -> Callable[[str], str]:
    """`norm`, and the consumer protocol's member ids (22 characters of base64, which the
    client makes: librdkafka's standard alphabet, the Java client's URL-safe one) masked."""
    return lambda line: re.sub(r"(?<![\w+/-])[A-Za-z0-9+/_-]{22}(?![\w+/-])", "<member>", norm(line))


# -- kafka-get-offsets, kafka-delete-records ------------------------------------------------


def test_get_offsets_and_delete_records_tools(brokers: dict[str, str], tmp_path: Path) -> None:
    """`kafka-get-offsets` by special time and by timestamp; `kafka-delete-records` from a JSON
    plan (one offset past the end), after which the earliest offsets moved."""
    create_topic(brokers, "cli-offsets", 3, records=30)
    latest = assert_same(on_both(brokers, "--topic", "cli-offsets", "--time", "-1", tool="GetOffsetShell"))
    assert latest == ["cli-offsets:0:10", "cli-offsets:1:10", "cli-offsets:2:10"]
    by_time = {"-2": 0, "-3": 9, "-4": 0, str(BASE_TIME + 15): 5}
    for at, offset in by_time.items():  # earliest, max timestamp, earliest local, by timestamp
        found = assert_same(on_both(brokers, "--topic-partitions", "cli-offsets:2", "--time", at,
                                    tool="GetOffsetShell"))
        assert found == [f"cli-offsets:2:{offset}"], at
    # -5 (earliest tiered) has no answer without tiered storage; past the end neither
    for at in ("-5", str(BASE_TIME + 100)):
        assert assert_same(on_both(brokers, "--topic", "cli-offsets", "--time", at,
                                   tool="GetOffsetShell")) == []
    assert_same(on_both(brokers, "--topic-partitions", "cli-offsets:0,cli-none:1", tool="GetOffsetShell"))
    plan = tmp_path / "delete.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "cli-offsets", "partition": 0, "offset": 4},
        {"topic": "cli-offsets", "partition": 1, "offset": -1},
        {"topic": "cli-offsets", "partition": 2, "offset": 99}]}))
    deleted = assert_same(on_both(brokers, "--offset-json-file", str(plan), tool="DeleteRecordsCommand"),
                          ordered=False)  # partitions in a hash map's order
    assert deleted == sorted([
        "Executing records delete operation", "Records delete operation completed:",
        "partition: cli-offsets-0\tlow_watermark: 4", "partition: cli-offsets-1\tlow_watermark: 10",
        "partition: cli-offsets-2\terror: org.apache.kafka.common.errors.OffsetOutOfRangeException: "
        "The requested offset is not within the range of offsets maintained by the server."])
    earliest = assert_same(on_both(brokers, "--topic", "cli-offsets", "--time", "-2", tool="GetOffsetShell"))
    assert earliest == ["cli-offsets:0:4", "cli-offsets:1:10", "cli-offsets:2:0"]


# -- kafka-broker-api-versions --------------------------------------------------------------

#: APIs Kafka 4.1.1 serves and akfak deliberately does not (UNSUPPORTED on akfak): none now.
NOT_SERVED: set[str] = set()
#: akfak's versions where they go past Kafka 4.1.1's (the newer versions akfak implements; the
#: 4.1.1 tool then uses its own highest).
NEWER = {"ListOffsets(2)": "1 to 11 [usable: 10]", "OffsetCommit(8)": "2 to 10 [usable: 10]",
         "OffsetFetch(9)": "1 to 10 [usable: 10]"}


def test_broker_api_versions_tool(brokers: dict[str, str]) -> None:
    """`kafka-broker-api-versions`: the same APIs at the same versions, but NOT_SERVED and NEWER."""
    runs = on_both(brokers, tool="BrokerApiVersionsCommand")
    apis = {}
    for name, run in runs.items():
        assert run.returncode == 0, run.stderr
        text = run.stdout.splitlines()
        assert text[0] == f"{brokers[name]} (id: 1 rack: null isFenced: false) -> ("
        assert text[-1] == ")"
        apis[name] = dict(line.strip().rstrip(",").split(": ", 1) for line in text[1:-1])
    akfak, kafka = apis["akfak"], apis["kafka"]
    assert akfak.keys() == kafka.keys()
    differing = {api: (akfak[api], kafka[api]) for api in akfak if akfak[api] != kafka[api]}
    for api, (ours, theirs) in differing.items():
        if ours == "UNSUPPORTED":
            assert api in NOT_SERVED, f"akfak does not serve {api} ({theirs} on Kafka)"
        else:
            assert NEWER.get(api) == ours, f"{api}: akfak {ours}, Kafka {theirs}"


# -- kafka-transactions ---------------------------------------------------------------------


def wait_for_end_offset(bootstrap: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "cli-watermarks"})
    try:
        deadline = time.monotonic() + 30
        while consumer.get_watermark_offsets(TopicPartition(topic, 0), 10)[1] < offset:
            assert time.monotonic() < deadline, f"{topic} never reached offset {offset}"
            time.sleep(0.05)
    finally:
        consumer.close()


def transaction(bootstrap: str, transactional_id: str, topic: str, commit: bool) -> Producer:
    """A transaction writing one record to partition 0 of `topic`, committed or left open."""
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                         "transaction.timeout.ms": 600000})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, key=b"k", value=b"v", partition=0)
    assert producer.flush(30) == 0
    if commit:
        producer.commit_transaction(30)
    return producer


def test_transactions_tool(brokers: dict[str, str]) -> None:
    """`kafka-transactions list / describe / describe-producers / find-hanging` with one
    committed and one open transaction."""
    norm = masked(brokers)
    create_topic(brokers, "cli-txn", 1)
    open_ones = []
    for bootstrap in brokers.values():
        transaction(bootstrap, "cli-done-txn", "cli-txn", commit=True)
        # Kafka writes the commit marker after answering EndTxn, akfak before
        wait_for_end_offset(bootstrap, "cli-txn", 2)
        open_ones.append(transaction(bootstrap, "cli-open-txn", "cli-txn", commit=False))
    try:
        listed = assert_same(on_both(brokers, "list", tool="TransactionsCommand"), norm, ordered=False)
        assert "cli-open-txn 1 1 Ongoing" in listed and "cli-done-txn 1 0 CompleteCommit" in listed

        def durations(line: str) -> str:  # TransactionDurationMs follows the start time
            return re.sub(r"<time> \d+", "<time> <ms>", norm(line))
        described = assert_same(on_both(brokers, "describe", "--transactional-id", "cli-open-txn",
                                        tool="TransactionsCommand"), durations)
        assert described[1] == "1 cli-open-txn 1 0 Ongoing 600000 <time> <ms> cli-txn-0"
        assert_same(on_both(brokers, "describe", "--transactional-id", "cli-done-txn",
                            tool="TransactionsCommand"), durations)
        missing = assert_same(on_both(brokers, "describe", "--transactional-id", "cli-none",
                                      tool="TransactionsCommand"))
        assert "could not be found" in missing[0]
        producers_of = assert_same(on_both(brokers, "describe-producers", "--topic", "cli-txn",
                                           "--partition", "0", tool="TransactionsCommand"), norm)
        assert producers_of[1:] == ["0 0 0 0 <time> None", "1 0 -1 0 <time> 2"]
        for hanging in (["--broker-id", "1"], ["--topic", "cli-txn", "--max-transaction-timeout", "0"]):
            found = assert_same(on_both(brokers, "find-hanging", *hanging, tool="TransactionsCommand"), norm)
            assert len(found) == 1  # the header: none hanging
    finally:
        for producer in open_ones:
            producer.abort_transaction(30)


# -- console, verifiable and perf producers and consumers -----------------------------------


def test_console_producer_and_consumer(brokers: dict[str, str]) -> None:
    """The console producer writes keys and headers the console consumer prints back."""
    create_topic(brokers, "cli-console", 1)
    records = "".join(f"h1:a{i},h2:b{i}\tkey{i}|value {i}\n" for i in range(5))
    produced = on_both(brokers, "--topic", "cli-console", "--property", "parse.key=true",
                       "--property", "key.separator=|", "--property", "parse.headers=true",
                       tool="ConsoleProducer", input=records)
    assert assert_same(produced) == []
    consumed = assert_same(on_both(
        brokers, "--topic", "cli-console", "--from-beginning", "--max-messages", "5",
        "--property", "print.key=true", "--property", "print.headers=true",
        "--property", "print.offset=true", "--property", "print.partition=true",
        tool=CONSOLE_CONSUMER))
    assert consumed == [*(f"Partition:0\tOffset:{i}\th1:a{i},h2:b{i}\tkey{i}\tvalue {i}" for i in range(5)),
                        "Processed a total of 5 messages"]
    from_offset = assert_same(on_both(brokers, "--topic", "cli-console", "--partition", "0", "--offset", "3",
                                      "--max-messages", "2", tool=CONSOLE_CONSUMER))
    assert from_offset == ["value 3", "value 4", "Processed a total of 2 messages"]
    in_group = assert_same(on_both(brokers, "--topic", "cli-console", "--group", "cli-console",
                                   "--from-beginning", "--max-messages", "5", tool=CONSOLE_CONSUMER))
    assert in_group[-1] == "Processed a total of 5 messages"
    committed = assert_same(on_both(brokers, "--describe", "--group", "cli-console", tool=GROUPS),
                            masked(brokers))
    assert committed[1:] == ["cli-console cli-console 0 5 5 0 - - -",
                             "Consumer group 'cli-console' has no active members."]


def events(run: ToolRun) -> list[dict[str, Any]]:
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def test_verifiable_producer_and_consumer(brokers: dict[str, str]) -> None:
    """The verifiable producer has every record acked; the verifiable consumer reads and commits
    them all."""
    create_topic(brokers, "cli-verifiable", 2)
    produced = on_both(brokers, "--topic", "cli-verifiable", "--max-messages", "200", "--acks", "-1",
                       tool="VerifiableProducer")
    for run in produced.values():
        done = events(run)
        assert sum(e["name"] == "producer_send_success" for e in done) == 200
        assert not [e for e in done if e["name"] == "producer_send_error"]
        assert done[-1]["name"] == "tool_data" and done[-1]["sent"] == done[-1]["acked"] == 200
    consumed = on_both(brokers, "--topic", "cli-verifiable", "--group-id", "cli-verifiable",
                       "--max-messages", "200", "--reset-policy", "earliest", tool="VerifiableConsumer")
    for run in consumed.values():
        done = events(run)
        assert sum(e["count"] for e in done if e["name"] == "records_consumed") == 200
        commits = [e for e in done if e["name"] == "offsets_committed"]
        assert commits and all(e["success"] for e in commits)
        assert done[-1]["name"] == "shutdown_complete"


def test_perf_tools(brokers: dict[str, str]) -> None:
    """The producer and consumer perf tests run to the end with sane numbers."""
    create_topic(brokers, "cli-perf", 1)
    produced = on_both(brokers, "--topic", "cli-perf", "--num-records", "20000", "--record-size", "100",
                       "--throughput", "-1", "--producer-props", "bootstrap.servers={bootstrap}", "acks=all",
                       tool="ProducerPerformance", bootstrap_option=None)
    for name, run in produced.items():
        assert run.returncode == 0, run.stderr
        summary = re.search(r"^20000 records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg "
                            r"latency, ([\d.]+) ms max latency", run.stdout, re.M)
        assert summary, f"{name}: {run.stdout}"
        assert float(summary.group(1)) > 100 and float(summary.group(4)) >= float(summary.group(3))
    consumed = on_both(brokers, "--topic", "cli-perf", "--messages", "20000", "--hide-header",
                       tool="ConsumerPerformance")
    for name, run in consumed.items():
        assert run.returncode == 0, run.stderr
        # start, end, MB, MB/sec, messages, messages/sec, rebalance ms, fetch ms, fetch MB/s, fetch msg/s
        row = run.stdout.strip().splitlines()[-1].split(", ")
        assert float(row[2]) == pytest.approx(20000 * 100 / 1024 / 1024, rel=0.01), (name, row)
        assert int(row[4]) == 20000 and float(row[5]) > 0, (name, row)


# -- kafka-dump-log -------------------------------------------------------------------------

#: what DumpLogSegments prints when a file is not as Kafka writes it
DUMP_TROUBLE = re.compile(r"(?i)mismatch|not found in the log|exception|corrupt|isvalid: false|invalid bytes"
                          r"|out of order|ignoring unknown|failed|error|non-consecutive|could not")


def test_dump_log_over_akfak_directory(broker_process: Any, tmp_path: Path) -> None:
    """Kafka's kafka-dump-log reads every segment, index and producer snapshot an akfak broker
    wrote (records, a group's commits, transactions committed and aborted, then a clean stop)
    and finds nothing wrong, the internal topics decoded."""
    data = tmp_path / "dump"
    akfak = broker_process(data_dir=data)
    create_topic({"akfak": akfak.bootstrap}, "cli-dump", 2, records=20)
    consume_all(akfak.bootstrap, "cli-dump", "cli-dump", 20)
    transaction(akfak.bootstrap, "cli-dump-txn", "cli-dump", commit=True)
    transaction(akfak.bootstrap, "cli-dump-aborted", "cli-dump", commit=False).abort_transaction(30)
    akfak.stop()
    kinds = {"__consumer_offsets": ["--offsets-decoder"],
             "__cluster_metadata": ["--cluster-metadata-decoder"],
             "__transaction_state": ["--transaction-log-decoder"]}
    files: dict[str, list[str]] = {}
    for path in sorted(data.glob("*/*")):
        if path.suffix in (".log", ".index", ".timeindex", ".txnindex", ".snapshot"):
            kind = next((k for k in kinds if path.parent.name.startswith(k + "-")), "")
            files.setdefault(kind, []).append(str(path))
    assert set(files) == {"", *kinds}
    assert {Path(path).suffix for path in files[""]} >= {".txnindex", ".snapshot"}, files[""]
    expect = {"": ["key: k0 payload: v0", "endTxnMarker: COMMIT", "endTxnMarker: ABORT",
                   "producerId: "],  # the last from a producer snapshot
              "__consumer_offsets": ['"group":"cli-dump"'],
              "__cluster_metadata": ['"type":"TOPIC_RECORD"'],
              # CompleteCommit, CompleteAbort
              "__transaction_state": ['"transactionalId":"cli-dump-txn"', '"transactionStatus":4',
                                      '"transactionalId":"cli-dump-aborted"', '"transactionStatus":5']}
    for kind, paths in files.items():
        run = run_tool(DUMP_LOG, "--deep-iteration", "--index-sanity-check", "--print-data-log",
                       *kinds.get(kind, []), "--files", ",".join(paths), timeout=180)
        assert run.returncode == 0, run.stderr
        output = run.stdout + run.stderr
        trouble = [line for line in output.splitlines() if DUMP_TROUBLE.search(line)
                   and "payload" not in line]
        assert not trouble, "\n".join(trouble[:20])
        assert output.count("Dumping ") == len(paths)
        for text in expect[kind]:
            assert text in output, f"{kind}: no {text!r} in:\n{output[-3000:]}"
