"""The web console: its pages (/, /static/...) and the /api they read.

The pages are plain HTML, CSS and JavaScript from akfak/web/static (no build step, nothing
fetched from elsewhere); the charts are SVG drawn by static/chart.js.  The console state
(akfak.web.api.state) watches every answered request and samples offsets and lag.
"""

from __future__ import annotations

from pathlib import Path

from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from akfak.broker import Broker
from akfak.web.api import ApiResource, Routes, groups, inspector, records, topics, writes
from akfak.web.api.state import SAMPLE_SECONDS, ConsoleState

STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {".html": b"text/html; charset=utf-8", ".js": b"text/javascript; charset=utf-8",
                 ".css": b"text/css; charset=utf-8"}


class StaticFile(Resource):
    """One small file of the console, read once at start and served from memory
    (twisted.web's File never answered on an embedded broker's private reactor)."""

    isLeaf = True

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.body = path.read_bytes()
        self.content_type = CONTENT_TYPES.get(path.suffix, b"application/octet-stream")

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        return self.body


class StaticFiles(Resource):
    def __init__(self, directory: Path) -> None:
        super().__init__()
        for path in sorted(directory.iterdir()):
            if path.is_file():
                self.putChild(path.name.encode(), StaticFile(path))

    def getChild(self, path: bytes, request: Request) -> IResource:
        return notFound()


def mount(root: Resource, broker: Broker) -> None:
    """Put the console's pages and /api under `root`."""
    state = ConsoleState(broker)
    broker.request_observers.add(state.observe)
    broker.every(SAMPLE_SECONDS, state.sampler.sample)
    routes = Routes()
    for module in (topics, records, groups, inspector, writes):
        module.add_routes(routes)
    root.putChild(b"api", ApiResource(state, routes))
    root.putChild(b"static", StaticFiles(STATIC))
    root.putChild(b"", StaticFile(STATIC / "index.html"))
