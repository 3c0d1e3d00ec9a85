"""/metrics: the broker's Prometheus metrics, in the text format (0.0.4).

Each broker has its own CollectorRegistry (several embedded brokers share one process):
the request counters (request_metrics.py), the live state (state_metrics.py) and
prometheus_client's process, platform and GC collectors.  A scrape never holds the reactor
for long: the broker's own collectors copy what they need on the reactor in slices of a few
milliseconds, then the families are built and formatted on a thread from those copies, so
no thread reads state the reactor changes.  (prometheus_client's own Twisted resource runs
every collector on a thread, which would read live dictionaries as the reactor mutates them,
and uses the global reactor, which an embedded broker does not run on.)  The series per
partition are written as text directly (StateMetrics.text), not through the registry.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from akfak.broker import Broker
from akfak.log.threads import defer_to_thread
from akfak.web.request_metrics import RequestMetrics
from akfak.web.state_metrics import StateMetrics

log = Logger()

TwoPhase = RequestMetrics | StateMetrics


class _Synchronous(Collector):
    """A two-phase collector as the registry runs it: both phases at once, on the caller's
    thread (the reactor's), unsliced; /metrics itself does not go this way."""

    def __init__(self, collector: TwoPhase) -> None:
        self.collector = collector

    def collect(self) -> Iterable[Metric]:
        if isinstance(self.collector, StateMetrics):
            snapshot: Any = []
            self.collector.snapshot(budget=float("inf")).addCallback(snapshot.append)
            return self.collector.families(snapshot[0])
        return self.collector.families(self.collector.snapshot())


class _Families:
    """What prometheus_client's encoders take: something whose collect() gives families."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class BrokerMetrics:
    """One broker's registry and what feeds it."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestMetrics(broker)
        self.state = StateMetrics(broker)
        broker.request_observers.add(self.requests)
        self.two_phase: list[TwoPhase] = [self.requests, self.state]
        for collector in self.two_phase:
            self.registry.register(_Synchronous(collector))
        #: read on the scrape's thread as they are (they read /proc and the interpreter)
        self.plain: list[Collector] = [ProcessCollector(registry=self.registry),
                                       PlatformCollector(registry=self.registry),
                                       GCCollector(registry=self.registry)]

    def scrape(self) -> Deferred[bytes]:
        """One scrape's body, in the text format (version 0.0.4)."""
        snapshots = gatherResults([maybeDeferred(c.snapshot) for c in self.two_phase],
                                  consumeErrors=True)

        def render(taken: list[Any]) -> bytes:
            families: list[Metric] = []
            for collector, snapshot in zip(self.two_phase, taken, strict=True):
                families.extend(collector.families(snapshot))
            for plain in self.plain:
                families.extend(plain.collect())
            return generate_latest(_Families(families)) + self.state.text(taken[-1]).encode()  # type: ignore[arg-type]

        return snapshots.addCallback(lambda taken: defer_to_thread(self.broker.clock, render, taken))


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, metrics: BrokerMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> Any:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def send(body: bytes) -> None:
            if gone:
                return
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            request.write(body)
            request.finish()

        def failed(failure: Failure) -> None:
            log.failure("A /metrics scrape failed", failure)
            if not gone:
                request.setResponseCode(500)
                request.setHeader(b"content-type", b"text/plain; charset=utf-8")
                request.write(b"the scrape failed; the broker's log says why\n")
                request.finish()

        self.metrics.scrape().addCallbacks(send, failed)
        return NOT_DONE_YET


def mount(root: Resource, broker: Broker) -> None:
    """Put /metrics under `root`."""
    root.putChild(b"metrics", MetricsResource(BrokerMetrics(broker)))
