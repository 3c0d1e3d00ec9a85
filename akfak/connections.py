"""Broker-wide bounds on connections and on the requests they hold, shared by all listeners.

Kafka's settings, with Kafka's meaning where akfak's structure allows it:

- `max.connections` (broker-wide): at the limit the listeners stop accepting (Kafka's
  acceptor blocks), so new clients wait in the listen backlog until a connection
  closes; connections accepted in the same batch beyond it are closed.
- `max.connections.per.ip`, `max.connections.per.ip.overrides` (`host:count,...`):
  a new connection from an address that already has its maximum is closed at once,
  with one INFO line, as Kafka's TooManyConnectionsException.
- `queued.max.requests`: Kafka bounds requests read but not yet handled; akfak handles
  each request as soon as it is read, so what can pile up is requests unanswered
  (waiting on a Deferred, or ready behind an earlier one in their connection's
  order).  When the broker holds this many, connections that have one unanswered
  stop being read until the count drops; a connection with none is still read, so
  a fresh client (or the group member a JoinGroup waits for) is served.
- `queued.max.request.bytes` (-1: unbounded, Kafka's default): bytes of requests
  being received.  As Kafka's memory pool, a frame reserves its size when its length
  has been read; when nothing is left, connections stop being read before starting
  another frame until a reservation is released (when its request has been handled).
- `max.connection.creation.rate` and the ips' `connection_creation_rate` quotas are
  akfak.quota_manager's (new_connection); this module holds the listeners back for them.
- `connections.max.idle.ms`: a connection with no traffic for this long is closed
  (one with a request still unanswered is not idle).

A connection also stops being read while its transport holds more unsent response
bytes than its buffer size (Twisted's producer flow control), so a client that
pipelines requests and never reads the responses costs a bounded amount of memory.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from akfak.config import BrokerConfig, ConfigError

if TYPE_CHECKING:
    from akfak.protocol import KafkaProtocol

log = Logger()

QUEUE = "queued.max.requests"
MEMORY = "queued.max.request.bytes"


def parse_ip_overrides(spec: str) -> dict[str, int]:
    """`max.connections.per.ip.overrides`: `host:count` pairs, hosts resolved to addresses."""
    result: dict[str, int] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, count = item.rpartition(":")
        if not sep or not host:
            raise ConfigError(f"max.connections.per.ip.overrides: {item!r} is not host:count")
        try:
            limit = int(count)
        except ValueError:
            raise ConfigError(f"max.connections.per.ip.overrides: {count!r} is not a count") from None
        host = host.strip("[]")
        try:
            address = str(ipaddress.ip_address(host))
        except ValueError:
            address = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
        result[address] = limit
    return result


class ConnectionLimits:
    """The broker's open connections, counted per address, and their requests."""

    def __init__(self, config: BrokerConfig):
        self.max_connections = config.get_int("max.connections")
        self.max_per_ip = config.get_int("max.connections.per.ip")
        self.per_ip_overrides = parse_ip_overrides(config.get("max.connections.per.ip.overrides") or "")
        self.max_requests = max(1, config.get_int(QUEUE))
        max_bytes = config.get_int(MEMORY)
        self.max_bytes = max_bytes if max_bytes > 0 else None
        self.idle_seconds = config.get_int("connections.max.idle.ms") / 1000
        self.total = 0
        self.per_ip: dict[str, int] = {}
        self.ports: list[Any] = []  # listening ports, paused at max.connections
        self._accepting = True
        self._held: Any = None  # the call ending a max.connection.creation.rate pause
        #: unanswered requests, and bytes reserved by frames being received
        self.requests = 0
        self.reserved = 0
        #: connections paused for each of the two request bounds
        self._waiting: dict[str, set[KafkaProtocol]] = {QUEUE: set(), MEMORY: set()}

    # -- connections -----------------------------------------------------------------

    def admit(self, host: str) -> bool:
        """Count a new connection from `host`, or refuse it (the caller closes it)."""
        if self.total >= self.max_connections:
            log.info("Rejected connection from {host}: the broker has max.connections={max}",
                     host=host, max=self.max_connections)
            return False
        limit = self.per_ip_overrides.get(_canonical(host), self.max_per_ip)
        count = self.per_ip.get(host, 0)
        if count >= limit:
            log.info("Rejected connection from {host}, address already has the configured "
                     "maximum of {max} connections.", host=host, max=limit)
            return False
        self.per_ip[host] = count + 1
        self.total += 1
        if self.total >= self.max_connections:
            self._set_accepting(False)
        return True

    def release(self, host: str) -> None:
        count = self.per_ip.get(host, 0) - 1
        if count > 0:
            self.per_ip[host] = count
        else:
            self.per_ip.pop(host, None)
        self.total -= 1
        if self.total < self.max_connections and self._held is None:
            self._set_accepting(True)

    def hold_accepting(self, seconds: float, clock: Any) -> None:
        """max.connection.creation.rate: accept nothing for `seconds` (Kafka's acceptor waits)."""
        if self._held is not None:
            if self._held.getTime() - clock.seconds() >= seconds:
                return
            self._held.cancel()
        self._set_accepting(False)
        self._held = clock.callLater(seconds, self._unhold)

    def _unhold(self) -> None:
        self._held = None
        if self.total < self.max_connections:
            self._set_accepting(True)

    def _set_accepting(self, accepting: bool) -> None:
        if accepting == self._accepting:
            return
        self._accepting = accepting
        for port in self.ports:
            # tcp.Port is a FileDescriptor: not reading it is not accepting.
            if accepting:
                port.startReading()
            else:
                port.stopReading()

    def add_port(self, port: Any) -> None:
        if hasattr(port, "stopReading"):
            self.ports.append(port)
            if not self._accepting:
                port.stopReading()

    def remove_port(self, port: Any) -> None:
        if port in self.ports:
            self.ports.remove(port)

    # -- requests ----------------------------------------------------------------------

    @property
    def queue_full(self) -> bool:
        return self.requests >= self.max_requests

    @property
    def memory_exhausted(self) -> bool:
        return self.max_bytes is not None and self.reserved >= self.max_bytes

    def wait(self, connection: KafkaProtocol, reason: str) -> None:
        """`connection` paused for `reason`; resumed when that bound has room again."""
        self._waiting[reason].add(connection)
        connection.pause(reason)

    def forget(self, connection: KafkaProtocol) -> None:
        for waiting in self._waiting.values():
            waiting.discard(connection)

    def answered(self, count: int = 1) -> None:
        self.requests -= count
        if not self.queue_full:
            self._wake(QUEUE)

    def reserve(self, size: int) -> None:
        self.reserved += size

    def unreserve(self, size: int) -> None:
        self.reserved -= size
        if not self.memory_exhausted:
            self._wake(MEMORY)

    def _wake(self, reason: str) -> None:
        waiting, self._waiting[reason] = self._waiting[reason], set()
        for connection in waiting:
            # On the next turn of the reactor: resuming here would handle another
            # connection's requests in the middle of writing this one's answers.
            connection.broker.clock.callLater(0, connection.unpause, reason)


def _canonical(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host
