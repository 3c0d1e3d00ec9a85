"""The cluster admin APIs (log dirs, quorum, elections, reassignments, config resources,
telemetry, ACLs) over the raw protocol, for the versions and error paths tools do not reach,
and through confluent-kafka's admin client where it has the call.  What each answer must be was
read off a Kafka 4.1.1 broker (tests/test_admin_tools.py compares the tools on both).
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ElectionType, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from kio.schema.errors import ErrorCode
from kio.static.primitive import i8, i32, i32Timedelta

from akfak.handlers.telemetry import subscription_id
from tests.brokers import BrokerProcess, start_process
from tests.requests import metadata
from tests.wire import WireClient

TIMEOUT = i32Timedelta.parse(timedelta(seconds=30))


def schema(api: str, version: int) -> Any:
    return importlib.import_module(f"kio.schema.{api}.v{version}.request")


def with_topics(proc: BrokerProcess) -> BrokerProcess:
    """`proc` with topic t (2 partitions) and u (1)."""
    admin = AdminClient({"bootstrap.servers": proc.bootstrap})
    for future in admin.create_topics([NewTopic("t", 2, 1), NewTopic("u", 1, 1)]).values():
        future.result(30)
    return proc


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One akfak subprocess for the module, with topics t and u: each test here only reads
    what it holds or is refused (test_unregister_broker, which changes it, has its own)."""
    proc = start_process(tmp_path_factory.mktemp("admin-apis") / "data")
    try:
        yield with_topics(proc)
    finally:
        proc.stop()


def request(port: int, entity: Any) -> Any:
    with WireClient(port) as client:
        return client.request(entity)


def api_keys(port: int) -> dict[int, tuple[int, int]]:
    versions = schema("api_versions", 3)
    response = request(port, versions.ApiVersionsRequest(client_software_name="akfak-tests",
                                                         client_software_version="1"))
    return {int(k.api_key): (int(k.min_version), int(k.max_version)) for k in response.api_keys}


def test_advertised_versions(broker: BrokerProcess) -> None:
    """The versions Kafka 4.1.1 advertises; the telemetry APIs are answered but not listed, as
    on a Kafka broker without a telemetry receiver."""
    keys = api_keys(broker.port)
    assert {k: keys[k] for k in (29, 30, 31, 35, 43, 45, 46, 55, 74)} == {
        29: (1, 3), 30: (1, 3), 31: (1, 3), 35: (1, 4), 43: (0, 2), 45: (0, 1), 46: (0, 0),
        55: (0, 2), 74: (0, 1)}
    assert 71 not in keys and 72 not in keys


# -- DescribeLogDirs ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 4])
def test_describe_log_dirs(broker: BrokerProcess, version: int) -> None:
    m = schema("describe_log_dirs", version)
    everything = request(broker.port, m.DescribeLogDirsRequest(topics=None))
    (result,) = everything.results
    assert result.error_code == ErrorCode.none
    assert Path(result.log_dir) == broker.data_dir.absolute()
    assert {(t.name, p.partition_index, p.offset_lag, p.is_future_key)
            for t in result.topics for p in t.partitions} == {("t", 0, 0, False), ("t", 1, 0, False),
                                                              ("u", 0, 0, False)}
    if version >= 4:
        assert 0 < result.usable_bytes <= result.total_bytes
    # Unknown topics and partitions are left out, not errors.
    some = request(broker.port, m.DescribeLogDirsRequest(topics=(
        m.DescribableLogDirTopic(topic="t", partitions=(i32(1), i32(9))),
        m.DescribableLogDirTopic(topic="nope", partitions=(i32(0),)))))
    (result,) = some.results
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in result.topics] == [("t", [1])]
    none = request(broker.port, m.DescribeLogDirsRequest(topics=()))
    assert none.results[0].topics == ()


# -- DescribeQuorum -----------------------------------------------------------------------


def quorum(topic: str, *partitions: int, version: int = 2) -> Any:
    m = schema("describe_quorum", version)
    return m.DescribeQuorumRequest(topics=(m.TopicData(topic_name=topic, partitions=tuple(
        m.PartitionData(partition_index=i32(p)) for p in partitions)),))


