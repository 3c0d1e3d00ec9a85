"""TLS for SSL and SASL_SSL listeners: Twisted's TLSMemoryBIOProtocol over pyOpenSSL, set up
from Kafka's `ssl.*` keys as they apply to the listener (`listener.name.<name>.ssl.*` first).

Behaviour, as Kafka's SslTransportLayer / DefaultSslEngineFactory / DefaultKafkaPrincipalBuilder:

- The key store (akfak.security.tls_stores) gives the certificate the broker presents; a TLS
  listener without one is a configuration error (Kafka would start and fail every handshake).
- `ssl.client.auth`: none (default), requested (a client certificate is asked for; one that is
  sent must be trusted), required (a client without a trusted certificate fails the
  handshake).  The trust store, if any, names the CAs trusted for client certificates (else
  the system's).  On SASL_SSL listeners only the listener-prefixed value applies (KIP-684).
- The principal of an SSL connection is "User:" + ssl.principal.mapping.rules applied to the
  client certificate's subject DN (akfak.security.principal), User:ANONYMOUS without one; on
  SASL_SSL, SASL authenticates instead and TLS sets no principal.
- `ssl.enabled.protocols` (default TLSv1.2,TLSv1.3) and `ssl.cipher.suites` (Java's, i.e.
  IANA, names; empty: OpenSSL's defaults) restrict what is negotiated.
- A failed handshake (a plaintext client on a TLS port, an untrusted client certificate, no
  common protocol or cipher) closes that connection with one log line, as Kafka's "Failed
  authentication with ... (SSL handshake failed)"; other connections are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IAddress, IHandshakeListener, IOpenSSLServerConnectionCreator
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from akfak.config import BrokerConfig, ConfigError, Listener
from akfak.protocol import KafkaProtocol
from akfak.security.acls import ANONYMOUS
from akfak.security.principal import NoMatchingRule, SslPrincipalMapper, rfc2253
from akfak.security.tls_stores import KeyMaterial, Lookup, load_keystore, load_truststore

log = Logger()

CLIENT_AUTH = ("none", "requested", "required")
_VERSIONS = {  # Java's protocol names -> (OpenSSL version, the option that disables it)
    "TLSv1": (SSL.TLS1_VERSION, SSL.OP_NO_TLSv1),
    "TLSv1.1": (SSL.TLS1_1_VERSION, SSL.OP_NO_TLSv1_1),
    "TLSv1.2": (SSL.TLS1_2_VERSION, SSL.OP_NO_TLSv1_2),
    "TLSv1.3": (SSL.TLS1_3_VERSION, SSL.OP_NO_TLSv1_3),
}
DEFAULT_PROTOCOLS = "TLSv1.2,TLSv1.3"
#: TLS 1.3's suites (configured apart from the older ones in OpenSSL); all others have _WITH_.
_TLS13_SUITES = frozenset({"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                           "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_CCM_SHA256",
                           "TLS_AES_128_CCM_8_SHA256"})
#: Java's marker "suite", not a cipher: ignored
_SCSV = "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"


@implementer(IOpenSSLServerConnectionCreator)
@dataclass
class ServerTLS:
    """One TLS listener's settings: its OpenSSL context and how its clients are named."""

    context: SSL.Context
    mapper: SslPrincipalMapper
    client_auth: str
    #: whether TLS names the principal (SSL), or SASL does (SASL_SSL)
    names_principal: bool

    def serverConnectionForTLS(self, protocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        return SSL.Connection(self.context, None)


def _split(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def server_tls(config: BrokerConfig, listener: Listener) -> ServerTLS:
    """The TLS settings of `listener` (SSL or SASL_SSL) from `config`; ConfigError if unusable."""
    where = f"listener {listener.name} ({listener.security_protocol})"
    get, keystore, truststore = listener_stores(config, listener, where)
    if keystore is None:
        raise ConfigError(f"{where} needs a key store: set ssl.keystore.location (or, with "
                          "ssl.keystore.type=PEM, ssl.keystore.key and ssl.keystore.certificate.chain)")
    client_auth = _client_auth(config, listener)
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_options(SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE)
    # needed for session resumption once client certificates are verified
    context.set_session_id(f"akfak-{listener.name}".encode()[:32])
    use_keystore(context, keystore, where)
    set_protocols(context, get("ssl.enabled.protocols"), get("ssl.cipher.suites"), where)
    if client_auth != "none":
        store = context.get_cert_store()
        if truststore is None:
            context.set_default_verify_paths()
        else:
            for certificate in truststore:
                store.add_cert(crypto.X509.from_cryptography(certificate))  # type: ignore[union-attr]
                context.add_client_ca(certificate)  # the CAs a client may pick its certificate by
        mode = SSL.VERIFY_PEER
        if client_auth == "required":
            mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        context.set_verify(mode)
    return ServerTLS(context, SslPrincipalMapper(get("ssl.principal.mapping.rules")), client_auth,
                     names_principal=listener.security_protocol == "SSL")


def listener_stores(config: BrokerConfig, listener: Listener, where: str
                    ) -> tuple[Lookup, KeyMaterial | None, list[x509.Certificate] | None]:
    """The getter of `listener`'s keys (`listener.name.<name>.` first), its key store and its
    trust store (None where not set); ConfigError, naming `where`, if one cannot be read."""
    def get(key: str) -> str | None:
        return config.listener_get(listener, key)

    try:
        return get, load_keystore(get), load_truststore(get)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def use_keystore(context: SSL.Context, keystore: KeyMaterial, where: str) -> None:
    """Present the key store's certificate chain with its key (a server's, or a client's)."""
    try:
        context.use_certificate(keystore.certificate)
        for certificate in keystore.chain:
            context.add_extra_chain_cert(certificate)
        context.use_privatekey(keystore.key)  # type: ignore[arg-type]
        context.check_privatekey()
    except SSL.Error as e:
        raise ConfigError(f"{where}: the key store's key and certificate are unusable: {e}") from None


def _client_auth(config: BrokerConfig, listener: Listener) -> str:
    prefixed = listener.prefix + "ssl.client.auth" in config.properties
    if listener.security_protocol == "SASL_SSL" and not prefixed:
        value = "none"
        if (config.get("ssl.client.auth") or "none").strip().lower() != "none":
            log.warn("Broker configuration 'ssl.client.auth' is applied only to SSL listeners; use "
                     "{prefix}ssl.client.auth for the SASL_SSL listener {name}",
                     prefix=listener.prefix, name=listener.name)
    else:
        value = (config.listener_get(listener, "ssl.client.auth") or "none").strip().lower()
    if value not in CLIENT_AUTH:
        raise ConfigError(f"Invalid value {value} for configuration ssl.client.auth: String must be one of: "
                          f"{', '.join(CLIENT_AUTH)}")
    return value


def set_protocols(context: SSL.Context, protocols: str | None, suites: str | None, where: str) -> None:
    names = _split(protocols if protocols is not None else DEFAULT_PROTOCOLS)
    unknown = [n for n in names if n not in _VERSIONS]
    if unknown or not names:
        raise ConfigError(f"{where}: ssl.enabled.protocols: unsupported {', '.join(unknown) or 'empty list'} "
                          f"(akfak supports {', '.join(_VERSIONS)})")
    enabled = set(names)
    cipher_names = [s for s in _split(suites) if s != _SCSV]
    tls13 = [s for s in cipher_names if s in _TLS13_SUITES]
    older = [s for s in cipher_names if s not in _TLS13_SUITES]
    if cipher_names:
        for suite in older:
            try:
                SSL.Context(SSL.TLS_SERVER_METHOD).set_cipher_list(suite.encode())
            except SSL.Error:
                raise ConfigError(f"{where}: ssl.cipher.suites: unsupported cipher suite {suite}") from None
        context.set_tls13_ciphersuites(":".join(tls13).encode())
        if older:
            context.set_cipher_list(":".join(older).encode())
        else:
            enabled -= {"TLSv1", "TLSv1.1", "TLSv1.2"}  # no suite left for them
        if not tls13:
            enabled.discard("TLSv1.3")
        if not enabled:
            raise ConfigError(f"{where}: no ssl.cipher.suites suite for ssl.enabled.protocols={protocols}")
    versions = [_VERSIONS[n][0] for n in enabled]
    context.set_min_proto_version(min(versions))
    context.set_max_proto_version(max(versions))
    options = 0
    for name, (_version, option) in _VERSIONS.items():
        if name not in enabled:
            options |= option  # a gap between the lowest and highest enabled
    if options:
        context.set_options(options)


@implementer(IHandshakeListener)
class TLSKafkaProtocol(KafkaProtocol):
    """A KafkaProtocol under TLS: learns its principal once the handshake is done, and logs a
    handshake that failed."""

    tls: ServerTLS
    handshake_done = False

    def handshakeCompleted(self) -> None:
        self.handshake_done = True
        if not self.tls.names_principal:
            return
        handle = self.transport.getHandle()
        certificate = handle.get_peer_certificate(as_cryptography=True)
        if certificate is None:
            self.principal = ANONYMOUS
            return
        dn = rfc2253(certificate.subject)
        try:
            self.principal = "User:" + self.tls.mapper.name(dn)
        except NoMatchingRule as e:  # Kafka fails the authentication
            self.drop(f"failed authentication (ssl.principal.mapping.rules: {e})")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.handshake_done and reason is not None and reason.check(SSL.Error):
            log.info("Failed authentication with {peer} (SSL handshake failed: {error})",
                     peer=self.peer, error=ssl_reason(reason.value))
        super().connectionLost(reason)


def ssl_reason(error: BaseException) -> str:
    """OpenSSL's reason strings (e.g. "wrong version number"), without the library names."""
    try:
        reasons = [entry[2] for entry in error.args[0] if len(entry) == 3]
    except (IndexError, TypeError):
        reasons = []
    return ", ".join(r for r in reasons if r) or str(error) or type(error).__name__


class KafkaTLSFactory(TLSMemoryBIOFactory):
    """TLS around a listener's KafkaFactory; refuses a connection when the KafkaFactory does
    (connection limits) instead of wrapping nothing."""

    def buildProtocol(self, addr: IAddress | None) -> Any:
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)


def wrap_factory(factory: Any, tls: ServerTLS, reactor: Any) -> KafkaTLSFactory:
    """Make `factory` (a KafkaFactory) build TLS connections with `tls`.  The reactor is passed
    on, or TLSMemoryBIOFactory would import (and so install) the global one."""
    factory.protocol = TLSKafkaProtocol
    factory.tls = tls
    return KafkaTLSFactory(tls, False, factory, clock=reactor)
