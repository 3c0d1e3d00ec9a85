"""The request inspector's memory: recent requests, and the decoded fields of the latest.

Each answered request becomes a small summary at once (connection, client id, API name
and version, sizes, latency, the response's error codes) in a ring of `CAPACITY`.  The
request and response objects themselves are kept only for the latest `DETAILED` events
(standing for at most DETAILED_BYTES), and turned into JSON only when someone expands one
(akfak.web.api.entities): a Fetch response holds the batches it sent, so keeping many
would keep the log in memory.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any, NamedTuple

from akfak.request_events import RequestEvent
from akfak.web.api import ApiError, Params, Query, Routes, int_param
from akfak.web.api.entities import decoded, error_codes

CAPACITY = 2000
DETAILED = 100
#: The most request and response bytes the kept objects may stand for (big Fetches and
#: Produces drop out sooner), and the largest one kept at all.
DETAILED_BYTES = 32 * 1024 * 1024
LARGEST_DETAILED = 8 * 1024 * 1024


_API_NAMES: dict[type, str] = {}


def api_name(entity: Any, api_key: int) -> str:
    """"Produce", "Metadata", ...: kio's request class name without "Request"."""
    cls = type(entity)
    name = _API_NAMES.get(cls)
    if name is None:
        name = _API_NAMES[cls] = (cls.__name__.removesuffix("Request")
                                  if cls.__name__.endswith("Request") else f"api-{api_key}")
    return name


class Entry(NamedTuple):
    """What is kept of every request (a tuple: made for each one the broker answers)."""

    seq: int
    time: float
    connection: int
    peer: str
    listener: str
    client_id: str | None
    api_key: int
    api: str
    version: int
    correlation_id: int
    request_size: int
    response_size: int | None
    #: the frame arrived, the answer was ready, its last byte left (RequestEvent's)
    arrived: float
    answered: float
    flushed: float
    errors: list[str]

    def summary(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "time": round(self.time * 1000), "connection": self.connection,
            "peer": self.peer, "listener": self.listener, "client_id": self.client_id,
            "api_key": self.api_key, "api": self.api, "version": self.version,
            "correlation_id": self.correlation_id, "request_size": self.request_size,
            "response_size": self.response_size,
            # request queue + local, then response queue + send (Kafka's request metrics)
            "handle_ms": round((self.answered - self.arrived) * 1000, 3),
            "send_ms": round((self.flushed - self.answered) * 1000, 3),
            "latency_ms": round((self.flushed - self.arrived) * 1000, 3),
            "errors": self.errors,
        }


class RequestLog:
    def __init__(self, capacity: int = CAPACITY, detailed: int = DETAILED) -> None:
        self.entries: deque[Entry] = deque(maxlen=capacity)
        self.detailed = detailed
        #: sequence number -> (api key, version, request, response, size), the latest
        #: `detailed` of at most DETAILED_BYTES together
        self._objects: OrderedDict[int, tuple[int, int, Any, Any, int]] = OrderedDict()
        self._object_bytes = 0
        self.seq = 0

    def observe(self, event: RequestEvent) -> None:
        self.seq = seq = self.seq + 1
        response = event.response
        errors = (error_codes(response)
                  if response is not None and not isinstance(response, bytes | list) else [])
        self.entries.append(Entry(
            seq, time.time(), event.connection, event.peer, event.listener, event.client_id,
            event.api_key, api_name(event.request, event.api_key), event.api_version,
            event.correlation_id, event.request_size, event.response_size, event.arrived,
            event.answered, event.flushed, errors))
        size = event.request_size + (event.response_size or 0)
        if size <= LARGEST_DETAILED:
            self._objects[seq] = (event.api_key, event.api_version, event.request, response, size)
            self._object_bytes += size
        objects = self._objects
        while objects and (len(objects) > self.detailed or self._object_bytes > DETAILED_BYTES):
            self._object_bytes -= objects.popitem(last=False)[1][4]

    def since(self, seq: int, *, client_id: str | None = None, api: str | None = None,
              connection: int | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Summaries after `seq` matching the filters (client id and API name: case-blind
        substrings), the latest `limit`, oldest first."""
        client = client_id.lower() if client_id else None
        api_filter = api.lower() if api else None
        found: list[dict[str, Any]] = []
        for entry in reversed(self.entries):
            if entry.seq <= seq or len(found) >= limit:
                break
            if client is not None and client not in (entry.client_id or "").lower():
                continue
            if api_filter is not None and api_filter not in entry.api.lower():
                continue
            if connection is not None and entry.connection != connection:
                continue
            found.append({**entry.summary(), "detailed": entry.seq in self._objects})
        found.reverse()
        return found

    def detail(self, seq: int) -> dict[str, Any] | None:
        """The summary and decoded request and response of event `seq`; None when it is
        gone, {"summary", "expired": true} when only its summary is left."""
        entry = next((e for e in reversed(self.entries) if e.seq == seq), None)
        if entry is None:
            return None
        summary = entry.summary()
        kept = self._objects.get(seq)
        if kept is None:
            return {"summary": summary, "expired": True}
        api_key, version, request, response, _ = kept
        return {"summary": summary, "expired": False,
                "request": decoded(api_key, version, request),
                "response": None if response is None else decoded(api_key, version, response)}


# -- /api/requests ------------------------------------------------------------------------


def list_requests(state: Any, params: Params, query: Query) -> dict[str, Any]:
    """Summaries after `since` (a sequence number), filtered by `client_id`, `api`,
    `connection`; `last` is the sequence number to poll from next."""
    log: RequestLog = state.requests
    connection = query.get("connection")
    entries = log.since(int_param(query, "since", 0, minimum=0),
                        client_id=query.get("client_id") or None, api=query.get("api") or None,
                        connection=int_param(query, "connection") if connection else None,
                        limit=int_param(query, "limit", 200, minimum=1, maximum=CAPACITY))
    return {"last": log.seq, "requests": entries}


def request_detail(state: Any, params: Params, query: Query) -> dict[str, Any]:
    found = state.requests.detail(int_param(params, "seq"))
    if found is None:
        raise ApiError(404, f"request {params['seq']} is no longer kept")
    return found


def add_routes(routes: Routes) -> None:
    routes.add("GET", "requests", list_requests)
    routes.add("GET", "requests/{seq}", request_detail)
