"""KafkaFactory: one per listener, building a KafkaProtocol for each connection."""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import ServerFactory

from akfak.broker import Broker
from akfak.connections import ConnectionLimits
from akfak.protocol import KafkaProtocol


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

    def buildProtocol(self, addr: IAddress) -> KafkaProtocol | None:
        host = str(getattr(addr, "host", addr))
        if not self.limits.admit(host):
            return None  # Twisted closes the connection
        proto = self.protocol(self.broker, self.broker.registry, self.listener, self.limits)
        proto.security_protocol = self.security_protocol
        if self.tls is not None:
            proto.tls = self.tls
        proto.factory = self
        proto.admitted_host = host
        return proto
