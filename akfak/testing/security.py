"""Security settings for an EmbeddedBroker: listeners, SASL users and mechanisms, ACLs.

    from akfak.testing import EmbeddedBroker
    from akfak.testing.security import Security

    security = Security(listeners=["SASL_PLAINTEXT"], users={"alice": "alice-secret"},
                        mechanisms=["SCRAM-SHA-256"])
    with EmbeddedBroker(security=security) as broker:
        producer = Producer(broker.client_config("alice"))   # bootstrap, protocol, mechanism, login

`Security` names the broker's listeners by security protocol ("NAME:PROTOCOL" for a listener
named otherwise), one each on a free port of the broker's host. On SASL listeners `users`
(name -> password) can log in with every mechanism in `mechanisms` (by default PLAIN,
SCRAM-SHA-256 and SCRAM-SHA-512): PLAIN's JAAS line lists them, and their SCRAM credentials
are created when the broker starts (as `kafka-storage format --add-scram` would), unless they
exist already. OAUTHBEARER uses Kafka's unsecured validator: a client logs in as any principal
it names (confluent-kafka's unsecured JWT, the Java client's unsecured login module).

Importing this module imports only the standard library.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")
DEFAULT_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
SCRAM_ITERATIONS = 4096
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "OAUTHBEARER": "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule",
}


def jaas_quote(value: str) -> str:
    """A JAAS option value in double quotes (Kafka's JaasConfig unescapes it)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ScramUpsertion(NamedTuple):
    """What AlterUserScramCredentials carries for one user and mechanism."""

    name: str
    mechanism: int
    iterations: int
    salt: bytes
    salted_password: bytes


@dataclass(frozen=True)
class Security:
    """How an EmbeddedBroker is secured (`EmbeddedBroker(security=Security(...))`)."""

    #: one listener per entry, by security protocol or "NAME:PROTOCOL"; the first is the one
    #: `bootstrap_servers` and `client_config()` name unless told otherwise
    listeners: Sequence[str] = ("SSL",)
    #: SASL users, name -> password (SASL listeners)
    users: Mapping[str, str] = field(default_factory=dict)
    #: SASL mechanisms enabled on the SASL listeners (sasl.enabled.mechanisms); empty: PLAIN
    #: and both SCRAMs
    mechanisms: Sequence[str] = ()
    #: super.users, as principals ("User:admin")
    super_users: Sequence[str] = ()
    #: whether ACLs are enforced (authorizer.class.name=StandardAuthorizer)
    authorizer: bool = False
    #: further broker properties, applied last
    properties: Mapping[str, str] = field(default_factory=dict)

    def listener_names(self) -> list[tuple[str, str]]:
        """(listener name, security protocol) of each listener, in order."""
        result = []
        for entry in self.listeners:
            name, _, protocol = entry.partition(":")
            result.append((name.upper(), (protocol or name).upper()))
        return result

    @property
    def uses_tls(self) -> bool:
        return any(protocol in TLS_PROTOCOLS for _, protocol in self.listener_names())

    @property
    def sasl_mechanisms(self) -> tuple[str, ...]:
        return tuple(self.mechanisms) or DEFAULT_MECHANISMS

    @property
    def uses_sasl(self) -> bool:
        return any(protocol in SASL_PROTOCOLS for _, protocol in self.listener_names())

    def broker_properties(self, host: str, certificates: Any = None) -> dict[str, str]:
        """The server.properties keys that set this up on `host` (port 0: any free port)."""
        names = self.listener_names()
        bracketed = f"[{host}]" if ":" in host else host
        props = {
            "listeners": ",".join(f"{name}://{bracketed}:0" for name, _ in names),
            "listener.security.protocol.map": ",".join(f"{name}:{protocol}" for name, protocol in names),
        }
        if self.uses_sasl:
            mechanisms = self.sasl_mechanisms
            props["sasl.enabled.mechanisms"] = ",".join(mechanisms)
            for name, protocol in names:
                if protocol not in SASL_PROTOCOLS:
                    continue
                prefix = f"listener.name.{name.lower()}"
                if "PLAIN" in mechanisms:
                    users = "".join(f" user_{user}={jaas_quote(password)}"
                                    for user, password in self.users.items())
                    props[f"{prefix}.plain.sasl.jaas.config"] = f"{_LOGIN_MODULES['PLAIN']} required{users};"
                if "OAUTHBEARER" in mechanisms:
                    props[f"{prefix}.oauthbearer.sasl.jaas.config"] = (
                        f"{_LOGIN_MODULES['OAUTHBEARER']} required;")
        if self.authorizer:
            props["authorizer.class.name"] = STANDARD_AUTHORIZER
        if self.super_users:
            props["super.users"] = ";".join(self.super_users)
        props.update(self.properties)
        return props

    def scram_upsertions(self, existing: Any = ()) -> list[ScramUpsertion]:
        """The SCRAM credentials of `users` to create, skipping (user, mechanism) in `existing`."""
        from akfak.security.scram import MECHANISMS, salted_password

        result = []
        if not self.uses_sasl:
            return result
        for mechanism in self.sasl_mechanisms:
            if mechanism not in MECHANISMS:
                continue
            for user, password in self.users.items():
                if (user, mechanism) in existing:
                    continue
                salt = secrets.token_bytes(32)
                result.append(ScramUpsertion(
                    user, MECHANISMS[mechanism][0], SCRAM_ITERATIONS, salt,
                    salted_password(mechanism, password, salt, SCRAM_ITERATIONS)))
        return result

    def client_properties(self, protocol: str, certificates: Any = None, *,
                          user: str | None = None, certificate: str | None = None,
                          java: bool = False, mechanism: str | None = None,
                          password: str | None = None) -> dict[str, str]:
        """Client settings for a listener of `protocol`, in librdkafka's names (confluent-kafka,
        kcat) or, with `java`, the Java client's. For SASL, `user` logs in with `mechanism`
        (by default the first enabled) and `password` (by default the one in `users`)."""
        props = {"security.protocol": protocol}
        if protocol in TLS_PROTOCOLS:
            raise NotImplementedError("TLS client settings come with the TLS listeners")
        if protocol in SASL_PROTOCOLS and user is not None:
            mechanism = mechanism or self.sasl_mechanisms[0]
            if password is None:
                password = self.users.get(user, "")
            props["sasl.mechanism"] = mechanism
            if java:
                if mechanism == "OAUTHBEARER":
                    options = f" unsecuredLoginStringClaim_sub={jaas_quote(user)}"
                else:
                    options = f" username={jaas_quote(user)} password={jaas_quote(password)}"
                props["sasl.jaas.config"] = f"{_LOGIN_MODULES[mechanism]} required{options};"
            elif mechanism == "OAUTHBEARER":
                props["enable.sasl.oauthbearer.unsecure.jwt"] = "true"
                props["sasl.oauthbearer.config"] = f"principal={user}"
            else:
                props["sasl.username"] = user
                props["sasl.password"] = password
        return props
