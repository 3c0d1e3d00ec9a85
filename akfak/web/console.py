"""The web console: its pages and the /api they read."""

from __future__ import annotations

from twisted.web.resource import Resource

from akfak.broker import Broker


def mount(root: Resource, broker: Broker) -> None:
    """Put the console's pages and /api under `root`."""
