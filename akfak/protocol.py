"""One client connection: Kafka's framing, request headers, and in-order replies.

A connection has three layers, as Twisted's AMP does: framing (length-prefixed
frames, protocol_base.py), dispatch (header -> handler from the registry), and ordering
(responses leave in request order even when an earlier one is still waiting on
a Deferred, such as a long-poll Fetch).

The request header and the context a handler is given are request_context.py's.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from functools import partial
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.connections import QUEUE
from akfak.errors import KafkaStorageError
from akfak.handlers.base import throttle_time
from akfak.handlers.registry import API_VERSIONS_KEY
from akfak.interfaces import IRequestHandler
from akfak.protocol_base import _INT32, ACCEPT_THROTTLE, WRITING, KafkaProtocolBase, _Reply
from akfak.request_check import MalformedRequest
from akfak.request_context import (
    RequestContext,
    RequestHeader,
    parse_request_header,
    skip_tagged_fields,
)
from akfak.request_events import RequestEvent
from akfak.response_writer import hold

# The request header and context of request_context.py, and the pause reasons of
# protocol_base.py, are importable here too (MalformedRequest as before).
__all__ = [
    "ACCEPT_THROTTLE",
    "WRITING",
    "KafkaProtocol",
    "MalformedRequest",
    "RequestContext",
    "RequestHeader",
    "parse_request_header",
    "skip_tagged_fields",
]

log = Logger()

_INT16 = struct.Struct(">h")
_KEY_VERSION = struct.Struct(">hh")


class KafkaProtocol(KafkaProtocolBase):
    """Kafka's wire protocol, server side: each frame's request dispatched to its handler,
    the replies sent in request order (the framing and buffering: KafkaProtocolBase)."""

    # -- dispatch --------------------------------------------------------------

    def stringReceived(self, frame: bytes) -> None:
        sasl = self.sasl
        # the authentication gate: raw SASL tokens, and nothing else before authentication
        if sasl is not None and not sasl.take_frame(frame):
            return
        try:
            header = parse_request_header(frame, self.registry.is_flexible)
        except MalformedRequest as e:
            where = ""
            if len(frame) >= _KEY_VERSION.size:
                key, version = _KEY_VERSION.unpack_from(frame)
                where = f" (API key {key} v{version})"
            self.drop(f"malformed request header{where}: {e}")
            return
        handler = self.registry.get(header.api_key)
        if handler is None:
            self.drop(f"unknown API key {header.api_key}")
            return
        if sasl is not None and not sasl.admit(header, handler):
            return
        if not handler.min_version <= header.api_version <= handler.max_version:
            if header.api_key == API_VERSIONS_KEY:
                # KIP-511: answer in v0 so the client can retry with a version we list.
                reply = self._enqueue(header, handler)
                reply.parts, reply.ready = [handler.unsupported_version_body()], True
                self._finish_ready()
                return
            self.drop(
                f"unsupported version {header.api_version} of API key {header.api_key} "
                f"(supported {handler.min_version}-{handler.max_version})"
            )
            return
        started = time.perf_counter()
        try:
            request = handler.decode(header.api_version, frame, header.body_offset)
        except Exception as e:
            # MalformedRequest from the schema check, or whatever the decoder refused
            # (bad UTF-8, an enum value it does not know): one line, no traceback.
            reason = str(e) if isinstance(e, MalformedRequest) else f"{type(e).__name__}: {e}"
            self.drop(f"malformed request (API key {header.api_key} v{header.api_version}): {reason}")
            return
        reply = self._enqueue(header, handler)
        if self.broker.request_observers:
            reply.observed = RequestEvent(
                self.number, self.peer, self.listener, header.client_id, header.api_key,
                header.api_version, header.correlation_id, len(frame), None,
                started, 0.0, 0.0, request, None, self.arrived)
        context = RequestContext(header, self.peer, self.broker, self, self.listener,
                                 started=started)
        reply.context = context
        try:
            result = handler.handle(request, context)
        except MalformedRequest as e:  # well-formed, but a request Kafka refuses to parse
            self.drop(f"invalid request (API key {header.api_key} v{header.api_version}): {e}")
            return
        except Exception:
            log.failure("Handler for API key {key} failed; closing connection from {peer}",
                        key=header.api_key, peer=self.peer)
            self.drop("internal error")
            return
        context.handled = time.perf_counter() - started
        if isinstance(result, Deferred):
            reply.pending = result
            result.addCallbacks(self._answered, self._failed, callbackArgs=(reply,),
                                errbackArgs=(reply,))
        else:
            self._answered(result, reply)
        limits = self.limits
        if limits is not None and limits.queue_full and self._replies and not self._closing:
            limits.wait(self, QUEUE)  # until the broker holds fewer unanswered requests

    def _enqueue(self, header: RequestHeader, handler: IRequestHandler) -> _Reply:
        reply = _Reply(header, handler)
        self._replies.append(reply)
        if self.limits is not None:
            self.limits.requests += 1
        return reply

    def _answered(self, response: object, reply: _Reply) -> None:
        reply.pending = None
        if self._closing:
            return
        context = reply.context
        if response is not None and context is not None and not context.request_recorded:
            response = self._request_quota(response, context)
        if reply.observed is not None:
            reply.observed.answered = time.perf_counter()
            reply.observed.response = response
        if response is not None:
            encoding = time.perf_counter()
            try:
                body = reply.handler.encode(reply.header.api_version, response)
            except Exception:
                log.failure("Encoding the response to API key {key} failed", key=reply.header.api_key)
                self.drop("internal error")
                return
            if context is not None:
                # as Kafka's network-thread time: counted, never throttling this response
                self.broker.quotas.record_encoding(context, time.perf_counter() - encoding)
            parts = body if isinstance(body, list) else [body]
            try:
                hold(parts)  # stored batches to send from their files stay readable till sent
            except KafkaStorageError as e:  # a file closed under us
                self.drop(f"cannot hold the stored batches of a response: {e}")
                return
            reply.parts = parts
        reply.ready = True
        self._finish_ready()

    def _request_quota(self, response: Any, context: RequestContext) -> Any:
        """request_percentage: the response carries the larger throttle time, and the
        connection is not read for it (akfak.quota_manager)."""
        quotas = self.broker.quotas
        throttle_ms = quotas.record_request(context)
        if throttle_ms <= 0:
            return response
        quotas.throttle(self, throttle_ms)
        current = getattr(response, "throttle_time", None)
        if current is not None and current.total_seconds() * 1000 < throttle_ms:
            response = dataclasses.replace(response, throttle_time=throttle_time(throttle_ms))
        return response

    def _failed(self, failure: Failure, reply: _Reply) -> None:
        reply.pending = None
        if failure.check(CancelledError) or self._closing:
            return
        log.failure("Handler for API key {key} failed; closing connection from {peer}",
                    failure, key=reply.header.api_key, peer=self.peer)
        self.drop("internal error")

    def _flushed(self, event: RequestEvent) -> None:
        event.flushed = time.perf_counter()
        self.broker.request_observers.emit(event)

    # -- ordering --------------------------------------------------------------

    def _finish_ready(self) -> None:
        """Write every answered response at the head of the queue, in request order."""
        replies = self._replies
        if self._idle_call is not None:
            self._last_active = self.broker.clock.seconds()
        while replies and replies[0].ready:
            reply = replies.pop(0)
            if self.limits is not None:
                self.limits.answered()
            observed = reply.observed
            if reply.parts is None:
                if observed is not None:
                    observed.sent = time.perf_counter()
                    self._flushed(observed)
                continue  # Kafka sends nothing back (Produce with acks=0)
            header = reply.header
            # The ApiVersions response header is always v0, even for flexible versions.
            tagged = header.flexible and header.api_key != API_VERSIONS_KEY
            head = _INT32.pack(header.correlation_id) + (b"\x00" if tagged else b"")
            size = len(head) + sum(len(p) for p in reply.parts)
            parts = [_INT32.pack(size), head, *reply.parts]
            if observed is None:
                self._writer.write(parts)  # type: ignore[union-attr]
            else:
                observed.response_size, observed.sent = size, time.perf_counter()
                self._writer.write(parts, partial(self._flushed, observed))  # type: ignore[union-attr]
        if self._writer is not None and self._writer.blocked and not self._closing:
            self.pause(WRITING)
