"""The admin APIs over the raw protocol: versions clients do not send, and the error codes
and messages clients cannot provoke, each on a connection that stays usable.

Requests go through tests/wire.py's blocking WireClient in a thread; the in-process broker
serves them from the test's reactor, where the tests also look at its state.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i16, i32, i32Timedelta, i64
from twisted.internet.threads import deferToThread

from akfak.log.records import encode_batch
from tests.brokers import InProcessBroker, start_in_process
from tests.wire import WireClient

TIMEOUT = i32Timedelta.parse(timedelta(seconds=30))
ZERO = uuid.UUID(int=0)


def schema(api: str, version: int) -> Any:
    return importlib.import_module(f"kio.schema.{api}.v{version}.request")


def exchange(port: int, *requests: Any) -> list[Any]:
    """Send each request on one connection (in a thread) and return the responses."""
    with WireClient(port) as client:
        return [client.request(r) for r in requests]


def ask(port: int, *requests: Any) -> Any:
    return deferToThread(exchange, port, *requests)


@pytest.fixture
def broker_with(tmp_path: Path) -> Iterator[Callable[..., InProcessBroker]]:
    started: list[InProcessBroker] = []

    def start(*overrides: str) -> InProcessBroker:
        broker = start_in_process(tmp_path / f"data-{len(started)}", overrides=list(overrides))
        started.append(broker)
        return broker

    yield start
    for broker in started:
        pytest_twisted.blockon(broker.service.stopService())


def make_topic(broker: InProcessBroker, name: str, partitions: int = 1,
               configs: dict[str, str] | None = None) -> Any:
    return broker.broker.controller.create_topic(name, partitions, 1, configs)


def append(broker: InProcessBroker, topic: str, partition: int, count: int,
           leader_epoch: int = 0) -> None:
    batch = encode_batch([(None, b"v%d" % i) for i in range(count)],
                         timestamp=broker.broker.now_ms(), leader_epoch=leader_epoch)
    broker.broker.get_log(topic, partition).append(batch, leader_epoch=leader_epoch,
                                                   now_ms=broker.broker.now_ms())


# -- CreateTopics ----------------------------------------------------------------------------


def create_topics(version: int, *topics: Any, validate_only: bool = False) -> Any:
    m = schema("create_topics", version)
    return m.CreateTopicsRequest(topics=tuple(topics), timeout=TIMEOUT, validate_only=validate_only)


def creatable(version: int, name: str, partitions: int = -1, replicas: int = -1,
              configs: dict[str, str | None] | None = None,
              assignments: dict[int, list[int]] | list[tuple[int, list[int]]] | None = None) -> Any:
    m = schema("create_topics", version)
    pairs = list(assignments.items()) if isinstance(assignments, dict) else list(assignments or [])
    return m.CreatableTopic(
        name=name, num_partitions=i32(partitions), replication_factor=i16(replicas),
        assignments=tuple(m.CreatableReplicaAssignment(partition_index=i32(p),
                                                       broker_ids=tuple(i32(b) for b in brokers))
                          for p, brokers in pairs),
        configs=tuple(m.CreatableTopicConfig(name=k, value=v) for k, v in (configs or {}).items()))


@pytest_twisted.inlineCallbacks
def test_create_topics_v7_answers_counts_configs_and_topic_id(inproc: InProcessBroker) -> Any:
    (response,) = yield ask(inproc.port, create_topics(
        7, creatable(7, "answered", 2, configs={"retention.bytes": "4096"})))
    (result,) = response.topics
    topic = inproc.broker.image.topic("answered")
    assert result.error_code == ErrorCode.none and result.error_message is None
    assert result.topic_id == topic.topic_id
    assert (result.num_partitions, result.replication_factor) == (2, 1)
    configs = {c.name: c for c in result.configs}
    assert configs["retention.bytes"].value == "4096" and configs["retention.bytes"].config_source == 1
    assert configs["retention.ms"].value == "604800000" and configs["retention.ms"].config_source == 5
    assert list(configs) == sorted(configs)
    assert not any(c.read_only or c.is_sensitive for c in result.configs)


@pytest_twisted.inlineCallbacks
def test_create_topics_validate_only_and_old_versions(inproc: InProcessBroker) -> Any:
    v2, v5 = yield ask(inproc.port,
                       create_topics(2, creatable(2, "old-style", 1, 1)),
                       create_topics(5, creatable(5, "dry-run", 3), validate_only=True))
    assert [(t.name, t.error_code) for t in v2.topics] == [("old-style", ErrorCode.none)]
    (dry,) = v5.topics
    assert dry.error_code == ErrorCode.none and dry.num_partitions == 3
    assert inproc.broker.image.topic("dry-run") is None
    assert inproc.broker.image.topic("old-style") is not None


@pytest_twisted.inlineCallbacks
def test_create_topics_errors(inproc: InProcessBroker) -> Any:
    make_topic(inproc, "exists")
    make_topic(inproc, "collides.here")
    (response,) = yield ask(inproc.port, create_topics(
        7,
        creatable(7, "twice"), creatable(7, "__cluster_metadata"), creatable(7, "twice", 3),
        creatable(7, "exists"),
        creatable(7, "x" * 250),
        creatable(7, ".."),
        creatable(7, "bad-config", configs={"retention.ms": "forever"}),
        creatable(7, "unknown-config", configs={"colour": "blue"}),
        creatable(7, "zero-partitions", 0),
        creatable(7, "zero-replicas", 1, 0),
        creatable(7, "manual-with-count", 2, -1, assignments={0: [1]}),
        creatable(7, "manual-with-replicas", -1, 1, assignments={0: [1]}),
        creatable(7, "manual-gap", assignments={0: [1], 2: [1]}),
        creatable(7, "manual-twice", assignments=[(0, [1]), (0, [1])]),
        creatable(7, "manual-other-broker", assignments={0: [7]}),
        creatable(7, "manual-empty", assignments={0: []}),
        creatable(7, "manual-same-broker", assignments={0: [1, 1]}),
        creatable(7, "collides_here"),
        creatable(7, "manual-ok", assignments={0: [1], 1: [1]}),
    ))
    got = [(t.name, t.error_code, t.error_message) for t in response.topics]
    assert got == [
        ("exists", ErrorCode.topic_already_exists, "Topic 'exists' already exists."),
        ("x" * 250, ErrorCode.invalid_topic_exception,
         f"Topic name is invalid: the length of '{'x' * 250}' is longer than the max allowed length 249"),
        ("..", ErrorCode.invalid_topic_exception, "Topic name is invalid: '..' is not allowed"),
        ("bad-config", ErrorCode.invalid_config,
         "Invalid value forever for configuration retention.ms: Not a number of type LONG"),
        ("unknown-config", ErrorCode.invalid_config, "Unknown topic config name: colour"),
        ("zero-partitions", ErrorCode.invalid_partitions,
         "Number of partitions was set to an invalid non-positive value."),
        ("zero-replicas", ErrorCode.invalid_replication_factor,
         "Replication factor must be larger than 0, or -1 to use the default value."),
        ("manual-with-count", ErrorCode.invalid_request,
         "A manual partition assignment was specified, but numPartitions was not set to -1."),
        ("manual-with-replicas", ErrorCode.invalid_request,
         "A manual partition assignment was specified, but replication factor was not set to -1."),
        ("manual-gap", ErrorCode.invalid_replica_assignment,
         "partitions should be a consecutive 0-based integer sequence"),
        ("manual-twice", ErrorCode.invalid_replica_assignment,
         "Found multiple manual partition assignments for partition 0"),
        ("manual-other-broker", ErrorCode.invalid_replica_assignment,
         "The manual partition assignment includes broker 7, but no such broker is registered."),
        ("manual-empty", ErrorCode.invalid_replica_assignment,
         "The manual partition assignment includes an empty replica list."),
        ("manual-same-broker", ErrorCode.invalid_replica_assignment,
         "The manual partition assignment includes the broker 1 more than once."),
        ("collides_here", ErrorCode.invalid_topic_exception,
         "Topic 'collides_here' collides with existing topic: collides.here"),
        ("manual-ok", ErrorCode.none, None),
        ("twice", ErrorCode.invalid_request, "Duplicate topic name."),
        ("__cluster_metadata", ErrorCode.invalid_request,
         "Creation of internal topic __cluster_metadata is prohibited."),
    ]
    for t in response.topics:
        if t.error_code:
            assert (t.topic_id, t.num_partitions, t.replication_factor, t.configs) == (
                None, -1, -1, ())
    assert set(inproc.broker.image.topics_by_name) == {"exists", "collides.here", "manual-ok"}
    assert inproc.broker.image.topic("manual-ok").num_partitions == 2


# -- DeleteTopics ----------------------------------------------------------------------------


def delete_topics(version: int, *names: str) -> Any:
    return schema("delete_topics", version).DeleteTopicsRequest(topic_names=names, timeout=TIMEOUT)


def delete_topics_v6(*topics: tuple[str | None, uuid.UUID]) -> Any:
    m = schema("delete_topics", 6)
    return m.DeleteTopicsRequest(
        topics=tuple(m.DeleteTopicState(name=n, topic_id=i) for n, i in topics), timeout=TIMEOUT)


@pytest_twisted.inlineCallbacks
def test_delete_topics_by_id_and_errors(inproc: InProcessBroker) -> Any:
    by_id = make_topic(inproc, "by-id").topic_id
    by_name = make_topic(inproc, "by-name").topic_id
    both = make_topic(inproc, "both-ways").topic_id
    missing = uuid.uuid4()
    (response,) = yield ask(inproc.port, delete_topics_v6(
        (None, by_id), ("by-name", ZERO), (None, missing), ("nope", ZERO), (None, ZERO),
        ("named", missing), ("dup", ZERO), ("dup", ZERO), (None, both), ("both-ways", ZERO)))
    got = [(r.name, r.topic_id, r.error_code, r.error_message) for r in response.responses]
    assert got == [
        ("by-id", by_id, ErrorCode.none, None),
        ("by-name", by_name, ErrorCode.none, None),
        (None, missing, ErrorCode.unknown_topic_id, "This server does not host this topic ID."),
        ("nope", None, ErrorCode.unknown_topic_or_partition,
         "This server does not host this topic-partition."),
        (None, None, ErrorCode.invalid_request, "Neither topic name nor id were specified."),
        ("named", missing, ErrorCode.invalid_request,
         "You may not specify both topic name and topic id."),
        ("dup", None, ErrorCode.invalid_request, "Duplicate topic name."),
        # Named both by id and by name: neither is deleted.
        ("both-ways", both, ErrorCode.invalid_request,
         "The provided topic name maps to an ID that was already supplied."),
        ("both-ways", both, ErrorCode.invalid_request,
         "The provided topic name maps to an ID that was already supplied."),
    ]
    assert list(inproc.broker.image.topics_by_name) == ["both-ways"]


@pytest_twisted.inlineCallbacks
def test_delete_topics_old_versions(inproc: InProcessBroker) -> Any:
    make_topic(inproc, "gone")
    v1, v5 = yield ask(inproc.port, delete_topics(1, "gone"), delete_topics(5, "gone"))
    assert [(r.name, r.error_code) for r in v1.responses] == [("gone", ErrorCode.none)]
    assert [(r.name, r.error_code, r.error_message) for r in v5.responses] == [
        ("gone", ErrorCode.unknown_topic_or_partition,
         "This server does not host this topic-partition.")]


@pytest_twisted.inlineCallbacks
def test_delete_topics_when_deletion_is_disabled(broker_with: Any) -> Any:
    broker = broker_with("delete.topic.enable=false")
    make_topic(broker, "kept")
    v2, v6 = yield ask(broker.port, delete_topics(2, "kept"), delete_topics_v6(("kept", ZERO)))
    assert [(r.name, r.error_code) for r in v2.responses] == [("kept", ErrorCode.invalid_request)]
    assert [(r.name, r.error_code) for r in v6.responses] == [
        ("kept", ErrorCode.topic_deletion_disabled)]
    assert broker.broker.image.topic("kept") is not None


# -- CreatePartitions ----------------------------------------------------------------------


def create_partitions(version: int, *topics: tuple[str, int, list[list[int]] | None],
                      validate_only: bool = False) -> Any:
    m = schema("create_partitions", version)
    return m.CreatePartitionsRequest(
        topics=tuple(m.CreatePartitionsTopic(
            name=name, count=i32(count),
            assignments=None if assignments is None else tuple(
                m.CreatePartitionsAssignment(broker_ids=tuple(i32(b) for b in a))
                for a in assignments))
            for name, count, assignments in topics),
        timeout=TIMEOUT, validate_only=validate_only)


@pytest_twisted.inlineCallbacks
def test_create_partitions_errors_and_validate_only(inproc: InProcessBroker) -> Any:
    for name in ("grow", "dry", "dup", "assigned", "bad-assignments", "empty-assignment"):
        make_topic(inproc, name, 2)
    v0, v3 = yield ask(
        inproc.port,
        create_partitions(0, ("dry", 4, None), validate_only=True),
        create_partitions(3, ("grow", 3, None), ("dup", 3, None), ("missing", 2, None),
                          ("dup", 4, None), ("assigned", 4, [[1], [1]]),
                          ("bad-assignments", 4, [[1]]), ("empty-assignment", 3, [[]])))
    assert [(r.name, r.error_code) for r in v0.results] == [("dry", ErrorCode.none)]
    assert [(r.name, r.error_code, r.error_message) for r in v3.results] == [
        ("dup", ErrorCode.invalid_request, "Duplicate topic name."),
        ("grow", ErrorCode.none, None),
        ("missing", ErrorCode.unknown_topic_or_partition, None),
        ("assigned", ErrorCode.none, None),
        ("bad-assignments", ErrorCode.invalid_replica_assignment,
         "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified."),
        ("empty-assignment", ErrorCode.invalid_replica_assignment,
         "The manual partition assignment includes an empty replica list."),
    ]
    image = inproc.broker.image
    counts = {name: image.topic(name).num_partitions
              for name in ("grow", "dry", "dup", "assigned", "bad-assignments")}
    assert counts == {"grow": 3, "dry": 2, "dup": 2, "assigned": 4, "bad-assignments": 2}
    assert inproc.broker.get_log("assigned", 3) is not None


# -- DeleteRecords -------------------------------------------------------------------------


def delete_records(version: int, topic: str, *offsets: tuple[int, int]) -> Any:
    m = schema("delete_records", version)
    return m.DeleteRecordsRequest(topics=(m.DeleteRecordsTopic(name=topic, partitions=tuple(
        m.DeleteRecordsPartition(partition_index=i32(p), offset=i64(o)) for p, o in offsets)),),
        timeout=TIMEOUT)


@pytest_twisted.inlineCallbacks
def test_delete_records_errors(inproc: InProcessBroker) -> Any:
    make_topic(inproc, "records", 3)
    make_topic(inproc, "compacted", 1, {"cleanup.policy": "compact"})
    make_topic(inproc, "__transaction_state", 1)
    for partition in range(3):
        append(inproc, "records", partition, 5)
    responses = yield ask(
        inproc.port,
        delete_records(0, "records", (0, 2), (1, 6), (2, -1), (7, 0)),
        delete_records(2, "records", (0, -2), (0, 1), (0, 4)),
        delete_records(1, "compacted", (0, 0)),
        delete_records(2, "__transaction_state", (0, 0)),
        delete_records(2, "absent", (0, 0)))
    got = [[(p.partition_index, p.error_code, p.low_watermark) for t in r.topics
            for p in t.partitions] for r in responses]
    assert got == [
        [(0, ErrorCode.none, 2), (1, ErrorCode.offset_out_of_range, -1), (2, ErrorCode.none, 5),
         (7, ErrorCode.unknown_topic_or_partition, -1)],
        # An offset below the current start leaves it where it is.
        [(0, ErrorCode.offset_out_of_range, -1), (0, ErrorCode.none, 2), (0, ErrorCode.none, 4)],
        [(0, ErrorCode.policy_violation, -1)],
        [(0, ErrorCode.invalid_topic_exception, -1)],
        [(0, ErrorCode.unknown_topic_or_partition, -1)],
    ]
    starts = [inproc.broker.get_log("records", p).log_start_offset for p in range(3)]
    assert starts == [4, 0, 5]


# -- DescribeConfigs -----------------------------------------------------------------------


def describe_configs(version: int, *resources: tuple[int, str, list[str] | None],
                     synonyms: bool = False, documentation: bool = False) -> Any:
    m = schema("describe_configs", version)
    fields: dict[str, Any] = {"include_synonyms": synonyms}
    if version >= 3:
        fields["include_documentation"] = documentation
    return m.DescribeConfigsRequest(resources=tuple(
        m.DescribeConfigsResource(resource_type=i8(t), resource_name=n,
                                  configuration_keys=None if k is None else tuple(k))
        for t, n, k in resources), **fields)


@pytest_twisted.inlineCallbacks
def test_describe_configs_resource_errors(inproc: InProcessBroker) -> Any:
    (response,) = yield ask(inproc.port, describe_configs(
        4, (2, "no-such-topic", None), (2, "bad name", None), (4, "2", None), (4, "one", None),
        (32, "", None), (16, "", None), (99, "x", None)))
    assert [(r.resource_type, r.resource_name, r.error_code, r.error_message, r.configs)
            for r in response.results] == [
        (2, "no-such-topic", ErrorCode.unknown_topic_or_partition, "", ()),
        (2, "bad name", ErrorCode.invalid_topic_exception,
         "Topic name is invalid: 'bad name' contains one or more characters other than ASCII "
         "alphanumerics, '.', '_' and '-'", ()),
        (4, "2", ErrorCode.invalid_request,
         "Unexpected broker id, expected 1 or empty string, but received 2", ()),
        (4, "one", ErrorCode.invalid_request, "Broker id must be an integer, but it is: one", ()),
        (32, "", ErrorCode.invalid_request, "Group name must not be empty", ()),
        (16, "", ErrorCode.invalid_request, "Client metrics subscription name must not be empty", ()),
        (99, "x", ErrorCode.invalid_request, "Unsupported resource type: 99", ()),
    ]


@pytest_twisted.inlineCallbacks
def test_describe_configs_keys_types_documentation(inproc: InProcessBroker) -> Any:
    make_topic(inproc, "typed", 1, {"preallocate": "TRUE"})
    v1, v4 = yield ask(
        inproc.port,
        describe_configs(1, (2, "typed", ["preallocate", "cleanup.policy"]), (4, "1", [])),
        describe_configs(4, (2, "typed", ["preallocate", "min.cleanable.dirty.ratio"]),
                         (4, "1", ["log.retention.ms", "ssl.key.password"]),
                         synonyms=True, documentation=True))
    topic, broker = v1.results
    assert [(c.name, c.value, c.config_source) for c in topic.configs] == [
        ("cleanup.policy", "delete", 5), ("preallocate", "true", 1)]
    assert len(broker.configs) > 100  # empty keys: all of them
    topic, broker = v4.results
    by_name = {c.name: c for c in topic.configs}
    assert by_name["preallocate"].config_type == 1  # BOOLEAN
    assert by_name["min.cleanable.dirty.ratio"].config_type == 6  # DOUBLE
    assert by_name["min.cleanable.dirty.ratio"].value == "0.5"
    assert by_name["preallocate"].documentation.startswith("True if we should preallocate")
    assert [(s.name, s.value, s.source) for s in by_name["preallocate"].synonyms] == [
        ("preallocate", "true", 1), ("log.preallocate", "false", 5)]
    by_name = {c.name: c for c in broker.configs}
    retention = by_name["log.retention.ms"]
    assert (retention.value, retention.read_only, retention.config_type) == (None, False, 5)
    assert retention.synonyms == ()  # nothing names log.retention.ms itself
    password = by_name["ssl.key.password"]
    assert password.is_sensitive and password.value is None and password.config_type == 9


@pytest_twisted.inlineCallbacks
def test_cluster_default_broker_configs(inproc: InProcessBroker) -> Any:
    make_topic(inproc, "defaulted")
    alter, describe = yield ask(
        inproc.port,
        incremental_alter(1, (4, "", [("log.segment.bytes", SET, "2000000"),
                                      ("log.retention.bytes", SET, "3000000")])),
        describe_configs(4, (4, "", None), (4, "1", ["log.segment.bytes"]),
                         (2, "defaulted", ["segment.bytes"]), synonyms=True))
    assert [(r.error_code, r.error_message) for r in alter.responses] == [(ErrorCode.none, None)]
    cluster, node, topic = describe.results
    # min.insync.replicas is there from the start, as Kafka 4.1's format writes it with ELR on.
    assert [(c.name, c.value, c.config_source) for c in cluster.configs] == [
        ("log.retention.bytes", "3000000", 3), ("log.segment.bytes", "2000000", 3),
        ("min.insync.replicas", "1", 3)]
    (segment,) = node.configs
    assert (segment.value, segment.config_source) == ("2000000", 3)
    assert [(s.name, s.value, s.source) for s in segment.synonyms] == [
        ("log.segment.bytes", "2000000", 3), ("log.segment.bytes", "1073741824", 5)]
    (segment,) = topic.configs
    assert (segment.value, segment.config_source) == ("2000000", 3)
    assert inproc.broker.get_log("defaulted", 0).config.segment_bytes == 2000000


# -- AlterConfigs, IncrementalAlterConfigs -------------------------------------------------

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


def alter_configs(version: int, *resources: tuple[int, str, list[tuple[str, str | None]]],
                  validate_only: bool = False) -> Any:
    m = schema("alter_configs", version)
    return m.AlterConfigsRequest(resources=tuple(
        m.AlterConfigsResource(resource_type=i8(t), resource_name=n, configs=tuple(
            m.AlterableConfig(name=k, value=v) for k, v in configs))
        for t, n, configs in resources), validate_only=validate_only)


def incremental_alter(version: int, *resources: tuple[int, str, list[tuple[str, int, str | None]]],
                      validate_only: bool = False) -> Any:
    m = schema("incremental_alter_configs", version)
    return m.IncrementalAlterConfigsRequest(resources=tuple(
        m.AlterConfigsResource(resource_type=i8(t), resource_name=n, configs=tuple(
            m.AlterableConfig(name=k, config_operation=i8(op), value=v) for k, op, v in configs))
        for t, n, configs in resources), validate_only=validate_only)


LEGACY_CASES: list[tuple[list[Any], list[tuple[str, ErrorCode, str | None]]]] = [
    ([(2, "altered", [("segment.ms", "5000")]), (2, "twice", []), (2, "twice", [])],
     [("altered", ErrorCode.none, None),
      ("twice", ErrorCode.invalid_request, "Each resource must appear at most once."),
      ("twice", ErrorCode.invalid_request, "Each resource must appear at most once.")]),
    ([(2, "missing", [("retention.ms", "1")])],
     [("missing", ErrorCode.unknown_topic_or_partition, "The topic 'missing' does not exist.")]),
    ([(2, "", [])], [("", ErrorCode.invalid_request, "Default topic resources are not allowed.")]),
    ([(2, "dup-keys", [("segment.ms", "1"), ("segment.ms", "2")])],
     [("dup-keys", ErrorCode.invalid_request, "Error due to duplicate config keys")]),
    ([(2, "altered-too", [("max.message.bytes", "-5")])],
     [("altered-too", ErrorCode.invalid_config,
       "Invalid value -5 for configuration max.message.bytes: Value must be at least 0")]),
    ([(4, "1", [("num.partitions", "3")])],
     [("1", ErrorCode.invalid_request,
       "Cannot update these configs dynamically: Set(num.partitions)")]),
    ([(4, "", [("listeners", "PLAINTEXT://:1")])],
     [("", ErrorCode.invalid_request, "Cannot update these configs at default cluster level, "
                                      "broker id must be specified: Set(listeners)")]),
    ([(4, "1", [("log.retention.ms", "soon")])],
     [("1", ErrorCode.invalid_request,
       "Invalid value soon for configuration log.retention.ms: Not a number of type LONG")]),
    ([(4, "2", [])],
     [("2", ErrorCode.invalid_request, "Unexpected broker id, expected 1, but received 2")]),
    ([(4, "x", [])], [("x", ErrorCode.invalid_request, "Node id must be an integer, but it is: x")]),
    ([(4, "1", [("log.cleaner.threads", None)])],
     [("1", ErrorCode.invalid_request, "Null value not supported for : log.cleaner.threads")]),
    ([(8, "1", [])], [("1", ErrorCode.invalid_request, "Unknown resource type 8")]),
]

INCREMENTAL_CASES: list[tuple[Any, tuple[str, ErrorCode, str | None]]] = [
    ((2, "altered", [("retention.ms", APPEND, "5")]),
     ("altered", ErrorCode.invalid_config,
      "Can't APPEND to key retention.ms because its type is not LIST.")),
    ((2, "altered", [("no.such.config", SET, "5")]),
     ("altered", ErrorCode.invalid_config, "Unknown topic config name: no.such.config")),
    ((2, "altered", [("retention.ms", 7, "5")]),
     ("altered", ErrorCode.invalid_request, "Unknown operations type 7")),
    ((2, "altered", [("retention.ms", SET, None)]),
     ("altered", ErrorCode.invalid_request, "Null value not supported for : retention.ms")),
    ((4, "1", [("ssl.keystore.password", SET, "secret")]),
     ("1", ErrorCode.invalid_request, "These security configs can be dynamically updated only "
                                      "per-listener using the listener prefix: "
                                      "Set(ssl.keystore.password)")),
    ((4, "1", [("made.up.key", APPEND, "x")]),
     ("1", ErrorCode.invalid_config,
      "Can't APPEND to key made.up.key because its type is not LIST.")),
    ((32, "group", [("consumer.session.timeout.ms", SET, "5")]),
     ("group", ErrorCode.invalid_config, "consumer.session.timeout.ms must be greater than or equal "
                                         "to group.consumer.min.session.timeout.ms")),
]


@pytest_twisted.inlineCallbacks
def test_alter_configs_errors(inproc: InProcessBroker) -> Any:
    make_topic(inproc, "altered", 1, {"retention.ms": "1000"})
    make_topic(inproc, "altered-too")
    responses = yield ask(inproc.port, *[alter_configs(2, *resources)
                                         for resources, _ in LEGACY_CASES])
    for response, (_, expected) in zip(responses, LEGACY_CASES, strict=True):
        assert [(r.resource_name, r.error_code, r.error_message)
                for r in response.responses] == expected
    # The one legacy success replaced the whole set: retention.ms is gone.
    assert dict(inproc.broker.image.configs_of_topic("altered")) == {"segment.ms": "5000"}
    responses = yield ask(inproc.port, *[incremental_alter(1, resource)
                                         for resource, _ in INCREMENTAL_CASES])
    for response, (_, expected) in zip(responses, INCREMENTAL_CASES, strict=True):
        assert [(r.resource_name, r.error_code, r.error_message)
                for r in response.responses] == [expected]
    assert dict(inproc.broker.image.configs_of_topic("altered")) == {"segment.ms": "5000"}
    # only what the bootstrap wrote (min.insync.replicas, as Kafka 4.1's format does)
    assert inproc.broker.image.broker_configs == {"": {"min.insync.replicas": "1"}}


@pytest_twisted.inlineCallbacks
def test_alter_configs_validate_only_changes_nothing(inproc: InProcessBroker) -> Any:
    make_topic(inproc, "checked", 1, {"retention.ms": "1000"})
    before = inproc.broker.image.offset
    legacy, incremental = yield ask(
        inproc.port,
        alter_configs(0, (2, "checked", [("retention.bytes", "1")]), (4, "1", [("x.y", "z")]),
                      validate_only=True),
        incremental_alter(0, (2, "checked", [("retention.ms", DELETE, None)]),
                          validate_only=True))
    assert [r.error_code for r in legacy.responses] == [ErrorCode.none, ErrorCode.none]
    assert [r.error_code for r in incremental.responses] == [ErrorCode.none]
    assert inproc.broker.image.offset == before
    assert dict(inproc.broker.image.configs_of_topic("checked")) == {"retention.ms": "1000"}


# -- DescribeCluster -----------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_describe_cluster_versions_and_endpoint_types(inproc: InProcessBroker) -> Any:
    m0, m1, m2 = (schema("describe_cluster", v) for v in (0, 1, 2))
    v0, v2, controllers, unknown, v0_unknown = yield ask(
        inproc.port,
        m0.DescribeClusterRequest(include_cluster_authorized_operations=False),
        m2.DescribeClusterRequest(include_cluster_authorized_operations=True,
                                  include_fenced_brokers=True),
        m1.DescribeClusterRequest(include_cluster_authorized_operations=False,
                                  endpoint_type=i8(2)),
        m2.DescribeClusterRequest(include_cluster_authorized_operations=False,
                                  endpoint_type=i8(9), include_fenced_brokers=False),
        m0.DescribeClusterRequest(include_cluster_authorized_operations=True))
    cluster_id = inproc.broker.cluster_id
    assert (v0.error_code, v0.cluster_id, v0.controller_id) == (ErrorCode.none, cluster_id, 1)
    assert [(b.broker_id, b.host, b.port) for b in v0.brokers] == [(1, "127.0.0.1", inproc.port)]
    assert v0.cluster_authorized_operations == -(2**31)
    assert v0_unknown.cluster_authorized_operations == sum(
        1 << op for op in (5, 7, 8, 9, 10, 11, 12))
    assert [(b.broker_id, b.is_fenced) for b in v2.brokers] == [(1, False)]
    assert v2.endpoint_type == 1
    assert (controllers.error_code, controllers.error_message, controllers.brokers) == (
        ErrorCode.mismatched_endpoint_type,
        "The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type "
        "CONTROLLER", ())
    assert (int(unknown.error_code), unknown.error_message) == (115, "Unsupported endpoint type 9")


# -- OffsetForLeaderEpoch ------------------------------------------------------------------


def offset_for_leader_epoch(version: int, topic: str,
                            *partitions: tuple[int, int, int]) -> Any:
    m = schema("offset_for_leader_epoch", version)
    fields: dict[str, Any] = {}
    if version >= 3:
        fields["replica_id"] = i32(-1)
    return m.OffsetForLeaderEpochRequest(topics=(m.OffsetForLeaderTopic(topic=topic, partitions=tuple(
        m.OffsetForLeaderPartition(partition=i32(p), current_leader_epoch=i32(current),
                                   leader_epoch=i32(epoch))
        for p, current, epoch in partitions)),), **fields)


@pytest_twisted.inlineCallbacks
def test_offset_for_leader_epoch(inproc: InProcessBroker) -> Any:
    make_topic(inproc, "epochs", 3)
    append(inproc, "epochs", 0, 4, leader_epoch=0)
    append(inproc, "epochs", 0, 3, leader_epoch=2)
    v2, v4 = yield ask(
        inproc.port,
        offset_for_leader_epoch(2, "epochs", (0, -1, 0), (0, -1, 1), (0, -1, 2), (0, -1, 3)),
        offset_for_leader_epoch(4, "epochs", (1, 0, 0), (2, -1, 5), (0, 1, 0), (9, -1, 0)))
    assert [(p.partition, p.error_code, p.leader_epoch, p.end_offset)
            for t in v2.topics for p in t.partitions] == [
        (0, ErrorCode.none, 0, 4), (0, ErrorCode.none, 0, 4), (0, ErrorCode.none, 2, 7),
        (0, ErrorCode.none, -1, -1)]
    assert [(p.partition, p.error_code, p.leader_epoch, p.end_offset)
            for t in v4.topics for p in t.partitions] == [
        # An empty partition: its current epoch starts at the log end offset, as in Kafka.
        (1, ErrorCode.none, 0, 0), (2, ErrorCode.none, -1, -1),
        (0, ErrorCode.unknown_leader_epoch, -1, -1),
        (9, ErrorCode.unknown_topic_or_partition, -1, -1)]
