"""Secured inter-broker connections in a cluster (akfak/peers.py, akfak/security/inter_broker.py).

One 3-broker cluster, ACLs on (`allow.everyone.if.no.acl.found=false`, the brokers' principal
`User:broker` a super user), every broker with three listeners: CLIENT (SASL_SSL, for the
clients), BROKER (SASL_SSL, SCRAM-SHA-512) and MTLS (SSL, client certificates required, mapped
to `User:broker`). Broker 1 talks to the others on BROKER with SCRAM, broker 2 on MTLS with its
key store as client certificate, broker 3 on BROKER with a wrong password. With
confluent-kafka:

- a transactional producer whose coordinator is broker 1 (then 2) writes to partitions led by
  the other: the leader verifies the produce with the coordinator and the coordinator sends
  it the COMMIT marker, both across brokers; a read_committed consumer reads everything;
- a transaction coordinated by broker 3 commits (PrepareCommit) but its markers are refused:
  broker 3 logs the failed authentication once per peer however often the markers are
  retried, nothing crashes, read_committed sees nothing; restarted with the right password,
  broker 3 (or its successor) completes it and the records are read.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from akfak.groups.records import partition_for
from akfak.testing.security import Certificates, Security
from tests.cluster import AkfakCluster
from tests.test_cluster import wait_leaders

TIMEOUT = 30
TXN_PARTITIONS = 3  # tests/cluster.py: transaction.state.log.num.partitions
TOPIC = "crossed"
USERS = {"admin": "admin-secret", "alice": "alice-secret", "broker": "broker-secret"}
SECURITY = Security(listeners=["CLIENT:SASL_SSL", "BROKER:SASL_SSL", "MTLS:SSL"], users=USERS,
                    mechanisms=["PLAIN", "SCRAM-SHA-512"], authorizer=True,
                    super_users=["User:admin", "User:broker"])
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"


def scram_jaas(password: str) -> dict[str, str]:
    return {"listener.name.broker.scram-sha-512.sasl.jaas.config":
            f'{SCRAM_LOGIN} required username="broker" password="{password}";'}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    # one broker certificate (CN=broker, for 127.0.0.1) for all three, as server and client
    return Certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def cluster(akfak_cluster: Any, certificates: Certificates) -> AkfakCluster:
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        NewTopic,
        ResourcePatternType,
        ResourceType,
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    properties = {
        **SECURITY.broker_properties("127.0.0.1", certificates),
        "allow.everyone.if.no.acl.found": "false",
        "listener.name.mtls.ssl.client.auth": "required",
        "listener.name.mtls.ssl.principal.mapping.rules": "RULE:^CN=([^,]+),.*$/$1/,DEFAULT",
        "inter.broker.listener.name": "BROKER",
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        **scram_jaas(USERS["broker"]),
    }
    cluster = akfak_cluster(3, listeners=tuple(SECURITY.listeners), properties=properties,
                            node_properties={2: {"inter.broker.listener.name": "MTLS"},
                                             3: scram_jaas("not-the-password")})
    admin = admin_client(cluster, certificates)
    # the brokers' SCRAM credential, as `kafka-configs --alter --add-config SCRAM-SHA-512=...`
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096)
    for future in admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion("broker", info, USERS["broker"].encode())]).values():
        future.result(TIMEOUT)
    admin.create_topics([NewTopic(TOPIC, 3, 3)])[TOPIC].result(TIMEOUT)
    acls = [AclBinding(ResourceType.TOPIC, TOPIC, ResourcePatternType.LITERAL, "User:alice", "*",
                       AclOperation.WRITE, AclPermissionType.ALLOW),
            AclBinding(ResourceType.TRANSACTIONAL_ID, "tx-", ResourcePatternType.PREFIXED,
                       "User:alice", "*", AclOperation.WRITE, AclPermissionType.ALLOW)]
    for future in admin.create_acls(acls).values():
        future.result(TIMEOUT)
    return cluster


def client_config(cluster: AkfakCluster, certificates: Certificates, user: str) -> dict[str, Any]:
    return {"bootstrap.servers": cluster.bootstrap,
            **SECURITY.client_properties("SASL_SSL", certificates, user=user, mechanism="PLAIN")}


def admin_client(cluster: AkfakCluster, certificates: Certificates) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient(client_config(cluster, certificates, "admin"))


def transactional(cluster: AkfakCluster, certificates: Certificates, txn_id: str) -> Any:
    from confluent_kafka import Producer

    producer = Producer({**client_config(cluster, certificates, "alice"),
                         "transactional.id": txn_id, "transaction.timeout.ms": 60000})
    producer.init_transactions(TIMEOUT)
    return producer


def txn_id_coordinated_by(cluster: AkfakCluster, certificates: Certificates, node: int) -> str:
    """A transactional id whose coordinator is `node` (the leader of its partition)."""
    if not cluster.leaders("__transaction_state"):  # created with the first coordinator asked
        transactional(cluster, certificates, "tx-probe")
    leaders = wait_leaders(cluster, "__transaction_state")
    for i in range(200):
        txn_id = f"tx-{node}-{i}"
        if leaders[partition_for(txn_id, TXN_PARTITIONS)] == node:
            return txn_id
    raise AssertionError(f"no transactional id for broker {node}: {leaders}")


def commit(producer: Any, partitions: list[int], tag: str) -> list[bytes]:
    values = [f"{tag}-{p}-{i}".encode() for p in partitions for i in range(3)]
    producer.begin_transaction()
    for value in values:
        producer.produce(TOPIC, value, partition=int(value.split(b"-")[-2]))
    producer.commit_transaction(TIMEOUT)
    return values


def read_committed(cluster: AkfakCluster, certificates: Certificates, tag: str,
                   expected: int | None, wait: float = TIMEOUT) -> list[bytes]:
    """The values of transaction `tag` a read_committed consumer reads within `wait` seconds
    (sooner once it read `expected` of them)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**client_config(cluster, certificates, "admin"), "group.id": "reader",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(3)])
    got: list[bytes] = []
    deadline = time.monotonic() + wait
    try:
        while time.monotonic() < deadline:
            got += [m.value() for m in consumer.consume(100, 0.5)
                    if m.error() is None and m.value().startswith(tag.encode() + b"-")]
            if expected is not None and len(got) >= expected:
                break
    finally:
        consumer.close()
    return got


