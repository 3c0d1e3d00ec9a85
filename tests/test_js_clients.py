"""The JavaScript clients against akfak: kafkajs 2.2.4 and @platformatic/kafka 2.12.1.

The programs are tests/js (`node clients.mjs CLIENT COMMAND key=value...`, on the Node.js 22 that
`npm ci` installs there: tests/programs.py); the fixtures and scenarios are those of the Go
clients (tests/client_scenarios.py).
"""

from __future__ import annotations

import pytest

from tests import client_scenarios as scenarios
from tests.client_scenarios import BROKERS, Cluster, akfak, akfak_fast_groups, kafka, name  # noqa: F401 (fixtures)
from tests.programs import CODECS, check_records, js_program, key, run

pytestmark = pytest.mark.timeout(300)  # the first test may wait for npm ci

CLIENTS = ["kafkajs", "platformatic"]


@pytest.fixture(params=BROKERS)
def cluster(request: pytest.FixtureRequest) -> Cluster:
    js_program("clients")  # install (or skip) before any broker starts
    return request.getfixturevalue(request.param)


def program(client: str) -> scenarios.Program:
    return lambda command: [*js_program("clients"), client, command]


@pytest.mark.parametrize("client", CLIENTS)
def test_topic_admin(cluster: Cluster, client: str, request: pytest.FixtureRequest) -> None:
    """Create (with a config), create again, list, describe and alter configs, an unknown config,
    add partitions (and fewer), delete, delete again: through each client's admin API."""
    topic = name(request, "admin")
    out = run(program(client)("admin"), f"bootstrap={cluster.bootstrap}", f"topic={topic}").check()
    assert topic in out.of_kind("listed")[0]["topics"]
    before, after = out.of_kind("configs")[:2]
    assert before["configs"]["retention.ms"]["value"] == "3600000"
    assert before["configs"]["retention.ms"]["source"] == 1  # DYNAMIC_TOPIC_CONFIG
    assert before["configs"]["cleanup.policy"]["value"] == "delete"
    assert before["configs"]["cleanup.policy"]["source"] == 5  # DEFAULT_CONFIG
    assert after["configs"]["retention.ms"]["value"] == "7200000"
    assert after["configs"]["cleanup.policy"]["value"] == "compact"
    assert after["configs"]["segment.bytes"]["value"] == "1073741824"
    assert out.last("alter-unknown")["error"] == "INVALID_CONFIG"
    assert out.last("shrink-partitions")["error"] == "INVALID_PARTITIONS"
    assert out.last("delete-again")["error"] == "UNKNOWN_TOPIC_OR_PARTITION"
    assert topic not in out.last("listed")["topics"]
    if client == "kafkajs":
        # createTopics answers false for a topic that exists
        assert out.last("created")["created"] is True and out.last("create-again")["created"] is False
        assert out.last("described")["leaders"] == {"0": 1, "1": 1, "2": 1}
        assert out.last("partitions")["count"] == 5
        cluster_info = out.last("cluster")
        assert cluster_info["brokers"] == [{"nodeId": 1, "host": "127.0.0.1", "port": cluster.port}]
        assert cluster_info["controller"] == 1
    else:
        assert out.last("create-again")["error"] == "TOPIC_ALREADY_EXISTS"
        (broker,) = out.last("log-dirs")["dirs"]
        (logdir,) = broker["dirs"]
        # Kafka creates the replicas of added partitions a moment after CreatePartitions answers
        assert broker["broker"] == 1 and {0, 1, 2} <= set(logdir["partitions"]) <= {0, 1, 2, 3, 4}
        assert 0 < logdir["usable_bytes"] <= logdir["total_bytes"]


@pytest.mark.parametrize("client", CLIENTS)
def test_codecs(cluster: Cluster, client: str, request: pytest.FixtureRequest) -> None:
    """Every codec, produced and read back byte-identical; stored as produced."""
    scenarios.codec_round_trip(program(client), cluster.bootstrap, cluster.port, name(request, "codec"),
                               CODECS)


