"""/metrics: the broker's Prometheus metrics."""

from __future__ import annotations

from twisted.web.resource import Resource

from akfak.broker import Broker


def mount(root: Resource, broker: Broker) -> None:
    """Put /metrics under `root`."""
