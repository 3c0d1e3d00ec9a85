"""A connection's outgoing responses: in order, in bounded steps, never joined.

Twisted's transports join everything written to them into one bytes object before
sending (`FileDescriptor.doWrite`) and send at most 128 KiB per reactor turn: a
30 MB Fetch response costs a 30 MB copy and some 240 turns.  The writer keeps the
parts of the responses not yet sent (bytes, and `FileRange`s: stored batches a Fetch
sends from the segment file) and sends them itself:

- Directly, on a plain TCP transport (twisted.internet.tcp, not TLS) whose own
  buffer is empty, when the reactor finds the socket writable (as the transport
  itself would send, so that what one turn answers goes together): bytes parts
  with one `socket.sendmsg` of up to 1024 of them,
  file ranges with `os.sendfile` (Kafka's zero-copy `transferTo`), at most
  `TURN_BYTES` per reactor turn.  When the socket buffer is full it asks the
  transport to say when it is writable: the transport resumes its producer (the
  connection) once its empty buffer has been "written".  This reaches into the
  transport's write buffer attributes (stable since Twisted 8), checked at each step.
- Through the transport otherwise (TLS, or whatever else carries the connection):
  one part at a time (file ranges read in `CHUNK` pieces), while the transport
  has not paused its producer (its buffer above its bufferSize), so the memory a
  slow reader costs stays bounded.

The connection stops reading requests while more than `PAUSE_BYTES` of responses
wait (the transport's own bound, for a client that pipelines and never reads).

A response written with `on_sent` has it called once its last byte has left: taken by the
socket, or by the transport (TLS).  That ends Kafka's ResponseSendTimeMs.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import tcp
from twisted.logger import Logger

from akfak.errors import KafkaStorageError
from akfak.log.handles import FileRange

log = Logger()

#: Parts per sendmsg call (Linux's IOV_MAX).
IOV_MAX = 1024
#: Bytes sent directly in one reactor turn, so that one fast reader does not hold up the others.
TURN_BYTES = 4 << 20
#: A file range goes through a (TLS) transport in pieces of this size.
CHUNK = 1 << 20
#: More unsent than this and the connection stops reading requests (Twisted's bufferSize).
PAUSE_BYTES = 1 << 16

Part = bytes | memoryview | FileRange


def hold(parts: Iterable[object]) -> None:
    """Pin the descriptors of a response's file ranges, from when it is ready until it has
    been sent or the connection is gone (so retention closing a segment does not cut it)."""
    held: list[FileRange] = []
    try:
        for part in parts:
            if isinstance(part, FileRange):
                part.hold()
                held.append(part)
    except KafkaStorageError:
        release(held)
        raise


def release(parts: Iterable[object]) -> None:
    for part in parts:
        if isinstance(part, FileRange):
            part.release()


class ResponseWriter:
    """Sends a connection's response parts; see the module notes."""

    def __init__(self, transport: Any, on_error: Callable[[str], None]) -> None:
        self.transport = transport
        self._on_error = on_error
        #: what is unsent; () while nothing is, as on an idle connection (an empty deque
        #: costs 600 bytes, a tenth of what an idle connection costs without it)
        self._parts: deque[Part] | tuple[()] = ()
        self._sent = 0  # bytes of the first part already sent
        self.pending = 0  # bytes not yet sent
        self._transport_full = False  # the transport paused us (its buffer is above bufferSize)
        self._written = 0  # bytes sent since the connection began
        self._marks: list[tuple[int, Callable[[], None]]] = []  # (end, on_sent)

    def write(self, parts: list[Part], on_sent: Callable[[], None] | None = None) -> None:
        if self._parts:
            self._parts.extend(parts)  # type: ignore[union-attr]
        else:
            self._parts = deque(parts)
        self.pending += sum(len(p) for p in parts)
        if on_sent is not None:
            self._marks.append((self._written + self.pending, on_sent))
        if self._direct_socket() is None:
            self._through_transport()
        else:
            # Sent when the reactor next finds the socket writable, with whatever else this
            # turn answers: one sendmsg for many pipelined responses, as the transport's own
            # buffering does (one send per small response costs more than all of them).
            self._wake_when_writable()

    @property
    def blocked(self) -> bool:
        """Enough unsent (here, or in the transport) that the connection should stop reading
        requests."""
        return self.pending > PAUSE_BYTES or self._transport_full

    def transport_paused(self) -> None:
        self._transport_full = True

    def transport_resumed(self) -> None:
        """The transport's buffer is empty (it said so to its producer): send more."""
        self._transport_full = False
        self._pump()

    def _pump(self) -> None:
        if not self._parts:
            return
        sock = self._direct_socket()
        if sock is None:
            self._through_transport()
        elif self._transport_empty():
            self._direct(sock)
        else:  # the transport is sending something: continue when it is done
            self._wake_when_writable()

    def discard(self) -> None:
        """The connection is gone: drop what is unsent, unpinning its files."""
        parts, self._parts = self._parts, ()
        self.pending = self._sent = 0
        self._marks.clear()
        release(parts)

    def flush_into_transport(self) -> None:
        """Hand everything unsent to the transport (before loseConnection, which sends what
        the transport holds and then closes)."""
        while self._parts:
            part = self._parts.popleft()  # type: ignore[union-attr]
            try:
                self.transport.write(self._bytes(part, self._sent, len(part) - self._sent))
            except (OSError, KafkaStorageError) as e:
                log.warn("Cannot read a response's stored batches: {e}", e=e)
            finally:
                if isinstance(part, FileRange):
                    part.release()
            self._sent = 0
        self._parts = ()
        self._written += self.pending
        self.pending = 0
        self._passed()

    # -- directly to the socket ------------------------------------------------------------

    def _direct_socket(self) -> socket.socket | None:
        t = self.transport
        if not isinstance(t, tcp.Connection) or t.TLS or not t.connected or t.disconnecting:
            return None
        return t.socket  # type: ignore[no-any-return]

    def _transport_empty(self) -> bool:
        t = self.transport
        return t.offset == len(t.dataBuffer) and not t._tempDataLen

    def _wake_when_writable(self) -> None:
        # doWrite on an empty buffer stops writing and resumes a paused producer: us.
        t = self.transport
        t.producerPaused = True
        t.startWriting()

    def _direct(self, sock: socket.socket) -> None:
        parts = self._parts
        budget = TURN_BYTES
        fd = sock.fileno()
        while parts and budget > 0:
            head = parts[0]
            try:
                if isinstance(head, FileRange):
                    wanted = min(head.size - self._sent, budget)
                    sent = head.sendfile(fd, self._sent, wanted)
                    if sent == 0:
                        self._fail(f"a segment file ended {head.size - self._sent} bytes short of "
                                   "a fetched range")
                        return
                else:
                    iov = self._iovec(budget)
                    wanted = sum(len(p) for p in iov)
                    sent = sock.sendmsg(iov)
            except BlockingIOError:
                break
            except OSError as e:  # the peer went away: the transport notices on its next read
                self._fail(f"send failed: {e}")
                return
            budget -= sent
            self._advance(sent)
            if sent < wanted:
                break  # the socket buffer is full
        if parts:
            self._wake_when_writable()

    def _iovec(self, budget: int) -> list[bytes | memoryview]:
        """Leading bytes parts, the first from where it was left, up to about `budget` bytes."""
        iov: list[bytes | memoryview] = []
        size = 0
        for part in self._parts:
            if isinstance(part, FileRange) or len(iov) == IOV_MAX or size >= budget:
                break
            if not iov and self._sent:
                part = memoryview(part)[self._sent:]
            iov.append(part)
            size += len(part)
        return iov

    def _passed(self) -> None:
        marks = self._marks
        while marks and marks[0][0] <= self._written:
            marks.pop(0)[1]()

    def _advance(self, sent: int) -> None:
        self.pending -= sent
        self._written += sent
        if self._marks and self._marks[0][0] <= self._written:
            self._passed()
        parts = self._parts
        assert isinstance(parts, deque)  # something was sent
        while sent:
            left = len(parts[0]) - self._sent
            if sent < left:
                self._sent += sent
                return
            sent -= left
            done = parts.popleft()
            self._sent = 0
            if isinstance(done, FileRange):
                done.release()
        while parts and not len(parts[0]):  # empty parts go without a syscall
            release([parts.popleft()])
        if not parts:
            self._parts = ()

    def _fail(self, reason: str) -> None:
        self.discard()
        self._on_error(reason)

    # -- through the transport -------------------------------------------------------------

    def _through_transport(self) -> None:
        parts = self._parts
        while parts and not self._transport_full:
            head = parts[0]
            if isinstance(head, FileRange):
                length = min(CHUNK, head.size - self._sent)
                try:
                    data = self._bytes(head, self._sent, length)
                except (OSError, KafkaStorageError) as e:
                    self._fail(f"cannot read a fetched range: {e}")
                    return
                if len(data) < length:
                    self._fail("a segment file ended short of a fetched range")
                    return
            else:
                data = head[self._sent:] if self._sent else head
            self._advance(len(data))
            self.transport.write(bytes(data) if isinstance(data, memoryview) else data)

    @staticmethod
    def _bytes(part: Part, offset: int, length: int) -> bytes:
        if isinstance(part, FileRange):
            return part.read(offset, length)
        return bytes(part[offset:offset + length]) if offset or length < len(part) else bytes(part)

