"""SASL_SSL (TLS, then SASL) with every client library and every mechanism it has:
confluent-kafka, kafka-python, aiokafka and kcat each make an admin call, produce and consume in
a group; an expired OAUTHBEARER token from a real client is refused while others are served;
the `akfak_broker` fixture with `@pytest.mark.akfak(security=...)`; a user's quota enforced on
the principal SASL authenticated (tests/test_quotas.py caps client ids); KIP-368 re-authentication
by librdkafka on its open connections; an encrypted PEM key; authorized-operations bitfields
as confluent-kafka reads them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from akfak.testing import EmbeddedBroker, Security
from tests.clients import requires_kcat
from tests.test_quotas import MB, alter, produce_rate
from tests.test_sasl import unsecured_jwt
from tests.test_tls import (
    EXPECTED,
    TIMEOUT,
    aiokafka_exchange,
    confluent_roundtrip,
    kafka_python_exchange,
    kcat_roundtrip,
    unique,
)
from tests.wire import WireClient

PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}
ALL = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(security=Security(listeners=["SASL_SSL"], users=PASSWORDS,
                                          mechanisms=ALL)) as b:
        yield b


def python_options(config: dict[str, str], user: str) -> dict[str, Any]:
    """kafka-python's / aiokafka's settings for confluent-kafka's `config` (SASL_SSL)."""
    options: dict[str, Any] = {"bootstrap_servers": config["bootstrap.servers"],
                               "security_protocol": config["security.protocol"],
                               "sasl_mechanism": config["sasl.mechanism"]}
    if config["sasl.mechanism"] != "OAUTHBEARER":
        options.update(sasl_plain_username=config["sasl.username"],
                       sasl_plain_password=config["sasl.password"])
    return options


def kafka_python_roundtrip(config: dict[str, str], topic: str, user: str) -> list[bytes]:
    from kafka.net.sasl.oauth import AbstractTokenProvider

    class Tokens(AbstractTokenProvider):
        def token(self) -> str:
            return unsecured_jwt(user)

    options = {**python_options(config, user), "ssl_cafile": config["ssl.ca.location"]}
    if config["sasl.mechanism"] == "OAUTHBEARER":
        options["sasl_oauth_token_provider"] = Tokens()
    return kafka_python_exchange(options, topic)


def aiokafka_roundtrip(config: dict[str, str], topic: str, user: str) -> list[bytes]:
    from aiokafka.abc import AbstractTokenProvider
    from aiokafka.helpers import create_ssl_context

    class Tokens(AbstractTokenProvider):
        async def token(self) -> str:
            return unsecured_jwt(user)

    options = {**python_options(config, user),
               "ssl_context": create_ssl_context(cafile=config["ssl.ca.location"])}
    if config["sasl.mechanism"] == "OAUTHBEARER":
        options["sasl_oauth_token_provider"] = Tokens()
    return aiokafka_exchange(options, topic)


@pytest.mark.parametrize("mechanism", ALL)
@pytest.mark.parametrize("client", ["confluent-kafka", "kafka-python", "aiokafka"])
def test_sasl_ssl_clients(broker: EmbeddedBroker, client: str, mechanism: str) -> None:
    config = broker.client_config("alice", mechanism=mechanism)
    assert config["security.protocol"] == "SASL_SSL" and "ssl.ca.location" in config
    topic = unique(f"sasl-ssl-{client}-{mechanism.lower()}")
    if client == "confluent-kafka":
        values = confluent_roundtrip(config, topic)
    elif client == "kafka-python":
        values = kafka_python_roundtrip(config, topic, "alice")
    else:
        values = aiokafka_roundtrip(config, topic, "alice")
    assert values == EXPECTED


@requires_kcat
# Not SCRAM: Debian's librdkafka 2.0.2 (kcat's) repeats the client nonce in its SCRAM
# client-final message, which Kafka refuses (tests/test_sasl.py::test_kcat).
@pytest.mark.parametrize("mechanism", ["PLAIN", "OAUTHBEARER"])
def test_sasl_ssl_kcat(broker: EmbeddedBroker, mechanism: str) -> None:
    config = broker.client_config("alice", mechanism=mechanism)
    assert kcat_roundtrip(config, unique(f"kcat-{mechanism.lower()}")) == EXPECTED