@pytest.mark.parametrize("version", [0, 1, 2])
def test_describe_quorum(broker: BrokerProcess, version: int) -> None:
    response = request(broker.port, quorum("__cluster_metadata", 0, version=version))
    assert response.error_code == ErrorCode.none
    (partition,) = response.topics[0].partitions
    assert (partition.error_code, partition.leader_id, partition.leader_epoch) == (ErrorCode.none, 1, 1)
    (voter,) = partition.current_voters
    assert voter.replica_id == 1 and voter.log_end_offset == partition.high_watermark > 0
    assert partition.observers == ()
    if version >= 1:
        assert voter.last_fetch_timestamp == voter.last_caught_up_timestamp > 0
    if version >= 2:
        assert voter.replica_directory_id is not None
        (node,) = response.nodes
        assert [(listener.host, listener.port) for listener in node.listeners] == [
            ("127.0.0.1", broker.port)]


def test_describe_quorum_of_another_partition(broker: BrokerProcess) -> None:
    for wrong in (quorum("__cluster_metadata", 1), quorum("t", 0), quorum("__cluster_metadata", 0, 0)):
        response = request(broker.port, wrong)
        assert response.error_code == ErrorCode.none and response.nodes == ()
        for partition in response.topics[0].partitions:
            assert (partition.error_code, partition.error_message, partition.leader_id,
                    partition.current_voters) == (ErrorCode.unknown_topic_or_partition,
                                                  "This server does not host this topic-partition.",
                                                  0, ())


# -- ElectLeaders -------------------------------------------------------------------------


def elect(election_type: int, topics: dict[str, tuple[int, ...]] | None, version: int = 2) -> Any:
    m = schema("elect_leaders", version)
    partitions = None if topics is None else tuple(
        m.TopicPartitions(topic=name, partitions=tuple(i32(p) for p in ps)) for name, ps in topics.items())
    fields: dict[str, Any] = {"topic_partitions": partitions, "timeout": TIMEOUT}
    if version >= 1:
        fields["election_type"] = i8(election_type)
    return m.ElectLeadersRequest(**fields)


def results(response: Any) -> list[tuple[str, int, ErrorCode, str | None]]:
    return [(t.topic, p.partition_id, p.error_code, p.error_message)
            for t in response.replica_election_results for p in t.partition_result]


@pytest.mark.parametrize("version", [0, 1, 2])
def test_elect_leaders(broker: BrokerProcess, version: int) -> None:
    not_needed = (ErrorCode.election_not_needed, "Leader election not needed for topic partition.")
    for election_type in (0, 1) if version else (0,):
        response = request(broker.port, elect(election_type, {"t": (0, 1, 5), "nope": (0,)}, version))
        assert results(response) == [
            ("t", 0, *not_needed), ("t", 1, *not_needed),
            ("t", 5, ErrorCode.unknown_topic_or_partition, "No such partition as t-5"),
            ("nope", 0, ErrorCode.unknown_topic_or_partition, "No such topic as nope")]


def test_elect_leaders_everywhere_and_bad_type(broker: BrokerProcess) -> None:
    # null: every topic listed, without the partitions that needed no election
    everything = request(broker.port, elect(0, None))
    assert [(t.topic, t.partition_result) for t in everything.replica_election_results] == [
        ("t", ()), ("u", ())]
    assert request(broker.port, elect(0, {})).replica_election_results == ()
    bad = request(broker.port, elect(3, {"t": (0,)}))
    assert bad.error_code == ErrorCode.invalid_request
    assert results(bad) == [("t", 0, ErrorCode.invalid_request, "Unknown election type 3")]


def test_elect_leaders_confluent_kafka(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    future = admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("t", 0), TopicPartition("nope", 0)])
    errors = {(tp.topic, tp.partition): error.code() for tp, error in future.result(30).items()}
    assert errors == {("t", 0): KafkaError.ELECTION_NOT_NEEDED,
                      ("nope", 0): KafkaError.UNKNOWN_TOPIC_OR_PART}


# -- Alter/ListPartitionReassignments -----------------------------------------------------


