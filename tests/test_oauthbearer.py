"""OAUTHBEARER's validator options and hook with real clients: Kafka's unsecured validator's
`unsecuredValidator*` options (principal and scope claim names, required scope, clock skew),
and a Python validator named by `sasl.server.callback.handler.class` (tests/oauth_validator.py).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from akfak.config import ConfigError
from akfak.security.oauthbearer import TokenRejected, unsecured_validator
from akfak.testing import EmbeddedBroker, Security
from tests import oauth_validator
from tests.test_sasl import auth_errors
from tests.test_tls import EXPECTED, confluent_roundtrip, unique

LOGIN = "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule"
TIMEOUT = 30.0


def logged_in_as(broker: EmbeddedBroker, config: dict[str, Any]) -> set[str]:
    """The principals of the broker's connections while a client with `config` is connected."""
    admin = AdminClient(config)
    seen: set[str] = set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # librdkafka may drop and reopen its connections
        assert admin.list_topics(timeout=TIMEOUT).brokers
        seen |= broker.call(lambda: {c.principal for s in broker._listeners()
                                     for c in s.factory.connections})
        if seen - {"User:ANONYMOUS"}:
            break
        time.sleep(0.1)
    return seen


def test_unsecured_validator_options_with_confluent_kafka() -> None:
    jaas = (f'{LOGIN} required unsecuredValidatorPrincipalClaimName="azp" '
            'unsecuredValidatorScopeClaimName="roles" unsecuredValidatorRequiredScope="kafka";')
    security = Security(listeners=["SASL_PLAINTEXT"], mechanisms=["OAUTHBEARER"],
                        properties={"listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config": jaas})
    with EmbeddedBroker(security=security) as b:
        base = b.client_config("ignored", mechanism="OAUTHBEARER")
        # librdkafka's unsecured JWT, with the claim names the broker reads
        good = {**base, "sasl.oauthbearer.config":
                "principalClaimName=azp principal=alice scopeClaimName=roles scope=kafka,other"}
        assert confluent_roundtrip(good, unique("oauth")) == EXPECTED
        assert "User:alice" in logged_in_as(b, good)
        for config, status in (
                ("principalClaimName=azp principal=bob scopeClaimName=roles scope=other",
                 "insufficient_scope"),
                ("principal=carol scopeClaimName=roles scope=kafka", "invalid_token")):  # no azp
            refused = auth_errors({**base, "sasl.oauthbearer.config": config})
            assert refused and status in refused[0].str(), (config, refused)
        assert AdminClient(good).list_topics(timeout=TIMEOUT).brokers  # others still served


def jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none'})}.{part(claims)}."


def test_allowable_clock_skew() -> None:
    now = time.time()
    ahead = jwt({"sub": "alice", "iat": now + 30, "exp": now + 3600})  # issued 30 s "in the future"
    with pytest.raises(TokenRejected, match="was after the indicated time"):
        unsecured_validator(ahead, {}, int(now * 1000))
    assert unsecured_validator(ahead, {"unsecuredValidatorAllowableClockSkewMs": "60000"},
                               int(now * 1000)).principal == "alice"
    # the same with a real client: kafka-python sends the token as it is
    from kafka import KafkaProducer
    from kafka.net.sasl.oauth import AbstractTokenProvider

    class Tokens(AbstractTokenProvider):
        def token(self) -> str:
            now = time.time()
            return jwt({"sub": "alice", "iat": now + 30, "exp": now + 3600})

    jaas = f'{LOGIN} required unsecuredValidatorAllowableClockSkewMs="60000";'
    security = Security(listeners=["SASL_PLAINTEXT"], mechanisms=["OAUTHBEARER"],
                        properties={"listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config": jaas})
    with EmbeddedBroker(security=security) as b:
        topic = unique("skew")
        b.create_topic(topic)
        producer = KafkaProducer(bootstrap_servers=b.bootstrap_servers, security_protocol="SASL_PLAINTEXT",
                                 sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=Tokens())
        producer.send(topic, b"x").get(TIMEOUT)
        producer.close()


def test_a_python_validator_hook() -> None:
    security = Security(listeners=["SASL_PLAINTEXT"], mechanisms=["OAUTHBEARER"], properties={
        "listener.name.sasl_plaintext.oauthbearer.sasl.server.callback.handler.class":
            "tests.oauth_validator:validate"})
    oauth_validator.SEEN.clear()
    with EmbeddedBroker(security=security) as b:
        base = {k: v for k, v in b.client_config().items()} | {"sasl.mechanism": "OAUTHBEARER"}

        def with_token(token: str) -> dict[str, Any]:
            # confluent-kafka's oauth_cb: an opaque token from the application's own issuer
            return {**base, "oauth_cb": lambda _config: (token, time.time() + 3600, "app")}

        assert confluent_roundtrip(with_token("issued-carol"), unique("hook")) == EXPECTED
        assert "User:carol" in logged_in_as(b, with_token("issued-carol"))
        refused = auth_errors(with_token("forged-mallory"))
        assert refused and "invalid_token" in refused[0].str(), refused
        assert "forged-mallory" in oauth_validator.SEEN and "issued-carol" in oauth_validator.SEEN
    with pytest.raises(ConfigError, match=r"package\.module:function"):
        EmbeddedBroker(security=Security(listeners=["SASL_PLAINTEXT"], mechanisms=["OAUTHBEARER"],
                                         properties={
            "listener.name.sasl_plaintext.oauthbearer.sasl.server.callback.handler.class":
                "com.example.MyValidator"})).start()
