"""What a handler knows of a request besides its body: the header, and its context.

KafkaProtocol (protocol.py) parses each frame's request header here
(`parse_request_header`: v1, or v2 with tagged fields for flexible versions) and gives the
handler a `RequestContext`: the header with the connection, the broker, and what the
request's authorization and quotas need.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from akfak.request_check import MalformedRequest, read_uvarint
from akfak.security.acls import ANONYMOUS

if TYPE_CHECKING:
    from akfak.broker import Broker
    from akfak.protocol import KafkaProtocol

_HEADER = struct.Struct(">hhih")  # api key, api version, correlation id, client id length


@dataclass(frozen=True, slots=True)
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    flexible: bool
    body_offset: int


def parse_request_header(frame: bytes, flexible_for: Any) -> RequestHeader:
    """Parse request header v1 (or v2 when `flexible_for(api_key, version)` says the
    request is flexible), skipping tagged fields a broker need not understand."""
    if len(frame) < _HEADER.size:
        raise MalformedRequest(f"a {len(frame)}-byte frame is too short for a request header")
    api_key, version, correlation_id, client_len = _HEADER.unpack_from(frame)
    offset = _HEADER.size
    client_id = None
    if client_len >= 0:
        end = offset + client_len
        if end > len(frame):
            raise MalformedRequest("client id runs past the end of the frame")
        try:
            client_id = frame[offset:end].decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRequest("client id is not UTF-8") from None
        offset = end
    elif client_len != -1:
        raise MalformedRequest(f"client id length {client_len}")
    flexible = flexible_for(api_key, version)
    if flexible:
        offset = skip_tagged_fields(frame, offset)
    return RequestHeader(api_key, version, correlation_id, client_id, flexible, offset)


def skip_tagged_fields(data: bytes, offset: int) -> int:
    """Past a header's tagged fields: none is needed, so all are skipped."""
    end = len(data)
    count, offset = read_uvarint(data, offset, end, "header tagged fields")
    for _ in range(count):
        _tag, offset = read_uvarint(data, offset, end, "header tagged field tag")
        size, offset = read_uvarint(data, offset, end, "header tagged field size")
        offset += size
        if offset > end:
            raise MalformedRequest("header tagged field runs past the end of the frame")
    return offset


@dataclass(slots=True)
class RequestContext:
    """What a handler may know about the request besides its body."""

    header: RequestHeader
    peer: str
    broker: Broker
    connection: KafkaProtocol
    #: The listener the request arrived on, for advertising the matching address.
    listener: str = "PLAINTEXT"
    #: The request's authorization answers (akfak.security.checks.access), made on first use.
    access: Any = None
    #: perf_counter() when decoding began, and the seconds decoding and handle() took (None
    #: while still in handle()): the request's time for request_percentage
    started: float = 0.0
    handled: float | None = None
    #: the request's time has been counted (akfak.quota_manager.record_request)
    request_recorded: bool = False

    @property
    def api_version(self) -> int:
        return self.header.api_version

    @property
    def client_id(self) -> str | None:
        return self.header.client_id

    @property
    def principal(self) -> str:
        """Who sent the request ("User:ANONYMOUS" on a connection that did not authenticate)."""
        return getattr(self.connection, "principal", ANONYMOUS)

    @property
    def client_host(self) -> str:
        """The client's address, as ACL host entries name it."""
        return self.peer.rsplit(":", 1)[0]
