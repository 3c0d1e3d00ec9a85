"""Every API checks Kafka's ACLs with the StandardAuthorizer configured: real clients are
refused with Kafka's error without the ACL and served with it (literal, prefixed, wildcard
name and principal, host), DENY wins, super users bypass, ACLs survive a restart, Metadata
and DescribeTopicPartitions hide what may not be described, Metadata auto-creates only with
CREATE, the authorized-operations bitfields are the principal's; raw answers match Kafka
4.1.1's for the same ACLs.

Every PLAINTEXT client is User:ANONYMOUS (no SASL yet), so the ACLs are for it: they are
created with super.users=User:ANONYMOUS, then the broker restarts without it.  ANONYMOUS
also gets CLUSTER_ACTION on the cluster, which a Kafka node needs for its own broker to
register with its controller over PLAINTEXT.
"""

from __future__ import annotations

import importlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from kio.static.primitive import i8, i16, i32

from tests.brokers import start_process
from tests.kafka_peer import start_kafka
from tests.recordbatch import make_batch
from tests.requests import fetch, ms
from tests.requests import metadata as metadata_request
from tests.requests import produce as produce_request
from tests.wire import WireClient

STANDARD = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
ANON = "User:ANONYMOUS"
TOPICS = ("open", "pre-x", "pre-secret", "remote", "local", "hidden", "any-user")
#: What User:ANONYMOUS may describe from 127.0.0.1 once it is no super user.
DESCRIBABLE = {"open", "pre-x", "pre-secret", "local", "any-user"}


def _acl(rtype: Any, name: str, op: Any, *, pattern: Any = ResourcePatternType.LITERAL,
         principal: str = ANON, host: str = "*", permission: Any = AclPermissionType.ALLOW
         ) -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, host, op, permission)


T, G, X, C = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.TRANSACTIONAL_ID, ResourceType.BROKER
PREFIXED = ResourcePatternType.PREFIXED
ACLS = [
    _acl(T, "open", AclOperation.ALL),
    _acl(T, "pre-", AclOperation.ALL, pattern=PREFIXED),
    _acl(T, "pre-secret", AclOperation.READ, permission=AclPermissionType.DENY),  # DENY wins
    _acl(T, "remote", AclOperation.ALL, host="10.9.9.9"),  # another host's
    _acl(T, "local", AclOperation.ALL, host="127.0.0.1"),
    _acl(T, "new-", AclOperation.CREATE, pattern=PREFIXED),
    _acl(T, "any-user", AclOperation.READ, principal="User:*"),  # wildcard principal
    _acl(G, "g-", AclOperation.ALL, pattern=PREFIXED),
    _acl(X, "tx-", AclOperation.ALL, pattern=PREFIXED),
    _acl(X, "*", AclOperation.DESCRIBE),  # wildcard name
    _acl(C, "kafka-cluster", AclOperation.CLUSTER_ACTION),
    _acl(T, "see-", AclOperation.DESCRIBE, pattern=PREFIXED),  # to describe, not to create
    _acl(G, "ro-", AclOperation.DESCRIBE, pattern=PREFIXED),
]
#: Topics Metadata may auto-create in raw_answers (a new name each call), left out of lists.
AUTO = "pre-auto-"


LOADING = (KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
           KafkaError.NOT_COORDINATOR)


