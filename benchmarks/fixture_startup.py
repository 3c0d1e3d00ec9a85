"""How long a test waits for its broker: from asking for one to its first Metadata answer.

Measures `akfak.testing.EmbeddedBroker` (what the `akfak_broker` fixture does), with a raw
Metadata v0 request on a fresh connection as "answering":

- cold: the first broker in a new Python process (each run a subprocess), both with the
  import of akfak.testing (Twisted, the broker) counted and without it;
- warm: later brokers in the same process;
- also the stop, and optionally (--confluent) the time to a confluent-kafka `list_topics`.

    .venv/bin/python benchmarks/fixture_startup.py [--cold 5] [--warm 20] [--storage memory|disk]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

METADATA, API_VERSIONS = 3, 18


def request(api_key: int, version: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, 1, 5) + b"bench"
    return struct.pack(">i", len(header) + len(body)) + header + body


def read_frame(sock: socket.socket) -> bytes | None:
    def exactly(n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    size = exactly(4)
    return None if size is None else exactly(struct.unpack(">i", size)[0])


def ask(port: int) -> str:
    """Send Metadata v0 (all topics) and wait for the answer; fall back to ApiVersions on a
    build without a Metadata handler (the broker closes the connection then).  Returns which
    request was answered."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request(METADATA, 0, struct.pack(">i", 0)))
        if read_frame(sock) is not None:
            return "Metadata"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request(API_VERSIONS, 0, b""))
        if read_frame(sock) is not None:
            return "ApiVersions"
    raise RuntimeError("the broker answered neither Metadata nor ApiVersions")


def one(storage: str, confluent: bool) -> dict[str, Any]:
    """One broker: seconds to construct+start, to the first answer, and to stop."""
    from akfak.testing import EmbeddedBroker

    t0 = time.perf_counter()
    broker = EmbeddedBroker(storage=storage).start()
    t_started = time.perf_counter()
    answered = ask(broker.port or 0)
    t_answered = time.perf_counter()
    result: dict[str, Any] = {"started": t_started - t0, "answer": t_answered - t0, "request": answered}
    if confluent:
        from confluent_kafka.admin import AdminClient

        t1 = time.perf_counter()
        AdminClient({"bootstrap.servers": broker.bootstrap_servers}).list_topics(timeout=10)
        result["list_topics"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    broker.stop()
    result["stop"] = time.perf_counter() - t2
    return result


def child(storage: str, confluent: bool) -> None:
    t0 = time.perf_counter()
    import akfak.testing.embedded  # noqa: F401  (the import a first fixture use pays)

    imported = time.perf_counter() - t0
    result = one(storage, confluent)
    result["import"] = imported
    print(json.dumps(result))


def ms(values: list[float]) -> str:
    values = sorted(values)
    return f"median {statistics.median(values) * 1000:7.1f} ms   max {values[-1] * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", type=int, default=5, help="cold runs, one process each")
    parser.add_argument("--warm", type=int, default=20, help="warm brokers in this process")
    parser.add_argument("--storage", choices=["memory", "disk"], default="memory")
    parser.add_argument("--confluent", action="store_true", help="also time confluent-kafka list_topics")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.storage, args.confluent)
        return

    cold = []
    for _ in range(args.cold):
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--storage", args.storage]
            + (["--confluent"] if args.confluent else []),
            check=True, capture_output=True, text=True, cwd=ROOT,
        ).stdout
        cold.append(json.loads(out.splitlines()[-1]))
    one(args.storage, False)  # this process's own first broker, not counted as warm
    warm = [one(args.storage, args.confluent) for _ in range(args.warm)]

    answered = {r["request"] for r in cold + warm}
    print(f"akfak embedded broker, storage={args.storage}; 'answered' = first {'/'.join(answered)} reply")
    cold_total = [r["import"] + r["answer"] for r in cold]
    print(f"cold, import + start + answer ({args.cold} processes): {ms(cold_total)}")
    print(f"cold, start + answer (import excluded):          {ms([r['answer'] for r in cold])}")
    print(f"warm, start + answer ({args.warm} brokers):              {ms([r['answer'] for r in warm])}")
    print(f"warm, stop:                                      {ms([r['stop'] for r in warm])}")
    if args.confluent:
        print(f"confluent-kafka list_topics, cold:               {ms([r['list_topics'] for r in cold])}")
        print(f"confluent-kafka list_topics, warm:               {ms([r['list_topics'] for r in warm])}")


if __name__ == "__main__":
    main()
