"""One client connection: Kafka's framing, request headers, and in-order replies.

A connection has three layers, as Twisted's AMP does: framing (length-prefixed
frames, below), dispatch (header -> handler from the registry), and ordering
(responses leave in request order even when an earlier one is still waiting on
a Deferred, such as a long-poll Fetch).
"""

from __future__ import annotations

import contextlib
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from akfak.handlers.registry import API_VERSIONS_KEY, HandlerRegistry
from akfak.interfaces import IRequestHandler
from akfak.security.acls import ANONYMOUS

if TYPE_CHECKING:
    from akfak.broker import Broker

log = Logger()

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_HEADER = struct.Struct(">hhih")  # api key, api version, correlation id, client id length


class MalformedRequest(ValueError):
    """A request that cannot be parsed; Kafka closes the connection."""


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    flexible: bool
    body_offset: int


def parse_request_header(frame: bytes, flexible_for: Any) -> RequestHeader:
    """Parse request header v1 (or v2 when `flexible_for(api_key, version)` says the
    request is flexible), skipping tagged fields a broker need not understand."""
    if len(frame) < _HEADER.size:
        raise MalformedRequest(f"a {len(frame)}-byte frame is too short for a request header")
    api_key, version, correlation_id, client_len = _HEADER.unpack_from(frame)
    offset = _HEADER.size
    client_id = None
    if client_len >= 0:
        end = offset + client_len
        if end > len(frame):
            raise MalformedRequest("client id runs past the end of the frame")
        try:
            client_id = frame[offset:end].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRequest("client id is not UTF-8") from None
        offset = end
    elif client_len != -1:
        raise MalformedRequest(f"client id length {client_len}")
    flexible = flexible_for(api_key, version)
    if flexible:
        offset = skip_tagged_fields(frame, offset)
    return RequestHeader(api_key, version, correlation_id, client_id, flexible, offset)