def test_alter_partition_reassignments(broker: BrokerProcess) -> None:
    m = schema("alter_partition_reassignments", 1)
    target = m.ReassignablePartition
    response = request(broker.port, m.AlterPartitionReassignmentsRequest(
        timeout=TIMEOUT, allow_replication_factor_change=False, topics=(
            m.ReassignableTopic(name="t", partitions=(
                target(partition_index=i32(0), replicas=(i32(1),)),
                target(partition_index=i32(1), replicas=(i32(2),)),
                target(partition_index=i32(5), replicas=(i32(1),)),
                target(partition_index=i32(1), replicas=None),
                target(partition_index=i32(0), replicas=()),
                target(partition_index=i32(0), replicas=(i32(1), i32(1))))),
            m.ReassignableTopic(name="nope", partitions=(
                target(partition_index=i32(0), replicas=(i32(1),)),)))))
    assert (response.error_code, response.error_message, response.allow_replication_factor_change) == (
        ErrorCode.none, None, False)
    assert [(t.name, p.partition_index, p.error_code, p.error_message)
            for t in response.responses for p in t.partitions] == [
        ("t", 0, ErrorCode.none, None),
        ("t", 1, ErrorCode.invalid_replica_assignment,
         "The manual partition assignment includes broker 2, but no such broker is registered."),
        ("t", 5, ErrorCode.unknown_topic_or_partition, "Unable to find partition t:5."),
        ("t", 1, ErrorCode.no_reassignment_in_progress, None),
        ("t", 0, ErrorCode.invalid_replica_assignment,
         "The manual partition assignment includes an empty replica list."),
        ("t", 0, ErrorCode.invalid_replica_assignment,
         "The manual partition assignment includes the broker 1 more than once."),
        ("nope", 0, ErrorCode.unknown_topic_or_partition, "Unable to find a topic named nope.")]
    empty = request(broker.port, m.AlterPartitionReassignmentsRequest(
        timeout=TIMEOUT, allow_replication_factor_change=False, topics=()))
    assert (empty.error_code, empty.error_message, empty.allow_replication_factor_change,
            empty.responses) == (ErrorCode.none, "", True, ())
    listing = schema("list_partition_reassignments", 0)
    for topics in (None, (listing.ListPartitionReassignmentsTopics(name="t", partition_indexes=(i32(0),)),)):
        listed = request(broker.port,
                         listing.ListPartitionReassignmentsRequest(timeout=TIMEOUT, topics=topics))
        assert (listed.error_code, listed.topics) == (ErrorCode.none, ())


# -- ListConfigResources ------------------------------------------------------------------


def test_list_config_resources(broker: BrokerProcess) -> None:
    v0 = schema("list_config_resources", 0)
    assert request(broker.port, v0.ListConfigResourcesRequest()).config_resources == ()
    v1 = schema("list_config_resources", 1)

    def listed(*types: int) -> tuple[ErrorCode, list[tuple[str, int]]]:
        response = request(broker.port,
                           v1.ListConfigResourcesRequest(resource_types=tuple(i8(t) for t in types)))
        return response.error_code, [(r.resource_name, r.resource_type) for r in response.config_resources]

    assert listed() == (ErrorCode.none, [("1", 8), ("1", 4), ("t", 2), ("u", 2)])
    assert listed(2) == (ErrorCode.none, [("t", 2), ("u", 2)])
    assert listed(16) == listed(32) == (ErrorCode.none, [])
    assert listed(16, 4) == (ErrorCode.none, [("1", 4)])
    assert listed(1) == listed(99, 2) == (ErrorCode.unsupported_version, [])


# -- GetTelemetrySubscriptions / PushTelemetry --------------------------------------------


def test_telemetry_without_subscriptions(broker: BrokerProcess) -> None:
    get = schema("get_telemetry_subscriptions", 0)
    fresh = request(broker.port, get.GetTelemetrySubscriptionsRequest(client_instance_id=uuid.UUID(int=0)))
    assert fresh.error_code == ErrorCode.none and fresh.client_instance_id != uuid.UUID(int=0)
    assert (fresh.requested_metrics, fresh.accepted_compression_types, fresh.push_interval,
            fresh.telemetry_max_bytes, fresh.delta_temporality) == (
        (), (4, 3, 1, 2), timedelta(minutes=5), 1024 * 1024, True)
    known = uuid.UUID("e68dccb0-ac6c-4609-8ae6-500a7c0a2850")
    again = request(broker.port, get.GetTelemetrySubscriptionsRequest(client_instance_id=known))
    # the id Kafka 4.1.1 answered for this instance id
    assert (again.client_instance_id, again.subscription_id) == (known, 1758112061)
    assert subscription_id(known) == 1758112061
    push = schema("push_telemetry", 0)

    def pushed(instance: uuid.UUID, subscription: int, compression: int = 0,
               metrics: bytes = b"") -> ErrorCode:
        return request(broker.port, push.PushTelemetryRequest(
            client_instance_id=instance, subscription_id=i32(subscription), terminating=False,
            compression_type=i8(compression), metrics=metrics)).error_code

    assert pushed(known, 1758112061) == ErrorCode.none
    assert pushed(known, 1758112062) == ErrorCode.unknown_subscription_id
    assert pushed(uuid.UUID(int=0), 1) == pushed(uuid.UUID(int=1), 1) == ErrorCode.invalid_request
    assert pushed(known, 1758112061, compression=9) == ErrorCode.unsupported_compression_type
    assert pushed(known, 1758112061, metrics=bytes(1024 * 1024 + 1)) == ErrorCode.telemetry_too_large


