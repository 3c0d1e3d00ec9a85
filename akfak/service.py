"""Services: the broker's lifetime, its listeners and timers, composed in a MultiService."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Application, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak import collector
from akfak.allocator import keep_freed_memory
from akfak.broker import Broker
from akfak.config import BrokerConfig, Listener
from akfak.connections import ConnectionLimits
from akfak.factory import KafkaFactory
from akfak.security.tls import server_tls, wrap_factory
from akfak.web.service import HttpService

log = Logger()


class BrokerService(Service):
    """Opens the broker's storage when started and closes it when stopped."""

    def __init__(self, broker: Broker):
        self.broker = broker

    def startService(self) -> None:
        self.broker.open()
        collector.settle(full=True)  # the logs opened, the modules loaded: all long-lived
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return maybeDeferred(self.broker.close)


class ListenerService(Service):
    """Listens on one endpoint string and advertises the address it got."""

    def __init__(self, broker: Broker, listener: Listener, reactor: Any = None,
                 limits: ConnectionLimits | None = None):
        self.broker = broker
        self.listener = listener
        self.reactor = reactor if reactor is not None else broker.clock
        #: max.connections and the request bounds are broker-wide: one for all listeners
        self.limits = limits
        self.port: IListeningPort | None = None
        self.factory: KafkaFactory | None = None
        #: fires with the listening port (or fails) once startService has begun listening
        self.listening: Deferred[IListeningPort] | None = None

    def startService(self) -> None:
        super().startService()
        endpoint = serverFromString(self.reactor, self.listener.endpoint)
        if self.limits is None:
            self.limits = ConnectionLimits(self.broker.config)
        self.factory = KafkaFactory(self.broker, self.listener.name, self.limits,
                                    self.listener.security_protocol)
        serving: Any = self.factory
        if self.listener.tls:
            # SSL and SASL_SSL: TLS (Twisted's, over pyOpenSSL) around the Kafka protocol
            serving = wrap_factory(self.factory, server_tls(self.broker.config, self.listener),
                                   self.reactor)
        self.listening = endpoint.listen(serving)
        self.listening.addCallback(self._listening)
        failed: list[Failure] = []
        self.listening.addErrback(lambda f: failed.append(f) or f)
        if failed:
            # tcp: endpoints fail at once (port in use); raising makes twistd exit with it.
            self.listening.addErrback(lambda _: None)
            failed[0].raiseException()

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        self.limits.add_port(port)  # type: ignore[union-attr]
        address = port.getHost()
        host = self.listener.advertised_host or address.host
        number = self.listener.advertised_port or address.port
        self.broker.advertise(self.listener.name, host, number)
        log.info("akfak node {node} listening on {endpoint} ({host}:{port}), advertising {adv} "
                 "for listener {name} ({protocol})",
                 node=self.broker.node_id, endpoint=self.listener.endpoint, host=address.host,
                 port=address.port, adv=f"{host}:{number}", name=self.listener.name,
                 protocol=self.listener.security_protocol)
        return port

    def stopService(self) -> Deferred[Any] | None:
        """Stop accepting, then close the connections this listener accepted (as Kafka's
        shutdown does: a connection left open would be served by a closed broker)."""
        super().stopService()
        if self.port is None:
            return None
        port, self.port = self.port, None
        self.limits.remove_port(port)  # type: ignore[union-attr]
        stopped = maybeDeferred(port.stopListening)

        def close_connections(_: object) -> Deferred[None]:
            for connection in list(self.factory.connections):
                connection.transport.abortConnection()
            # abortConnection finishes (connectionLost) on the reactor's next turn.
            return deferLater(self.reactor, 0, lambda: None)

        return stopped.addCallback(close_connections)


def makeService(config: BrokerConfig, *, reactor: Any = None) -> MultiService:
    """The whole broker as one service: storage first, then its listeners, then HTTP."""
    top = MultiService()
    broker = Broker(config, clock=reactor)
    top.broker = broker  # type: ignore[attr-defined]
    BrokerService(broker).setServiceParent(top)
    limits = ConnectionLimits(config)
    for listener in config.listeners():
        ListenerService(broker, listener, reactor, limits).setServiceParent(top)
    endpoints = config.http_endpoints()
    if endpoints:
        # imported only when serving HTTP: prometheus_client and twisted.web cost ~80 ms at start
        from akfak.web.root import build_root

        root = build_root(broker)
        for endpoint in endpoints:
            HttpService(broker, endpoint, root, reactor).setServiceParent(top)
    return top


def own_process() -> None:
    """The broker has its process to itself (twistd akfak, python -m akfak, akfak.tac), not
    an embedded broker's host program: tune glibc's allocator and Python's collector for it."""
    keep_freed_memory()
    collector.keep_long_lived_out_of_sight()


def makeApplication(config: BrokerConfig) -> Any:
    """An Application for `twistd -y` (see akfak.tac)."""
    own_process()
    application = Application("akfak")
    makeService(config).setServiceParent(application)
    return application
