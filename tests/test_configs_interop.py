"""Config resources against a real Kafka 4.1.1 broker (tests/kafka_peer.py), with the same
server.properties on both: DescribeConfigs / AlterConfigs / IncrementalAlterConfigs for groups
and client-metrics subscriptions (raw requests, then confluent-kafka), ListConfigResources,
`kafka-configs --describe --all` for the broker and a topic, `kafka-configs --alter` of both,
`kafka-configs` for groups and client-metrics, `kafka-client-metrics`; and ApiVersions, which
must never offer a version newer than Kafka 4.1.1's but for the listed exceptions.  Also
`listeners=PLAINTEXT://:PORT`, advertised as Java's InetAddress.getLocalHost().getCanonicalHostName()."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from kio.static.primitive import i8

from tests import jvm
from tests.brokers import BrokerProcess, free_port, start_process
from tests.kafka_peer import SERVER_PROPERTIES, KafkaPeer
from tests.kafka_tools import run_tool
from tests.wire import WireClient

pytestmark = [pytest.mark.jvm, pytest.mark.timeout(900)]

CONFIGS = "kafka.admin.ConfigCommand"
GROUP, CLIENT_METRICS = 32, 16
SET, DELETE, APPEND = 0, 1, 2


@pytest.fixture(scope="module")
def akfak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """akfak started with the peer's server.properties (its own ports and directory)."""
    directory = tmp_path_factory.mktemp("akfak")
    port, controller_port = free_port(), free_port()
    properties = directory / "server.properties"
    properties.write_text(SERVER_PROPERTIES.format(port=port, controller_port=controller_port,
                                                   log_dir=directory / "data"))
    broker = start_process(directory / "data", "--config", str(properties), port=port)
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def brokers(kafka_peer: KafkaPeer, akfak: BrokerProcess) -> dict[str, str]:
    bootstraps = {"akfak": akfak.bootstrap, "kafka": kafka_peer.bootstrap}
    for bootstrap in bootstraps.values():
        client = AdminClient({"bootstrap.servers": bootstrap})
        client.create_topics([NewTopic("described", 1, 1)])["described"].result(30)
    return bootstraps


def port_of(bootstrap: str) -> int:
    return int(bootstrap.rsplit(":", 1)[1])


# -- raw requests -----------------------------------------------------------------------------


def incremental(client: WireClient, kind: int, name: str, ops: list[tuple[str, int, str | None]]
                ) -> tuple[int, str | None]:
    from kio.schema.incremental_alter_configs.v1 import request as m
    response = client.request(m.IncrementalAlterConfigsRequest(resources=(m.AlterConfigsResource(
        resource_type=i8(kind), resource_name=name, configs=tuple(
            m.AlterableConfig(name=k, config_operation=i8(op), value=v) for k, op, v in ops)),),
        validate_only=False))
    (result,) = response.responses
    return int(result.error_code), result.error_message


def legacy(client: WireClient, kind: int, name: str, configs: list[tuple[str, str]]
           ) -> tuple[int, str | None]:
    from kio.schema.alter_configs.v2 import request as m
    response = client.request(m.AlterConfigsRequest(resources=(m.AlterConfigsResource(
        resource_type=i8(kind), resource_name=name, configs=tuple(
            m.AlterableConfig(name=k, value=v) for k, v in configs)),), validate_only=False))
    (result,) = response.responses
    return int(result.error_code), result.error_message


def describe(client: WireClient, kind: int, name: str) -> Any:
    """(error, message, [(name, value, source, read_only, sensitive, type, synonyms)])."""
    from kio.schema.describe_configs.v4 import request as m
    response = client.request(m.DescribeConfigsRequest(resources=(m.DescribeConfigsResource(
        resource_type=i8(kind), resource_name=name, configuration_keys=None),),
        include_synonyms=True, include_documentation=False))
    (result,) = response.results
    return (int(result.error_code), result.error_message, sorted(
        (e.name, e.value, int(e.config_source), e.read_only, e.is_sensitive, int(e.config_type),
         tuple((s.name, s.value, int(s.source)) for s in e.synonyms)) for e in result.configs))


def list_resources(client: WireClient) -> list[tuple[str, int]]:
    from kio.schema.list_config_resources.v1 import request as m
    response = client.request(m.ListConfigResourcesRequest(resource_types=()))
    return [(r.resource_name, int(r.resource_type)) for r in response.config_resources]


