"""What checking a request body before the native decoder costs (akfak.request_check).

For typical requests (Produce is the hot path: its record batches are opaque bytes),
prints the time kio's native decoder takes alone and the time of the check that now
runs before it, per request.

    .venv/bin/python benchmarks/decode_bench.py [--number 20000]
"""

from __future__ import annotations

import argparse
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from akfak.handlers.base import _reader, request_schema  # noqa: E402
from akfak.request_check import checked_body  # noqa: E402
from tests import requests  # noqa: E402
from tests.recordbatch import make_batch  # noqa: E402
from tests.wire import encode_body  # noqa: E402


def cases() -> dict[str, tuple[int, int, object]]:
    batch = make_batch([(None, b"x" * 1000)] * 16)  # a 16 KiB batch
    return {
        "Produce v9, 1 partition": (0, 9, requests.produce("t", {0: batch}, version=9)),
        "Produce v9, 50 partitions": (0, 9, requests.produce("t", dict.fromkeys(range(50), batch),
                                                             version=9)),
        "Produce v3, 1 partition": (0, 3, requests.produce("t", {0: batch}, version=3)),
        "Fetch v12, 1 partition": (1, 12, requests.fetch({"t": {0: 0}}, version=12)),
        "Fetch v12, 100 partitions": (1, 12, requests.fetch({"t": dict.fromkeys(range(100), 0)},
                                                            version=12)),
        "Fetch v4, 100 partitions": (1, 4, requests.fetch({"t": dict.fromkeys(range(100), 0)},
                                                          version=4)),
        "Metadata v12, 2 topics": (3, 12, requests.metadata(["a", "b"], version=12)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000)
    args = parser.parse_args()
    n = args.number
    print(f"{'request':28} {'bytes':>8} {'native':>10} {'check':>10}")
    for name, (key, version, entity) in cases().items():
        body = encode_body(entity)
        schema = request_schema(key, version)
        read = _reader(schema)
        native = min(timeit.repeat(lambda r=read, b=body: r(b, 0), number=n, repeat=3)) / n
        check = min(timeit.repeat(lambda s=schema, b=body: checked_body(s, b, 0),
                                  number=n, repeat=3)) / n
        print(f"{name:28} {len(body):8d} {native * 1e6:8.2f}us {check * 1e6:8.2f}us")


if __name__ == "__main__":
    main()