def prepare(bootstrap: str) -> set[str]:
    """As a super user: the topics and the ACLs; returns the topics the super user sees."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in TOPICS]).values():
        future.result(60)
    for future in admin.create_acls(ACLS).values():
        assert future.result(30) is None
    # a group's coordinator: Kafka makes __consumer_offsets now, while ANONYMOUS is a super user
    # (after the restart the broker, as ANONYMOUS, may not create it)
    # likewise __transaction_state, with a transactional id of its own
    Producer({"bootstrap.servers": bootstrap, "transactional.id": "tx-prepare"}).init_transactions(60)
    deadline = time.monotonic() + 60
    while True:
        try:
            admin.describe_consumer_groups(["g-none"])["g-none"].result(60)
            break
        except KafkaException as e:  # the coordinator is being made or loaded: a moment
            if e.args[0].code() not in LOADING or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    return set(admin.list_topics(timeout=30).topics)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """akfak with the ACLs above, restarted without super users."""
    root = tmp_path_factory.mktemp("acl-checks")
    authorizer = ("-o", f"authorizer.class.name={STANDARD}", "-o",
                  "group.initial.rebalance.delay.ms=0")
    first = start_process(root / "data", *authorizer, "-o", f"super.users={ANON}")
    try:
        seen_as_super = prepare(first.bootstrap)
    finally:
        first.stop()
    broker = start_process(root / "data", *authorizer)
    try:
        yield {"broker": broker, "bootstrap": broker.bootstrap, "port": broker.port,
               "seen_as_super": seen_as_super}
    finally:
        broker.stop()


def code(e: BaseException) -> int:
    assert isinstance(e, KafkaException), repr(e)
    return int(e.args[0].code())


def test_super_users_bypass_and_acls_survive_the_restart(secured: dict[str, Any]) -> None:
    assert set(TOPICS) <= secured["seen_as_super"]
    admin = AdminClient({"bootstrap.servers": secured["bootstrap"]})
    listed = {t for t in admin.list_topics(timeout=30).topics if not t.startswith(("__", AUTO))}
    assert listed == DESCRIBABLE  # "hidden" (no ACL) and "remote" (another host) are left out


def test_produce(secured: dict[str, Any]) -> None:
    errors: dict[str, int] = {}
    producer = Producer({"bootstrap.servers": secured["bootstrap"], "enable.idempotence": True,
                         "message.timeout.ms": 10000})
    for topic in ("open", "pre-x", "pre-secret", "local", "hidden", "remote"):
        producer.produce(topic, b"v", on_delivery=lambda err, msg, topic=topic: errors.__setitem__(
            topic, err.code() if err is not None else 0))
    assert producer.flush(30) == 0
    # an idempotent producer's InitProducerId passes on WRITE to some topic (no IDEMPOTENT_WRITE)
    assert errors == {"open": 0, "pre-x": 0, "pre-secret": 0, "local": 0,
                      "hidden": KafkaError.TOPIC_AUTHORIZATION_FAILED,
                      "remote": KafkaError.TOPIC_AUTHORIZATION_FAILED}
    with WireClient(secured["port"]) as client:
        for topic, expected in (("hidden", 29), ("nowhere", 29), ("open", 0)):
            answer = client.request(produce_request(topic, {0: make_batch()}))
            assert answer.responses[0].partition_responses[0].error_code == expected, topic


def consume(bootstrap: str, group: str, topic: str, polls: int = 40, **settings: str
            ) -> tuple[int, int]:
    """(messages received, first error code) polling a new consumer for a while."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, **settings})
    consumer.subscribe([topic])
    received = error = 0
    try:
        for _ in range(polls):
            msg = consumer.poll(0.5)
            if msg is None:
                if received:
                    break
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    error = msg.error().code()
                    break
                continue
            received += 1
        if received:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return received, error


def test_consume(secured: dict[str, Any]) -> None:
    bootstrap = secured["bootstrap"]
    producer = Producer({"bootstrap.servers": bootstrap})
    for topic in ("open", "pre-secret"):
        producer.produce(topic, b"x")
    producer.flush(30)
    assert consume(bootstrap, "g-1", "open")[0] >= 1
    assert consume(bootstrap, "g-2", "any-user", polls=10) == (0, 0)  # User:* READ, no data
    assert consume(bootstrap, "g-3", "pre-secret") == (0, KafkaError.TOPIC_AUTHORIZATION_FAILED)
    assert consume(bootstrap, "bad-group", "open") == (0, KafkaError.GROUP_AUTHORIZATION_FAILED)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    committed = admin.list_consumer_group_offsets(
        [_group_offsets("g-1")])["g-1"].result(30)
    assert committed.topic_partitions[0].offset >= 1
    with pytest.raises(KafkaException) as caught:
        admin.list_consumer_group_offsets([_group_offsets("bad-group")])["bad-group"].result(30)
    assert code(caught.value) == KafkaError.GROUP_AUTHORIZATION_FAILED
    listed = {g.group_id for g in admin.list_consumer_groups().result(30).valid}
    assert {"g-1", "g-2"} <= listed and "bad-group" not in listed  # DESCRIBE on each
    with pytest.raises(KafkaException) as caught:
        admin.describe_consumer_groups(["bad-group"])["bad-group"].result(30)
    assert code(caught.value) == KafkaError.GROUP_AUTHORIZATION_FAILED
    with pytest.raises(KafkaException) as caught:
        admin.delete_consumer_groups(["bad-group"])["bad-group"].result(30)
    assert code(caught.value) == KafkaError.GROUP_AUTHORIZATION_FAILED
    with WireClient(secured["port"]) as client:
        answer = client.request(fetch({"hidden": {0: 0}, "pre-secret": {0: 0}, "open": {0: 0}}))
        assert {t.topic: t.partitions[0].error_code for t in answer.responses} == {
            "hidden": 29, "pre-secret": 29, "open": 0}


