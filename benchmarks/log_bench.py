"""Append to and read back a disk partition log, printing MiB/s.

    .venv/bin/python benchmarks/log_bench.py                 # 1 GiB in 1 MiB batches
    .venv/bin/python benchmarks/log_bench.py --size-mib 256 --batch-kib 64 --dir /mnt/fast

Appends go through the full produce path of the partition log (validation:
magic, lengths, CRC-32C over every batch; offset assignment by patching the
header; writev to the segment), reads through `PartitionLog.read` (index
lookup, pread of whole batches).  Reads come from the page cache the appends
just filled.  The flush (fsync) is timed separately.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from twisted.internet.task import react

from akfak.config import BrokerConfig
from akfak.log.config import LogConfig
from akfak.log.disk import DiskLogStorage
from akfak.log.records import encode_batch

MIB = 1024 * 1024


def make_payload(batch_bytes: int, record_bytes: int) -> bytes:
    """One uncompressed batch of about `batch_bytes`, as a producer would send it."""
    # 61 header bytes, then per record: its value and ~10 bytes of varints and attributes
    count = max(1, (batch_bytes - 61) // (record_bytes + 12))
    value = bytes(range(256)) * (record_bytes // 256 + 1)
    entries = [(None, value[:record_bytes])] * count
    return encode_batch(entries, timestamp=int(time.time() * 1000))


async def run(options: argparse.Namespace) -> None:
    base = Path(options.dir) if options.dir else None
    workdir = Path(tempfile.mkdtemp(prefix="akfak-log-bench-", dir=base))
    try:
        config = BrokerConfig(properties={
            "log.dir": str(workdir), "log.segment.bytes": str(options.segment_mib * MIB),
            "message.max.bytes": str(options.batch_kib * 1024 + MIB)})
        storage = DiskLogStorage(config)
        storage.open()
        log = storage.create_log("bench", 0, uuid.uuid4(), LogConfig.from_broker(config))
        payload = make_payload(options.batch_kib * 1024, options.record_bytes)
        batches = max(1, options.size_mib * MIB // len(payload))
        total = batches * len(payload)
        records = batches * (int.from_bytes(payload[57:61], "big"))
        print(f"{batches} batches of {len(payload) / 1024:.0f} KiB "
              f"({int.from_bytes(payload[57:61], 'big')} records each), "
              f"{total / MIB:.0f} MiB, segments of {options.segment_mib} MiB, in {workdir}")

        now_ms = int(time.time() * 1000)
        start = time.perf_counter()
        for _ in range(batches):
            log.append(payload, leader_epoch=0, now_ms=now_ms)
        appended = time.perf_counter() - start
        await log.flush()
        flushed = time.perf_counter() - start
        print(f"append: {total / MIB / appended:8.0f} MiB/s  ({records / appended:,.0f} records/s,"
              f" {batches / appended:,.0f} batches/s; page cache)")
        print(f"append + fsync: {total / MIB / flushed:8.0f} MiB/s  (fsync took "
              f"{flushed - appended:.2f} s)")

        start = time.perf_counter()
        offset, read_bytes, reads = 0, 0, 0
        fetch = options.fetch_kib * 1024
        while offset < log.high_watermark:
            result = log.read(offset, fetch)
            read_bytes += result.size
            reads += 1
            assert result.next_offset is not None and result.next_offset > offset
            offset = result.next_offset
        elapsed = time.perf_counter() - start
        assert read_bytes == total, (read_bytes, total)
        print(f"read:   {read_bytes / MIB / elapsed:8.0f} MiB/s  ({reads} reads of up to "
              f"{options.fetch_kib} KiB, {len(log.segments)} segments)")
        await storage.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(reactor: Any, argv: list[str] | None = None) -> Any:
    from twisted.internet.defer import ensureDeferred

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="data to append (MiB)")
    parser.add_argument("--batch-kib", type=int, default=1024, help="batch size (KiB)")
    parser.add_argument("--record-bytes", type=int, default=1000, help="record value size")
    parser.add_argument("--fetch-kib", type=int, default=1024, help="max bytes per read (KiB)")
    parser.add_argument("--segment-mib", type=int, default=1024, help="log.segment.bytes (MiB)")
    parser.add_argument("--dir", help="directory to create the temporary log dir in")
    return ensureDeferred(run(parser.parse_args(argv)))


if __name__ == "__main__":
    react(main)