# -- ACLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2, 3])
def test_acls_security_disabled(broker: BrokerProcess, version: int) -> None:
    describe, create, delete = (schema(api, version)
                                for api in ("describe_acls", "create_acls", "delete_acls"))
    filter_fields = {"resource_name_filter": None, "pattern_type_filter": i8(1), "principal_filter": None,
                     "host_filter": None, "operation": i8(1), "permission_type": i8(1)}
    described = request(broker.port,
                        describe.DescribeAclsRequest(resource_type_filter=i8(1), **filter_fields))
    assert (described.error_code, described.error_message, described.resources) == (
        ErrorCode.security_disabled, "No Authorizer is configured on the broker", ())
    creation = create.AclCreation(resource_type=i8(2), resource_name="t", resource_pattern_type=i8(3),
                                  principal="User:a", host="*", operation=i8(3), permission_type=i8(3))
    created = request(broker.port, create.CreateAclsRequest(creations=(creation, creation)))
    assert [(r.error_code, r.error_message) for r in created.results] == [
        (ErrorCode.security_disabled, "No Authorizer is configured.")] * 2
    assert request(broker.port, create.CreateAclsRequest(creations=())).results == ()
    deleted = request(broker.port, delete.DeleteAclsRequest(filters=(
        delete.DeleteAclsFilter(resource_type_filter=i8(1), **filter_fields),)))
    assert [(r.error_code, r.error_message, r.matching_acls) for r in deleted.filter_results] == [
        (ErrorCode.security_disabled, "No Authorizer is configured.", ())]


def test_acl_filter_with_unknown_elements_closes_the_connection(broker: BrokerProcess) -> None:
    """Kafka's request classes refuse UNKNOWN (0) elements: the request cannot be parsed, and
    the connection closes; the broker keeps serving others."""
    describe = schema("describe_acls", 3)
    with WireClient(broker.port) as client, pytest.raises(ConnectionError):
        client.request(describe.DescribeAclsRequest(
            resource_type_filter=i8(0), resource_name_filter=None, pattern_type_filter=i8(1),
            principal_filter=None, host_filter=None, operation=i8(1), permission_type=i8(1)))
    create = schema("create_acls", 3)
    with WireClient(broker.port) as client, pytest.raises(ConnectionError):
        client.request(create.CreateAclsRequest(creations=(create.AclCreation(
            resource_type=i8(2), resource_name="t", resource_pattern_type=i8(3), principal="User:a",
            host="*", operation=i8(0), permission_type=i8(3)),)))
    assert 29 in api_keys(broker.port)
    assert "DescribeAclsRequest contains UNKNOWN elements" in broker.log()