def test_consume_with_the_consumer_group_protocol(secured: dict[str, Any]) -> None:
    # KIP-848's ConsumerGroupHeartbeat: READ on the group, DESCRIBE on the subscribed topics
    bootstrap, kip848 = secured["bootstrap"], {"group.protocol": "consumer"}
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce("open", b"x")
    producer.flush(30)
    assert consume(bootstrap, "g-848", "open", **kip848)[0] >= 1
    assert consume(bootstrap, "g-848-2", "pre-secret", **kip848) == (
        0, KafkaError.TOPIC_AUTHORIZATION_FAILED)  # described, not to READ
    assert consume(bootstrap, "g-848-3", "hidden", polls=20, **kip848) == (
        0, KafkaError.TOPIC_AUTHORIZATION_FAILED)  # not to describe: the heartbeat refuses it
    assert consume(bootstrap, "bad-848", "open", **kip848) == (0, KafkaError.GROUP_AUTHORIZATION_FAILED)


def _group_offsets(group: str) -> Any:
    from confluent_kafka import ConsumerGroupTopicPartitions
    return ConsumerGroupTopicPartitions(group, [TopicPartition("open", 0)])


def test_topic_admin(secured: dict[str, Any]) -> None:
    admin = AdminClient({"bootstrap.servers": secured["bootstrap"]})
    results = admin.create_topics([NewTopic(n, 1, 1) for n in ("new-a", "pre-del", "other")])
    results["new-a"].result(30)  # CREATE by prefix
    results["pre-del"].result(30)  # ALL by prefix
    with pytest.raises(KafkaException) as caught:
        results["other"].result(30)
    assert code(caught.value) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    deleted = admin.delete_topics(["pre-del", "hidden", "new-a"], operation_timeout=30)
    deleted["pre-del"].result(30)
    for name in ("hidden", "new-a"):  # not to describe; to create, not to delete
        with pytest.raises(KafkaException) as caught:
            deleted[name].result(30)
        assert code(caught.value) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    grown = admin.create_partitions([NewPartitions("pre-x", 2), NewPartitions("hidden", 2)])
    grown["pre-x"].result(30)
    with pytest.raises(KafkaException) as caught:
        grown["hidden"].result(30)
    assert code(caught.value) == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_configs(secured: dict[str, Any]) -> None:
    admin = AdminClient({"bootstrap.servers": secured["bootstrap"]})
    topic = ConfigResource(ConfigResource.Type.TOPIC, "open")
    assert "retention.ms" in admin.describe_configs([topic])[topic].result(30)
    expected = {ConfigResource(ConfigResource.Type.TOPIC, "hidden"):
                KafkaError.TOPIC_AUTHORIZATION_FAILED,
                ConfigResource(ConfigResource.Type.BROKER, "1"):
                KafkaError.CLUSTER_AUTHORIZATION_FAILED}
    for resource, error in expected.items():
        with pytest.raises(KafkaException) as caught:
            admin.describe_configs([resource])[resource].result(30)
        assert code(caught.value) == error
    entry = ConfigEntry("retention.ms", "3600000",
                        incremental_operation=AlterConfigOpType.SET)
    allowed = ConfigResource(ConfigResource.Type.TOPIC, "open", incremental_configs=[entry])
    admin.incremental_alter_configs([allowed])[allowed].result(30)
    for resource, error in expected.items():
        denied = ConfigResource(resource.restype, resource.name, incremental_configs=[
            ConfigEntry("retention.ms" if error == 29 else "log.retention.ms", "3600000",
                        incremental_operation=AlterConfigOpType.SET)])
        with pytest.raises(KafkaException) as caught:
            admin.incremental_alter_configs([denied])[denied].result(30)
        assert code(caught.value) == error


