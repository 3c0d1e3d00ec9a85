"""Admin changes survive a broker restart on the same log directory: they are ConfigRecords,
TopicRecords and PartitionRecords in __cluster_metadata, replayed at start."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)
from kafka.admin import ConfigResource as KPConfigResource
from kafka.admin import KafkaAdminClient

TIMEOUT = 15


def describe(client: AdminClient, resource_type: str, name: str) -> dict[str, Any]:
    (future,) = client.describe_configs([ConfigResource(resource_type, name)],
                                        request_timeout=TIMEOUT).values()
    return future.result(TIMEOUT)


def test_alter_and_incremental_alter_persist_across_restart(broker_process: Any) -> None:
    first = broker_process()
    client = AdminClient({"bootstrap.servers": first.bootstrap})
    created = client.create_topics(
        [NewTopic("incremental", 2, 1, config={"retention.ms": "86400000"}),
         NewTopic("legacy", 1, 1, config={"segment.bytes": "1048576"}),
         NewTopic("removed", 1, 1)], operation_timeout=TIMEOUT)
    for future in created.values():
        future.result(TIMEOUT)
    (future,) = client.incremental_alter_configs([
        ConfigResource("TOPIC", "incremental", incremental_configs=[
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND),
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
            ConfigEntry("max.message.bytes", "500000",
                        incremental_operation=AlterConfigOpType.SET)])],
        request_timeout=TIMEOUT).values()
    future.result(TIMEOUT)
    (future,) = client.incremental_alter_configs([
        ConfigResource("BROKER", "1", incremental_configs=[
            ConfigEntry("log.retention.bytes", "777777777",
                        incremental_operation=AlterConfigOpType.SET)])],
        request_timeout=TIMEOUT).values()
    future.result(TIMEOUT)
    client.create_partitions([NewPartitions("incremental", 4)],
                             operation_timeout=TIMEOUT)["incremental"].result(TIMEOUT)
    client.delete_topics(["removed"], operation_timeout=TIMEOUT)["removed"].result(TIMEOUT)
    legacy = KafkaAdminClient(bootstrap_servers=first.bootstrap)
    try:
        # The legacy AlterConfigs (kafka-python re-sends the other modified keys with it).
        assert legacy.alter_configs([KPConfigResource("TOPIC", "legacy", {"retention.bytes": "1"})],
                                    incremental=False, raise_on_unknown=False) == {
            "topic": {"legacy": "OK"}}
    finally:
        legacy.close()
    producer = Producer({"bootstrap.servers": first.bootstrap})
    for i in range(8):  # keyed: the topic is compacted, which refuses records without a key
        producer.produce("incremental", b"%d" % i, key=b"k%d" % i, partition=3)
    assert producer.flush(TIMEOUT) == 0
    del producer
    (future,) = client.delete_records([TopicPartition("incremental", 3, 5)],
                                      request_timeout=TIMEOUT).values()
    assert future.result(TIMEOUT).low_watermark == 5
    del client
    first.stop()  # SIGTERM: a clean shutdown

    second = broker_process(data_dir=first.data_dir)
    client = AdminClient({"bootstrap.servers": second.bootstrap})
    topics = client.list_topics(timeout=TIMEOUT).topics
    assert set(topics) == {"incremental", "legacy"}
    assert sorted(topics["incremental"].partitions) == [0, 1, 2, 3]
    configs = describe(client, "TOPIC", "incremental")
    assert configs["cleanup.policy"].value == "delete,compact"
    assert configs["max.message.bytes"].value == "500000"
    assert configs["retention.ms"].is_default
    assert configs["retention.bytes"].value == "777777777"
    assert configs["retention.bytes"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    configs = describe(client, "TOPIC", "legacy")
    assert configs["retention.bytes"].value == "1"
    assert configs["segment.bytes"].value == "1048576"
    broker = describe(client, "BROKER", "1")
    assert broker["log.retention.bytes"].value == "777777777"
    assert broker["log.retention.bytes"].source == ConfigSource.DYNAMIC_BROKER_CONFIG.value
    tp = TopicPartition("incremental", 3)
    earliest, latest = (client.list_offsets({tp: spec}, request_timeout=TIMEOUT)[tp]
                        .result(TIMEOUT).offset for spec in (OffsetSpec.earliest(),
                                                             OffsetSpec.latest()))
    assert (earliest, latest) == (5, 8)


def test_group_configs_persist_across_restart(broker_process: Any) -> None:
    """Group configs are ConfigRecords too (as client-metrics subscriptions, which share the
    path), replayed at start."""
    first = broker_process()
    client = AdminClient({"bootstrap.servers": first.bootstrap})
    group = ConfigResource(ResourceType.GROUP, "kept-group", incremental_configs=[
        ConfigEntry("consumer.session.timeout.ms", "50000",
                    incremental_operation=AlterConfigOpType.SET)])
    client.incremental_alter_configs([group], request_timeout=TIMEOUT)[group].result(TIMEOUT)
    first.stop()
    second = broker_process(data_dir=first.data_dir, port=first.port)
    client = AdminClient({"bootstrap.servers": second.bootstrap})
    entry = describe(client, "GROUP", "kept-group")["consumer.session.timeout.ms"]
    assert (entry.value, entry.source) == ("50000", 8)
    assert describe(client, "GROUP", "other")["consumer.session.timeout.ms"].value == "45000"
