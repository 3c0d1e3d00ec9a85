"""Requests from this broker to another of its cluster (akfak/cluster.py), as Kafka's
inter-broker channels send them: WriteTxnMarkers to a partition's leader and the
transaction verification (AddPartitionsToTxn v4+) to a transactional id's coordinator.

One connection per peer, opened on first use to the endpoint the peer registered on the
inter-broker listener (akfak/security/inter_broker.py: `inter.broker.listener.name` or
`security.inter.broker.protocol`), with that listener's security protocol: TLS with the
listener's stores (the peer's certificate verified, and its host name unless
`ssl.endpoint.identification.algorithm` is empty), then SASL (SaslHandshake v1,
SaslAuthenticate v2) with `sasl.mechanism.inter.broker.protocol` and the JAAS login. Requests
wait until the connection is authenticated; they are pipelined with correlation ids and each
fails after `TIMEOUT` seconds or when the connection is lost (the caller retries, re-resolving
the leader). A connection whose SASL session has a lifetime is replaced before it runs out
(KIP-368's re-authentication, done by reconnecting).

A failed authentication (TLS handshake, host name, SASL) is logged once per peer and reason at
WARN, as Kafka's "Connection to node N failed authentication due to: ..."; the requests fail and
the callers retry, and success after failures is logged once.
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING, Any

from kio.index import load_response_schema
from kio.schema.api_versions.v0.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode
from kio.schema.sasl_authenticate.v2.request import SaslAuthenticateRequest
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest
from kio.serial import entity_reader, entity_writer
from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from akfak.security import oauthbearer_login, scram
from akfak.security.inter_broker import InterBroker, SaslLogin, inter_broker, is_ip_address
from akfak.security.sasl import OAUTHBEARER
from akfak.security.tls import ssl_reason

if TYPE_CHECKING:
    from akfak.broker import Broker

log = Logger()

TIMEOUT = 10.0
CLIENT_ID = "akfak-broker"
#: Kafka's client re-authenticates at 85-95 % of the session lifetime
REAUTH_FRACTION = 0.85
#: after a failed authentication, the wait before the next connection to that peer, doubling
#: from the first to the last (Kafka's reconnect.backoff.ms / reconnect.backoff.max.ms)
BACKOFF_S = (0.05, 1.0)


class AuthenticationFailed(ConnectionError):
    """The peer refused this broker (TLS or SASL), or this broker the peer's certificate."""


def _flexible(entity: Any) -> bool:
    return bool(getattr(type(entity), "__flexible__", False))