def test_transactions(secured: dict[str, Any]) -> None:
    bootstrap = secured["bootstrap"]
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "tx-1"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce("open", b"in a transaction")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "g-txn"})
    producer.send_offsets_to_transaction([TopicPartition("open", 0, 0)],
                                         consumer.consumer_group_metadata(), 30)
    producer.commit_transaction(30)
    consumer.close()
    refused = Producer({"bootstrap.servers": bootstrap, "transactional.id": "other-1"})
    with pytest.raises(KafkaException) as caught:
        refused.init_transactions(30)
    assert code(caught.value) == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED


def test_find_coordinator(secured: dict[str, Any]) -> None:
    m = importlib.import_module("kio.schema.find_coordinator.v4.request")
    with WireClient(secured["port"]) as client:
        groups = client.request(m.FindCoordinatorRequest(key_type=i8(0),
                                                         coordinator_keys=("g-1", "bad")))
        txns = client.request(m.FindCoordinatorRequest(key_type=i8(1),
                                                       coordinator_keys=("any-id",)))
    assert [(c.key, c.error_code) for c in groups.coordinators] == [("g-1", 0), ("bad", 30)]
    assert [(c.key, c.error_code) for c in txns.coordinators] == [("any-id", 0)]  # "*" DESCRIBE


def test_cluster_admin_apis(secured: dict[str, Any]) -> None:
    admin = AdminClient({"bootstrap.servers": secured["bootstrap"]})
    described = admin.describe_cluster(include_authorized_operations=True).result(30)
    assert not described.authorized_operations  # no DESCRIBE on the cluster: 0
    assert raw_answers(secured["port"])["cluster_ops"] == 0
    from confluent_kafka import ElectionType
    with pytest.raises(KafkaException) as caught:
        admin.elect_leaders(ElectionType.PREFERRED, [TopicPartition("open", 0)]).result(30)
    assert code(caught.value) == KafkaError.CLUSTER_AUTHORIZATION_FAILED


def metadata_operations(port: int) -> dict[str | None, tuple[int, int]]:
    m = importlib.import_module("kio.schema.metadata.v12.request")
    request = m.MetadataRequest(
        topics=tuple(m.MetadataRequestTopic(name=t, topic_id=uuid.UUID(int=0)) for t in (
            "open", "any-user", "pre-secret", "local", "hidden", "nowhere")),
        allow_auto_topic_creation=False, include_topic_authorized_operations=True)
    with WireClient(port) as client:
        answer = client.request(request)
    return {t.name: (int(t.error_code), int(t.topic_authorized_operations)) for t in answer.topics}


def _bits(*ops: AclOperation) -> int:
    return sum(1 << int(op.value) for op in ops)


TOPIC_OPS = (AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE,
             AclOperation.DELETE, AclOperation.ALTER, AclOperation.DESCRIBE_CONFIGS,
             AclOperation.ALTER_CONFIGS)
UNASKED = -(2**31)


def test_metadata_authorized_operations(secured: dict[str, Any]) -> None:
    every = _bits(*TOPIC_OPS)
    assert metadata_operations(secured["port"]) == {
        "open": (0, every), "local": (0, every),
        "pre-secret": (0, every & ~_bits(AclOperation.READ)),
        "any-user": (0, _bits(AclOperation.READ, AclOperation.DESCRIBE)),
        "hidden": (29, UNASKED), "nowhere": (29, UNASKED)}