#: Alterations, applied in order to both brokers: each must get the same answer.
ALTERATIONS: list[tuple[str, int, str, list[Any]]] = [
    ("inc", GROUP, "g1", [("consumer.session.timeout.ms", SET, "50000")]),
    ("inc", GROUP, "g1", [("consumer.session.timeout.ms", SET, "1000")]),
    ("inc", GROUP, "g1", [("consumer.session.timeout.ms", SET, "70000")]),
    ("inc", GROUP, "g1", [("consumer.heartbeat.interval.ms", SET, "abc")]),
    ("inc", GROUP, "g1", [("consumer.heartbeat.interval.ms", SET, "0")]),
    ("inc", GROUP, "g1", [("no.such.config", SET, "1")]),
    ("inc", GROUP, "g1", [("share.auto.offset.reset", SET, "by_duration:PT1H")]),
    ("inc", GROUP, "g1", [("share.auto.offset.reset", SET, "by_duration:-PT1H")]),
    ("inc", GROUP, "g1", [("share.auto.offset.reset", SET, "sometime")]),
    ("inc", GROUP, "g1", [("share.isolation.level", SET, "x")]),
    ("inc", GROUP, "g1", [("share.record.lock.duration.ms", SET, "500")]),
    ("inc", GROUP, "g1", [("share.record.lock.duration.ms", SET, "5000")]),
    ("inc", GROUP, "g1", [("streams.num.standby.replicas", SET, "3")]),
    ("inc", GROUP, "g1", [("streams.session.timeout.ms", SET, "50000"),
                          ("streams.heartbeat.interval.ms", SET, "15000")]),
    ("inc", GROUP, "g1", [("share.session.timeout.ms", SET, "45000"),
                          ("share.heartbeat.interval.ms", SET, "15000")]),
    ("inc", GROUP, "g1", [("consumer.session.timeout.ms", APPEND, "1")]),
    ("inc", GROUP, "g1", [("consumer.session.timeout.ms", DELETE, None)]),
    ("inc", GROUP, "", [("consumer.session.timeout.ms", SET, "50000")]),
    ("legacy", GROUP, "g2", [("consumer.session.timeout.ms", "50000"),
                             ("share.isolation.level", "read_committed")]),
    ("legacy", GROUP, "g2", [("bad", "1")]),
    ("inc", CLIENT_METRICS, "cm1", [("metrics", SET, "org.apache.kafka.producer., org.apache.k")]),
    ("inc", CLIENT_METRICS, "cm1", [("interval.ms", SET, "50")]),
    ("inc", CLIENT_METRICS, "cm1", [("interval.ms", SET, "xyz")]),
    ("inc", CLIENT_METRICS, "cm1", [("interval.ms", SET, "1000")]),
    ("inc", CLIENT_METRICS, "cm1", [("match", SET, "client_id=abc.*,client_software_name=x")]),
    ("inc", CLIENT_METRICS, "cm1", [("match", SET, "client_idx=abc")]),
    ("inc", CLIENT_METRICS, "cm1", [("match", SET, "client_id=[")]),
    ("inc", CLIENT_METRICS, "cm1", [("match", SET, "client_id=")]),
    ("inc", CLIENT_METRICS, "cm1", [("metrics", APPEND, "x.y")]),
    ("inc", CLIENT_METRICS, "cm1", [("unknown", SET, "1")]),
    ("inc", CLIENT_METRICS, "", [("interval.ms", SET, "1000")]),
    ("legacy", CLIENT_METRICS, "cm2", [("interval.ms", "2000")]),
    ("inc", CLIENT_METRICS, "cm2", [("interval.ms", DELETE, None)]),
]


def test_group_and_client_metrics_configs_as_kafka(brokers: dict[str, str]) -> None:
    """Every alteration gets Kafka's answer, and afterwards every resource describes and
    lists as on Kafka."""
    answers: dict[str, list[Any]] = {}
    for name, bootstrap in brokers.items():
        with WireClient(port_of(bootstrap)) as client:
            answers[name] = [
                incremental(client, kind, resource, ops) if how == "inc"
                else legacy(client, kind, resource, ops)
                for how, kind, resource, ops in ALTERATIONS]
            answers[name] += [describe(client, kind, resource) for kind, resource in (
                (GROUP, "g1"), (GROUP, "g2"), (GROUP, "never-configured"), (GROUP, ""),
                (CLIENT_METRICS, "cm1"), (CLIENT_METRICS, "cm2"), (CLIENT_METRICS, ""))]
            answers[name].append(list_resources(client))
    for index, (akfak, kafka) in enumerate(zip(answers["akfak"], answers["kafka"], strict=True)):
        assert akfak == kafka, ALTERATIONS[index] if index < len(ALTERATIONS) else index
    assert answers["akfak"][-1] == [("g1", GROUP), ("g2", GROUP), ("cm1", CLIENT_METRICS),
                                    ("1", 8), ("1", 4), ("described", 2)]


