"""A raw-socket Kafka client for protocol tests: frames, headers, kio bodies."""

from __future__ import annotations

import io
import socket
import struct
from typing import Any

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer

_INT32 = struct.Struct(">i")


def encode_request(
    api_key: int,
    version: int,
    correlation_id: int,
    body: bytes,
    *,
    client_id: str | None = "akfak-tests",
    flexible: bool | None = None,
    tagged: bytes = b"\x00",
) -> bytes:
    """A whole frame: length, request header (v1, or v2 with `tagged` when flexible), body."""
    if flexible is None:
        flexible = is_flexible(api_key, version)
    cid = b"\xff\xff" if client_id is None else struct.pack(">h", len(client_id)) + client_id.encode()
    header = struct.pack(">hhi", api_key, version, correlation_id) + cid
    if flexible:
        header += tagged
    payload = header + body
    return _INT32.pack(len(payload)) + payload


def is_flexible(api_key: int, version: int) -> bool:
    try:
        return bool(load_request_schema(api_key, version).__flexible__)
    except Exception:
        return False


def encode_body(entity: Any) -> bytes:
    buffer = io.BytesIO()
    entity_writer(type(entity))(buffer, entity)
    return buffer.getvalue()


def decode_response(
    api_key: int, version: int, frame: bytes, *, header_v1: bool | None = None
) -> tuple[int, Any]:
    """(correlation id, response entity) from a response frame without its length."""
    (correlation_id,) = _INT32.unpack_from(frame, 0)
    offset = 4
    if header_v1 is None:
        header_v1 = is_flexible(api_key, version) and api_key != 18
    if header_v1:
        assert frame[offset] == 0, "unexpected tagged fields in response header"
        offset += 1
    schema = load_response_schema(api_key, version)
    response, size = entity_reader(schema)(frame, offset)
    assert offset + size == len(frame), f"{len(frame) - offset - size} trailing bytes"
    return correlation_id, response


class WireClient:
    """A blocking socket speaking Kafka's framing."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0,
                 client_id: str = "akfak-tests"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.client_id = client_id
        self._correlation = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_correlation_id(self) -> int:
        self._correlation += 1
        return self._correlation

    def recv_exactly(self, n: int) -> bytes:
        chunks, remaining = [], n
        while remaining:
            chunk = self.sock.recv(min(remaining, 1 << 20))
            if not chunk:
                raise ConnectionError("connection closed by the broker")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def recv_frame(self) -> bytes:
        (size,) = _INT32.unpack(self.recv_exactly(4))
        return self.recv_exactly(size)

    def request(self, entity: Any, *, version: int | None = None) -> Any:
        """Send a kio request entity and return the decoded response."""
        api_key = int(entity.__api_key__)
        version = int(entity.__version__) if version is None else version
        correlation_id = self.next_correlation_id()
        self.send(encode_request(api_key, version, correlation_id, encode_body(entity),
                                 client_id=self.client_id))
        got, response = decode_response(api_key, version, self.recv_frame())
        assert got == correlation_id
        return response

    def is_closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True when the broker closes the connection (reads EOF) within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