def _read_uvarint(data: bytes, offset: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if offset >= len(data):
            raise MalformedRequest("varint runs past the end of the frame")
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, offset
        shift += 7
        if shift > 28:
            raise MalformedRequest("varint is longer than 5 bytes")


def skip_tagged_fields(data: bytes, offset: int) -> int:
    count, offset = _read_uvarint(data, offset)
    for _ in range(count):
        _tag, offset = _read_uvarint(data, offset)
        size, offset = _read_uvarint(data, offset)
        offset += size
        if offset > len(data):
            raise MalformedRequest("tagged field runs past the end of the frame")
    return offset


@dataclass(slots=True)
class RequestContext:
    """What a handler may know about the request besides its body."""

    header: RequestHeader
    peer: str
    broker: Broker
    connection: KafkaProtocol
    #: The listener the request arrived on, for advertising the matching address.
    listener: str = "PLAINTEXT"
    #: The request's authorization answers (akfak.security.checks.access), made on first use.
    access: Any = None

    @property
    def api_version(self) -> int:
        return self.header.api_version

    @property
    def client_id(self) -> str | None:
        return self.header.client_id

    @property
    def principal(self) -> str:
        """Who sent the request ("User:ANONYMOUS" on a connection that did not authenticate)."""
        return getattr(self.connection, "principal", ANONYMOUS)

    @property
    def client_host(self) -> str:
        """The client's address, as ACL host entries name it."""
        return self.peer.rsplit(":", 1)[0]


@dataclass(slots=True)
class _Reply:
    """A place in the connection's response queue."""

    header: RequestHeader
    handler: Any
    ready: bool = False
    parts: list[bytes] | None = None  # None with ready: no response (acks=0)
    pending: Deferred[Any] | None = field(default=None, repr=False)


class KafkaProtocol(Int32StringReceiver):
    """Kafka's wire protocol, server side.

    Keeps `Int32StringReceiver`'s contract (`stringReceived`, `sendString`,
    `MAX_LENGTH`, `lengthLimitExceeded`) but buffers so that each received byte is
    copied a bounded number of times: the stock `dataReceived` concatenates its
    whole unprocessed buffer on every read, which is quadratic in the frame size.
    """

    structFormat = ">i"  # signed: a negative length is an error, not 2 GiB

    def __init__(self, broker: Broker, registry: HandlerRegistry, listener: str = "PLAINTEXT"):
        self.broker = broker
        self.registry = registry
        self.listener = listener
        self.MAX_LENGTH = broker.config.socket_request_max_bytes
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._needed = 4  # bytes required before the next frame can be parsed
        self._replies: deque[_Reply] = deque()
        self._closing = False
        self.peer = "?"
        self.factory: Any = None

    # -- framing ---------------------------------------------------------------

    def connectionMade(self) -> None:
        if self.factory is not None:
            self.factory.connections.add(self)
        # as Kafka's SocketServer: a reply goes out at once instead of waiting (Nagle) for the
        # client's delayed ACK of the one before, 40 ms per pipelined Produce reply otherwise.
        # Transports other than TCP have no such option.
        with contextlib.suppress(AttributeError, OSError):
            self.transport.setTcpNoDelay(True)
        address = self.transport.getPeer()
        self.peer = f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}"

    def dataReceived(self, data: bytes) -> None:
        if self._chunks:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered < self._needed:
                return  # a large frame is still arriving: keep the pieces, join once
            data = b"".join(self._chunks)
            self._chunks.clear()
        size = len(data)
        pos = 0
        self._needed = 0  # stays 0 if pausing stops the loop: resume must parse at once
        while not self._closing and not self.paused:
            if size - pos < 4:
                self._needed = 4
                break
            (length,) = _INT32.unpack_from(data, pos)
            if length < 0 or length > self.MAX_LENGTH:
                self.lengthLimitExceeded(length)
                return
            end = pos + 4 + length
            if end > size:
                self._needed = 4 + length
                break
            self.stringReceived(data[pos + 4 : end])
            pos = end
        if self._closing:
            return
        rest = data[pos:] if pos else data
        if rest:
            self._chunks.append(rest)
        self._buffered = len(rest)

    def lengthLimitExceeded(self, length: int) -> None:
        if length < 0:
            self.drop(f"negative frame length {length}")
        else:
            self.drop(f"frame of {length} bytes exceeds socket.request.max.bytes={self.MAX_LENGTH}")

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.factory is not None:
            self.factory.connections.discard(self)
        self._closing = True
        replies, self._replies = self._replies, deque()
        for reply in replies:
            if reply.pending is not None:
                reply.pending.cancel()

    def drop(self, reason: str) -> None:
        """Close this connection, as Kafka does for requests it cannot answer."""
        if self._closing:
            return
        log.warn("Closing connection from {peer}: {reason}", peer=self.peer, reason=reason)
        self._closing = True
        self.transport.loseConnection()

    # -- dispatch --------------------------------------------------------------

    def stringReceived(self, frame: bytes) -> None:
        try:
            header = parse_request_header(frame, self.registry.is_flexible)
        except MalformedRequest as e:
            self.drop(f"malformed request header: {e}")
            return
        handler = self.registry.get(header.api_key)
        if handler is None:
            self.drop(f"unknown API key {header.api_key}")
            return
        if not handler.min_version <= header.api_version <= handler.max_version:
            if header.api_key == API_VERSIONS_KEY:
                # KIP-511: answer in v0 so the client can retry with a version we list.
                reply = self._enqueue(header, handler)
                reply.parts, reply.ready = [handler.unsupported_version_body()], True
                self._finish_ready()
                return
            self.drop(
                f"unsupported version {header.api_version} of API key {header.api_key} "
                f"(supported {handler.min_version}-{handler.max_version})"
            )
            return
        try:
            request = handler.decode(header.api_version, frame, header.body_offset)
        except Exception as e:
            self.drop(
                f"malformed body of API key {header.api_key} v{header.api_version}: "
                f"{type(e).__name__}: {e}"
            )
            return
        reply = self._enqueue(header, handler)
        context = RequestContext(header, self.peer, self.broker, self, self.listener)
        try:
            result = handler.handle(request, context)
        except Exception:
            log.failure("Handler for API key {key} failed; closing connection from {peer}",
                        key=header.api_key, peer=self.peer)
            self.drop("internal error")
            return
        if isinstance(result, Deferred):
            reply.pending = result
            result.addCallbacks(self._answered, self._failed, callbackArgs=(reply,),
                                errbackArgs=(reply,))
        else:
            self._answered(result, reply)

    def _enqueue(self, header: RequestHeader, handler: IRequestHandler) -> _Reply:
        reply = _Reply(header, handler)
        self._replies.append(reply)
        return reply

    def _answered(self, response: object, reply: _Reply) -> None:
        reply.pending = None
        if self._closing:
            return
        if response is not None:
            try:
                body = reply.handler.encode(reply.header.api_version, response)
            except Exception:
                log.failure("Encoding the response to API key {key} failed", key=reply.header.api_key)
                self.drop("internal error")
                return
            reply.parts = body if isinstance(body, list) else [body]
        reply.ready = True
        self._finish_ready()

    def _failed(self, failure: Failure, reply: _Reply) -> None:
        reply.pending = None
        if failure.check(CancelledError) or self._closing:
            return
        log.failure("Handler for API key {key} failed; closing connection from {peer}",
                    failure, key=reply.header.api_key, peer=self.peer)
        self.drop("internal error")

    # -- ordering --------------------------------------------------------------

    def _finish_ready(self) -> None:
        """Write every answered response at the head of the queue, in request order."""
        replies = self._replies
        while replies and replies[0].ready:
            reply = replies.popleft()
            if reply.parts is None:
                continue  # Kafka sends nothing back (Produce with acks=0)
            header = reply.header
            # The ApiVersions response header is always v0, even for flexible versions.
            tagged = header.flexible and header.api_key != API_VERSIONS_KEY
            head = _INT32.pack(header.correlation_id) + (b"\x00" if tagged else b"")
            size = len(head) + sum(len(p) for p in reply.parts)
            self.transport.writeSequence([_INT32.pack(size), head, *reply.parts])
