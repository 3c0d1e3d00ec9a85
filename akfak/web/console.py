"""The web console: its pages (/, /static/...) and the /api they read.

The pages are plain HTML, CSS and JavaScript from akfak/web/static (no build step, nothing
fetched from elsewhere); the charts are SVG drawn by static/chart.js.  The console state
(akfak.web.api.state) watches every answered request and samples offsets and lag.
"""

from __future__ import annotations

from pathlib import Path

from twisted.web.resource import Resource
from twisted.web.static import File

from akfak.broker import Broker
from akfak.web.api import ApiResource, Routes, groups, inspector, records, topics, writes
from akfak.web.api.state import SAMPLE_SECONDS, ConsoleState

STATIC = Path(__file__).parent / "static"


def mount(root: Resource, broker: Broker) -> None:
    """Put the console's pages and /api under `root`."""
    state = ConsoleState(broker)
    broker.request_observers.add(state.observe)
    broker.every(SAMPLE_SECONDS, state.sampler.sample)
    routes = Routes()
    for module in (topics, records, groups, inspector, writes):
        module.add_routes(routes)
    root.putChild(b"api", ApiResource(state, routes))
    static = File(str(STATIC))
    static.contentTypes = {**static.contentTypes, ".js": "text/javascript; charset=utf-8",
                           ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8"}
    root.putChild(b"static", static)
    root.putChild(b"", File(str(STATIC / "index.html"), defaultType="text/html; charset=utf-8"))
