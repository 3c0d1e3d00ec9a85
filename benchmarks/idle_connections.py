"""What idle connections cost a broker: akfak against Kafka 4.1.1 in one run.

    .venv/bin/python benchmarks/idle_connections.py [--connections 10000] [--only akfak|kafka]

Each broker is started fresh (akfak on disk, as `python -m akfak`; Kafka with the suite's
settings, tests/kafka_peer.py), warmed with a few connections, and then given N more, each
of which sends one ApiVersions and reads its answer, so that the broker has set the
connection up fully (Kafka's KafkaChannel, akfak's protocol and writer).  Printed per broker:
its RSS before and after, the growth per connection, and how long a new client then waits
for ApiVersions.  The JVM's RSS grows as its heap is touched; after a GC it may not shrink,
so Kafka's figure is what the operating system sees, as akfak's is.
"""

from __future__ import annotations

import argparse
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.brokers import start_process  # noqa: E402
from tests.wire import encode_request  # noqa: E402

API_VERSIONS_V0 = encode_request(18, 0, 1, b"")
BATCH = 40  # below the listen backlog (50): beyond it the kernel drops SYNs


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def connect(port: int, count: int) -> list[socket.socket]:
    opened: list[socket.socket] = []
    while len(opened) < count:
        batch = [socket.create_connection(("127.0.0.1", port), timeout=30)
                 for _ in range(min(BATCH, count - len(opened)))]
        opened += batch
        for sock in batch:
            sock.sendall(API_VERSIONS_V0)
        for sock in batch:
            if not sock.recv(4):
                raise RuntimeError("a connection was closed before its answer")
    return opened


def answer_time(port: int) -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(API_VERSIONS_V0)
        sock.recv(4)
    return time.monotonic() - started


def measure(name: str, pid: int, port: int, connections: int) -> None:
    warm = connect(port, 10)
    time.sleep(1)
    before = rss_kib(pid)
    many = connect(port, connections)
    time.sleep(1)
    after = rss_kib(pid)
    waited = answer_time(port)
    per = (after - before) / connections
    print(f"{name:6} {connections} idle connections: RSS {before / 1024:.0f} -> "
          f"{after / 1024:.0f} MiB, {per:.1f} KiB per connection; a new client answered in "
          f"{waited * 1000:.1f} ms", flush=True)
    for sock in warm + many:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--only", choices=("akfak", "kafka"))
    args = parser.parse_args()
    needed = args.connections + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise SystemExit(f"RLIMIT_NOFILE hard limit {hard} is below {needed}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))  # the brokers inherit it
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as tmp:
        if args.only in (None, "akfak"):
            (Path(tmp) / "akfak").mkdir()
            broker = start_process(Path(tmp) / "akfak" / "data")
            try:
                measure("akfak", broker.proc.pid, broker.port, args.connections)
            finally:
                broker.stop()
        if args.only in (None, "kafka"):
            import pytest

            from tests.kafka_peer import start_kafka
            try:
                peer = start_kafka(Path(tmp) / "kafka")
            except (pytest.skip.Exception, pytest.fail.Exception) as e:
                raise SystemExit(f"cannot start Kafka 4.1.1: {e}") from None
            try:
                measure("kafka", peer.proc.pid, peer.port, args.connections)
            finally:
                peer.stop()


if __name__ == "__main__":
    main()