@pytest.mark.parametrize("broker", ["akfak", "kafka"])
def test_confluent_kafka_group_configs(brokers: dict[str, str], broker: str) -> None:
    """confluent-kafka's describe_configs / incremental_alter_configs on a GROUP resource (what
    librdkafka's 0081 test does)."""
    client = AdminClient({"bootstrap.servers": brokers[broker]})
    resource = ConfigResource(ResourceType.GROUP, f"ck-group-{broker}", incremental_configs=[
        ConfigEntry("consumer.heartbeat.interval.ms", "6000",
                    incremental_operation=AlterConfigOpType.SET)])
    client.incremental_alter_configs([resource])[resource].result(30)
    described = client.describe_configs([ConfigResource(ResourceType.GROUP,
                                                        f"ck-group-{broker}")])
    (configs,) = (future.result(30) for future in described.values())
    entry = configs["consumer.heartbeat.interval.ms"]
    assert (entry.value, entry.source, entry.is_read_only) == ("6000", 8, False)
    assert configs["consumer.session.timeout.ms"].value == "45000"
    assert len(configs) == 10
    bad = ConfigResource(ResourceType.GROUP, f"ck-group-{broker}", incremental_configs=[
        ConfigEntry("consumer.heartbeat.interval.ms", "60000",
                    incremental_operation=AlterConfigOpType.SET)])
    error = client.incremental_alter_configs([bad])[bad].exception(30)
    assert error is not None and error.args[0].name() == "INVALID_CONFIG"


# -- the tools --------------------------------------------------------------------------------


def tool_output(brokers: dict[str, str], tool: str, *args: str) -> dict[str, tuple[int, list[str]]]:
    """What `tool` printed on each broker, ports, paths and stack frames masked."""
    out = {}
    for name, bootstrap in brokers.items():
        run = run_tool(tool, "--bootstrap-server", bootstrap, *args)
        text = (run.stdout + run.stderr).replace(bootstrap, "<bootstrap>")
        text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", text)
        text = re.sub(r"(log\.dirs=)[^ ]+( sensitive=false synonyms=\{STATIC_BROKER_CONFIG:log\.dirs=)"
                      r"[^}]+", r"\1<dir>\2<dir>", text)
        out[name] = (run.returncode, [line for line in text.splitlines()
                                      if line.strip() and not line.lstrip().startswith("at ")])
    return out


#: Where `kafka-configs --describe --all` for the broker differs, and why.
BROKER_DIFFERENCES = {
    # akfak's own configs (partition limits, open files, the test brokers' switch).
    "akfak.accept.any.replication.factor": "+",
    "akfak.http.allow.remote": "+",
    "akfak.log.max.open.files": "+",
    "akfak.max.partitions": "+",
    "akfak.max.partitions.per.request": "+",
    # akfak serves classic and consumer (KIP-848) groups, no streams groups (KIP-1071).
    "group.coordinator.rebalance.protocols": "classic,consumer",
    # akfak has no JMX.
    "metric.reporters": "",
}


def test_kafka_configs_describe_all(brokers: dict[str, str]) -> None:
    """The broker's and a topic's `--describe --all`: the same names, values, sensitivity and
    synonyms (with their sources) as Kafka 4.1.1, but for BROKER_DIFFERENCES."""
    runs = tool_output(brokers, CONFIGS, "--entity-type", "brokers", "--entity-name", "1",
                       "--describe", "--all")
    entries = {}
    for name, (code, lines) in runs.items():
        assert code == 0 and lines[0] == "All configs for broker 1 are:", lines
        entries[name] = {line.split("=", 1)[0].strip(): line for line in lines[1:]}
    assert len(entries["kafka"]) > 300
    akfak, kafka = entries["akfak"], entries["kafka"]
    differing = {key for key in set(akfak) | set(kafka) if akfak.get(key) != kafka.get(key)}
    assert differing == set(BROKER_DIFFERENCES)
    for key, value in BROKER_DIFFERENCES.items():
        if value == "+":
            assert key not in kafka
        else:
            assert akfak[key].startswith(f"  {key}={value} sensitive=false"), akfak[key]
    topic = tool_output(brokers, CONFIGS, "--entity-type", "topics", "--entity-name", "described",
                        "--describe", "--all")
    assert topic["akfak"] == topic["kafka"]
    assert any(line.startswith("  min.insync.replicas=1 ") for line in topic["akfak"][1])
    dynamic = tool_output(brokers, CONFIGS, "--entity-type", "brokers", "--describe")
    assert dynamic["akfak"] == dynamic["kafka"] == (0, [
        "Dynamic configs for broker 1 are:", "Default configs for brokers in the cluster are:",
        "  min.insync.replicas=1 sensitive=false "
        "synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:min.insync.replicas=1}"])


