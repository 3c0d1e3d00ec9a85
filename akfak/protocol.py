"""One client connection: Kafka's framing, request headers, and in-order replies.

A connection has three layers, as Twisted's AMP does: framing (length-prefixed
frames, below), dispatch (header -> handler from the registry), and ordering
(responses leave in request order even when an earlier one is still waiting on
a Deferred, such as a long-poll Fetch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from akfak.connections import MEMORY, QUEUE, ConnectionLimits
from akfak.errors import KafkaStorageError
from akfak.handlers.base import throttle_time
from akfak.handlers.registry import API_VERSIONS_KEY, HandlerRegistry
from akfak.interfaces import IRequestHandler
from akfak.request_check import MalformedRequest, read_uvarint
from akfak.request_events import RequestEvent
from akfak.response_writer import ResponseWriter, hold, release
from akfak.security.acls import ANONYMOUS
from akfak.security.sasl import Authenticator, authenticator_for

if TYPE_CHECKING:
    from akfak.broker import Broker

log = Logger()

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_KEY_VERSION = struct.Struct(">hh")
_HEADER = struct.Struct(">hhih")  # api key, api version, correlation id, client id length
#: Why reading may be paused, besides the two request bounds of akfak.connections.
WRITING = "unsent responses"
ACCEPT_THROTTLE = "max.connection.creation.rate"


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


def skip_tagged_fields(data: bytes, offset: int) -> int:
    """Past a header's tagged fields: none is needed, so all are skipped."""
    end = len(data)
    count, offset = read_uvarint(data, offset, end, "header tagged fields")
    for _ in range(count):
        _tag, offset = read_uvarint(data, offset, end, "header tagged field tag")
        size, offset = read_uvarint(data, offset, end, "header tagged field size")
        offset += size
        if offset > end:
            raise MalformedRequest("header tagged field runs past the end of the frame")
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
    #: perf_counter() when decoding began, and the seconds decoding and handle() took (None
    #: while still in handle()): the request's time for request_percentage
    started: float = 0.0
    handled: float | None = None
    #: the request's time has been counted (akfak.quota_manager.record_request)
    request_recorded: bool = False

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
    context: RequestContext | None = None
    ready: bool = False
    parts: list[Any] | None = None  # bytes and FileRanges; None with ready: no response (acks=0)
    pending: Deferred[Any] | None = field(default=None, repr=False)
    #: for the request observers only (akfak.request_events): filled while someone observes
    observed: RequestEvent | None = field(default=None, repr=False)