def raw_answers(port: int) -> dict[str, Any]:
    """A sample of answers as error codes, each in a form that does not depend on order."""
    def module(api: str, version: int) -> Any:
        return importlib.import_module(f"kio.schema.{api}.v{version}.request")

    out: dict[str, Any] = {}
    with WireClient(port) as client:
        out["metadata"] = metadata_operations(port)
        listed = client.request(metadata_request(None))
        out["metadata_all"] = sorted(t.name for t in listed.topics
                                     if not t.name.startswith(("__", AUTO)))
        produced = client.request(produce_request("hidden", {0: make_batch()}))
        out["produce"] = produced.responses[0].partition_responses[0].error_code
        m = module("find_coordinator", 4)
        out["find_group"] = sorted((c.key, c.error_code) for c in client.request(
            m.FindCoordinatorRequest(key_type=i8(0), coordinator_keys=("bad",))).coordinators)
        m = module("init_producer_id", 5)
        out["init_txn"] = client.request(m.InitProducerIdRequest(
            transactional_id="other", transaction_timeout=ms(60000), producer_id=-1,
            producer_epoch=i16(-1))).error_code
        m = module("offset_fetch", 8)
        out["offset_fetch"] = [(g.group_id, g.error_code) for g in client.request(
            m.OffsetFetchRequest(groups=(m.OffsetFetchRequestGroup(group_id="bad", topics=None),),
                                 require_stable=False)).groups]
        m = module("describe_configs", 4)
        out["describe_configs"] = sorted((r.resource_name, r.error_code) for r in client.request(
            m.DescribeConfigsRequest(resources=(
                m.DescribeConfigsResource(resource_type=i8(2), resource_name="hidden",
                                          configuration_keys=None),
                m.DescribeConfigsResource(resource_type=i8(4), resource_name="",
                                          configuration_keys=None)),
                include_synonyms=False, include_documentation=False)).results)
        m = module("describe_log_dirs", 4)
        out["log_dirs"] = client.request(m.DescribeLogDirsRequest(topics=None)).error_code
        m = module("describe_cluster", 1)
        out["cluster_ops"] = client.request(m.DescribeClusterRequest(
            include_cluster_authorized_operations=True,
            endpoint_type=i8(1))).cluster_authorized_operations
        m = module("create_topics", 7)
        out["create"] = [(t.name, t.error_code) for t in client.request(m.CreateTopicsRequest(
            topics=(m.CreatableTopic(name="other-new", num_partitions=i32(1),
                                     replication_factor=i16(1), assignments=(), configs=()),),
            timeout=ms(30000), validate_only=True)).topics]
        m = module("delete_topics", 6)
        out["delete"] = [(t.name, t.error_code) for t in client.request(m.DeleteTopicsRequest(
            topics=(m.DeleteTopicState(name="hidden", topic_id=uuid.UUID(int=0)),),
            timeout=ms(30000))).responses]
        m = module("describe_groups", 5)
        out["describe_groups"] = [(g.group_id, g.error_code) for g in client.request(
            m.DescribeGroupsRequest(groups=("bad",), include_authorized_operations=True)).groups]
        # the principal's bitfields: ALL by prefix, DESCRIBE only, nothing
        out["group_ops"] = group_operations(client)
        m = module("describe_topic_partitions", 0)
        topics = ("open", "any-user", "pre-secret", "see-none", "hidden", "nowhere")
        described = client.request(m.DescribeTopicPartitionsRequest(
            topics=tuple(m.TopicRequest(name=t) for t in topics), response_partition_limit=i32(2000),
            cursor=None)).topics
        out["dtp"] = sorted((t.name, t.error_code, t.topic_authorized_operations) for t in described)
        every = client.request(m.DescribeTopicPartitionsRequest(
            topics=(), response_partition_limit=i32(2000), cursor=None)).topics
        out["dtp_all"] = sorted(t.name for t in every if not t.name.startswith(("__", AUTO)))
        out["auto_create"] = auto_create(client)
    return out