def test_kafka_configs_groups_and_client_metrics(brokers: dict[str, str]) -> None:
    """`kafka-configs --entity-type groups|client-metrics` and `kafka-client-metrics` print on
    akfak what they print on Kafka."""
    steps: list[tuple[str, list[str]]] = [
        (CONFIGS, ["--entity-type", "groups", "--entity-name", "tool-group", "--alter",
                   "--add-config", "consumer.heartbeat.interval.ms=6000"]),
        (CONFIGS, ["--entity-type", "groups", "--entity-name", "tool-group", "--describe"]),
        (CONFIGS, ["--entity-type", "groups", "--entity-name", "tool-group", "--describe",
                   "--all"]),
        (CONFIGS, ["--entity-type", "groups", "--entity-name", "tool-group", "--alter",
                   "--add-config", "consumer.heartbeat.interval.ms=1"]),
        (CONFIGS, ["--entity-type", "client-metrics", "--entity-name", "tool-metrics", "--alter",
                   "--add-config", "metrics=[a.b,c.d],interval.ms=2000"]),
        (CONFIGS, ["--entity-type", "client-metrics", "--entity-name", "tool-metrics",
                   "--describe", "--all"]),
        ("ClientMetricsCommand", ["--alter", "--name", "tool-sub", "--metrics",
                                  "org.apache.kafka.producer.", "--interval", "5000",
                                  "--match", "client_software_name=kafka-python"]),
        ("ClientMetricsCommand", ["--describe", "--name", "tool-sub"]),
        ("ClientMetricsCommand", ["--alter", "--name", "tool-sub", "--interval", "50"]),
        ("ClientMetricsCommand", ["--delete", "--name", "tool-sub"]),
        ("ClientMetricsCommand", ["--list"]),
    ]
    printed = []
    for tool, args in steps:
        runs = tool_output(brokers, tool, *args)
        if args == ["--list"]:  # Kafka lists its subscriptions in hash order
            runs = {name: (code, sorted(lines)) for name, (code, lines) in runs.items()}
        assert runs["akfak"] == runs["kafka"], (tool, args)
        printed.append(runs["akfak"])
    assert printed[0] == (0, ["Completed updating config for group tool-group."])
    assert printed[1][1][1] == ("  consumer.heartbeat.interval.ms=6000 sensitive=false "
                                "synonyms={DYNAMIC_GROUP_CONFIG:consumer.heartbeat.interval.ms=6000}")
    assert printed[3][0] == 1
    assert printed[7] == (0, ["Client metrics configs for tool-sub are:", "  interval.ms=5000",
                              "  match=client_software_name=kafka-python",
                              "  metrics=org.apache.kafka.producer."])
    assert "tool-metrics" in printed[-1][1] and "tool-sub" not in printed[-1][1]