class KafkaProtocol(Int32StringReceiver):
    """Kafka's wire protocol, server side.

    Keeps `Int32StringReceiver`'s contract (`stringReceived`, `sendString`,
    `MAX_LENGTH`, `lengthLimitExceeded`) but buffers so that each received byte is
    copied a bounded number of times: the stock `dataReceived` concatenates its
    whole unprocessed buffer on every read, which is quadratic in the frame size.
    """

    structFormat = ">i"  # signed: a negative length is an error, not 2 GiB
    #: the listener's security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL
    security_protocol = "PLAINTEXT"
    #: who the client authenticated as (a TLS client certificate, SASL)
    principal = ANONYMOUS

    def __init__(self, broker: Broker, registry: HandlerRegistry, listener: str = "PLAINTEXT",
                 limits: ConnectionLimits | None = None):
        self.broker = broker
        self.registry = registry
        self.listener = listener
        #: this connection's number in the broker's request events
        self.number = next(broker.connection_numbers)
        #: the broker-wide bounds (akfak.connections); None: unbounded, no idle timeout
        self.limits = limits
        self.MAX_LENGTH = broker.config.socket_request_max_bytes
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._needed = 4  # bytes required before the next frame can be parsed
        self._reserved = 0  # bytes the frame being received holds of queued.max.request.bytes
        self._replies: deque[_Reply] = deque()
        self._closing = False
        self._pauses: set[str] = set()
        self._reading = False  # inside dataReceived
        self._last_active = 0.0
        self._idle_call: Any = None
        self._writer: ResponseWriter | None = None  # made when connected
        self.peer = "?"
        self.factory: Any = None
        #: the address counted against max.connections.per.ip, released when closed
        self.admitted_host: str | None = None
        #: SASL authentication on a SASL_* listener (akfak.security.sasl), else None
        self.sasl: Authenticator | None = None
        #: seconds before the connection is read (max.connection.creation.rate)
        self.accept_delay = 0.0

    # -- framing ---------------------------------------------------------------

    def connectionMade(self) -> None:
        if self.factory is not None:
            self.factory.connections.add(self)
        self.broker.connections_made[self.listener] += 1
        # as Kafka's SocketServer: a reply goes out at once instead of waiting (Nagle) for the
        # client's delayed ACK of the one before, 40 ms per pipelined Produce reply otherwise.
        # Transports other than TCP have no such option.
        with contextlib.suppress(AttributeError, OSError):
            self.transport.setTcpNoDelay(True)
        address = self.transport.getPeer()
        self.peer = f"{getattr(address, 'host', address)}:{getattr(address, 'port', '')}"
        self.sasl = authenticator_for(self)
        self._writer = ResponseWriter(self.transport, self._write_failed)
        # Streaming producer: the transport pauses us while its unsent bytes exceed its buffer.
        self.transport.registerProducer(self, True)
        if self.accept_delay > 0:
            self.pause(ACCEPT_THROTTLE)
            self.broker.clock.callLater(self.accept_delay, self.unpause, ACCEPT_THROTTLE)
        if self.limits is not None and self.limits.idle_seconds > 0:
            self._last_active = self.broker.clock.seconds()
            self._idle_call = self.broker.clock.callLater(self.limits.idle_seconds, self._check_idle)

    def dataReceived(self, data: bytes) -> None:
        if self._idle_call is not None:
            self._last_active = self.broker.clock.seconds()
        self._reading = True
        try:
            self._frames(data)
        finally:
            self._reading = False

    def _frames(self, data: bytes) -> None:
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
                limits = self.limits
                if limits is not None and limits.max_bytes is not None and not self._reserved:
                    # Kafka's memory pool: a frame reserves its size once its length is known.
                    if limits.memory_exhausted:
                        self._needed = 0  # parse again as soon as resumed
                        limits.wait(self, MEMORY)
                        break
                    self._reserved = length
                    limits.reserve(length)
                break
            self.stringReceived(data[pos + 4 : end])
            pos = end
            if self._reserved:
                self.limits.unreserve(self._reserved)  # type: ignore[union-attr]
                self._reserved = 0
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
        self.broker.connections_lost[self.listener] += 1
        self._closing = True
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None
        replies, self._replies = self._replies, deque()
        limits = self.limits
        if limits is not None:
            limits.forget(self)
            if self._reserved:
                limits.unreserve(self._reserved)
                self._reserved = 0
            if self.admitted_host is not None:
                limits.release(self.admitted_host)
                self.admitted_host = None
            if replies:
                limits.answered(len(replies))
        for reply in replies:
            if reply.pending is not None:
                reply.pending.cancel()
            elif reply.parts:
                release(reply.parts)
        if self._writer is not None:
            self._writer.discard()
        share = getattr(self.broker, "share", None)
        if share is not None:  # share sessions go with their connection (akfak.share)
            share.connection_lost(self)

    # -- flow control ------------------------------------------------------------

    def pause(self, reason: str) -> None:
        """Stop reading from the transport until every reason given has been withdrawn."""
        if not self._pauses and not self._closing:
            self.paused = True
            self.transport.pauseProducing()
        self._pauses.add(reason)

    def unpause(self, reason: str) -> None:
        self._pauses.discard(reason)
        if self._pauses or not self.paused or self._closing:
            return
        self.paused = False
        self.transport.resumeProducing()
        if not self._reading:
            self._frames(b"")  # frames that arrived before the pause

    # IPushProducer, for the transport's flow control of what we write: the transport's
    # buffer is full; it is empty again (or, for the writer, the socket is writable).
    def pauseProducing(self) -> None:
        if self._writer is not None:
            self._writer.transport_paused()
        self.pause(WRITING)

    def resumeProducing(self) -> None:
        writer = self._writer
        if writer is not None:
            writer.transport_resumed()
            if writer.blocked:
                return
        self.unpause(WRITING)

    def stopProducing(self) -> None:
        pass  # the transport is going away: connectionLost follows

    def _check_idle(self) -> None:
        """connections.max.idle.ms: close after that long without traffic (Kafka's
        idle expiry); a connection with an unanswered request is not idle."""
        self._idle_call = None
        if self._closing or self.limits is None:
            return
        now = self.broker.clock.seconds()
        if self._replies:
            self._last_active = now
        idle = self.limits.idle_seconds
        quiet = now - self._last_active
        if quiet < idle:
            self._idle_call = self.broker.clock.callLater(idle - quiet, self._check_idle)
            return
        log.info("Closing connection from {peer}: idle for more than connections.max.idle.ms={ms}",
                 peer=self.peer, ms=int(idle * 1000))
        self._lose_connection()

    def drop(self, reason: str) -> None:
        """Close this connection, as Kafka does for requests it cannot answer."""
        if self._closing:
            return
        log.warn("Closing connection from {peer}: {reason}", peer=self.peer, reason=reason)
        self._lose_connection()

    def _lose_connection(self) -> None:
        """Close once the responses already answered have been sent, as the transport's
        loseConnection does with what it holds."""
        self._closing = True
        if self._writer is not None:
            self._writer.flush_into_transport()
        self.transport.loseConnection()

    def _write_failed(self, reason: str) -> None:
        """A response cannot be sent whole (the peer went away, a segment file shrank):
        nothing after it could be read as a response."""
        if self._closing:
            return
        log.info("Closing connection from {peer}: {reason}", peer=self.peer, reason=reason)
        self._closing = True
        getattr(self.transport, "abortConnection", self.transport.loseConnection)()

    # -- dispatch --------------------------------------------------------------

    def stringReceived(self, frame: bytes) -> None:
        sasl = self.sasl
        # the authentication gate: raw SASL tokens, and nothing else before authentication
        if sasl is not None and not sasl.take_frame(frame):
            return
        try:
            header = parse_request_header(frame, self.registry.is_flexible)
        except MalformedRequest as e:
            where = ""
            if len(frame) >= _KEY_VERSION.size:
                key, version = _KEY_VERSION.unpack_from(frame)
                where = f" (API key {key} v{version})"
            self.drop(f"malformed request header{where}: {e}")
            return
        handler = self.registry.get(header.api_key)
        if handler is None:
            self.drop(f"unknown API key {header.api_key}")
            return
        if sasl is not None and not sasl.admit(header, handler):
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
        started = time.perf_counter()
        try:
            request = handler.decode(header.api_version, frame, header.body_offset)
        except Exception as e:
            # MalformedRequest from the schema check, or whatever the decoder refused
            # (bad UTF-8, an enum value it does not know): one line, no traceback.
            reason = str(e) if isinstance(e, MalformedRequest) else f"{type(e).__name__}: {e}"
            self.drop(f"malformed request (API key {header.api_key} v{header.api_version}): {reason}")
            return
        reply = self._enqueue(header, handler)
        if self.broker.request_observers:
            reply.observed = RequestEvent(
                self.number, self.peer, self.listener, header.client_id, header.api_key,
                header.api_version, header.correlation_id, len(frame), None,
                started, 0.0, 0.0, request, None)
        context = RequestContext(header, self.peer, self.broker, self, self.listener,
                                 started=started)
        reply.context = context
        try:
            result = handler.handle(request, context)
        except MalformedRequest as e:  # well-formed, but a request Kafka refuses to parse
            self.drop(f"invalid request (API key {header.api_key} v{header.api_version}): {e}")
            return
        except Exception:
            log.failure("Handler for API key {key} failed; closing connection from {peer}",
                        key=header.api_key, peer=self.peer)
            self.drop("internal error")
            return
        context.handled = time.perf_counter() - started
        if isinstance(result, Deferred):
            reply.pending = result
            result.addCallbacks(self._answered, self._failed, callbackArgs=(reply,),
                                errbackArgs=(reply,))
        else:
            self._answered(result, reply)
        limits = self.limits
        if limits is not None and limits.queue_full and self._replies and not self._closing:
            limits.wait(self, QUEUE)  # until the broker holds fewer unanswered requests

    def _enqueue(self, header: RequestHeader, handler: IRequestHandler) -> _Reply:
        reply = _Reply(header, handler)
        self._replies.append(reply)
        if self.limits is not None:
            self.limits.requests += 1
        return reply

    def _answered(self, response: object, reply: _Reply) -> None:
        reply.pending = None
        if self._closing:
            return
        context = reply.context
        if response is not None and context is not None and not context.request_recorded:
            response = self._request_quota(response, context)
        if reply.observed is not None:
            reply.observed.answered = time.perf_counter()
            reply.observed.response = response
        if response is not None:
            encoding = time.perf_counter()
            try:
                body = reply.handler.encode(reply.header.api_version, response)
            except Exception:
                log.failure("Encoding the response to API key {key} failed", key=reply.header.api_key)
                self.drop("internal error")
                return
            if context is not None:
                # as Kafka's network-thread time: counted, never throttling this response
                self.broker.quotas.record_encoding(context, time.perf_counter() - encoding)
            parts = body if isinstance(body, list) else [body]
            try:
                hold(parts)  # stored batches to send from their files stay readable till sent
            except KafkaStorageError as e:  # a file closed under us
                self.drop(f"cannot hold the stored batches of a response: {e}")
                return
            reply.parts = parts
        reply.ready = True
        self._finish_ready()

    def _request_quota(self, response: Any, context: RequestContext) -> Any:
        """request_percentage: the response carries the larger throttle time, and the
        connection is not read for it (akfak.quota_manager)."""
        quotas = self.broker.quotas
        throttle_ms = quotas.record_request(context)
        if throttle_ms <= 0:
            return response
        quotas.throttle(self, throttle_ms)
        current = getattr(response, "throttle_time", None)
        if current is not None and current.total_seconds() * 1000 < throttle_ms:
            response = dataclasses.replace(response, throttle_time=throttle_time(throttle_ms))
        return response

    def _failed(self, failure: Failure, reply: _Reply) -> None:
        reply.pending = None
        if failure.check(CancelledError) or self._closing:
            return
        log.failure("Handler for API key {key} failed; closing connection from {peer}",
                    failure, key=reply.header.api_key, peer=self.peer)
        self.drop("internal error")

    def _observed(self, event: RequestEvent, size: int | None) -> None:
        event.response_size = size
        event.sent = time.perf_counter()
        self.broker.request_observers.emit(event)

    # -- ordering --------------------------------------------------------------

    def _finish_ready(self) -> None:
        """Write every answered response at the head of the queue, in request order."""
        replies = self._replies
        if self._idle_call is not None:
            self._last_active = self.broker.clock.seconds()
        while replies and replies[0].ready:
            reply = replies.popleft()
            if self.limits is not None:
                self.limits.answered()
            if reply.parts is None:
                if reply.observed is not None:
                    self._observed(reply.observed, None)
                continue  # Kafka sends nothing back (Produce with acks=0)
            header = reply.header
            # The ApiVersions response header is always v0, even for flexible versions.
            tagged = header.flexible and header.api_key != API_VERSIONS_KEY
            head = _INT32.pack(header.correlation_id) + (b"\x00" if tagged else b"")
            size = len(head) + sum(len(p) for p in reply.parts)
            self._writer.write([_INT32.pack(size), head, *reply.parts])  # type: ignore[union-attr]
            if reply.observed is not None:
                self._observed(reply.observed, size)
        if self._writer is not None and self._writer.blocked and not self._closing:
            self.pause(WRITING)
