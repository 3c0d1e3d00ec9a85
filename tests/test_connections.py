"""Connection and request bounds (akfak.connections) over real sockets to broker subprocesses:
a client that pipelines without reading, connections.max.idle.ms, max.connections,
max.connections.per.ip (and its overrides), queued.max.requests, queued.max.request.bytes,
and what 10,000 idle connections cost.
"""

from __future__ import annotations

import resource
import select
import socket
import struct
import time
from typing import Any

import pytest
from kio.schema.errors import ErrorCode

from tests import requests
from tests.recordbatch import make_batch
from tests.wire import WireClient, decode_response, encode_body, encode_request

API_VERSIONS_V0 = encode_request(18, 0, 1, b"")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def answered(port: int, timeout: float = 5.0) -> bool:
    """A fresh connection gets its ApiVersions answer within `timeout`."""
    try:
        with WireClient(port, timeout=timeout) as client:
            client.send(API_VERSIONS_V0)
            return decode_response(18, 0, client.recv_frame())[1].error_code == ErrorCode.none
    except OSError:
        return False


def wait_until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_never_reads_stops_being_read(broker_process: Any) -> None:
    broker = broker_process("--storage", "memory")
    assert answered(broker.port)
    before = rss_kib(broker.proc.pid)
    # ApiVersions v0: a 20-byte request with a ~400-byte answer.  Never reading them,
    # the client fills its receive buffer, then the broker's send buffer and transport;
    # from then on the broker must stop reading, so sending blocks.
    limit = 64 << 20  # without flow control all of it is read (and 1.5 GB of answers kept)
    frames = b"".join(encode_request(18, 0, i, b"", client_id="pipe") for i in range(4096))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.connect(("127.0.0.1", broker.port))
    sock.setblocking(False)
    sent = 0
    while sent < limit:
        try:
            sent += sock.send(frames[sent % len(frames):])
        except BlockingIOError:
            _, writable, _ = select.select([], [sock], [], 2.0)
            if not writable:
                break  # not read for 2 s
    assert sent < limit, "the broker kept reading a client that never reads its answers"
    grown = rss_kib(broker.proc.pid) - before
    assert grown < 64 << 10, f"the broker grew by {grown} KiB"
    # Everyone else is served meanwhile.
    started = time.monotonic()
    assert answered(broker.port)
    assert time.monotonic() - started < 1.0
    # Reading again, the pipelining client gets its answers in order.
    sock.setblocking(True)
    sock.settimeout(10)
    client = WireClient.__new__(WireClient)
    client.sock = sock
    got = [struct.unpack(">i", client.recv_frame()[:4])[0] for _ in range(5000)]
    assert got == [i % 4096 for i in range(5000)]
    sock.close()


def test_idle_connections_are_closed(broker_process: Any) -> None:
    broker = broker_process("--storage", "memory", "-o", "connections.max.idle.ms=500")
    with WireClient(broker.port) as idle, WireClient(broker.port) as busy, \
            WireClient(broker.port) as waiting:
        # A long-poll Fetch (1.5 s) is not idleness: its connection stays open.
        waiting.request(requests.metadata(["idle"], version=12))
        fetch = requests.fetch({"idle": {0: 0}}, version=12, max_wait_ms=1500)
        waiting.send(encode_request(1, 12, 99, encode_body(fetch)))
        for i in range(8):  # traffic every 200 ms keeps a connection open
            busy.send(encode_request(18, 0, i, b""))
            assert decode_response(18, 0, busy.recv_frame())[0] == i
            time.sleep(0.2)
        assert idle.is_closed_by_peer(timeout=0.1)
        assert decode_response(1, 12, waiting.recv_frame())[0] == 99  # not closed meanwhile
        assert waiting.is_closed_by_peer(timeout=3)  # idle once answered
    assert "idle for more than connections.max.idle.ms=500" in broker.log()


def connect_answered(port: int, n: int) -> list[WireClient]:
    """`n` connections, each answered.  A connection closed just before (the one
    wait_for_port made) still counts until the broker has read its end, so a refused
    connection is retried for a while."""
    clients: list[WireClient] = []
    deadline = time.monotonic() + 5
    while len(clients) < n:
        client = WireClient(port, timeout=2)
        try:
            client.send(API_VERSIONS_V0)
            client.recv_frame()
            clients.append(client)
        except (ConnectionError, TimeoutError):
            client.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return clients


def test_max_connections_per_ip(broker_process: Any) -> None:
    broker = broker_process("--storage", "memory", "-o", "max.connections.per.ip=3")
    clients = connect_answered(broker.port, 3)
    try:
        with WireClient(broker.port) as fourth:
            assert fourth.is_closed_by_peer(timeout=2)
        assert ("Rejected connection from 127.0.0.1, address already has the configured "
                "maximum of 3 connections.") in broker.log()
        clients.pop().close()
        assert wait_until(lambda: answered(broker.port, timeout=1))
    finally:
        for client in clients:
            client.close()


def test_max_connections_per_ip_overrides(broker_process: Any) -> None:
    broker = broker_process("--storage", "memory", "-o", "max.connections.per.ip=1",
                            "-o", "max.connections.per.ip.overrides=127.0.0.1:2")
    clients = connect_answered(broker.port, 2)
    with WireClient(broker.port) as third:
        assert third.is_closed_by_peer(timeout=2)
    for client in clients:
        client.close()