def test_expired_token_from_a_client_refused_others_served(broker: EmbeddedBroker,
                                                           log_events: list[dict[str, Any]]) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.abc import AbstractTokenProvider
    from aiokafka.errors import KafkaError as AioKafkaError
    from aiokafka.helpers import create_ssl_context

    class Expired(AbstractTokenProvider):
        async def token(self) -> str:
            return unsecured_jwt("alice", lifetime=-60)

    config = broker.client_config("alice", mechanism="OAUTHBEARER")
    options = {**python_options(config, "alice"), "sasl_oauth_token_provider": Expired(),
               "ssl_context": create_ssl_context(cafile=config["ssl.ca.location"]),
               "request_timeout_ms": 5000}

    async def start() -> BaseException | None:
        producer = AIOKafkaProducer(**options)
        try:
            await producer.start()
        except AioKafkaError as e:
            return e
        finally:
            await producer.stop()
        return None

    refused = asyncio.run(start())
    from twisted.logger import formatEvent

    # aiokafka reads the error challenge ({"status":"invalid_token"}, RFC 7628) as a success and
    # sends Metadata, which closes the connection, as in Kafka: it never gets a broker
    assert refused is not None and "Unable to bootstrap" in str(refused), repr(refused)
    lines = [formatEvent(e) for e in log_events]
    assert any(line.startswith("Failed authentication with 127.0.0.1") and "mechanism OAUTHBEARER" in line
               for line in lines), lines
    assert AdminClient(config).list_topics(timeout=TIMEOUT).brokers  # a valid token is served


@pytest.mark.akfak(security=Security(listeners=["SASL_SSL"], users={"carol": "carol-pw"},
                                     mechanisms=["SCRAM-SHA-512"]))
def test_the_akfak_broker_fixture_takes_security(akfak_broker: EmbeddedBroker) -> None:
    config = akfak_broker.client_config("carol")
    assert {k: config[k] for k in ("security.protocol", "sasl.mechanism", "sasl.username")} == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "carol"}
    assert confluent_roundtrip(config, unique("fixture")) == EXPECTED
    errors: list[KafkaError] = []
    producer = Producer({**akfak_broker.client_config("carol", password="nope"), "error_cb": errors.append})
    deadline = time.monotonic() + 20
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert errors and errors[0].code() == KafkaError._AUTHENTICATION


# -- a user's quota, on the principal SASL authenticated --------------------------------------


@pytest.mark.timeout(180)
def test_user_quotas_apply_to_the_authenticated_principal() -> None:
    # 3 windows: the burst a fresh sensor allows is 2 MB, the steady rate shows within seconds
    security = Security(listeners=["SASL_PLAINTEXT", "PLAINTEXT"], users=PASSWORDS, mechanisms=["PLAIN"],
                        properties={"quota.window.num": "3"})
    with EmbeddedBroker(security=security) as b:
        with WireClient(b.ports["PLAINTEXT"]) as c:
            # every user 1 MB/s (the default user), but bob 1 GB/s: his own entity comes first
            assert alter(c, [([("user", None)], [("producer_byte_rate", float(MB))]),
                             ([("user", "bob")], [("producer_byte_rate", 1024.0 * MB)])]) == [(0, None)] * 2
        topic = unique("user-quota")
        b.create_topic(topic)
        out: dict[str, Any] = {}
        # the same client id for both: only the user tells them apart
        threads = [threading.Thread(target=produce_rate, args=(
            {**b.client_config(user), "client.id": "same"}, topic, 8.0, out, user))
            for user in ("alice", "bob")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    rate, throttle = out["alice"]
    assert 0.7 * MB <= rate <= 1.5 * MB, rate / MB
    assert throttle > 0
    free_rate, free_throttle = out["bob"]
    assert free_throttle == 0
    assert free_rate > 2 * MB, free_rate / MB


# -- authorized operations of an authenticated principal, as a client reads them --------------


def test_authorized_operations_of_an_authenticated_principal() -> None:
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    security = Security(listeners=["SASL_PLAINTEXT"], users={**PASSWORDS, "admin": "admin-pw"},
                        mechanisms=["PLAIN"], authorizer=True, super_users=["User:admin"])
    with EmbeddedBroker(security=security) as b:
        b.create_topic("ops-t")

        def allow(rtype: Any, name: str, op: Any) -> AclBinding:
            return AclBinding(rtype, name, ResourcePatternType.LITERAL, "User:alice", "*", op,
                              AclPermissionType.ALLOW)

        acls = [allow(ResourceType.BROKER, "kafka-cluster", AclOperation.DESCRIBE),
                allow(ResourceType.BROKER, "kafka-cluster", AclOperation.ALTER),
                allow(ResourceType.TOPIC, "ops-t", AclOperation.READ),
                allow(ResourceType.GROUP, "ops-g", AclOperation.DESCRIBE)]
        admin = AdminClient(b.client_config("admin"))  # kept until the answers
        for future in admin.create_acls(acls).values():
            future.result(TIMEOUT)
        alice, bob = AdminClient(b.client_config("alice")), AdminClient(b.client_config("bob"))
        cluster = alice.describe_cluster(include_authorized_operations=True).result(TIMEOUT)
        assert set(cluster.authorized_operations) == {AclOperation.DESCRIBE, AclOperation.ALTER}
        topic = alice.describe_topics(TopicCollection(["ops-t"]),
                                      include_authorized_operations=True)["ops-t"].result(TIMEOUT)
        assert set(topic.authorized_operations) == {AclOperation.READ, AclOperation.DESCRIBE}
        group = alice.describe_consumer_groups(
            ["ops-g"], include_authorized_operations=True)["ops-g"].result(TIMEOUT)
        assert set(group.authorized_operations) == {AclOperation.DESCRIBE}
        # bob has no ACL: no DESCRIBE on the cluster (so no bitfield), the topic refused
        assert not bob.describe_cluster(include_authorized_operations=True).result(
            TIMEOUT).authorized_operations
        with pytest.raises(KafkaException) as refused:
            bob.describe_topics(TopicCollection(["ops-t"]),
                                include_authorized_operations=True)["ops-t"].result(TIMEOUT)
        assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


# -- a PEM key store whose key is encrypted with ssl.key.password ------------------------------


@pytest.mark.parametrize("inline", [False, True])
def test_encrypted_pem_key(tmp_path: Any, inline: bool, log_events: list[dict[str, Any]]) -> None:
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        Encoding,
        PrivateFormat,
        load_pem_private_key,
    )

    from akfak.config import ConfigError
    from akfak.testing.security import Certificates

    certificates = Certificates(tmp_path / "tls")
    key_pem, chain = certificates.server_key_and_chain()
    encrypted = load_pem_private_key(key_pem.encode(), None).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"key-pw")).decode()
    assert "ENCRYPTED PRIVATE KEY" in encrypted
    if inline:
        store = {"ssl.keystore.key": encrypted, "ssl.keystore.certificate.chain": chain}
    else:
        keystore = tmp_path / "encrypted.pem"
        keystore.write_text(encrypted + chain)
        store = {"ssl.keystore.location": str(keystore)}

    def security(password: str) -> Security:
        # Security's own store first, replaced by this one (inline: no location beside it)
        return Security(listeners=["SSL"], certificates=certificates, inline_pem=inline, properties={
            "ssl.keystore.type": "PEM", **store, "ssl.key.password": password})

    with EmbeddedBroker(security=security("key-pw")) as b:
        assert confluent_roundtrip(b.client_config(), unique("encrypted")) == EXPECTED
    with pytest.raises(ConfigError, match="could not be loaded"):
        EmbeddedBroker(security=security("wrong")).start()
    from twisted.logger import formatEvent

    # the key password is never logged (nor the key)
    text = "\n".join(formatEvent(e) for e in log_events) + repr(log_events)
    assert log_events and "key-pw" not in text and "PRIVATE KEY" not in text


