"""The connection under KafkaProtocol: its framing, flow control and closing.

`KafkaProtocol` (protocol.py) is one class in two parts, so that neither module grows too
large to read: here `KafkaProtocolBase` holds the connection's state, cuts the bytes
received into frames (within the request bounds of akfak.connections), pauses and resumes
reading, and closes the connection; protocol.py dispatches each frame to its handler and
writes the responses in request order.
"""

from __future__ import annotations

import contextlib
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from akfak.connections import MEMORY, ConnectionLimits
from akfak.handlers.registry import HandlerRegistry
from akfak.request_context import RequestContext, RequestHeader
from akfak.request_events import RequestEvent
from akfak.response_writer import ResponseWriter, release
from akfak.security.acls import ANONYMOUS
from akfak.security.sasl import Authenticator, authenticator_for

if TYPE_CHECKING:
    from akfak.broker import Broker

# The connection's lines keep one namespace, whichever of its parts logs them.
log = Logger(namespace="akfak.protocol")

_INT32 = struct.Struct(">i")
#: Why reading may be paused, besides the two request bounds of akfak.connections.
WRITING = "unsent responses"
ACCEPT_THROTTLE = "max.connection.creation.rate"


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


class KafkaProtocolBase(Int32StringReceiver):
    """The state, framing, flow control and closing of a connection (see the module doc).

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
        #: `perf_counter()` of the last read: the frames it completes arrived then
        self.arrived = 0.0
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._needed = 4  # bytes required before the next frame can be parsed
        self._reserved = 0  # bytes the frame being received holds of queued.max.request.bytes
        # a list, not a deque: few are in flight, and an empty deque costs 600 bytes per
        # connection (what 10,000 idle connections cost: benchmarks/idle_connections.py)
        self._replies: list[_Reply] = []
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
        self.arrived = time.perf_counter()
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
        replies, self._replies = self._replies, []
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
