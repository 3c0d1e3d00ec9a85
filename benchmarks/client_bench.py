"""End-to-end throughput: confluent-kafka produces to and consumes from a broker subprocess.

    .venv/bin/python benchmarks/client_bench.py [--records 500000] [--size 1000]
        [--compression none] [--storage disk] [--security plaintext|ssl]

Prints records/s and MiB/s for producing (acks=all, waiting for every delivery)
and for consuming the same records from the beginning.  With `--security ssl` the broker
listens on an SSL listener only (certificates made by akfak.testing.security) and the
clients connect over TLS.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from akfak.testing.security import Certificates  # noqa: E402
from tests.brokers import free_port, start_process  # noqa: E402

MIB = 1 << 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--size", type=int, default=1000, help="value size in bytes")
    parser.add_argument("--compression", default="none")
    parser.add_argument("--storage", default="disk", choices=["disk", "memory"])
    parser.add_argument("--security", default="plaintext", choices=["plaintext", "ssl"])
    args = parser.parse_args()
    value = b"x" * args.size
    total_mib = args.records * args.size / MIB
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--storage", args.storage, "-o", "message.max.bytes=10485760"]
        security: dict[str, str] = {}
        port = free_port()
        command = None
        if args.security == "ssl":
            certificates = Certificates(Path(tmp) / "tls")
            extra += ["-o", f"listeners=SSL://127.0.0.1:{port}", "-o", "ssl.keystore.type=PEM",
                      "-o", f"ssl.keystore.location={certificates.server_keystore}"]
            command = [sys.executable, "-m", "akfak", "--data-dir", str(Path(tmp) / "data"), *extra]
            security = {"security.protocol": "SSL", "ssl.ca.location": str(certificates.ca_file)}
        broker = start_process(Path(tmp) / "data", *extra, port=port, command=command)
        try:
            producer = Producer({
                **security,
                "bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5,
                "batch.size": 1 << 20, "compression.type": args.compression,
                "queue.buffering.max.kbytes": 1 << 20,
            })
            start = time.perf_counter()
            for _ in range(args.records):
                while True:
                    try:
                        producer.produce("bench", value)
                        break
                    except BufferError:
                        producer.poll(0.01)
            assert producer.flush(120) == 0, "not every record was delivered"
            elapsed = time.perf_counter() - start
            print(f"produce: {args.records / elapsed:10.0f} records/s {total_mib / elapsed:8.1f} MiB/s "
                  f"({args.records} x {args.size} B, {args.compression}, {args.storage}, {args.security})")

            consumer = Consumer({
                **security,
                "bootstrap.servers": broker.bootstrap, "group.id": "bench",
                "enable.auto.commit": False, "fetch.max.bytes": 50 * MIB,
                "max.partition.fetch.bytes": 10 * MIB,
            })
            consumer.assign([TopicPartition("bench", 0, 0)])
            seen = 0
            start = time.perf_counter()
            while seen < args.records:
                for message in consumer.consume(10_000, timeout=5):
                    if message.error() is None:
                        seen += 1
            elapsed = time.perf_counter() - start
            consumer.close()
            print(f"consume: {seen / elapsed:10.0f} records/s {total_mib / elapsed:8.1f} MiB/s")
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
