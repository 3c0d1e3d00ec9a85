"""The HTTP resource tree: what each path of the broker's web server serves."""

from __future__ import annotations

from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from akfak.broker import Broker
from akfak.web import console, metrics


class Root(Resource):
    """Children by path segment; anything else is a plain 404."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        return notFound()


def build_root(broker: Broker) -> Resource:
    """The root resource: /metrics, the console's pages and its /api."""
    root = Root()
    metrics.mount(root, broker)
    console.mount(root, broker)
    return root