def auth_failures(cluster: AkfakCluster, node: int) -> list[str]:
    text = Path(cluster.brokers[node].log_path).read_text(errors="replace")
    return re.findall(r"Connection to node \d .* failed authentication due to: .*", text)


@pytest.mark.parametrize("coordinator", [1, 2], ids=["scram-sasl-ssl", "mtls"])
def test_markers_and_verification_cross_brokers(cluster: AkfakCluster, certificates: Certificates,
                                                coordinator: int) -> None:
    leaders = wait_leaders(cluster, TOPIC)
    other = 3 - coordinator
    # the coordinator's own partition and the other good broker's (3 would verify with a
    # wrong password)
    partitions = sorted(p for p, leader in leaders.items() if leader in (1, 2))
    assert other in {leaders[p] for p in partitions}, leaders
    producer = transactional(cluster, certificates, txn_id_coordinated_by(
        cluster, certificates, coordinator))
    values = commit(producer, partitions, f"ok{coordinator}")
    got = read_committed(cluster, certificates, f"ok{coordinator}", len(values))
    assert sorted(got) == sorted(values)
    assert auth_failures(cluster, coordinator) == []


def test_a_wrong_password_is_logged_once_and_retried(cluster: AkfakCluster,
                                                     certificates: Certificates) -> None:
    leaders = wait_leaders(cluster, TOPIC)
    partitions = sorted(p for p, leader in leaders.items() if leader != 3)
    producer = transactional(cluster, certificates, txn_id_coordinated_by(cluster, certificates, 3))
    values = commit(producer, partitions, "stuck")  # PrepareCommit is written: EndTxn answers
    assert read_committed(cluster, certificates, "stuck", None, wait=3) == []
    failures = auth_failures(cluster, 3)
    # the markers were retried every 0.2 s meanwhile: one line per peer
    assert sorted(f.split()[3] for f in failures) == ["1", "2"], failures
    assert all("SCRAM-SHA-512" in f or "credentials" in f for f in failures), failures
    assert all(b.proc.poll() is None for b in cluster.brokers.values())

    cluster.brokers[3].stop()
    cluster.node_properties[3] = {}
    cluster.restart(3)
    assert sorted(read_committed(cluster, certificates, "stuck", len(values))) == sorted(values)
    producer.flush(1)
