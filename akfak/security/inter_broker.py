"""How this broker connects to the others of its cluster (akfak/peers.py), from Kafka's keys.

As Kafka's KafkaConfig and its inter-broker channel builder (ChannelBuilders.clientChannelBuilder
with the listener's prefixed configs):

- `inter.broker.listener.name` names the listener, whose protocol the listener map gives; else
  `security.inter.broker.protocol` (PLAINTEXT by default) names both. Setting both, a name not
  in `listener.security.protocol.map`, or a listener this broker does not have are Kafka's
  configuration errors. A peer is reached at its endpoint registered under that name.
- SSL and SASL_SSL: the listener's `ssl.*` keys (`listener.name.<l>.` first) as a client's: the
  key store is the certificate presented when the peer asks for one, the trust store (else the
  system's CAs) verifies the peer's, `ssl.endpoint.identification.algorithm` (https by default)
  checks the peer's certificate names its advertised host (empty: no check),
  `ssl.enabled.protocols` and `ssl.cipher.suites` as for the listener.
- SASL_PLAINTEXT and SASL_SSL: `sasl.mechanism.inter.broker.protocol` (Kafka's default GSSAPI
  is not implemented), which must be enabled on the listener, with the `username` and
  `password` options of the listener's `listener.name.<l>.<mechanism>.sasl.jaas.config`, as
  Kafka's PlainLoginModule / ScramLoginModule give them to the broker's client side; for
  OAUTHBEARER, that line's `unsecuredLogin*` options, as Kafka's OAuthBearerLoginModule with
  its default (unsecured) login handler (akfak/security/oauthbearer_login.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from akfak.config import BrokerConfig, ConfigError, Listener
from akfak.security import oauthbearer_login, scram
from akfak.security.sasl import OAUTHBEARER, PLAIN, PROTOCOLS, SASL_PROTOCOLS, SaslSettings
from akfak.security.tls import listener_stores, set_protocols, use_keystore

#: what Java's SSLParameters.setEndpointIdentificationAlgorithm takes; both check host names
IDENTIFICATION_ALGORITHMS = ("HTTPS", "LDAPS")


@dataclass(frozen=True)
class SaslLogin:
    mechanism: str
    username: str = ""
    password: str = ""
    #: OAUTHBEARER: the login module's options (oauthbearer_login makes the token of each login)
    oauth: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never print the password
        return f"SaslLogin({self.mechanism!r}, {self.username!r})"


@implementer(IOpenSSLClientConnectionCreator)
@dataclass(frozen=True)
class ClientTLS:
    """TLS towards one peer host: the shared context, the host for SNI and name checks."""

    context: SSL.Context
    #: whether the peer's certificate must name the host (ssl.endpoint.identification.algorithm)
    check_host: bool
    host: str = ""

    def for_host(self, host: str) -> ClientTLS:
        return ClientTLS(self.context, self.check_host, host)

    def clientConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        if self.host and not is_ip_address(self.host):
            connection.set_tlsext_host_name(self.host.encode("idna"))  # SNI, for names only
        connection.set_connect_state()
        return connection


@dataclass(frozen=True)
class InterBroker:
    """The inter-broker listener and how to connect to a peer's endpoint on it."""

    listener: str
    security_protocol: str
    tls: ClientTLS | None = None
    sasl: SaslLogin | None = None


def inter_broker_listener(config: BrokerConfig) -> tuple[str, str]:
    """(listener name, security protocol) of inter-broker connections (Kafka's
    getInterBrokerListenerNameAndSecurityProtocol)."""
    name = config.get("inter.broker.listener.name")
    if name:
        if config.is_set("security.inter.broker.protocol"):
            raise ConfigError("Only one of inter.broker.listener.name and "
                              "security.inter.broker.protocol should be set.")
        name = name.strip().upper()
        for item in (config.get("listener.security.protocol.map") or "").split(","):
            listener, sep, protocol = item.partition(":")
            if sep and listener.strip().upper() == name:
                return name, protocol.strip().upper()
        raise ConfigError(f"Listener with name {name} defined in inter.broker.listener.name not "
                          "found in listener.security.protocol.map.")
    protocol = (config.get("security.inter.broker.protocol") or "PLAINTEXT").strip().upper()
    if protocol not in PROTOCOLS:
        raise ConfigError(f"Invalid value {protocol} for configuration security.inter.broker.protocol: "
                          "String must be one of: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")
    return protocol, protocol


