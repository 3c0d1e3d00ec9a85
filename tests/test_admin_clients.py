"""The admin APIs through real clients' admin APIs (confluent-kafka AdminClient, kafka-python
KafkaAdminClient) against an in-process, in-memory broker.

The broker runs in the test's reactor; the blocking clients run in a thread
(deferToThread) so the reactor keeps serving them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)
from kafka import TopicPartition as KPTopicPartition
from kafka.admin import ConfigResource as KPConfigResource
from kafka.admin import KafkaAdminClient
from twisted.internet.threads import deferToThread

from tests.brokers import InProcessBroker, start_in_process

TIMEOUT = 15


def in_thread(function: Callable[[], Any]) -> Any:
    return deferToThread(function)


@pytest.fixture
def broker_with(tmp_path: Path) -> Iterator[Callable[..., InProcessBroker]]:
    """Start in-process brokers with a server.properties or overrides; all stopped after."""
    started: list[InProcessBroker] = []

    def start(properties: str | None = None, overrides: list[str] | None = None
              ) -> InProcessBroker:
        config = None
        if properties is not None:
            path = tmp_path / f"server-{len(started)}.properties"
            path.write_text(properties)
            config = str(path)
        broker = start_in_process(tmp_path / f"data-{len(started)}", config=config,
                                  overrides=overrides)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        pytest_twisted.blockon(broker.service.stopService())


def admin(broker: InProcessBroker) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def kafka_python_admin(broker: InProcessBroker) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT * 1000)


def error_of(future: Any) -> KafkaError:
    with pytest.raises(KafkaException) as info:
        future.result(TIMEOUT)
    return info.value.args[0]


def describe_topic(client: AdminClient, name: str) -> dict[str, Any]:
    (future,) = client.describe_configs([ConfigResource("TOPIC", name)],
                                        request_timeout=TIMEOUT).values()
    return future.result(TIMEOUT)


# -- topics --------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_create_topic_with_configs_then_describe_them(inproc: InProcessBroker) -> Any:
    def check() -> None:
        client = admin(inproc)
        futures = client.create_topics(
            [NewTopic("orders", num_partitions=3, replication_factor=1,
                      config={"retention.ms": "3600000", "cleanup.policy": "compact,delete",
                              "max.message.bytes": "2000000"})],
            operation_timeout=TIMEOUT)
        assert futures["orders"].result(TIMEOUT) is None
        metadata = client.list_topics(timeout=TIMEOUT)
        assert sorted(metadata.topics["orders"].partitions) == [0, 1, 2]
        configs = describe_topic(client, "orders")
        for name, value in [("retention.ms", "3600000"), ("cleanup.policy", "compact,delete"),
                            ("max.message.bytes", "2000000")]:
            assert configs[name].value == value
            assert configs[name].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
            assert not configs[name].is_default
        # Every other topic config is there with Kafka's default, marked as such.
        assert configs["segment.bytes"].value == "1073741824"
        assert configs["segment.bytes"].is_default
        assert configs["segment.bytes"].source == ConfigSource.DEFAULT_CONFIG.value
        assert configs["min.insync.replicas"].value == "1"
        assert len(configs) >= 30

    yield in_thread(check)
    # The running partition logs got the configs too.
    log = inproc.broker.get_log("orders", 2)
    assert log.config.retention_ms == 3600000 and log.config.max_message_bytes == 2000000


@pytest_twisted.inlineCallbacks
def test_create_topic_defaults_and_errors(inproc: InProcessBroker) -> Any:
    def check() -> None:
        client = admin(inproc)
        futures = client.create_topics(
            [NewTopic("defaults"), NewTopic("bad/name", 1, 1), NewTopic("no-partitions", 0, 1),
             NewTopic("three-replicas", 1, 3)], operation_timeout=TIMEOUT)
        assert futures["defaults"].result(TIMEOUT) is None
        assert error_of(futures["bad/name"]).code() == KafkaError.TOPIC_EXCEPTION
        assert error_of(futures["no-partitions"]).code() == KafkaError.INVALID_PARTITIONS
        error = error_of(futures["three-replicas"])
        assert error.code() == KafkaError.INVALID_REPLICATION_FACTOR
        assert "Unable to replicate the partition 3 time(s)" in error.str()
        # num.partitions (1) partitions by default
        assert list(client.list_topics(timeout=TIMEOUT).topics["defaults"].partitions) == [0]
        again = client.create_topics([NewTopic("defaults")], operation_timeout=TIMEOUT)
        error = error_of(again["defaults"])
        assert error.code() == KafkaError.TOPIC_ALREADY_EXISTS
        assert error.str() == "Topic 'defaults' already exists."
        unknown = client.create_topics([NewTopic("bad-config", 1, 1, config={"nope": "1"})],
                                       operation_timeout=TIMEOUT)
        assert error_of(unknown["bad-config"]).code() == KafkaError.INVALID_CONFIG

    yield in_thread(check)
    assert set(inproc.broker.image.topics_by_name) == {"defaults"}


@pytest_twisted.inlineCallbacks
def test_kafka_python_create_validate_only_creates_nothing(inproc: InProcessBroker) -> Any:
    def check() -> None:
        client = kafka_python_admin(inproc)
        try:
            result = client.create_topics({"dry": {"num_partitions": 4,
                                                   "configs": {"retention.bytes": "1000"}}},
                                          validate_only=True)
            (topic,) = result["topics"]
            assert topic["error_code"] == 0 and topic["num_partitions"] == 4
            assert topic["configs"]["retention.bytes"]["value"] == "1000"
            assert topic["configs"]["retention.bytes"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
            assert "dry" not in client.list_topics()
        finally:
            client.close()

    yield in_thread(check)
    assert inproc.broker.image.topic("dry") is None


@pytest_twisted.inlineCallbacks
def test_delete_topics_by_name_then_gone(inproc: InProcessBroker) -> Any:
    def check() -> None:
        client = admin(inproc)
        created = client.create_topics([NewTopic("doomed", 2, 1), NewTopic("kept", 1, 1)],
                                       operation_timeout=TIMEOUT)
        for future in created.values():
            future.result(TIMEOUT)
        deleted = client.delete_topics(["doomed", "never-existed"], operation_timeout=TIMEOUT)
        assert deleted["doomed"].result(TIMEOUT) is None
        assert error_of(deleted["never-existed"]).code() == KafkaError.UNKNOWN_TOPIC_OR_PART
        assert set(client.list_topics(timeout=TIMEOUT).topics) == {"kept"}

    yield in_thread(check)
    assert inproc.broker.get_log("doomed", 0) is None


@pytest_twisted.inlineCallbacks
def test_kafka_python_delete_missing_topic(inproc: InProcessBroker) -> Any:
    from kafka.errors import UnknownTopicOrPartitionError

    def check() -> None:
        client = kafka_python_admin(inproc)
        try:
            with pytest.raises(UnknownTopicOrPartitionError):
                client.delete_topics(["missing"])
        finally:
            client.close()

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_create_partitions_then_produce_to_the_new_one(inproc: InProcessBroker) -> Any:
    def check() -> None:
        client = admin(inproc)
        client.create_topics([NewTopic("growing", 2, 1)], operation_timeout=TIMEOUT)[
            "growing"].result(TIMEOUT)
        assert client.create_partitions([NewPartitions("growing", 5)],
                                        operation_timeout=TIMEOUT)["growing"].result(TIMEOUT) is None
        shrink = client.create_partitions([NewPartitions("growing", 3)], operation_timeout=TIMEOUT)
        error = error_of(shrink["growing"])
        assert error.code() == KafkaError.INVALID_PARTITIONS
        assert error.str() == ("The topic growing currently has 5 partition(s); 3 would not be an "
                               "increase.")
        same = client.create_partitions([NewPartitions("growing", 5)], operation_timeout=TIMEOUT)
        assert error_of(same["growing"]).str() == "Topic already has 5 partition(s)."
        assert sorted(client.list_topics(timeout=TIMEOUT).topics["growing"].partitions) == [
            0, 1, 2, 3, 4]
        producer = Producer({"bootstrap.servers": inproc.bootstrap, "linger.ms": 0})
        delivered: list[Any] = []
        for i in range(3):
            producer.produce("growing", b"value-%d" % i, partition=4,
                             on_delivery=lambda err, msg: delivered.append((err, msg.offset())))
        assert producer.flush(TIMEOUT) == 0
        del producer  # destroyed now, not after the broker has gone
        assert delivered == [(None, 0), (None, 1), (None, 2)]

    yield in_thread(check)
    assert inproc.broker.get_log("growing", 4).high_watermark == 3


@pytest_twisted.inlineCallbacks
def test_delete_records_moves_earliest_offset(inproc: InProcessBroker) -> Any:
    def check() -> None:
        client = admin(inproc)
        client.create_topics([NewTopic("trimmed", 1, 1)], operation_timeout=TIMEOUT)[
            "trimmed"].result(TIMEOUT)
        producer = Producer({"bootstrap.servers": inproc.bootstrap})
        for i in range(10):
            producer.produce("trimmed", b"%d" % i, partition=0)
        assert producer.flush(TIMEOUT) == 0
        del producer  # destroyed now, not after the broker has gone
        tp = TopicPartition("trimmed", 0)

        def earliest() -> int:
            (future,) = client.list_offsets({tp: OffsetSpec.earliest()},
                                            request_timeout=TIMEOUT).values()
            return int(future.result(TIMEOUT).offset)

        assert earliest() == 0
        (future,) = client.delete_records([TopicPartition("trimmed", 0, 6)],
                                          request_timeout=TIMEOUT).values()
        assert future.result(TIMEOUT).low_watermark == 6
        assert earliest() == 6
        # Beyond the high watermark: OFFSET_OUT_OF_RANGE, nothing moves.
        (future,) = client.delete_records([TopicPartition("trimmed", 0, 11)],
                                          request_timeout=TIMEOUT).values()
        assert error_of(future).code() == KafkaError.OFFSET_OUT_OF_RANGE
        assert earliest() == 6

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_kafka_python_delete_records_to_the_high_watermark(inproc: InProcessBroker) -> Any:
    def check() -> None:
        creator = admin(inproc)  # referenced until the result is in: destroying it cancels
        creator.create_topics([NewTopic("emptied", 1, 1)], operation_timeout=TIMEOUT)[
            "emptied"].result(TIMEOUT)
        producer = Producer({"bootstrap.servers": inproc.bootstrap})
        for value in (b"a", b"b", b"c"):
            producer.produce("emptied", value, partition=0)
        assert producer.flush(TIMEOUT) == 0
        del producer  # destroyed now, not after the broker has gone
        client = kafka_python_admin(inproc)
        try:
            # -1: up to the high watermark.
            result = client.delete_records({KPTopicPartition("emptied", 0): -1})
            assert result[KPTopicPartition("emptied", 0)]["low_watermark"] == 3
        finally:
            client.close()

    yield in_thread(check)
    assert inproc.broker.get_log("emptied", 0).log_start_offset == 3


# -- configs -------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_describe_broker_configs_defaults_and_static(broker_with: Any) -> Any:
    broker = broker_with(properties="num.partitions=3\nlog.retention.hours=24\n"
                                    "message.max.bytes=2000000\ncustom.key=secret?\n")

    def check() -> None:
        client = admin(broker)
        (future,) = client.describe_configs([ConfigResource("BROKER", "1")],
                                            request_timeout=TIMEOUT).values()
        configs = future.result(TIMEOUT)
        for name, value in [("num.partitions", "3"), ("log.retention.hours", "24"),
                            ("message.max.bytes", "2000000")]:
            assert configs[name].value == value
            assert configs[name].source == ConfigSource.STATIC_BROKER_CONFIG.value
            assert not configs[name].is_default
        for name, value in [("log.segment.bytes", "1073741824"), ("delete.topic.enable", "true"),
                            ("default.replication.factor", "1")]:
            assert configs[name].value == value
            assert configs[name].is_default
            assert configs[name].source == ConfigSource.DEFAULT_CONFIG.value
        assert configs["num.partitions"].is_read_only
        assert not configs["message.max.bytes"].is_read_only
        # A key Kafka does not know is listed, but as sensitive: no value.
        assert configs["custom.key"].is_sensitive and configs["custom.key"].value is None
        # Topics inherit the static values, reported as coming from the broker.
        client.create_topics([NewTopic("inherits")], operation_timeout=TIMEOUT)[
            "inherits"].result(TIMEOUT)
        topic = describe_topic(client, "inherits")
        assert topic["max.message.bytes"].value == "2000000"
        assert topic["max.message.bytes"].source == ConfigSource.STATIC_BROKER_CONFIG.value
        assert topic["retention.ms"].value == str(24 * 3600 * 1000)
        assert len(client.list_topics(timeout=TIMEOUT).topics["inherits"].partitions) == 3

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_kafka_python_describe_configs_filters_and_synonyms(broker_with: Any) -> Any:
    broker = broker_with(overrides=["log.segment.bytes=5000000"])

    def check() -> None:
        client = kafka_python_admin(broker)
        try:
            client.create_topics({"described": {"configs": {"retention.ms": "1000"}}})
            described = client.describe_configs([KPConfigResource("TOPIC", "described")],
                                                include_synonyms=True)
            modified = described["topic"]["described"]
            assert set(modified) == {"retention.ms"}
            assert modified["retention.ms"]["synonyms"][0] == {
                "name": "retention.ms", "value": "1000", "source": "DYNAMIC_TOPIC_CONFIG"}
            everything = client.describe_configs([KPConfigResource("TOPIC", "described")],
                                                 include_synonyms=True, config_filter="all")
            segment = everything["topic"]["described"]["segment.bytes"]
            assert segment["value"] == "5000000"
            assert segment["config_source"] == "STATIC_BROKER_CONFIG"
            assert segment["synonyms"] == [
                {"name": "log.segment.bytes", "value": "5000000", "source": "STATIC_BROKER_CONFIG"},
                {"name": "log.segment.bytes", "value": "1073741824", "source": "DEFAULT_CONFIG"}]
            assert segment["config_type"] == "INT"
            static = client.describe_configs([KPConfigResource("BROKER", "1")],
                                             config_filter="static")
            assert static["broker"]["1"]["log.segment.bytes"]["value"] == "5000000"
        finally:
            client.close()

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_incremental_alter_configs_set_delete_append_subtract(inproc: InProcessBroker) -> Any:
    def check() -> None:
        client = admin(inproc)
        client.create_topics([NewTopic("tuned", 1, 1, config={"segment.ms": "100000"})],
                             operation_timeout=TIMEOUT)["tuned"].result(TIMEOUT)

        def alter(*entries: ConfigEntry) -> Any:
            (future,) = client.incremental_alter_configs(
                [ConfigResource("TOPIC", "tuned", incremental_configs=list(entries))],
                request_timeout=TIMEOUT).values()
            return future

        assert alter(
            ConfigEntry("retention.ms", "5000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("segment.ms", None, incremental_operation=AlterConfigOpType.DELETE),
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
        ).result(TIMEOUT) is None
        configs = describe_topic(client, "tuned")
        assert configs["retention.ms"].value == "5000"
        assert configs["segment.ms"].is_default
        assert configs["cleanup.policy"].value == "delete,compact"
        assert alter(ConfigEntry("cleanup.policy", "delete",
                                 incremental_operation=AlterConfigOpType.SUBTRACT)).result(TIMEOUT) is None
        assert describe_topic(client, "tuned")["cleanup.policy"].value == "compact"
        # APPEND to a config that is not a list: INVALID_CONFIG, nothing changes.
        error = error_of(alter(ConfigEntry("retention.ms", "1",
                                           incremental_operation=AlterConfigOpType.APPEND)))
        assert error.code() == KafkaError.INVALID_CONFIG
        assert describe_topic(client, "tuned")["retention.ms"].value == "5000"
        error = error_of(alter(ConfigEntry("retention.ms", "soon",
                                           incremental_operation=AlterConfigOpType.SET)))
        assert error.code() == KafkaError.INVALID_CONFIG

    yield in_thread(check)
    config = inproc.broker.get_log("tuned", 0).config
    assert config.retention_ms == 5000 and config.cleanup_policy == ("compact",)


@pytest_twisted.inlineCallbacks
def test_kafka_python_alter_configs_replaces_the_whole_set(inproc: InProcessBroker) -> Any:
    def check() -> None:
        client = kafka_python_admin(inproc)
        try:
            client.create_topics({"replaced": {"configs": {"retention.ms": "1000",
                                                           "segment.bytes": "100000"}}})
            # The legacy AlterConfigs: keys not given go back to their defaults.
            client.alter_configs([KPConfigResource("TOPIC", "replaced", {"retention.bytes": "999"})],
                                 incremental=False, raise_on_unknown=False)
            # kafka-python re-sends the other modified keys itself; drop one by hand.
            modified = client.describe_configs([KPConfigResource("TOPIC", "replaced")])
            assert modified["topic"]["replaced"].keys() == {"retention.ms", "segment.bytes",
                                                            "retention.bytes"}
            result = client.reset_configs([KPConfigResource("TOPIC", "replaced", ["segment.bytes"])],
                                          incremental=False)
            assert result == {"topic": {"replaced": "OK"}}
            modified = client.describe_configs([KPConfigResource("TOPIC", "replaced")])
            assert modified["topic"]["replaced"].keys() == {"retention.ms", "retention.bytes"}
        finally:
            client.close()

    yield in_thread(check)
    assert dict(inproc.broker.image.configs_of_topic("replaced")) == {
        "retention.ms": "1000", "retention.bytes": "999"}


@pytest_twisted.inlineCallbacks
def test_broker_dynamic_config_reaches_topics(inproc: InProcessBroker) -> Any:
    def check() -> None:
        client = admin(inproc)
        client.create_topics([NewTopic("follows", 1, 1)], operation_timeout=TIMEOUT)[
            "follows"].result(TIMEOUT)
        # (confluent-kafka refuses the "" cluster-default resource; the protocol tests use it)
        (future,) = client.incremental_alter_configs([ConfigResource(
            "BROKER", "1", incremental_configs=[ConfigEntry(
                "log.retention.ms", "123456", incremental_operation=AlterConfigOpType.SET)])],
            request_timeout=TIMEOUT).values()
        assert future.result(TIMEOUT) is None
        topic = describe_topic(client, "follows")
        assert topic["retention.ms"].value == "123456"
        assert topic["retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
        (future,) = client.describe_configs([ConfigResource("BROKER", "1")],
                                            request_timeout=TIMEOUT).values()
        configs = future.result(TIMEOUT)
        assert configs["log.retention.ms"].value == "123456"
        assert configs["log.retention.ms"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
        # Read-only broker configs cannot change at run time.
        (future,) = client.incremental_alter_configs([ConfigResource(
            "BROKER", "1", incremental_configs=[ConfigEntry(
                "num.partitions", "7", incremental_operation=AlterConfigOpType.SET)])],
            request_timeout=TIMEOUT).values()
        error = error_of(future)
        assert error.code() == KafkaError.INVALID_REQUEST
        assert "Cannot update these configs dynamically: Set(num.partitions)" in error.str()

    yield in_thread(check)
    assert inproc.broker.get_log("follows", 0).config.retention_ms == 123456


# -- cluster and partitions ----------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_describe_cluster_lists_this_node(inproc: InProcessBroker) -> Any:
    def check() -> None:
        client = admin(inproc)
        cluster = client.describe_cluster(request_timeout=TIMEOUT).result(TIMEOUT)
        assert cluster.cluster_id == inproc.broker.cluster_id
        assert cluster.controller.id == 1
        assert [(n.id, n.host, n.port) for n in cluster.nodes] == [(1, "127.0.0.1", inproc.port)]

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_kafka_python_describe_topic_partitions_pages(inproc: InProcessBroker) -> Any:
    def check() -> None:
        client = kafka_python_admin(inproc)
        try:
            client.create_topics({"pa": {"num_partitions": 3}, "pb": {"num_partitions": 2}})
            seen = []
            cursor = None
            while True:
                page = client.describe_topic_partitions(["pb", "pa"], response_partition_limit=2,
                                                        cursor=cursor)
                seen.extend((t["name"], p["partition_index"]) for t in page["topics"]
                            for p in t["partitions"])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert seen == [("pa", 0), ("pa", 1), ("pa", 2), ("pb", 0), ("pb", 1)]
        finally:
            client.close()

    yield in_thread(check)
