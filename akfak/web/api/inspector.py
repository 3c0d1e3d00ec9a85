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
from typing import Any

from akfak.request_events import RequestEvent
from akfak.web.api import ApiError, Params, Query, Routes, int_param
from akfak.web.api.entities import decoded, error_codes

CAPACITY = 2000
DETAILED = 100
#: The most request and response bytes the kept objects may stand for (big Fetches and
#: Produces drop out sooner), and the largest one kept at all.
DETAILED_BYTES = 32 * 1024 * 1024
LARGEST_DETAILED = 8 * 1024 * 1024


def api_name(entity: Any, api_key: int) -> str:
    """"Produce", "Metadata", ...: kio's request class name without "Request"."""
    name = type(entity).__name__
    return name.removesuffix("Request") if name.endswith("Request") else f"api-{api_key}"


class RequestLog:
    def __init__(self, capacity: int = CAPACITY, detailed: int = DETAILED) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=capacity)
        self.detailed = detailed
        #: sequence number -> (api key, version, request, response, size), the latest
        #: `detailed` of at most DETAILED_BYTES together
        self._objects: OrderedDict[int, tuple[int, int, Any, Any, int]] = OrderedDict()
        self._object_bytes = 0
        self.seq = 0

    def observe(self, event: RequestEvent) -> None:
        self.seq += 1
        response = event.response
        errors = (error_codes(response)
                  if response is not None and not isinstance(response, bytes | list) else [])
        self.entries.append({
            "seq": self.seq,
            "time": round(time.time() * 1000),
            "connection": event.connection,
            "peer": event.peer,
            "listener": event.listener,
            "client_id": event.client_id,
            "api_key": event.api_key,
            "api": api_name(event.request, event.api_key),
            "version": event.api_version,
            "correlation_id": event.correlation_id,
            "request_size": event.request_size,
            "response_size": event.response_size,
            # queue+handle, then send, as Kafka's request metrics split them
            "handle_ms": round((event.answered - event.received) * 1000, 3),
            "send_ms": round((event.sent - event.answered) * 1000, 3),
            "latency_ms": round((event.sent - event.received) * 1000, 3),
            "errors": errors,
        })
        size = event.request_size + (event.response_size or 0)
        if size <= LARGEST_DETAILED:
            self._objects[self.seq] = (event.api_key, event.api_version, event.request, response,
                                       size)
            self._object_bytes += size
        while self._objects and (len(self._objects) > self.detailed
                                 or self._object_bytes > DETAILED_BYTES):
            self._object_bytes -= self._objects.popitem(last=False)[1][4]

    def since(self, seq: int, *, client_id: str | None = None, api: str | None = None,
              connection: int | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Summaries after `seq` matching the filters (client id and API name: case-blind
        substrings), the latest `limit`, oldest first."""
        client = client_id.lower() if client_id else None
        api_filter = api.lower() if api else None
        found: list[dict[str, Any]] = []
        for entry in reversed(self.entries):
            if entry["seq"] <= seq or len(found) >= limit:
                break
            if client is not None and client not in (entry["client_id"] or "").lower():
                continue
            if api_filter is not None and api_filter not in entry["api"].lower():
                continue
            if connection is not None and entry["connection"] != connection:
                continue
            found.append({**entry, "detailed": entry["seq"] in self._objects})
        found.reverse()
        return found

    def detail(self, seq: int) -> dict[str, Any] | None:
        """The summary and decoded request and response of event `seq`; None when it is
        gone, {"summary", "expired": true} when only its summary is left."""
        summary = next((e for e in reversed(self.entries) if e["seq"] == seq), None)
        if summary is None:
            return None
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
