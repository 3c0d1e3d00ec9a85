"""The HTTP resource tree: what each path of the broker's web server serves."""

from __future__ import annotations

from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from akfak.broker import Broker
from akfak.web import console, metrics
from akfak.web.auth import secure


class Root(Resource):
    """Children by path segment; anything else is a plain 404."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        return notFound()


def build_root(broker: Broker) -> IResource:
    """The root resource: /metrics, the console's pages and its /api, behind the broker's
    users when it has SASL listeners (akfak.web.auth)."""
    root = Root()
    metrics.mount(root, broker)
    console.mount(root, broker)
    return secure(broker, root)
