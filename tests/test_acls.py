"""ACLs with `authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer`:
the authorizer's decisions (Kafka's StandardAuthorizerData rules), and Create/Describe/
DeleteAcls through confluent-kafka and `kafka-acls`, on akfak and on Kafka 4.1.1, kept in
`__cluster_metadata` across a restart."""

from __future__ import annotations

import importlib
import uuid
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)
from kio.schema.errors import ErrorCode
from kio.static.primitive import i8

from akfak.security.acls import (
    ALL,
    ALLOW,
    ALTER_CONFIGS,
    CREATE,
    DELETE,
    DENY,
    DESCRIBE,
    DESCRIBE_CONFIGS,
    GROUP,
    LITERAL,
    PREFIXED,
    READ,
    TOPIC,
    WRITE,
    Acl,
    Authorizer,
)
from tests.kafka_peer import start_kafka
from tests.kafka_tools import run_tool
from tests.wire import WireClient

STANDARD = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
#: A broker whose PLAINTEXT clients (User:ANONYMOUS) may manage ACLs.
SECURED = {"authorizer.class.name": STANDARD, "super.users": "User:ANONYMOUS"}


def authorizer(*acls: Acl, **kwargs: Any) -> Authorizer:
    return Authorizer({uuid.uuid4(): acl for acl in acls}, **kwargs)


def allow(principal: str, operation: int, name: str = "orders", pattern: int = LITERAL,
          resource: int = TOPIC, host: str = "*") -> Acl:
    return Acl(resource, name, pattern, principal, host, operation, ALLOW)


def deny(principal: str, operation: int, name: str = "orders", pattern: int = LITERAL,
         host: str = "*") -> Acl:
    return Acl(TOPIC, name, pattern, principal, host, operation, DENY)


def test_the_standard_authorizers_rules() -> None:
    alice, bob = "User:alice", "User:bob"
    a = authorizer(allow(alice, READ), allow(bob, WRITE, "ord", PREFIXED),
                   allow("User:*", DESCRIBE, "*"), deny(bob, WRITE, "orders-secret"),
                   allow(alice, ALTER_CONFIGS, "cfg"), allow(alice, ALL, "g", resource=GROUP),
                   allow(alice, CREATE, "from-host", host="10.0.0.1"))
    assert a.authorize(alice, "1.2.3.4", READ, TOPIC, "orders")
    assert not a.authorize(alice, "1.2.3.4", WRITE, TOPIC, "orders")
    assert a.authorize(alice, "1.2.3.4", DESCRIBE, TOPIC, "orders")  # READ implies DESCRIBE
    assert a.authorize(bob, "h", WRITE, TOPIC, "orders-2")  # prefixed
    assert not a.authorize(bob, "h", WRITE, TOPIC, "orders-secret")  # DENY wins
    assert a.authorize(bob, "h", DESCRIBE, TOPIC, "orders-secret")  # DENY WRITE is not DESCRIBE
    assert a.authorize("User:carol", "h", DESCRIBE, TOPIC, "anything")  # wildcard name, principal
    assert not a.authorize("User:carol", "h", READ, TOPIC, "anything")
    assert a.authorize(alice, "h", DESCRIBE_CONFIGS, TOPIC, "cfg")  # ALTER_CONFIGS implies it
    assert not a.authorize(alice, "h", DELETE, TOPIC, "cfg")
    assert a.authorize(alice, "h", DELETE, GROUP, "g")  # ALL
    assert a.authorize(alice, "10.0.0.1", CREATE, TOPIC, "from-host")
    assert not a.authorize(alice, "10.0.0.2", CREATE, TOPIC, "from-host")
    # no ACL for a resource at all: allow.everyone.if.no.acl.found decides
    assert not a.authorize(alice, "h", READ, GROUP, "other")
    assert authorizer(allow(alice, READ), allow_if_no_acl=True).authorize(
        bob, "h", READ, GROUP, "other")
    assert not authorizer(allow(alice, READ), allow_if_no_acl=True).authorize(
        bob, "h", READ, TOPIC, "orders")  # an ACL exists for the resource, not for bob
    assert authorizer(deny(alice, ALL), super_users=[alice]).authorize(
        alice, "h", WRITE, TOPIC, "orders")
    assert a.authorized_operations(alice, "h", TOPIC, "orders", (READ, WRITE, DESCRIBE)) == (
        1 << READ | 1 << DESCRIBE)


# -- over the wire -----------------------------------------------------------------------

def bindings(admin: AdminClient) -> set[tuple[Any, ...]]:
    found = admin.describe_acls(AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
        AclPermissionType.ANY)).result(30)
    return {(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
             b.permission_type) for b in found}


CREATED = [
    AclBinding(ResourceType.TOPIC, "orders", ResourcePatternType.LITERAL, "User:alice", "*",
               AclOperation.READ, AclPermissionType.ALLOW),
    AclBinding(ResourceType.TOPIC, "ord", ResourcePatternType.PREFIXED, "User:bob", "*",
               AclOperation.WRITE, AclPermissionType.ALLOW),
    AclBinding(ResourceType.GROUP, "*", ResourcePatternType.LITERAL, "User:*", "10.0.0.1",
               AclOperation.READ, AclPermissionType.DENY),
]