# -- KIP-368 re-authentication by a real client ------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512", "OAUTHBEARER"])
def test_librdkafka_reauthenticates_before_the_session_ends(mechanism: str) -> None:
    security = Security(listeners=["SASL_SSL"], users=PASSWORDS, mechanisms=[mechanism],
                        properties={"connections.max.reauth.ms": "1500"})
    with EmbeddedBroker(security=security) as b:
        topic = unique("reauth")
        b.create_topic(topic)
        errors: list[Any] = []
        producer = Producer({**b.client_config("alice", mechanism=mechanism), "linger.ms": 0})

        def sessions() -> set[tuple[int, bool]]:
            """(client port, re-authenticated) of alice's connections."""
            return b.call(lambda: {(c.transport.getPeer().port, c.sasl._last_reauth is not None)
                                   for s in b._listeners() for c in s.factory.connections
                                   if c.principal == "User:alice"})

        producer.produce(topic, b"first", on_delivery=lambda err, _m: errors.append(err))
        producer.flush(TIMEOUT)
        first = sessions()
        deadline = time.monotonic() + 5  # more than three sessions' lifetimes
        while time.monotonic() < deadline:
            producer.produce(topic, b"v", on_delivery=lambda err, _m: errors.append(err))
            producer.poll(0.2)
        assert producer.flush(TIMEOUT) == 0
        assert errors and not any(errors), errors
        later = sessions()
        # the same connections, each re-authenticated: the broker closed none of them
        assert {port for port, _ in later} == {port for port, _ in first}, (first, later)
        assert later and all(again for _, again in later), later


# -- the failure delay (connection.failed.authentication.delay.ms) -------------------------------


@pytest.mark.parametrize("delay_ms", [0, 1000])
def test_failed_authentication_answered_after_the_delay_then_closed(delay_ms: int) -> None:
    from kio.schema.errors import ErrorCode

    from tests.test_sasl import authenticate, handshake

    security = Security(listeners=["SASL_PLAINTEXT"], users=PASSWORDS, mechanisms=["PLAIN"],
                        properties={"connection.failed.authentication.delay.ms": str(delay_ms)})
    with EmbeddedBroker(security=security) as b, WireClient(b.port) as client:
        assert handshake(client, "PLAIN").error_code == ErrorCode.none
        started = time.monotonic()
        answer = authenticate(client, b"\0alice\0wrong")
        waited = time.monotonic() - started
        assert answer.error_code == ErrorCode.sasl_authentication_failed
        assert answer.error_message == "Authentication failed: Invalid username or password"
        assert client.is_closed_by_peer()
        if delay_ms:
            assert waited >= 0.9 * delay_ms / 1000, waited
        else:
            assert waited < 0.5, waited  # at once (a generous bound: this machine is shared)
