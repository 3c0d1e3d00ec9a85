"""/api: the JSON the console's pages read (and, with akfak.http.allow.writes=true, the
write actions they post).

One leaf resource routes `/api/<segments>` by pattern to a function of the console state,
the path parameters and the query; a function answers a JSON-able value, or a Deferred
of one when it works in slices.  Errors are `{"error": message}` with a 4xx status; a bug
is a 500 with one log line, never a traceback on the page.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from akfak.errors import KafkaError

log = Logger()

Params = dict[str, str]
Query = dict[str, str]
Endpoint = Callable[[Any, Params, Query], Any]


class ApiError(Exception):
    """An answer other than 200: `status` and a message for `{"error": ...}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Routes:
    """(method, path pattern) -> endpoint; a pattern's `{name}` segments are parameters."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, tuple[str, ...], Endpoint]] = []

    def add(self, method: str, pattern: str, endpoint: Endpoint) -> None:
        self._routes.append((method, tuple(pattern.strip("/").split("/")), endpoint))

    def match(self, method: str, segments: list[str]) -> tuple[Endpoint, Params] | None:
        """The endpoint for `segments`; ApiError 405 when only another method has one."""
        other_method = False
        for route_method, pattern, endpoint in self._routes:
            if len(pattern) != len(segments):
                continue
            params: Params = {}
            for want, got in zip(pattern, segments, strict=True):
                if want.startswith("{"):
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                if route_method == method:
                    return endpoint, params
                other_method = True
        if other_method:
            raise ApiError(405, f"{method} is not allowed here")
        return None


class ApiResource(Resource):
    """Everything under /api (a leaf: routing is by `Routes`)."""

    isLeaf = True

    def __init__(self, state: Any, routes: Routes) -> None:
        super().__init__()
        self.state = state
        self.routes = routes

    def render_GET(self, request: Request) -> Any:
        return self._render(request, "GET")

    def render_POST(self, request: Request) -> Any:
        return self._render(request, "POST")

    def _render(self, request: Request, method: str) -> Any:
        segments = [unquote(s.decode("utf-8", "replace")) for s in request.postpath]
        while segments and segments[-1] == "":
            segments.pop()
        query = {k.decode("utf-8", "replace"): v[-1].decode("utf-8", "replace")
                 for k, v in (request.args or {}).items()}
        try:
            found = self.routes.match(method, segments)
        except ApiError as e:
            return self._error(request, e.status, str(e))
        if found is None:
            return self._error(request, 404, f"no such API: /api/{'/'.join(segments)}")
        endpoint, params = found
        if method == "POST":
            refused = _cross_site(request)
            if refused is not None:
                return self._error(request, *refused)
            try:
                body = json.loads(request.content.read() or b"{}") if request.content else {}
            except ValueError:
                return self._error(request, 400, "the body is not JSON")
            if not isinstance(body, dict):
                return self._error(request, 400, "the body is not a JSON object")
            query = {**query, **{k: v for k, v in body.items()}}
        result: Deferred[Any] = maybeDeferred(endpoint, self.state, params, query)
        finished: list[bool] = []
        request.notifyFinish().addErrback(lambda _: finished.append(True))
        result.addCallbacks(lambda value: self._ok(request, value, finished),
                            lambda failure: self._failed(request, failure, finished))
        return NOT_DONE_YET

    def _ok(self, request: Request, value: Any, finished: list[bool]) -> None:
        if finished:
            return  # the browser went away meanwhile
        body = json.dumps(value, separators=(",", ":"), default=str).encode()
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        request.write(body)
        request.finish()

    def _failed(self, request: Request, failure: Failure, finished: list[bool]) -> None:
        if finished:
            return
        if failure.check(ApiError):
            status, message = failure.value.status, str(failure.value)
        elif failure.check(KafkaError):
            # what a Kafka client would have been answered: the code's name and its message
            error = failure.value
            status, message = 400, f"{type(error).__name__}: {error}".rstrip(": ")
        else:
            log.failure("console API {path} failed", failure, path=request.path)
            status, message = 500, "internal error (see the broker's log)"
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.write(json.dumps({"error": message}).encode())
        request.finish()

    @staticmethod
    def _error(request: Request, status: int, message: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"error": message}).encode()


def _cross_site(request: Request) -> tuple[int, str] | None:
    """Why a POST may not be from the console's own pages, if it may not: another site's
    page can make a browser send a form or a plain-text POST to a loopback port, never one
    of type application/json (CORS preflight, which this server does not grant), and a
    browser names the page's origin."""
    def header(name: bytes) -> str:
        return (request.getHeader(name) or b"").decode("latin-1")

    if header(b"content-type").split(";")[0].strip().lower() != "application/json":
        return 415, "POST bodies must be application/json"
    origin = header(b"origin")
    if origin and origin != "null" and origin.split("://", 1)[-1] != header(b"host"):
        return 403, f"cross-site POST from {origin} refused"
    return None


def int_param(query: Query | Params, name: str, default: int | None = None, *,
              minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer parameter (400 when it is not one, clamped to [minimum, maximum])."""
    raw = query.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(400, f"{name} is required")
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ApiError(400, f"{name}={raw!r} is not an integer") from None
    if minimum is not None:
        value = max(minimum, value)
    if maximum is not None:
        value = min(maximum, value)
    return value


def topic_or_404(broker: Any, name: str) -> Any:
    """The topic's image; ApiError 404 when there is no such topic."""
    topic = broker.image.topic(name)
    if topic is None:
        raise ApiError(404, f"no topic {name!r}")
    return topic


def partition_log(broker: Any, params: Params) -> Any:
    """The log of the `name` / `partition` the path names; ApiError 404 when there is none."""
    name = params["name"]
    topic_or_404(broker, name)
    index = int_param(params, "partition")
    log = broker.get_log(name, index)
    if log is None:
        raise ApiError(404, f"no partition {name}-{index}")
    return log