def test_kafka_configs_alters_topics_and_brokers(brokers: dict[str, str]) -> None:
    """`kafka-configs --alter` of a topic and of the broker (per broker and cluster default):
    adding, describing and deleting configs, and the refusals (unknown or read-only names, bad
    values, an unknown topic), printed alike; the dynamic broker configs put back at the end."""
    for bootstrap in brokers.values():
        client = AdminClient({"bootstrap.servers": bootstrap})
        client.create_topics([NewTopic("altered", 1, 1)])["altered"].result(30)
    topic = ["--entity-type", "topics", "--entity-name", "altered"]
    broker = ["--entity-type", "brokers", "--entity-name", "1"]
    default = ["--entity-type", "brokers", "--entity-default"]
    steps = [
        [*topic, "--alter", "--add-config", "retention.ms=86400000,cleanup.policy=[compact,delete]"],
        [*topic, "--describe"],
        [*topic, "--alter", "--delete-config", "retention.ms"],
        [*topic, "--describe"],
        [*topic, "--alter", "--add-config", "colour=blue"],
        [*topic, "--alter", "--add-config", "retention.ms=forever"],
        [*topic, "--alter", "--delete-config", "no.such.config"],
        ["--entity-type", "topics", "--entity-name", "no-such-topic", "--alter", "--add-config",
         "retention.ms=1000"],
        [*broker, "--alter", "--add-config", "log.cleaner.threads=2"],
        [*default, "--alter", "--add-config", "log.retention.ms=604800001"],
        [*broker, "--describe"],
        [*default, "--describe"],
        [*broker, "--alter", "--add-config", "node.id=5"],
        [*broker, "--alter", "--add-config", "log.retention.ms=abc"],
        [*broker, "--alter", "--delete-config", "log.cleaner.threads"],
        [*default, "--alter", "--delete-config", "log.retention.ms"],
        [*broker, "--describe"],
    ]
    printed = []
    for args in steps:
        runs = tool_output(brokers, CONFIGS, *args)
        assert runs["akfak"] == runs["kafka"], args
        printed.append(runs["akfak"])
    assert printed[0] == (0, ["Completed updating config for topic altered."])
    assert printed[1][1][1:] == [
        "  cleanup.policy=compact,delete sensitive=false "
        "synonyms={DYNAMIC_TOPIC_CONFIG:cleanup.policy=compact,delete, "
        "DEFAULT_CONFIG:log.cleanup.policy=delete}",
        "  retention.ms=86400000 sensitive=false synonyms={DYNAMIC_TOPIC_CONFIG:retention.ms=86400000}"]
    assert all(code != 0 for code, _ in printed[4:8]), printed[4:8]
    assert printed[-1] == (0, ["Dynamic configs for broker 1 are:"])


# -- ApiVersions ------------------------------------------------------------------------------

#: Versions akfak offers beyond Kafka 4.1.1's, each defined (and stable) in Kafka 4.3's
#: message schemas and implemented with its semantics.
NEWER_THAN_KAFKA_4_1 = {
    # v11 (KIP-1023) adds the earliest-pending-upload timestamp -6: offset -1 without tiered
    # storage, as Kafka 4.3's UnifiedLog answers it.
    2: 11,
    # v10 (KIP-848) names topics by id; akfak resolves them (UNKNOWN_TOPIC_ID otherwise).
    8: 10,
    9: 10,
}


def api_versions(port: int) -> dict[int, tuple[int, int]]:
    from kio.schema.api_versions.v3 import request as m
    with WireClient(port) as client:
        response = client.request(m.ApiVersionsRequest(client_software_name="akfak-tests",
                                                       client_software_version="1"))
    assert int(response.error_code) == 0
    return {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in response.api_keys}


def test_api_versions_never_newer_than_kafka(brokers: dict[str, str]) -> None:
    akfak, kafka = (api_versions(port_of(brokers[name])) for name in ("akfak", "kafka"))
    newer = {key: high for key, (_, high) in akfak.items()
             if key in kafka and high > kafka[key][1]}
    assert newer == NEWER_THAN_KAFKA_4_1
    # Kafka 4.1.1's own maxima for these, so the exceptions are still exceptions.
    assert {key: kafka[key][1] for key in NEWER_THAN_KAFKA_4_1} == {2: 10, 8: 9, 9: 9}
    assert akfak[22] == kafka[22] == (0, 5)


# -- listeners with an empty host -------------------------------------------------------------

CANONICAL_HOST = """\
public class CanonicalHost {
    public static void main(String[] args) throws Exception {
        System.out.println(java.net.InetAddress.getLocalHost().getCanonicalHostName());
    }
}
"""


def test_empty_listener_host_advertises_the_canonical_host_name(tmp_path: Path) -> None:
    """`listeners=PLAINTEXT://:PORT` binds every interface and advertises the name Kafka would
    (ListenerInfo.withWildcardHostnamesResolved: Java's canonical host name)."""
    jvm.require_jvm()
    source = tmp_path / "CanonicalHost.java"
    source.write_text(CANONICAL_HOST)
    java = subprocess.run(["java", str(source)], capture_output=True, text=True, timeout=60,
                          check=True)
    expected = java.stdout.strip()
    port = free_port()
    properties = tmp_path / "server.properties"
    properties.write_text(f"listeners=PLAINTEXT://:{port}\n")
    data = tmp_path / "data"
    broker = start_process(data, port=port, command=[sys.executable, "-m", "akfak", "--config",
                                                     str(properties), "--data-dir", str(data)])
    try:
        client = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
        brokers = client.list_topics(timeout=30).brokers
        assert [(b.host, b.port) for b in brokers.values()] == [(expected, port)]
    finally:
        broker.stop()
