"""KafkaFactory: one per listener, building a KafkaProtocol for each connection."""

from __future__ import annotations

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import ServerFactory

from akfak.broker import Broker
from akfak.protocol import KafkaProtocol


class KafkaFactory(ServerFactory):
    protocol = KafkaProtocol

    def __init__(self, broker: Broker, listener: str = "PLAINTEXT"):
        self.broker = broker
        self.listener = listener
        #: open connections, so that stopping the listener can close them as Kafka does
        self.connections: set[KafkaProtocol] = set()

    def buildProtocol(self, addr: IAddress) -> KafkaProtocol:
        proto = KafkaProtocol(self.broker, self.broker.registry, self.listener)
        proto.factory = self
        return proto
