"""The Go clients against akfak: franz-go (with kadm), IBM/sarama and segmentio/kafka-go.

The programs are tests/go (one binary, `akfak-clients CLIENT COMMAND key=value...`, built by
tests/programs.py). The module shares one akfak subprocess (disk storage); each test uses topics
and groups of its own. With AKFAK_COMPARE_KAFKA=1 every test also runs against a real Kafka 4.1.1
(tests/kafka_peer.py), which is how what the tests expect was checked.
"""

from __future__ import annotations

import pytest

from tests import client_scenarios as scenarios
from tests.client_scenarios import BROKERS, Cluster, akfak, akfak_fast_groups, kafka, name  # noqa: F401 (fixtures)
from tests.programs import CODECS, Member, check_records, go_program, key, members, run, wait_for

pytestmark = pytest.mark.timeout(300)  # the first test may wait for the Go build

CLIENTS = ["franz", "sarama", "kafkago"]


@pytest.fixture(params=BROKERS)
def cluster(request: pytest.FixtureRequest) -> Cluster:
    go_program()  # build (or skip) before any broker starts
    return request.getfixturevalue(request.param)


def program(client: str) -> scenarios.Program:
    return lambda command: [*go_program(), client, command]


# what each client reports for Kafka's error codes
INVALID_CONFIG = {"franz": "INVALID_CONFIG", "sarama": "INVALID_CONFIG", "kafkago": "INVALID_CONFIGURATION"}


@pytest.mark.parametrize("client", CLIENTS)
def test_topic_admin(cluster: Cluster, client: str, request: pytest.FixtureRequest) -> None:
    """Create (with a config), create again, list, describe, describe and alter configs, an unknown
    config, add partitions, delete, delete again: through each client's admin API."""
    topic = name(request, "admin")
    out = run(program(client)("admin"), f"bootstrap={cluster.bootstrap}", f"topic={topic}").check()
    assert out.last("create-again")["error"] == "TOPIC_ALREADY_EXISTS"
    assert topic in out.of_kind("listed")[0]["topics"]
    assert out.last("described")["leaders"] == {"0": 1, "1": 1, "2": 1}
    before, after = out.of_kind("configs")[:2]
    assert before["configs"]["retention.ms"]["value"] == "3600000"
    assert before["configs"]["cleanup.policy"]["value"] == "delete"
    assert after["configs"]["retention.ms"]["value"] == "7200000"
    assert after["configs"]["cleanup.policy"]["value"] == "compact"
    assert after["configs"]["segment.bytes"]["value"] == "1073741824"
    assert out.last("alter-unknown")["error"] == INVALID_CONFIG[client]
    assert out.last("partitions")["count"] == 5
    assert out.last("delete-again")["error"] == "UNKNOWN_TOPIC_OR_PARTITION"
    assert topic not in (out.last("listed")["topics"] or [])  # Go prints an empty list as null
    if client == "franz":
        assert before["configs"]["retention.ms"]["source"] == "DYNAMIC_TOPIC_CONFIG"
        assert before["configs"]["cleanup.policy"]["source"] == "DEFAULT_CONFIG"
    if client == "sarama":
        # the legacy AlterConfigs replaced the whole set: retention.ms is back to its default
        legacy = out.of_kind("configs")[2]["configs"]
        assert legacy["retention.ms"] == {"value": "604800000", "source": "Default"}
        assert legacy["cleanup.policy"] == {"value": "compact", "source": "Topic"}
        assert out.last("shrink-partitions")["error"] == "INVALID_PARTITIONS"
        assert out.last("cluster") == {"kind": "cluster", "brokers": 1, "controller": 1}
        (logdir,) = out.last("log-dirs")["dirs"]
        # Kafka creates the replicas of added partitions a moment after CreatePartitions answers
        assert (logdir["broker"], logdir["error"]) == (1, "") and 3 <= logdir["partitions"] <= 5


@pytest.mark.parametrize("client", CLIENTS)
def test_codecs(cluster: Cluster, client: str, request: pytest.FixtureRequest) -> None:
    """Every codec each client has, produced and read back byte-identical; stored as produced."""
    scenarios.codec_round_trip(program(client), cluster.bootstrap, cluster.port, name(request, "codec"),
                               CODECS)