def test_acls_confluent_kafka(broker: BrokerProcess) -> None:
    """confluent-kafka's ACL calls get SECURITY_DISABLED (describe_acls: see below)."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    any_acl = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                               AclOperation.ANY, AclPermissionType.ANY)
    # librdkafka drops DescribeAcls' top-level error: an empty list, on Kafka 4.1.1 as here.
    assert admin.describe_acls(any_acl).result(30) == []
    binding = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:alice", "*",
                         AclOperation.READ, AclPermissionType.ALLOW)
    for future in admin.create_acls([binding]).values():
        with pytest.raises(KafkaException) as created:
            future.result(30)
        assert created.value.args[0].code() == KafkaError.SECURITY_DISABLED
    for future in admin.delete_acls([any_acl]).values():
        with pytest.raises(KafkaException) as deleted:
            future.result(30)
        assert deleted.value.args[0].code() == KafkaError.SECURITY_DISABLED


# -- Metadata by topic id -----------------------------------------------------------------


def test_metadata_by_topic_id_with_empty_name(broker: BrokerProcess) -> None:
    """The Java client's describeTopics(TopicCollection.ofTopicIds(...)) sends the name as "":
    the id decides."""
    by_name = request(broker.port, metadata(["t"], version=12))
    topic_id = by_name.topics[0].topic_id
    m = schema("metadata", 12)
    for name in ("", None):
        response = request(broker.port, m.MetadataRequest(
            topics=(m.MetadataRequestTopic(topic_id=topic_id, name=name),
                    m.MetadataRequestTopic(topic_id=uuid.uuid4(), name=name)),
            allow_auto_topic_creation=False, include_topic_authorized_operations=False))
        assert [(t.name, t.error_code, len(t.partitions)) for t in response.topics] == [
            ("t", ErrorCode.none, 2), (None, ErrorCode.unknown_topic_id, 0)]


# -- AlterReplicaLogDirs, UnregisterBroker, BROKER_LOGGER alterations -------------------------


def test_alter_replica_log_dirs(broker: BrokerProcess) -> None:
    """Each partition answers on its own: NONE where the replica already is, LOG_DIR_NOT_FOUND
    for another path, UNKNOWN_TOPIC_OR_PARTITION for what the cluster lacks, and
    INVALID_TOPIC_EXCEPTION for a name too long for a future replica's directory."""
    m = schema("alter_replica_log_dirs", 2)
    data_dir = str(request(broker.port, schema("describe_log_dirs", 4).DescribeLogDirsRequest(topics=None))
                   .results[0].log_dir)
    long_name = "x" * 240
    answer = request(broker.port, m.AlterReplicaLogDirsRequest(dirs=(
        m.AlterReplicaLogDir(path=data_dir, topics=(
            m.AlterReplicaLogDirTopic(name="t", partitions=(i32(0), i32(1), i32(7))),
            m.AlterReplicaLogDirTopic(name="missing", partitions=(i32(0),)),
            m.AlterReplicaLogDirTopic(name=long_name, partitions=(i32(0),)))),
        m.AlterReplicaLogDir(path="/no/such/dir", topics=(
            m.AlterReplicaLogDirTopic(name="u", partitions=(i32(0),)),)))))
    assert [(r.topic_name, [(int(p.partition_index), p.error_code) for p in r.partitions])
            for r in answer.results] == [
        ("t", [(0, ErrorCode.none), (1, ErrorCode.none), (7, ErrorCode.unknown_topic_or_partition)]),
        ("missing", [(0, ErrorCode.unknown_topic_or_partition)]),
        (long_name, [(0, ErrorCode.invalid_topic_exception)]),
        ("u", [(0, ErrorCode.log_dir_not_found)])]


def test_unregister_broker(broker_process: Any) -> None:
    broker = with_topics(broker_process())
    m = schema("unregister_broker", 0)
    other = request(broker.port, m.UnregisterBrokerRequest(broker_id=i32(2)))
    assert (other.error_code, other.error_message) == (
        ErrorCode.broker_id_not_registered, "Broker ID 2 is not currently registered")
    itself = request(broker.port, m.UnregisterBrokerRequest(broker_id=i32(1)))
    assert (itself.error_code, itself.error_message) == (ErrorCode.none, None)


@pytest.mark.parametrize(("name", "configs", "error", "message"), [
    ("1", [("root", 0, "INFO")], ErrorCode.none, None),
    ("1", [("kafka.server", 0, "INFO")], ErrorCode.invalid_config, "Logger kafka.server does not exist!"),
    ("1", [("root", 0, "LOUD")], ErrorCode.invalid_config,
     "Cannot set the log level of root to LOUD as it is not a supported log level. "
     "Valid log levels are DEBUG, ERROR, FATAL, INFO, TRACE, WARN"),
    ("1", [("root", 1, None)], ErrorCode.invalid_request,
     "Removing the log level of the root logger is not allowed"),
    ("1", [("root", 2, "INFO")], ErrorCode.invalid_request,
     "APPEND operation is not allowed for the BROKER_LOGGER resource"),
    ("1", [("root", 0, "DEBUG")], ErrorCode.invalid_request,
     "akfak logs at INFO and cannot change the level of root at run time"),
    ("2", [("root", 0, "INFO")], ErrorCode.invalid_request, "Unexpected node id. Expected 1, but received 1"),
    ("one", [("root", 0, "INFO")], ErrorCode.invalid_request, "Node id must be an integer, but it is: one"),
])
def test_broker_logger_alterations(broker: BrokerProcess, name: str,
                                   configs: list[tuple[str, int, str | None]], error: ErrorCode,
                                   message: str | None) -> None:
    """IncrementalAlterConfigs of BROKER_LOGGER checked as Kafka's RuntimeLoggerManager checks it."""
    m = schema("incremental_alter_configs", 1)
    answer = request(broker.port, m.IncrementalAlterConfigsRequest(validate_only=False, resources=(
        m.AlterConfigsResource(resource_type=i8(8), resource_name=name, configs=tuple(
            m.AlterableConfig(name=k, config_operation=i8(op), value=v) for k, op, v in configs)),)))
    assert [(r.error_code, r.error_message) for r in answer.responses] == [(error, message)]
