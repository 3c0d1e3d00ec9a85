"""Framing, headers, ordering and bad input, over real sockets to an in-process broker.

The broker runs in the test's reactor; the blocking socket clients run in a thread
(deferToThread) so the reactor keeps serving while they wait.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
import pytest_twisted
from kio.schema.api_versions.v0.request import ApiVersionsRequest as ApiVersionsRequestV0
from kio.schema.api_versions.v3.request import ApiVersionsRequest as ApiVersionsRequestV3
from kio.schema.errors import ErrorCode
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent

from akfak.service import ListenerService
from tests.wire import WireClient, decode_response, encode_body, encode_request

V3_BODY = encode_body(
    ApiVersionsRequestV3(client_software_name="akfak-tests", client_software_version="1.0")
)
V0_BODY = encode_body(ApiVersionsRequestV0())


def api_versions_frame(correlation_id: int, version: int = 3, **kwargs: Any) -> bytes:
    return encode_request(18, version, correlation_id, V3_BODY if version >= 3 else V0_BODY, **kwargs)


def read_api_versions(client: WireClient, version: int = 3) -> tuple[int, Any]:
    return decode_response(18, version, client.recv_frame())


def logged(events: list[dict[str, Any]]) -> str:
    return "\n".join(formatEvent(e) for e in events)


def still_serving(port: int) -> None:
    """A fresh client is answered normally."""
    with WireClient(port) as client:
        client.send(api_versions_frame(7))
        correlation_id, response = read_api_versions(client)
        assert correlation_id == 7 and response.error_code == ErrorCode.none


@pytest_twisted.inlineCallbacks
def test_api_versions_lists_exactly_the_registry(inproc: Any) -> Any:
    expected = inproc.broker.registry.api_versions()
    assert (18, 0, 4) in expected

    def check() -> None:
        with WireClient(inproc.port) as client:
            for version in range(5):
                client.send(api_versions_frame(version, version))
                correlation_id, response = read_api_versions(client, version)
                assert correlation_id == version
                assert response.error_code == ErrorCode.none
                got = [(k.api_key, k.min_version, k.max_version) for k in response.api_keys]
                assert got == expected

    yield deferToThread(check)


@pytest_twisted.inlineCallbacks
def test_api_versions_above_maximum_answers_v0_unsupported_version(inproc: Any) -> Any:
    def check() -> None:
        with WireClient(inproc.port) as client:
            # A future version: header v2 with tagged fields, body unknown to us.
            client.send(encode_request(18, 99, 5, b"\x05junk\x00\x00", flexible=True))
            frame = client.recv_frame()
            # Header v0 (no tagged-field byte), body in v0 format.
            correlation_id, response = decode_response(18, 0, frame, header_v1=False)
            assert correlation_id == 5
            assert response.error_code == ErrorCode.unsupported_version
            assert (18, 0, 4) in [(k.api_key, k.min_version, k.max_version) for k in response.api_keys]
            # The connection stays usable for the retry.
            client.send(api_versions_frame(6))
            assert read_api_versions(client)[1].error_code == ErrorCode.none

    yield deferToThread(check)


@pytest_twisted.inlineCallbacks
def test_request_header_v1_and_v2_with_tagged_fields(inproc: Any) -> Any:
    # Header v2 carrying two tagged fields the broker does not know (tags 0 and 7).
    tagged = b"\x02" + b"\x00\x03abc" + b"\x07\x01z"

    def check() -> None:
        with WireClient(inproc.port) as client:
            client.send(api_versions_frame(1, 3, tagged=tagged))
            assert read_api_versions(client)[0] == 1
            client.send(api_versions_frame(2, 2))  # header v1
            assert read_api_versions(client, 2)[0] == 2
            client.send(api_versions_frame(3, 1, client_id=None))  # null client id
            assert read_api_versions(client, 1)[0] == 3

    yield deferToThread(check)


@pytest_twisted.inlineCallbacks
def test_fifty_pipelined_requests_answered_in_order(inproc: Any) -> Any:
    def check() -> None:
        with WireClient(inproc.port) as client:
            client.send(b"".join(api_versions_frame(i, i % 5) for i in range(1000, 1050)))
            for i in range(1000, 1050):
                correlation_id, response = read_api_versions(client, i % 5)
                assert correlation_id == i
                assert response.error_code == ErrorCode.none

    yield deferToThread(check)


@pytest_twisted.inlineCallbacks
def test_single_byte_writes(inproc: Any) -> Any:
    def check() -> None:
        with WireClient(inproc.port) as client:
            frames = api_versions_frame(1) + api_versions_frame(2, 0)
            for i in range(len(frames)):
                client.send(frames[i : i + 1])
            assert read_api_versions(client)[0] == 1
            assert read_api_versions(client, 0)[0] == 2

    yield deferToThread(check)


@pytest_twisted.inlineCallbacks
def test_frames_split_across_writes_anywhere(inproc: Any) -> Any:
    def check() -> None:
        with WireClient(inproc.port) as client:
            data = b"".join(api_versions_frame(i) for i in range(10))
            # Cut points inside length prefixes, headers and bodies.
            cuts = [0, 3, 5, 41, 42, 100, 101, 250, len(data)]
            for a, b in itertools.pairwise(cuts):
                client.send(data[a:b])
            assert [read_api_versions(client)[0] for _ in range(10)] == list(range(10))

    yield deferToThread(check)


def test_max_length_follows_socket_request_max_bytes(inproc: Any) -> None:
    from akfak.protocol import KafkaProtocol

    proto = KafkaProtocol(inproc.broker, inproc.broker.registry)
    assert proto.MAX_LENGTH == 104857600


@pytest_twisted.inlineCallbacks
def test_frame_size_limit(tmp_path: Any, log_events: list[dict[str, Any]]) -> Any:
    from tests.brokers import start_in_process

    limit = 4096
    broker = start_in_process(tmp_path, overrides=[f"socket.request.max.bytes={limit}"])
    try:
        def check() -> None:
            # A frame of exactly the limit is accepted (the padding after the body is ignored).
            frame = api_versions_frame(1, 0)
            padded = frame + b"\x00" * (limit + 4 - len(frame))
            padded = struct.pack(">i", limit) + padded[4:]
            with WireClient(broker.port) as client:
                client.send(padded)
                assert read_api_versions(client, 0)[0] == 1
            with WireClient(broker.port) as client:
                client.send(struct.pack(">i", limit + 1) + b"\x00" * 16)
                assert client.is_closed_by_peer()
            still_serving(broker.port)

        yield deferToThread(check)
    finally:
        yield broker.service.stopService()
    text = logged(log_events)
    assert f"frame of {limit + 1} bytes exceeds socket.request.max.bytes={limit}" in text


def bad_input_case(port: int, payload: bytes) -> None:
    """Send `payload` on one connection while another is open; the first is
    closed, the second is still answered, and so is a new one."""
    with WireClient(port) as bystander, WireClient(port) as bad:
        bad.send(payload)
        assert bad.is_closed_by_peer(), "broker did not close the connection"
        bystander.send(api_versions_frame(9))
        assert read_api_versions(bystander)[0] == 9
    still_serving(port)


@pytest_twisted.inlineCallbacks
def test_unknown_api_key_closes_connection(inproc: Any, log_events: list[dict[str, Any]]) -> Any:
    yield deferToThread(bad_input_case, inproc.port, encode_request(9999, 0, 1, b""))
    text = logged(log_events)
    assert "unknown API key 9999" in text and "Closing connection from 127.0.0.1:" in text


@pytest_twisted.inlineCallbacks
def test_unsupported_version_of_other_api_closes_connection(
    inproc: Any, log_events: list[dict[str, Any]]
) -> Any:
    # Metadata (key 3), far above its maximum.
    handler = inproc.broker.registry.get(3)
    if handler is None:
        pytest.skip("Metadata is not registered")
    frame = encode_request(3, handler.max_version + 1, 1, b"", flexible=True)
    yield deferToThread(bad_input_case, inproc.port, frame)
    assert f"unsupported version {handler.max_version + 1} of API key 3" in logged(log_events)


@pytest_twisted.inlineCallbacks
def test_truncated_body_closes_connection(inproc: Any, log_events: list[dict[str, Any]]) -> Any:
    frame = encode_request(18, 3, 1, V3_BODY[:4])
    yield deferToThread(bad_input_case, inproc.port, frame)
    assert "malformed request (API key 18 v3): ApiVersionsRequest" in logged(log_events)


@pytest_twisted.inlineCallbacks
def test_garbage_header_closes_connection(inproc: Any, log_events: list[dict[str, Any]]) -> Any:
    # Too short for a header, then a client id longer than the frame.
    yield deferToThread(bad_input_case, inproc.port, struct.pack(">i", 3) + b"\x00\x12\x00")
    yield deferToThread(
        bad_input_case, inproc.port, struct.pack(">i", 10) + struct.pack(">hhih", 18, 0, 1, 500)
    )
    text = logged(log_events)
    assert "a 3-byte frame is too short for a request header" in text
    assert "client id runs past the end of the frame" in text


@pytest_twisted.inlineCallbacks
def test_negative_length_closes_connection(inproc: Any, log_events: list[dict[str, Any]]) -> Any:
    yield deferToThread(bad_input_case, inproc.port, struct.pack(">i", -5) + b"\x00" * 8)
    assert "negative frame length -5" in logged(log_events)


@pytest_twisted.inlineCallbacks
def test_invalid_client_software_name_is_invalid_request(inproc: Any) -> Any:
    body = encode_body(ApiVersionsRequestV3(client_software_name="bad name!",
                                            client_software_version="1"))

    def check() -> None:
        with WireClient(inproc.port) as client:
            client.send(encode_request(18, 3, 1, body))
            _, response = read_api_versions(client)
            assert response.error_code == ErrorCode.invalid_request

    yield deferToThread(check)


@pytest_twisted.inlineCallbacks
def test_connections_disable_nagle(inproc: Any) -> Any:
    """As Kafka's SocketServer (TCP_NODELAY): a small reply pipelined behind another must not wait
    for the client's delayed ACK (40 ms per transactional Produce reply in benchmarks/txn_bench.py)."""
    with WireClient(inproc.port) as client:
        yield deferToThread(client.send, api_versions_frame(1))
        yield deferToThread(read_api_versions, client)  # accepted and answered
        listener = next(s for s in inproc.service if isinstance(s, ListenerService))
        connections = list(listener.factory.connections)
        assert len(connections) == 1
        assert connections[0].transport.getTcpNoDelay()