def test_max_connections_stops_accepting_until_one_closes(broker_process: Any) -> None:
    broker = broker_process("--storage", "memory", "-o", "max.connections=3")
    clients = connect_answered(broker.port, 3)
    try:
        # The fourth waits in the listen backlog, as Kafka's acceptor blocks.
        with WireClient(broker.port, timeout=1) as fourth:
            fourth.send(API_VERSIONS_V0)
            with pytest.raises(TimeoutError):
                fourth.recv_frame()
            clients.pop().close()
            fourth.sock.settimeout(5)
            assert decode_response(18, 0, fourth.recv_frame())[0] == 1
    finally:
        for client in clients:
            client.close()


def _latest_offset(client: WireClient, topic: str) -> int:
    response = client.request(requests.list_offsets(topic, {0: -1}))
    return int(response.topics[0].partitions[0].offset)


def test_queued_max_requests_pauses_connections_with_requests_in_flight(broker_process: Any) -> None:
    broker = broker_process("--storage", "memory", "-o", "queued.max.requests=2")
    topic = "queued"
    with WireClient(broker.port) as a, WireClient(broker.port) as b, WireClient(broker.port) as c:
        c.request(requests.metadata([topic], version=12))
        fetch = encode_body(requests.fetch({topic: {0: 0}}, version=12, max_wait_ms=3000))
        # A: two long polls fill the queue; B's long poll joins them, so B stops being read
        # and its Produce (which would answer every poll at once) waits unread.
        a.send(encode_request(1, 12, 1, fetch) + encode_request(1, 12, 2, fetch))
        time.sleep(0.3)
        produce = requests.produce(topic, {0: make_batch([(None, b"v")])}, version=9)
        b.send(encode_request(1, 12, 3, fetch))
        time.sleep(0.3)
        b.send(encode_request(0, 9, 4, encode_body(produce)))
        time.sleep(0.5)
        # C has nothing in flight: it is read, and the Produce has not been.
        assert _latest_offset(c, topic) == 0
        # Once A's polls time out, B is read again.
        assert [decode_response(1, 12, a.recv_frame())[0] for _ in range(2)] == [1, 2]
        assert decode_response(1, 12, b.recv_frame())[0] == 3
        assert decode_response(0, 9, b.recv_frame())[0] == 4
        assert _latest_offset(c, topic) == 1


def test_queued_max_request_bytes_pauses_reading_new_frames(broker_process: Any) -> None:
    broker = broker_process("--storage", "memory", "-o", "queued.max.request.bytes=1000")
    big = API_VERSIONS_V0[4:] + b"\x00" * 5000  # padding after a body is ignored
    small = encode_request(18, 0, 2, b"")
    with WireClient(broker.port) as a, WireClient(broker.port) as b, WireClient(broker.port) as c:
        a.send(struct.pack(">i", len(big)) + big[:100])  # reserves 5 KB of the 1 KB
        time.sleep(0.3)
        # A frame that arrives whole is still handled...
        b.send(small)
        assert decode_response(18, 0, b.recv_frame())[0] == 2
        # ...but one that arrives in pieces waits for memory.
        c.send(small[:6])
        time.sleep(0.3)
        c.send(small[6:])
        c.sock.settimeout(1)
        with pytest.raises(TimeoutError):
            c.recv_frame()
        a.send(big[100:])
        assert decode_response(18, 0, a.recv_frame())[0] == 1
        c.sock.settimeout(5)
        assert decode_response(18, 0, c.recv_frame())[0] == 2


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def test_ten_thousand_idle_connections(broker_process: Any) -> None:
    count = 10_000
    # The broker inherits this process's limit; both need a descriptor per connection.
    _raise_nofile(count + 500)
    broker = broker_process("--storage", "memory")
    few = [socket.create_connection(("127.0.0.1", broker.port)) for _ in range(10)]
    for sock in few:
        sock.sendall(API_VERSIONS_V0)
        sock.recv(65536)
    base = rss_kib(broker.proc.pid)
    many: list[socket.socket] = []
    try:
        # In batches below the listen backlog (50, as Kafka's): beyond it the kernel
        # drops SYNs and the client retries a second later.  Every connection is served.
        while len(many) < count - len(few):
            batch = [socket.create_connection(("127.0.0.1", broker.port))
                     for _ in range(min(40, count - len(few) - len(many)))]
            many += batch
            for sock in batch:
                sock.sendall(API_VERSIONS_V0)
            for sock in batch:
                sock.settimeout(10)
                assert sock.recv(4)
        grown = rss_kib(broker.proc.pid) - base
        per_connection = grown * 1024 / (count - len(few))
        print(f"{count} idle connections: broker RSS {base} KiB -> {base + grown} KiB, "
              f"{per_connection / 1024:.1f} KiB per connection")
        assert per_connection < 16 << 10, f"{per_connection:.0f} bytes per idle connection"
        started = time.monotonic()
        assert answered(broker.port)
        assert time.monotonic() - started < 1.0
    finally:
        for sock in few + many:
            sock.close()
