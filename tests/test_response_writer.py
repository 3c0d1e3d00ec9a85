"""Big Fetch responses leave whole and in request order (akfak/response_writer.py).

Stored batches go out as file ranges: sendfile() on a plain TCP connection, read in
pieces and written through the transport on any other (here Twisted's
ProtocolWrapper, what its TLS transport is built on).  A client that reads slowly
gets everything; pinned segment descriptors are released once sent, or when the
connection goes.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.protocols.policies import WrappingFactory

from akfak.log.handles import POOL
from akfak.service import ListenerService
from tests.brokers import start_in_process
from tests.recordbatch import make_batch, parse_batches
from tests.requests import fetch, metadata, produce
from tests.wire import WireClient, decode_response, encode_body, encode_request

VALUE = 64 * 1024
BATCHES, PER_BATCH = 24, 8  # 12 MiB: more than the socket buffers hold


def pinned() -> list[Any]:
    return [f for f in list(POOL._open) if f._pins]


def fill(port: int) -> list[bytes]:
    values = [os.urandom(VALUE) for _ in range(BATCHES * PER_BATCH)]
    with WireClient(port) as client:
        client.request(metadata(["big"]))
        deadline = time.monotonic() + 10
        while True:
            first = make_batch([(None, v) for v in values[:PER_BATCH]])
            answer = client.request(produce("big", {0: first}, acks=-1))
            if answer.responses[0].partition_responses[0].error_code == 0:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for i in range(1, BATCHES):
            batch = make_batch([(None, v) for v in values[i * PER_BATCH:(i + 1) * PER_BATCH]])
            answer = client.request(produce("big", {0: batch}, acks=-1))
            assert answer.responses[0].partition_responses[0].error_code == 0
    return values


def frame_of(request: Any, correlation_id: int) -> bytes:
    return encode_request(int(request.__api_key__), int(request.__version__), correlation_id,
                          encode_body(request))


def pipelined_fetches(port: int, values: list[bytes]) -> None:
    """Two 12 MiB fetches with a small request between, sent at once, read slowly."""
    big = fetch({"big": {0: 0}}, max_bytes=64 << 20, partition_max_bytes=32 << 20)
    requests = [big, metadata(["big"]), big]
    with WireClient(port, timeout=30) as client:
        frames = [frame_of(r, 1000 + i) for i, r in enumerate(requests)]
        client.send(b"".join(frames))
        time.sleep(0.5)  # the broker meets a full socket buffer
        for i, request in enumerate(requests):
            correlation_id, response = decode_response(
                int(request.__api_key__), int(request.__version__), client.recv_frame())
            assert correlation_id == 1000 + i
            if request is big:
                records = response.responses[0].partitions[0].records
                assert [r.value for r in parse_batches(records)] == values
            time.sleep(0.05)


@pytest_twisted.inlineCallbacks
def test_big_fetches_whole_and_in_order_direct_and_through_a_wrapping_transport(
        tmp_path: Path) -> Any:
    broker = start_in_process(tmp_path / "data", storage="disk")
    listener = next(s for s in broker.service if isinstance(s, ListenerService))
    wrapped = reactor.listenTCP(0, WrappingFactory(listener.factory), interface="127.0.0.1")
    try:
        values = yield deferToThread(fill, broker.port)
        for port in (broker.port, wrapped.getHost().port):
            yield deferToThread(pipelined_fetches, port, values)
            assert not pinned()

        def hang_up(port: int) -> None:  # mid-response
            sock = socket.create_connection(("127.0.0.1", port))
            big = fetch({"big": {0: 0}}, max_bytes=64 << 20, partition_max_bytes=32 << 20)
            sock.sendall(frame_of(big, 7))
            sock.recv(1000)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST

        for port in (broker.port, wrapped.getHost().port):
            yield deferToThread(hang_up, port)
            deadline = time.monotonic() + 10
            while pinned():
                assert time.monotonic() < deadline, pinned()
                yield deferToThread(time.sleep, 0.05)
    finally:
        yield wrapped.stopListening()
        yield broker.service.stopService()
