"""Requests from this broker to another of its cluster (akfak/cluster.py), as Kafka's
inter-broker channels send them: WriteTxnMarkers to a partition's leader and the
transaction verification (AddPartitionsToTxn v4+) to a transactional id's coordinator.

One connection per peer, opened on first use to the endpoint the peer registered on the
inter-broker listener (`inter.broker.listener.name`, else the first), PLAINTEXT only;
requests are pipelined with correlation ids and each fails after `TIMEOUT` seconds or
when the connection is lost (the caller retries, re-resolving the leader).
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING, Any

from kio.index import load_response_schema
from kio.serial import entity_reader, entity_writer
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from akfak.broker import Broker

log = Logger()

TIMEOUT = 10.0
CLIENT_ID = "akfak-broker"


def _flexible(entity: Any) -> bool:
    return bool(getattr(type(entity), "__flexible__", False))


class _PeerProtocol(Int32StringReceiver):
    MAX_LENGTH = 100 * 1024 * 1024

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.correlation = 0
        #: correlation id -> (response schema, Deferred, timeout call)
        self.waiting: dict[int, tuple[Any, Deferred[Any], Any]] = {}

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
        waiting, self.waiting = self.waiting, {}
        for _schema, done, call in waiting.values():
            if call.active():
                call.cancel()
            done.errback(reason or Failure(ConnectionLost()))


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
        self._peers: dict[int, _Peer] = {}

    def _listener(self) -> str:
        name = self.broker.config.get("inter.broker.listener.name")
        if name:
            return name
        listeners = self.broker.config.listeners()
        return listeners[0].name if listeners else "PLAINTEXT"

    def send(self, node_id: int, entity: Any) -> Deferred[Any]:
        """Send a kio request to broker `node_id`; fires with its response."""
        cluster = self.broker.cluster
        address = None if cluster is None else cluster.endpoint(node_id, self._listener())
        if address is None:
            return fail(ConnectionError(f"broker {node_id} is not live"))
        peer = self._peers.get(node_id)
        if peer is not None and peer.address == address:
            if peer.pending is not None:
                waiter: Deferred[Any] = Deferred()
                peer.pending.append((entity, waiter))
                return waiter
            if peer.protocol is not None and peer.protocol.connected:
                return peer.protocol.request(entity)
        peer = self._peers[node_id] = _Peer(address)
        first: Deferred[Any] = Deferred()
        assert peer.pending is not None
        peer.pending.append((entity, first))
        clock = self.broker.clock
        endpoint = TCP4ClientEndpoint(clock, address[0], address[1], timeout=5)

        def connected(protocol: _PeerProtocol) -> None:
            pending, peer.pending, peer.protocol = peer.pending or [], None, protocol
            for request, waiter in pending:
                protocol.request(request).chainDeferred(waiter)

        def failed(failure: Failure) -> None:
            pending, peer.pending = peer.pending or [], None
            if self._peers.get(node_id) is peer:
                del self._peers[node_id]
            for _request, waiter in pending:
                waiter.errback(failure)

        connectProtocol(endpoint, _PeerProtocol(clock)).addCallbacks(connected, failed)
        return first

    def close(self) -> None:
        for peer in self._peers.values():
            if peer.protocol is not None and peer.protocol.transport is not None:
                peer.protocol.transport.loseConnection()
        self._peers.clear()