def inter_broker(config: BrokerConfig, sasl: SaslSettings) -> InterBroker:
    """The inter-broker settings of a broker in a cluster; ConfigError where Kafka refuses
    (akfak.tap checks them before the broker starts)."""
    name, protocol = inter_broker_listener(config)
    listeners = {lst.name: lst for lst in config.listeners()}
    listener = listeners.get(name)
    if listener is None:
        raise ConfigError("inter.broker.listener.name must be a listener name defined in "
                          "advertised.listeners. The valid options based on currently configured "
                          f"listeners are {','.join(listeners)}")
    tls = client_tls(config, listener) if protocol in ("SSL", "SASL_SSL") else None
    login = sasl_login(config, sasl, name) if protocol in SASL_PROTOCOLS else None
    return InterBroker(name, protocol, tls, login)


def client_tls(config: BrokerConfig, listener: Listener) -> ClientTLS:
    where = f"inter-broker listener {listener.name} ({listener.security_protocol})"
    get, keystore, truststore = listener_stores(config, listener, where)
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_options(SSL.OP_NO_COMPRESSION)
    if keystore is not None:  # presented when the peer asks (ssl.client.auth)
        use_keystore(context, keystore, where)
    set_protocols(context, get("ssl.enabled.protocols"), get("ssl.cipher.suites"), where)
    if truststore is None:
        context.set_default_verify_paths()
    else:
        store = context.get_cert_store()
        assert store is not None
        for certificate in truststore:
            store.add_cert(crypto.X509.from_cryptography(certificate))
    context.set_verify(SSL.VERIFY_PEER)
    algorithm = get("ssl.endpoint.identification.algorithm")
    algorithm = "https" if algorithm is None else algorithm.strip()
    if algorithm and algorithm.upper() not in IDENTIFICATION_ALGORITHMS:
        raise ConfigError(f"{where}: ssl.endpoint.identification.algorithm={algorithm}: "
                          "https (the default) or empty (no host name check)")
    return ClientTLS(context, check_host=bool(algorithm))


def sasl_login(config: BrokerConfig, sasl: SaslSettings, listener: str) -> SaslLogin:
    mechanism = (config.get("sasl.mechanism.inter.broker.protocol") or "GSSAPI").strip()
    if mechanism not in sasl.for_listener(listener).mechanisms:
        raise ConfigError("sasl.mechanism.inter.broker.protocol must be included in "
                          "sasl.enabled.mechanisms when SASL is used for inter-broker communication"
                          + (" (Kafka's default GSSAPI needs Kerberos, which akfak does not have)"
                             if mechanism == "GSSAPI" else ""))
    if mechanism not in (PLAIN, OAUTHBEARER, *scram.MECHANISMS):
        raise ConfigError(f"sasl.mechanism.inter.broker.protocol={mechanism}: akfak's brokers log "
                          f"in to each other with PLAIN, {', '.join(scram.MECHANISMS)} or "
                          f"{OAUTHBEARER}")
    key = f"listener.name.{listener.lower()}.{mechanism.lower()}.sasl.jaas.config"
    module = sasl.login_module(listener, mechanism)
    options = module.options if module is not None else {}
    if mechanism == OAUTHBEARER:
        handler = f"listener.name.{listener.lower()}.oauthbearer.sasl.login.callback.handler.class"
        for name in (handler, "sasl.login.callback.handler.class"):
            if config.get(name):
                raise ConfigError(f"{name}: akfak's brokers log in to each other with Kafka's "
                                  "unsecured OAUTHBEARER tokens only (no token endpoint)")
        try:
            oauthbearer_login.check_options(options)
        except oauthbearer_login.LoginOptionsError as e:
            raise ConfigError(f"{key}: {e} (inter-broker SASL/OAUTHBEARER, Kafka's unsecured "
                              "login)") from None
        return SaslLogin(mechanism, oauth=dict(options))
    if "username" not in options or "password" not in options:
        raise ConfigError(f"{key} needs the username and password options this broker logs in to "
                          "the others with (inter-broker SASL)")
    return SaslLogin(mechanism, options["username"], options["password"])


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