def exercise(bootstrap: str) -> None:
    """Create three ACLs (one again), describe them with filters, delete one by filter."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_acls(CREATED).values():
        assert future.result(30) is None
    for future in admin.create_acls(CREATED[:1]).values():  # exists: not written twice
        assert future.result(30) is None
    assert len(bindings(admin)) == 3
    by_match = admin.describe_acls(AclBindingFilter(
        ResourceType.TOPIC, "orders", ResourcePatternType.MATCH, None, None, AclOperation.ANY,
        AclPermissionType.ANY)).result(30)
    assert {(b.name, b.principal) for b in by_match} == {("orders", "User:alice"),
                                                         ("ord", "User:bob")}
    bad = AclBinding(ResourceType.TOPIC, "x", ResourcePatternType.LITERAL, "alice", "*",
                     AclOperation.READ, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as caught:
        admin.create_acls([bad])[bad].result(30)
    assert "Could not parse principal from `alice`" in str(caught.value)
    gone = admin.delete_acls([AclBindingFilter(
        ResourceType.TOPIC, None, ResourcePatternType.PREFIXED, None, None, AclOperation.ANY,
        AclPermissionType.ANY)])
    (deleted,) = gone.values()
    assert [(b.name, b.principal) for b in deleted.result(30)] == [("ord", "User:bob")]
    assert {b[1] for b in bindings(admin)} == {"orders", "*"}


@pytest.mark.parametrize("broker", ["akfak", "kafka"])
def test_acl_admin_calls(broker: str, broker_process: Any, tmp_path: Any) -> None:
    if broker == "kafka":
        peer = start_kafka(tmp_path / "kafka", properties=SECURED)
        try:
            exercise(peer.bootstrap)
        finally:
            peer.stop()
        return
    args = [a for key, value in SECURED.items() for a in ("-o", f"{key}={value}")]
    akfak = broker_process(*args)
    exercise(akfak.bootstrap)
    akfak.stop()
    again = broker_process(*args, data_dir=akfak.data_dir)
    assert {b[1] for b in bindings(AdminClient({"bootstrap.servers": again.bootstrap}))} == {
        "orders", "*"}


def test_without_super_user_the_acl_apis_need_cluster_acls(broker_process: Any) -> None:
    akfak = broker_process("-o", f"authorizer.class.name={STANDARD}")
    describe = importlib.import_module("kio.schema.describe_acls.v3.request")
    with WireClient(akfak.port) as client:
        answer = client.request(describe.DescribeAclsRequest(
            resource_type_filter=i8(1), resource_name_filter=None, pattern_type_filter=i8(1),
            principal_filter=None, host_filter=None, operation=i8(1), permission_type=i8(1)))
    assert (answer.error_code, answer.resources) == (ErrorCode.cluster_authorization_failed, ())
    admin = AdminClient({"bootstrap.servers": akfak.bootstrap})
    for future in admin.create_acls([CREATED[0]]).values():
        with pytest.raises(KafkaException) as caught:
            future.result(30)
        assert caught.value.args[0].code() == 31  # CLUSTER_AUTHORIZATION_FAILED
    (deleted,) = admin.delete_acls([AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
        AclPermissionType.ANY)]).values()
    with pytest.raises(KafkaException) as caught:
        deleted.result(30)
    assert caught.value.args[0].code() == 31


@pytest.mark.jvm
@pytest.mark.timeout(600)
def test_kafka_acls_tool_lists_what_it_lists_for_kafka(broker_process: Any, tmp_path: Any) -> None:
    peer = start_kafka(tmp_path / "kafka", properties=SECURED)
    try:
        args = [a for key, value in SECURED.items() for a in ("-o", f"{key}={value}")]
        brokers = {"akfak": broker_process(*args).bootstrap, "kafka": peer.bootstrap}
        outputs = {}
        for name, bootstrap in brokers.items():
            def tool(*argv: str, bootstrap: str = bootstrap) -> str:
                done = run_tool("AclCommand", "--bootstrap-server", bootstrap, *argv)
                assert done.returncode == 0, done.stderr
                return done.stdout
            added = tool("--add", "--allow-principal", "User:alice", "--operation", "Read",
                         "--operation", "Describe", "--topic", "orders", "--group", "app")
            tool("--add", "--deny-principal", "User:mallory", "--operation", "All",
                 "--topic", "orders", "--resource-pattern-type", "prefixed")
            # the USER and DELEGATION_TOKEN resource types
            tool("--add", "--allow-principal", "User:alice", "--operation", "CreateTokens",
                 "--operation", "DescribeTokens", "--user-principal", "User:bob")
            tool("--add", "--allow-principal", "User:alice", "--operation", "Describe",
                 "--delegation-token", "token-1")
            listed = tool("--list")
            removed = tool("--remove", "--force", "--deny-principal", "User:mallory",
                           "--operation", "All", "--topic", "orders",
                           "--resource-pattern-type", "prefixed")
            # the tool prints resources and entries in the order of a hash set (the entries'
            # hashes vary from JVM to JVM; all but the first of a resource start with a space):
            # compare the lines, stripped, as sets
            outputs[name] = [sorted(line.strip() for line in text.splitlines())
                             for text in (added, listed, removed, tool("--list"))]
        assert outputs["akfak"] == outputs["kafka"]
        assert "(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)" in \
            outputs["akfak"][3]
        assert not any("mallory" in line for line in outputs["akfak"][3])
        listed = "\n".join(outputs["akfak"][3])
        assert "resourceType=USER, name=User:bob" in listed, listed
        assert "resourceType=DELEGATION_TOKEN, name=token-1" in listed, listed
        assert "operation=CREATE_TOKENS" in listed and "operation=DESCRIBE_TOKENS" in listed
    finally:
        peer.stop()
