"""A broker's connections to its peers (akfak/peers.py) against a real akfak broker's SSL and
SASL listeners, and the inter-broker settings Kafka refuses (akfak/security/inter_broker.py).

The connecting side is akfak's Peers with the broker config under test; only its address
book (which node is where) is given by hand instead of by a cluster. The listening broker's
certificate names `localhost` only, so host name verification can be seen to pass and fail.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kio.schema.api_versions.v0.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode

from akfak.cluster import LiveBroker
from akfak.config import BrokerConfig, ConfigError
from akfak.peers import AuthenticationFailed, Peers
from akfak.security.sasl import SaslSettings
from akfak.testing import EmbeddedBroker
from akfak.testing.security import Certificates, Security

PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
JAAS = "listener.name.sasl.plain.sasl.jaas.config"
SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule"
OAUTH_LOGIN = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
#: the SASL listener's session lifetime
REAUTH_MS = 1500


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("certs"), hosts=("localhost",))


@pytest.fixture(scope="module")
def server(certificates: Certificates) -> Iterator[EmbeddedBroker]:
    security = Security(listeners=["MTLS:SSL", "SASL:SASL_PLAINTEXT"], client_auth="required",
                        certificates=certificates, users={"broker": "broker-secret"},
                        mechanisms=["PLAIN", "SCRAM-SHA-256", "OAUTHBEARER"],
                        properties={"listener.name.sasl.connections.max.reauth.ms": str(REAUTH_MS),
                                    # a token must have the scope "broker"
                                    "listener.name.sasl.oauthbearer.sasl.jaas.config":
                                        f'{OAUTH_LOGIN} required '
                                        'unsecuredValidatorRequiredScope="broker";'})
    with EmbeddedBroker(security=security) as broker:
        yield broker


def peers(server: EmbeddedBroker, host: str, **properties: str) -> Peers:
    """Peers of a broker configured with `properties`, whose node 2 is `server`."""
    config = BrokerConfig(properties={
        "listeners": "MTLS://127.0.0.1:0,SASL://127.0.0.1:0",
        "listener.security.protocol.map": "MTLS:SSL,SASL:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,OAUTHBEARER",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "listener.name.sasl.plain.sasl.jaas.config": sasl("broker-secret")[JAAS], **properties})
    endpoints = {name: (host, port) for name, port in server.ports.items()}
    broker = SimpleNamespace(config=config, sasl=SaslSettings(config), clock=server.reactor,
                             cluster=SimpleNamespace(live={2: LiveBroker(2, endpoints, None)}))
    return Peers(broker)  # type: ignore[arg-type]


def tls(certificates: Certificates, **extra: str) -> dict[str, str]:
    return {"inter.broker.listener.name": "MTLS", "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(certificates.server_keystore),
            "ssl.truststore.type": "PEM", "ssl.truststore.location": str(certificates.ca_file),
            **extra}


def sasl(password: str, mechanism: str = "PLAIN") -> dict[str, str]:
    login = f'required username="broker" password="{password}";'
    if mechanism == "OAUTHBEARER":  # the good login has the scope the listener asks for
        scope = 'unsecuredLoginListClaim_scope=",broker,other"' if password == "broker-secret" \
            else 'unsecuredLoginListClaim_scope=",other"'
        return {"inter.broker.listener.name": "SASL", "sasl.mechanism.inter.broker.protocol":
                mechanism, "listener.name.sasl.oauthbearer.sasl.jaas.config":
                f'{OAUTH_LOGIN} required unsecuredLoginStringClaim_sub="broker" {scope};'}
    if mechanism == "PLAIN":
        return {"inter.broker.listener.name": "SASL", JAAS: f"{PLAIN_LOGIN} {login}"}
    return {"inter.broker.listener.name": "SASL", "sasl.mechanism.inter.broker.protocol": mechanism,
            f"listener.name.sasl.{mechanism.lower()}.sasl.jaas.config": f"{SCRAM_LOGIN} {login}"}


def ask(server: EmbeddedBroker, peers: Peers) -> Any:
    return server.call(peers.send, 2, ApiVersionsRequest())


def warnings(events: list[dict[str, Any]]) -> list[str]:
    from twisted.logger import formatEvent

    return [formatEvent(e) for e in events
            if e.get("log_namespace") == "akfak.peers" and e["log_level"].name == "warn"]


def test_mutual_tls_with_the_host_name_checked(server: EmbeddedBroker,
                                               certificates: Certificates) -> None:
    assert ask(server, peers(server, "localhost", **tls(certificates))).error_code == ErrorCode.none


def test_empty_endpoint_identification_skips_the_host_name(server: EmbeddedBroker,
                                                           certificates: Certificates) -> None:
    lenient = tls(certificates, **{"ssl.endpoint.identification.algorithm": ""})
    assert ask(server, peers(server, "127.0.0.1", **lenient)).error_code == ErrorCode.none


NO_NAME = r"No subject alternative names matching IP address 127\.0\.0\.1 found"


def test_a_certificate_for_another_host_is_refused_and_logged_once(
        server: EmbeddedBroker, certificates: Certificates, log_events: list[dict[str, Any]]) -> None:
    strict = peers(server, "127.0.0.1", **tls(certificates))
    for _ in range(3):  # the second within the backoff, the third on a new connection
        with pytest.raises(AuthenticationFailed, match=NO_NAME):
            ask(server, strict)
        time.sleep(0.1)
    [line] = warnings(log_events)
    assert line.startswith("Connection to node 2 (127.0.0.1:") and "on listener MTLS" in line


@pytest.mark.parametrize("case", ["untrusted CA", "no client certificate"])
def test_tls_refusals(server: EmbeddedBroker, certificates: Certificates, tmp_path: Path,
                      case: str) -> None:
    if case == "untrusted CA":
        other = Certificates(tmp_path)
        properties = tls(certificates, **{"ssl.truststore.location": str(other.ca_file)})
        expected = "SSL handshake failed: .*certificate verify failed"
    else:  # the listener requires one: refused by the peer once the handshake is done here
        properties = tls(certificates)
        del properties["ssl.keystore.location"], properties["ssl.keystore.type"]
        expected = "SSL handshake failed: .*(certificate|alert)"
    with pytest.raises(AuthenticationFailed, match=expected):
        ask(server, peers(server, "localhost", **properties))


@pytest.mark.parametrize(("mechanism", "refusal"), [
    ("PLAIN", "Invalid username or password"),
    ("SCRAM-SHA-256", "invalid credentials with SASL mechanism SCRAM-SHA-256"),
    ("OAUTHBEARER", '"status":"insufficient_scope"')])
def test_sasl_login(server: EmbeddedBroker, mechanism: str, refusal: str) -> None:
    good = peers(server, "127.0.0.1", **sasl("broker-secret", mechanism))
    assert ask(server, good).error_code == ErrorCode.none
    with pytest.raises(AuthenticationFailed, match=refusal):
        ask(server, peers(server, "127.0.0.1", **sasl("wrong", mechanism)))


def test_a_session_with_a_lifetime_is_replaced_before_it_ends(server: EmbeddedBroker) -> None:
    # the peer would close a connection used past its session (KIP-368)
    node = peers(server, "127.0.0.1", **sasl("broker-secret"))
    assert ask(server, node).error_code == ErrorCode.none
    first = node._peers[2].protocol
    assert ask(server, node).error_code == ErrorCode.none
    assert node._peers[2].protocol is first
    time.sleep(REAUTH_MS / 1000)
    assert ask(server, node).error_code == ErrorCode.none
    assert node._peers[2].protocol is not first


@pytest.mark.parametrize(("properties", "message"), [
    ({"inter.broker.listener.name": "MTLS", "security.inter.broker.protocol": "SSL"},
     "Only one of inter.broker.listener.name and security.inter.broker.protocol should be set."),
    ({"inter.broker.listener.name": "OTHER"},
     "Listener with name OTHER defined in inter.broker.listener.name not found in "
     "listener.security.protocol.map."),
    ({}, "inter.broker.listener.name must be a listener name defined in advertised.listeners. "
         "The valid options based on currently configured listeners are MTLS,SASL"),
    ({"security.inter.broker.protocol": "SSL"}, "must be a listener name defined in"),
    ({"inter.broker.listener.name": "SASL", "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512"},
     "sasl.mechanism.inter.broker.protocol must be included in sasl.enabled.mechanisms"),
    ({"inter.broker.listener.name": "SASL", JAAS: f'{PLAIN_LOGIN} required user_broker="x";'},
     "needs the username and password options"),
    ({"inter.broker.listener.name": "SASL", "sasl.mechanism.inter.broker.protocol": "OAUTHBEARER",
      "listener.name.sasl.oauthbearer.sasl.jaas.config": f"{OAUTH_LOGIN} required;"},
     "unsecuredLoginStringClaim_sub is required"),
    ({**sasl("broker-secret", "OAUTHBEARER"), "sasl.login.callback.handler.class":
      "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler"},
     "sasl.login.callback.handler.class: akfak's brokers log in"),
    ({"inter.broker.listener.name": "MTLS", "ssl.endpoint.identification.algorithm": "dns"},
     "ssl.endpoint.identification.algorithm=dns"),
])
def test_settings_kafka_refuses(server: EmbeddedBroker, properties: dict[str, str],
                                message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        peers(server, "127.0.0.1", **properties)
