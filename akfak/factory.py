"""KafkaFactory: one per listener, building a KafkaProtocol for each connection."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger

from akfak.broker import Broker
from akfak.connections import ConnectionLimits
from akfak.protocol import KafkaProtocol

log = Logger()


class KafkaFactory(ServerFactory):
    protocol = KafkaProtocol

    def __init__(self, broker: Broker, listener: str = "PLAINTEXT",
                 limits: ConnectionLimits | None = None, security_protocol: str = "PLAINTEXT"):
        self.broker = broker
        self.listener = listener
        self.security_protocol = security_protocol
        #: a TLS listener's settings (akfak.security.tls.ServerTLS), given to each connection
        self.tls: Any = None
        #: broker-wide, shared by every listener's factory
        self.limits = limits if limits is not None else ConnectionLimits(broker.config)
        #: open connections, so that stopping the listener can close them as Kafka does
        self.connections: set[KafkaProtocol] = set()

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        host = str(getattr(addr, "host", addr))
        # connection creation rates (akfak.quota_manager), before the counts, as Kafka
        delay_ms, close_ms = self.broker.quotas.new_connection(self.listener, host)
        if delay_ms > 0:
            self.limits.hold_accepting(delay_ms / 1000, self.broker.clock)
        if close_ms > 0:
            log.debug("Delaying closing of connection from {host} for {ms} ms", host=host,
                      ms=close_ms)
            return _DelayedClose(close_ms / 1000, self.broker.clock)
        if not self.limits.admit(host):
            return None  # Twisted closes the connection
        proto = self.protocol(self.broker, self.broker.registry, self.listener, self.limits)
        proto.accept_delay = delay_ms / 1000
        proto.security_protocol = self.security_protocol
        if self.tls is not None:
            proto.tls = self.tls
        proto.factory = self
        proto.admitted_host = host
        return proto


class _DelayedClose(Protocol):
    """A connection over its address's connection_creation_rate: never read, closed after
    the throttle time (Kafka's DelayedCloseSocket)."""

    def __init__(self, seconds: float, clock: Any):
        self.seconds = seconds
        self.clock = clock

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        self.clock.callLater(self.seconds, self.transport.loseConnection)