@pytest.mark.parametrize("client", ["franz", "sarama"])  # kafka-go has no idempotent producer
def test_idempotent_produce(cluster: Cluster, client: str, request: pytest.FixtureRequest) -> None:
    topic = name(request, "idem")
    prog = program(client)
    scenarios.create(prog, cluster.bootstrap, **{topic: 3})
    for start in (0, 150):  # two producers: two producer ids, offsets go on
        produced = scenarios.produce(prog, cluster.bootstrap, topic, "idempotent=1", "partitions=3",
                                     f"start={start}", "count=150", "codec=lz4")
        offsets = sorted((line["partition"], line["offset"]) for line in produced.of_kind("produced"))
        assert offsets == sorted((p, start // 3 + n) for p in range(3) for n in range(50))
        if client == "franz":
            assert {line["producer_id"] for line in produced.of_kind("produced")} != {-1}
    check_records(scenarios.consume(prog, cluster.bootstrap, topic, 300), topic, range(300), 3)


@pytest.mark.parametrize("client", CLIENTS)
def test_group_with_restart(cluster: Cluster, client: str, request: pytest.FixtureRequest) -> None:
    """A two-member group over 3 partitions, one member restarted: every record processed, the
    committed offsets at the end of the log; the group listed and described by the admin API."""
    topic, group = name(request, "grp"), name(request, "group")
    prog = program(client)
    scenarios.create(prog, cluster.bootstrap, **{topic: 3})
    lines = scenarios.group_restart(prog, cluster.bootstrap, topic, group)["groups"]
    listed = next(line for line in lines if line["kind"] == "listed-groups")["groups"]
    assert group in listed
    if client == "franz":
        assert listed[group] == {"state": "Empty", "protocol_type": "consumer", "group_type": "classic"}
        assert next(line for line in lines if line["kind"] == "lag")["total"] == 0
    if client == "sarama":
        assert listed[group] == "consumer"


def test_franz_cluster_apis(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """kadm: DescribeCluster, DescribeLogDirs, ListOffsets (start, end, committed, max timestamp),
    DeleteRecords (and beyond the end)."""
    topic = name(request, "cluster")
    prog = program("franz")
    scenarios.create(prog, cluster.bootstrap, **{topic: 1})
    scenarios.produce(prog, cluster.bootstrap, topic, "count=20")
    out = run(prog("cluster"), f"bootstrap={cluster.bootstrap}", f"topic={topic}", "delete-to=5").check()
    described = out.last("cluster")
    assert described["brokers"] == [{"id": 1, "host": "127.0.0.1", "port": cluster.port}]
    assert described["controller"] == 1 and described["cluster_id"]
    assert out.last("metadata")["cluster_id"] == described["cluster_id"]
    (logdir,) = out.last("log-dirs")["dirs"]
    assert logdir["error"] == "" and logdir["broker"] == 1
    assert logdir["sizes"]["0"] > 20 * 100  # 20 records of ~150 bytes
    assert 0 < logdir["usable_bytes"] <= logdir["total_bytes"]
    listed = out.last("list-offsets")
    assert (listed["start"], listed["end"], listed["committed"]) == ({"0": 0}, {"0": 20}, {"0": 20})
    assert 0 <= listed["max_timestamp"]["0"] < 20
    deleted = out.last("deleted-records")
    assert deleted["low_watermarks"] == {"0": 5} and deleted["start"] == {"0": 5}
    assert deleted["beyond_end"] == "OFFSET_OUT_OF_RANGE"
    check_records(scenarios.consume(prog, cluster.bootstrap, topic, 15), topic, range(5, 20))


def test_franz_group_transact_session(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """A GroupTransactSession copies a topic (consumed offsets committed in each transaction), then
    a transaction is aborted: read_committed sees the copies only, read_uncommitted all."""
    source, copy, group = name(request, "txn-in"), name(request, "txn-out"), name(request, "txn-group")
    prog = program("franz")
    scenarios.create(prog, cluster.bootstrap, **{source: 3, copy: 3})
    scenarios.produce(prog, cluster.bootstrap, source, "partitions=3", "count=90", "codec=zstd")
    out = run(prog("txn"), f"bootstrap={cluster.bootstrap}", f"input={source}", f"output={copy}",
              f"group={group}", f"txn-id={group}", "count=90", "aborted=12", "partitions=3").check()
    assert out.last("copied")["records"] == 90
    committed = scenarios.consume(prog, cluster.bootstrap, copy, 90, "isolation=committed")
    assert sorted(line["key"] for line in committed.of_kind("record")) == sorted(key(i) for i in range(90))
    everything = scenarios.consume(prog, cluster.bootstrap, copy, 102)
    assert len(everything.of_kind("record")) == 102
    groups = scenarios.describe_group(prog, cluster.bootstrap, group, source).check()
    offsets = groups.last("offsets")["offsets"]
    assert offsets == {source: {"0": 30, "1": 30, "2": 30}}


def test_sarama_transactions(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    topic = name(request, "txn")
    prog = program("sarama")
    scenarios.create(prog, cluster.bootstrap, **{topic: 2})
    run(prog("txn"), f"bootstrap={cluster.bootstrap}", f"topic={topic}", f"txn-id={topic}", "count=40",
        "aborted=10", "partitions=2").check()
    committed = scenarios.consume(prog, cluster.bootstrap, topic, 40, "isolation=committed")
    check_records(committed, topic, range(40), 2)
    assert len(scenarios.consume(prog, cluster.bootstrap, topic, 50).of_kind("record")) == 50


def test_sarama_delete_records(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    topic, group = name(request, "delrec"), name(request, "delrec-group")
    prog = program("sarama")
    scenarios.create(prog, cluster.bootstrap, **{topic: 1})
    scenarios.produce(prog, cluster.bootstrap, topic, "count=10")
    out = run(prog("groups"), f"bootstrap={cluster.bootstrap}", f"group={group}", f"delete-records={topic}")
    assert out.check().last("deleted-records") == {"kind": "deleted-records", "beyond_end": True}
    check_records(scenarios.consume(prog, cluster.bootstrap, topic, 8), topic, range(2, 10))


def test_franz_consumer_protocol_group(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """franz-go with kgo.ServerSideBalancer: a KIP-848 group of two over 4 partitions, described
    with ConsumerGroupDescribe (tests/client_scenarios.py consumer_protocol_group)."""
    scenarios.consumer_protocol_group(program("franz"), cluster.bootstrap, name(request, "kip848"),
                                      name(request, "kip848-group"))


def test_franz_consumer_protocol_scale_out_and_crash(request: pytest.FixtureRequest) -> None:
    """franz-go (kgo.ServerSideBalancer): a KIP-848 group grows from one member to four over 12
    partitions, only moving partitions revoked, then loses one to SIGKILL
    (tests/client_scenarios.py consumer_protocol_scale_out)."""
    go_program()  # build (or skip) before the broker starts
    fast: Cluster = request.getfixturevalue("akfak_fast_groups")
    scenarios.consumer_protocol_scale_out(program("franz"), fast.bootstrap, "kip848-scale",
                                          "kip848-scale-g", whole_sets=False)


def test_franz_consumer_protocol_regex_subscription(request: pytest.FixtureRequest) -> None:
    """franz-go with KIP-848: a regex subscription (kgo.ConsumeRegex, sent as
    SubscribedTopicRegex) picks up a topic created later and reads it.  (Static membership is
    not shown with franz-go 1.22.3: its close leaves the member at its epoch rather than -2,
    on Kafka 4.1.1 as on akfak, so a restart with the same instance id is refused with
    UNRELEASED_INSTANCE_ID until the session ends.)"""
    go_program()
    bootstrap = request.getfixturevalue("akfak_fast_groups").bootstrap
    franz = program("franz")
    scenarios.create(franz, bootstrap, **{"frx-one": 2})

    def owned(m: Member) -> set[tuple[str, int]]:
        now: set[tuple[str, int]] = set()
        for line in list(m.lines):
            parts = {(t, p) for t, ps in (line.get("partitions") or {}).items() for p in ps}
            if line.get("kind") == "assigned":
                now |= parts
            elif line.get("kind") == "revoked":
                now -= parts
        return now

    with members() as running:
        rx = Member(franz("member"), f"bootstrap={bootstrap}", "protocol=consumer", "group=frx-g",
                    "topic=^frx-.*", "regex=1", "name=rx")
        running.append(rx)
        wait_for(lambda: owned(rx) == {("frx-one", 0), ("frx-one", 1)}, 60, "frx-one", rx.describe)
        scenarios.create(franz, bootstrap, **{"frx-two": 3})
        scenarios.produce(franz, bootstrap, "frx-two", "partitions=3", "count=30")
        wait_for(lambda: {("frx-two", p) for p in range(3)} <= owned(rx), 60, "frx-two", rx.describe)
        wait_for(lambda: len([r for r in rx.of_kind("record") if r["topic"] == "frx-two"]) == 30, 60,
                 "frx-two's records", rx.describe)
        assert rx.stop().returncode == 0
