"""HttpService: the broker's web server on one endpoint string."""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Site

from akfak.broker import Broker
from akfak.web.auth import may_serve_on

log = Logger()


class HttpService(Service):
    """Serves `root` on `endpoint`.  A port that cannot be had is logged, not fatal: the
    console is a convenience and must not keep the broker from serving Kafka clients."""

    def __init__(self, broker: Broker, endpoint: str, root: IResource, reactor: Any = None):
        self.broker = broker
        self.endpoint = endpoint
        self.root = root
        self.reactor = reactor if reactor is not None else broker.clock
        self.port: IListeningPort | None = None
        #: fires with the listening port, or None when it could not listen
        self.listening: Deferred[IListeningPort | None] | None = None

    @property
    def url(self) -> str | None:
        """http://host:port/ once listening."""
        if self.port is None:
            return None
        address = self.port.getHost()
        host = getattr(address, "host", "localhost")
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{address.port}/"

    def startService(self) -> None:
        super().startService()
        # the broker's reactor for the HTTP timeouts too (an embedded broker's is not global)
        site = Site(self.root, reactor=self.reactor)
        site.displayTracebacks = False  # a broken page must not show the broker's source
        site.noisy = False
        # no access log: the console's pages poll every second or two, which would bury the
        # broker's own lines
        site.log = lambda request: None  # type: ignore[method-assign]
        self.listening = serverFromString(self.reactor, self.endpoint).listen(site)
        self.listening.addCallbacks(self._listening, self._not_listening)

    def _listening(self, port: IListeningPort) -> IListeningPort | None:
        host = getattr(port.getHost(), "host", None)
        if not may_serve_on(self.broker, host):
            # Nothing was accepted yet: a listening port accepts on a later reactor turn.
            port.stopListening()
            log.error("akfak: no metrics or console on {endpoint}: it listens on {host}, not "
                      "loopback, and the broker has no SASL users to ask for (set "
                      "akfak.http.allow.remote=true to serve it to anyone who can reach it)",
                      endpoint=self.endpoint, host=host)
            return None
        self.port = port
        log.info("akfak node {node}: metrics and console on {url} ({endpoint})",
                 node=self.broker.node_id, url=self.url, endpoint=self.endpoint)
        return port

    def _not_listening(self, failure: Failure) -> None:
        log.error("akfak: no metrics or console on {endpoint}: {reason}",
                  endpoint=self.endpoint, reason=failure.getErrorMessage())

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        if self.port is None:
            return None
        port, self.port = self.port, None
        return maybeDeferred(port.stopListening)