@pytest.mark.parametrize("client", CLIENTS)
def test_idempotent_produce(cluster: Cluster, client: str, request: pytest.FixtureRequest) -> None:
    topic = name(request, "idem")
    prog = program(client)
    scenarios.create(prog, cluster.bootstrap, **{topic: 3})
    for start in (0, 150):
        produced = scenarios.produce(prog, cluster.bootstrap, topic, "idempotent=1", "partitions=3",
                                     f"start={start}", "count=150", "codec=gzip")
        offsets = sorted((line["partition"], line["offset"]) for line in produced.of_kind("produced"))
        assert offsets == sorted((p, start // 3 + n) for p in range(3) for n in range(50))
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
    assert listed[group]["protocol_type"] == "consumer"
    ends = next(line for line in lines if line["kind"] == "end-offsets")["end"]
    assert ends == {"0": 60, "1": 60, "2": 60}


@pytest.mark.parametrize("client", CLIENTS)
def test_transactions(cluster: Cluster, client: str, request: pytest.FixtureRequest) -> None:
    """A committed transaction, then an aborted one: read_committed sees the first only."""
    topic = name(request, "txn")
    prog = program(client)
    scenarios.create(prog, cluster.bootstrap, **{topic: 2})
    run(prog("txn"), f"bootstrap={cluster.bootstrap}", f"topic={topic}", f"txn-id={topic}", "count=40",
        "aborted=10", "partitions=2").check()
    check_records(scenarios.consume(prog, cluster.bootstrap, topic, 40, "isolation=committed"), topic,
                  range(40), 2)
    everything = scenarios.consume(prog, cluster.bootstrap, topic, 50).of_kind("record")
    assert sorted(line["key"] for line in everything) == sorted(
        [key(i) for i in range(40)] + [key(i) for i in range(1000, 1010)])


@pytest.mark.parametrize("client", CLIENTS)
def test_delete_records(cluster: Cluster, client: str, request: pytest.FixtureRequest) -> None:
    topic, group = name(request, "delrec"), name(request, "delrec-group")
    prog = program(client)
    scenarios.create(prog, cluster.bootstrap, **{topic: 1})
    scenarios.produce(prog, cluster.bootstrap, topic, "count=10")
    out = run(prog("groups"), f"bootstrap={cluster.bootstrap}", f"group={group}", f"topic={topic}",
              "partitions=1", "delete-to=3").check()
    deleted = out.last("deleted-records")
    assert deleted["beyond_end"] == "OFFSET_OUT_OF_RANGE"
    if client == "kafkajs":
        assert deleted["start"] == {"0": 3}
    else:
        assert deleted["low_watermarks"] == {"0": 3}
    # (reading the rest back is left to the Go test: these clients take 3-4 s to reset their
    # offset out of range, which the budget of the suite does not have)


def test_platformatic_consumer_protocol_group(cluster: Cluster, request: pytest.FixtureRequest) -> None:
    """@platformatic/kafka with groupProtocol 'consumer': a KIP-848 group of two over 4 partitions
    (tests/client_scenarios.py consumer_protocol_group)."""
    scenarios.consumer_protocol_group(program("platformatic"), cluster.bootstrap, name(request, "kip848"),
                                      name(request, "kip848-group"))


@pytest.mark.slow  # in CI, franz-go's run of the same scenario (test_go_clients) stands for it
def test_platformatic_consumer_protocol_scale_out_and_crash(request: pytest.FixtureRequest) -> None:
    """@platformatic/kafka (groupProtocol 'consumer'): a KIP-848 group grows from one member to
    four over 12 partitions, only moving partitions revoked, then loses one to SIGKILL
    (tests/client_scenarios.py consumer_protocol_scale_out)."""
    js_program("clients")  # install (or skip) before the broker starts
    fast: Cluster = request.getfixturevalue("akfak_fast_groups")
    scenarios.consumer_protocol_scale_out(program("platformatic"), fast.bootstrap, "kip848-scale",
                                          "kip848-scale-g", whole_sets=True)