def group_operations(client: WireClient) -> list[tuple[str, int, int]]:
    """DescribeGroups' bitfields: ALL by prefix, DESCRIBE only, nothing; once a fresh Kafka
    has made __consumer_offsets (FindCoordinator asks for it) and stopped answering
    NOT_COORDINATOR."""
    m = importlib.import_module("kio.schema.describe_groups.v5.request")
    find = importlib.import_module("kio.schema.find_coordinator.v4.request")
    deadline = time.monotonic() + 30
    while True:
        client.request(find.FindCoordinatorRequest(key_type=i8(0), coordinator_keys=("g-none",)))
        found = sorted((g.group_id, int(g.error_code), int(g.authorized_operations))
                       for g in client.request(m.DescribeGroupsRequest(
                           groups=("g-none", "ro-x", "bad"), include_authorized_operations=True)).groups)
        if all(error != 16 for _, error, _ in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def auto_create(client: WireClient) -> dict[str, Any]:
    """Metadata asked to auto-create: with CREATE (ALL by prefix) the topic is made; with
    DESCRIBE only, or nothing, it is refused and not made."""
    m = importlib.import_module("kio.schema.metadata.v12.request")
    tag = uuid.uuid4().hex[:8]
    roles = {f"{AUTO}{tag}": "may create", f"see-auto-{tag}": "may describe",
             f"hide-auto-{tag}": "nothing"}

    def ask(create: bool) -> dict[str, int]:
        answer = client.request(m.MetadataRequest(
            topics=tuple(m.MetadataRequestTopic(name=t, topic_id=uuid.UUID(int=0)) for t in roles),
            allow_auto_topic_creation=create, include_topic_authorized_operations=False))
        return {roles[t.name]: int(t.error_code) for t in answer.topics}

    # made at once by akfak (0), asynchronously by Kafka (UNKNOWN_TOPIC_OR_PARTITION meanwhile,
    # akfak/handlers/metadata.py): what the ACLs decide is whether it is refused
    asked = {role: "refused" if error == 29 else "not refused" for role, error in ask(True).items()}
    deadline = time.monotonic() + 10
    while (after := ask(False))["may create"] != 0 and time.monotonic() < deadline:
        time.sleep(0.1)  # Kafka creates it through its controller, a moment later
    return {"asked": asked, "after": after}


@pytest.mark.jvm
@pytest.mark.timeout(600)
def test_answers_match_kafka(secured: dict[str, Any], tmp_path: Path) -> None:
    first = start_kafka(tmp_path / "k1", properties={"authorizer.class.name": STANDARD,
                                                     "super.users": ANON})
    try:
        prepare(first.bootstrap)
    finally:
        first.stop()
    peer = start_kafka(tmp_path / "k2", log_dir=tmp_path / "k1" / "kraft-logs",
                       properties={"authorizer.class.name": STANDARD,
                                   "auto.create.topics.enable": "true"})
    try:
        kafka = raw_answers(peer.port)
    finally:
        peer.stop()
    assert raw_answers(secured["port"]) == kafka
    assert (kafka["metadata_all"], kafka["produce"], kafka["find_group"], kafka["init_txn"],
            kafka["offset_fetch"], kafka["describe_configs"], kafka["log_dirs"],
            kafka["create"], kafka["delete"], kafka["describe_groups"]) == (
        sorted(DESCRIBABLE), 29, [("bad", 30)], 53, [("bad", 30)], [("", 31), ("hidden", 29)],
        31, [("other-new", 29)], [("hidden", 29)], [("bad", 30)])
    assert_bitfields_and_auto_creation(kafka)


def assert_bitfields_and_auto_creation(answers: dict[str, Any]) -> None:
    """DescribeGroups' and DescribeTopicPartitions' bitfields for the ACLs above, the topics
    DescribeTopicPartitions leaves out, and Metadata auto-creating only with CREATE."""
    group_all = _bits(AclOperation.READ, AclOperation.DESCRIBE, AclOperation.DELETE,
                      AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS)
    assert answers["group_ops"] == [("bad", 30, UNASKED), ("g-none", 0, group_all),
                                    ("ro-x", 0, _bits(AclOperation.DESCRIBE))], answers["group_ops"]
    every = _bits(*TOPIC_OPS)
    assert answers["dtp"] == [
        ("any-user", 0, _bits(AclOperation.READ, AclOperation.DESCRIBE)), ("hidden", 29, UNASKED),
        ("nowhere", 29, UNASKED), ("open", 0, every),
        ("pre-secret", 0, every & ~_bits(AclOperation.READ)),
        ("see-none", 3, _bits(AclOperation.DESCRIBE))], answers["dtp"]
    assert answers["dtp_all"] == sorted(DESCRIBABLE)
    assert answers["auto_create"]["asked"] == {"may create": "not refused", "may describe": "refused",
                                               "nothing": "refused"}
    assert answers["auto_create"]["after"] == {"may create": 0, "may describe": 3, "nothing": 29}


def test_bitfields_and_auto_creation(secured: dict[str, Any]) -> None:
    assert_bitfields_and_auto_creation(raw_answers(secured["port"]))


@pytest.mark.akfak(overrides={"authorizer.class.name": STANDARD})
def test_a_denial_is_logged_at_debug(akfak_broker: Any, log_events: list[dict[str, Any]]) -> None:
    akfak_broker.create_topic("t")
    with WireClient(akfak_broker.port) as client:
        answer = client.request(produce_request("t", {0: make_batch()}))
    assert answer.responses[0].partition_responses[0].error_code == 29
    denials = [e for e in log_events if e.get("log_namespace") == "kafka.authorizer.logger"]
    assert [(e["log_level"].name, e["principal"], e["operation"], e["resource"], e["name"],
             e["request"]) for e in denials] == [("debug", ANON, "WRITE", "Topic", "t", "Produce")]