@implementer(IHandshakeListener)
class _PeerProtocol(Int32StringReceiver):
    MAX_LENGTH = 100 * 1024 * 1024

    def __init__(self, clock: Any, security: InterBroker, host: str) -> None:
        self.clock = clock
        self.security, self.host = security, host
        self.correlation = 0
        #: correlation id -> (response schema, Deferred, timeout call)
        self.waiting: dict[int, tuple[Any, Deferred[Any], Any]] = {}
        #: fires with self once TLS and SASL are done, or fails with why not
        self.ready: Deferred[_PeerProtocol] = Deferred()
        #: when to replace the connection (clock seconds), for a SASL session with a lifetime
        self.expires: float | None = None
        self._ready_timeout: Any = None
        #: what authentication was doing, for the line a lost connection leaves
        self._stage = "connecting"

    def connectionMade(self) -> None:
        self._ready_timeout = self.clock.callLater(TIMEOUT, self._not_ready)
        if self.security.tls is None:
            self._versions()
        else:
            # until the peer answers: under TLS 1.3 it checks this broker's certificate after
            # the handshake completed here
            self._stage = "SSL handshake"

    def handshakeCompleted(self) -> None:
        tls = self.security.tls
        if tls is not None and tls.check_host:
            check = verify_ip_address if is_ip_address(self.host) else verify_hostname
            try:
                check(self.transport.getHandle(), self.host)  # type: ignore[union-attr]
            except VerificationError:  # Java's words
                kind = "IP address" if is_ip_address(self.host) else "DNS name"
                self._failed(f"SSL handshake failed: No subject alternative names matching {kind} "
                             f"{self.host} found")
                return
        self._versions()

    def _versions(self) -> None:
        # as Kafka's clients, ApiVersions first (before SASL too); its answer shows the peer
        # took this connection
        self.request(ApiVersionsRequest()).addCallback(self._authenticate).addErrback(
            self._sasl_error)

    def _authenticate(self, _: Any) -> None:
        login = self.security.sasl
        if login is None:
            self._done()
            return
        self._stage = "SASL authentication"
        self.request(SaslHandshakeRequest(mechanism=login.mechanism)).addCallback(
            self._handshaken, login).addErrback(self._sasl_error)

    def _handshaken(self, response: Any, login: SaslLogin) -> Deferred[Any] | None:
        if response.error_code != ErrorCode.none:
            raise AuthenticationFailed(
                f"Unexpected handshake request with client mechanism {login.mechanism}, enabled "
                f"mechanisms are {list(response.mechanisms)} ({ErrorCode(response.error_code).name})")
        if login.mechanism in scram.MECHANISMS:
            client = scram.ScramClient(login.mechanism, login.username, login.password)
            return self._token(client.first()).addCallback(
                lambda first: self._token(client.final(first))).addCallback(client.verify).addCallback(
                lambda _: self._done())
        if login.mechanism == OAUTHBEARER:
            first = oauthbearer_login.initial_response(login.oauth, int(self.clock.seconds() * 1000))
            # an error challenge (RFC 7628) is answered with \x01, which the peer refuses
            return self._token(first).addCallback(
                lambda challenge: self._token(b"\x01") if challenge else None).addCallback(
                lambda _: self._done())
        token = f"\x00{login.username}\x00{login.password}".encode()  # PLAIN, RFC 4616
        return self._token(token).addCallback(lambda _: self._done())

    def _token(self, token: bytes) -> Deferred[bytes]:
        def answered(response: Any) -> bytes:
            if response.error_code != ErrorCode.none:
                raise AuthenticationFailed(response.error_message or ErrorCode(response.error_code).name)
            lifetime = response.session_lifetime.total_seconds()  # 0: the session does not end
            if lifetime > 0:
                self.expires = self.clock.seconds() + lifetime * REAUTH_FRACTION
            return bytes(response.auth_bytes)

        return self.request(SaslAuthenticateRequest(auth_bytes=token)).addCallback(answered)

    def _sasl_error(self, failure: Failure) -> None:
        if not self.ready.called:
            error = failure.value
            reason = str(error) if isinstance(error, (AuthenticationFailed, scram.ScramError)) \
                else f"{self._stage} failed: {failure.getErrorMessage()}"
            self._failed(reason)

    def _done(self) -> None:
        if self.ready.called:
            return
        self._stage = "authenticated"
        if self._ready_timeout is not None and self._ready_timeout.active():
            self._ready_timeout.cancel()
        self.ready.callback(self)

    def _failed(self, reason: str) -> None:
        if self._ready_timeout is not None and self._ready_timeout.active():
            self._ready_timeout.cancel()
        if not self.ready.called:
            self.ready.errback(AuthenticationFailed(reason))
        if self.connected and self.transport is not None:
            self.transport.abortConnection()  # type: ignore[attr-defined]

    def _not_ready(self) -> None:
        self._failed(f"{self._stage} took more than {TIMEOUT:.0f} s")

    def request(self, entity: Any) -> Deferred[Any]:
        api_key, version = int(entity.__api_key__), int(entity.__version__)
        self.correlation += 1
        cid = self.correlation
        header = struct.pack(">hhih", api_key, version, cid, len(CLIENT_ID)) + CLIENT_ID.encode()
        if _flexible(entity):
            header += b"\x00"
        body = io.BytesIO()
        entity_writer(type(entity))(body, entity)
        done: Deferred[Any] = Deferred()
        call = self.clock.callLater(TIMEOUT, self._timed_out, cid)
        self.waiting[cid] = (load_response_schema(api_key, version), done, call)
        self.sendString(header + body.getvalue())
        return done

    def _timed_out(self, cid: int) -> None:
        entry = self.waiting.pop(cid, None)
        if entry is not None:
            entry[1].errback(TimeoutError(f"no answer in {TIMEOUT:.0f} s"))
            self.transport.loseConnection()

    def stringReceived(self, frame: bytes) -> None:
        (cid,) = struct.unpack_from(">i", frame)
        entry = self.waiting.pop(cid, None)
        if entry is None:
            return
        schema, done, call = entry
        if call.active():
            call.cancel()
        offset = 4 + (1 if schema.__flexible__ else 0)  # a v1 header has tagged fields
        try:
            response, _ = entity_reader(schema)(frame, offset)
        except Exception as e:
            done.errback(e)
            return
        done.callback(response)

    def connectionLost(self, reason: Failure | None = None) -> None:  # type: ignore[override]
        self.connected = 0  # the next request makes a new connection
        if not self.ready.called:
            error = reason.value if reason is not None else None
            if isinstance(error, SSL.Error):
                self._failed(f"SSL handshake failed: {ssl_reason(error)}")
            else:  # as Kafka's "terminated during authentication"
                self._failed(f"connection closed during {self._stage}")
        waiting, self.waiting = self.waiting, {}
        for _schema, done, call in waiting.values():
            if call.active():
                call.cancel()
            done.errback(reason or Failure(ConnectionLost()))


