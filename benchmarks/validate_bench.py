"""Produce validation alone: akfak.log.validator over client-like batches, per codec.

    .venv/bin/python benchmarks/validate_bench.py [--batch-kib 1024] [--sizes 100,1024]
        [--codecs none,gzip,snappy,lz4,zstd] [--compact]

Each batch holds records as librdkafka writes them (offset deltas 0..n-1, timestamp
deltas of a few ms, no key, no headers) of one value size, compressed whole.  Prints
the decompression time alone and the whole validation (decompression included), in
µs per record and records/s (the fastest run of each), single-threaded, no I/O: the
ceiling validation puts on a broker's produce rate.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kio.serial.writers import write_signed_varint, write_signed_varlong  # noqa: E402

from akfak.log import batch as batches  # noqa: E402
from akfak.log import validator  # noqa: E402
from akfak.log.records import _pack, compress, decompress  # noqa: E402

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def make_batch(batch_bytes: int, value_size: int, codec: int, *, key: bool, now_ms: int) -> bytes:
    import io

    value = os.urandom(value_size // 2).hex().encode()[:value_size].ljust(value_size, b"v")
    body = io.BytesIO()
    count = 0
    while body.tell() < batch_bytes:
        record = io.BytesIO()
        record.write(b"\x00")
        write_signed_varlong(record, count // 50)  # a ms per 50 records
        write_signed_varint(record, count)
        if key:
            write_signed_varint(record, 8)
            record.write(count.to_bytes(8, "big"))
        else:
            write_signed_varint(record, -1)
        write_signed_varint(record, value_size)
        record.write(value)
        write_signed_varint(record, 0)
        write_signed_varint(body, record.tell())
        body.write(record.getvalue())
        count += 1
    records = body.getvalue()
    data = compress(codec, records) if codec else records
    header = batches.BatchHeader(0, 0, -1, 2, 0, codec, count - 1, now_ms, now_ms + (count - 1) // 50,
                                 -1, -1, -1, count)
    return _pack(header, data)


def timed(fn: Callable[[], object], count: int, seconds: float) -> float:
    """µs per record of the fastest of the runs of `fn` in about `seconds` (the minimum:
    on a shared machine, slower runs measure the other processes)."""
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-kib", type=int, default=1024)
    parser.add_argument("--sizes", default="100,1024")
    parser.add_argument("--codecs", default=",".join(CODECS))
    parser.add_argument("--compact", action="store_true", help="a compacted topic (keys read)")
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    args = parser.parse_args()
    now_ms = int(time.time() * 1000)
    rules = validator.Rules("bench-0", args.compact, False, 1 << 62, 1 << 62)
    print(f"{'workload':16} {'records':>7} {'decompress µs/rec':>18} {'validate µs/rec':>16} "
          f"{'validate rec/s':>15}")
    for size in (int(s) for s in args.sizes.split(",")):
        for name in args.codecs.split(","):
            codec = CODECS[name]
            data = make_batch(args.batch_kib * 1024, size, codec, key=args.compact, now_ms=now_ms)
            view = memoryview(data)
            headers = batches.validate(view, max_message_bytes=len(data) + 1, client=True)
            count = headers[0][1].record_count
            section = bytes(view[batches.HEADER_SIZE:])

            inflate = (timed(functools.partial(decompress, codec, section), count, args.seconds)
                       if codec else 0.0)
            whole = timed(functools.partial(validator.validate, view, headers, rules, now_ms), count,
                          args.seconds)
            print(f"{size:5} B {name:9} {count:7} {inflate:18.3f} {whole:16.3f} {1e6 / whole:15,.0f}")


if __name__ == "__main__":
    main()
