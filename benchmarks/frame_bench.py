"""How the broker's cost of receiving a frame grows with its size.

Starts a broker (a subprocess on a free port), sends ApiVersions requests padded
to 1, 8 and 64 MiB frames, and prints the time from the first byte sent to the
answer, per MiB.  Linear buffering keeps the per-MiB figure flat.

    .venv/bin/python benchmarks/frame_bench.py [--sizes 1,8,64] [--repeat 3] [--stock]

--stock also measures Twisted's stock Int32StringReceiver (which re-concatenates
its buffer on every read) for comparison; it is quadratic, so keep sizes small.
"""

from __future__ import annotations

import argparse
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.brokers import free_port, wait_for_port  # noqa: E402

MIB = 1 << 20
# ApiVersions v0: header (key 18, version 0, correlation id, null client id) and an empty body.
HEADER = struct.pack(">hhih", 18, 0, 1, -1)

STOCK_SERVER = """
import sys
from twisted.internet import reactor, protocol
from twisted.protocols.basic import Int32StringReceiver
class Echo(Int32StringReceiver):
    MAX_LENGTH = 1 << 30
    def stringReceived(self, s):
        self.sendString(b"ok")
f = protocol.ServerFactory(); f.protocol = Echo
reactor.listenTCP(int(sys.argv[1]), f, interface="127.0.0.1")
reactor.run()
"""


def time_frame(port: int, size: int) -> float:
    payload = HEADER + b"\x00" * (size - len(HEADER))
    frame = struct.pack(">i", len(payload)) + payload
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MIB)
        start = time.perf_counter()
        sock.sendall(frame)
        (length,) = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))
        sock.recv(length, socket.MSG_WAITALL)
        return time.perf_counter() - start


def run(label: str, command: list[str], port: int, sizes: list[int], repeat: int) -> None:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc)
        for mib in sizes:
            best = min(time_frame(port, mib * MIB) for _ in range(repeat))
            print(f"{label:>8} {mib:4d} MiB frame: {best * 1000:9.1f} ms  "
                  f"{best * 1000 / mib:7.2f} ms/MiB", flush=True)
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,64", help="frame sizes in MiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stock", action="store_true", help="also time the stock receiver")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        run("akfak", [sys.executable, "-m", "akfak", "--listen", f"tcp:{port}:interface=127.0.0.1",
                      "--data-dir", data, "--storage", "memory",
                      "-o", f"socket.request.max.bytes={max(sizes) * MIB + 1024}"],
            port, sizes, args.repeat)
    if args.stock:
        port = free_port()
        run("stock", [sys.executable, "-c", STOCK_SERVER, str(port)], port, sizes, args.repeat)


if __name__ == "__main__":
    main()