class _Factory(Factory):
    noisy = False

    def __init__(self, protocol: _PeerProtocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr: Any) -> _PeerProtocol:
        return self.protocol_instance


class _Peer:
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.protocol: _PeerProtocol | None = None
        #: requests waiting for the connection, None once connected
        self.pending: list[tuple[Any, Deferred[Any]]] | None = []


class Peers:
    """Connections to the other brokers of the cluster, by node id."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        #: ConfigError (at start) where Kafka refuses the inter-broker settings
        self.security = inter_broker(broker.config, broker.sasl)
        self._peers: dict[int, _Peer] = {}
        #: node id -> the authentication failure last logged for it
        self._failing: dict[int, str] = {}
        #: node id -> (no connection before this clock time, the wait after that one, why)
        self._backoff: dict[int, tuple[float, float, str]] = {}

    def send(self, node_id: int, entity: Any) -> Deferred[Any]:
        """Send a kio request to broker `node_id`; fires with its response."""
        cluster = self.broker.cluster
        listener = self.security.listener
        live = None if cluster is None else cluster.live.get(node_id)
        if live is None:
            return fail(ConnectionError(f"broker {node_id} is not live"))
        address = live.endpoints.get(listener)
        if address is None:
            reason = f"Broker {node_id} has no endpoint on the inter-broker listener {listener}"
            self._log_failure(node_id, reason)
            return fail(ConnectionError(reason))
        peer = self._peers.get(node_id)
        if peer is not None and peer.address == address:
            if peer.pending is not None:
                waiter: Deferred[Any] = Deferred()
                peer.pending.append((entity, waiter))
                return waiter
            protocol = peer.protocol
            if protocol is not None and protocol.connected:
                if protocol.expires is None or self.broker.clock.seconds() < protocol.expires:
                    return protocol.request(entity)
                protocol.transport.loseConnection()  # the session is ending: a new one
        backoff = self._backoff.get(node_id)
        if backoff is not None and self.broker.clock.seconds() < backoff[0]:
            return fail(AuthenticationFailed(backoff[2]))
        peer = self._peers[node_id] = _Peer(address)
        first: Deferred[Any] = Deferred()
        assert peer.pending is not None
        peer.pending.append((entity, first))
        self._connect(node_id, peer)
        return first

    def _connect(self, node_id: int, peer: _Peer) -> None:
        clock = self.broker.clock
        host, port = peer.address
        kind = TCP6ClientEndpoint if ":" in host else TCP4ClientEndpoint
        endpoint = kind(clock, host, port, timeout=5)
        protocol = peer.protocol = _PeerProtocol(clock, self.security, host)
        factory: Factory = _Factory(protocol)
        if self.security.tls is not None:
            # the reactor is passed on, or TLSMemoryBIOFactory would install the global one
            factory = TLSMemoryBIOFactory(self.security.tls.for_host(host), True, factory, clock=clock)
            factory.noisy = False

        def connected(_: Any) -> Deferred[_PeerProtocol]:
            return protocol.ready

        def ready(protocol: _PeerProtocol) -> None:
            pending, peer.pending = peer.pending or [], None
            self._backoff.pop(node_id, None)
            if self._failing.pop(node_id, None) is not None:
                log.info("Connected to broker {node} on listener {listener} again",
                         node=node_id, listener=self.security.listener)
            for request, waiter in pending:
                protocol.request(request).chainDeferred(waiter)

        def failed(failure: Failure) -> None:
            pending, peer.pending = peer.pending or [], None
            if self._peers.get(node_id) is peer:
                del self._peers[node_id]
            if failure.check(AuthenticationFailed):
                wait = self._backoff.get(node_id, (0.0, BACKOFF_S[0]))[1]
                self._backoff[node_id] = (clock.seconds() + wait, min(wait * 2, BACKOFF_S[1]),
                                          str(failure.value))
                self._log_failure(node_id, f"Connection to node {node_id} ({host}:{port}) on "
                                  f"listener {self.security.listener} failed authentication due "
                                  f"to: {failure.value}")
            for _request, waiter in pending:
                waiter.errback(failure)

        endpoint.connect(factory).addCallback(connected).addCallbacks(ready, failed)

    def _log_failure(self, node_id: int, message: str) -> None:
        if self._failing.get(node_id) == message:
            return
        self._failing[node_id] = message
        log.warn("{message} (retried; logged again only if the reason changes)", message=message)

    def close(self) -> None:
        for peer in self._peers.values():
            if peer.protocol is not None and peer.protocol.transport is not None:
                peer.protocol.transport.loseConnection()
        self._peers.clear()
