"""End-to-end latency through a cluster: from a produce call to the consumer's poll.

    .venv/bin/python benchmarks/cluster_latency.py [--brokers 1,3] [--records 3000]
        [--rate 500] [--partitions 6] [--fsync] [--kafka]

For each broker count: a throwaway PostgreSQL and that many akfak brokers over it (as
cluster_bench.py starts them), a topic of `--partitions` partitions with replication factor
= brokers, a caught-up confluent-kafka consumer long-polling every partition
(fetch.wait.max.ms=500, so a broker that answered only at the end of the wait would show
~250 ms), and an idempotent acks=all producer (linger.ms=0) sending `--records` small
records at `--rate` per second, each carrying its send time.  Prints the p50 / p90 / p99 /
max of (time the consumer got the record - time it was produced), both measured on one
monotonic clock in this process.  The consumer fetches from each partition's leader, the
broker the producer writes to: a record is answered to the waiting fetch once PostgreSQL
has committed it (the high watermark), so the figure is produce, commit and wake-up.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import AkfakCluster
from tests.postgres import PostgresServer


def measure(bootstrap: str, rf: int, records: int, rate: float, partitions: int) -> list[float]:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("latency", partitions, rf)])["latency"].result(60)
    time.sleep(2)  # leaders loaded everywhere
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                         "enable.idempotence": True})
    for p in range(partitions):  # warm-up: metadata and connections to every leader
        producer.produce("latency", struct.pack(">q", 0), partition=p)
    assert producer.flush(60) == 0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "latency",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 500,
                         "fetch.min.bytes": 1})
    consumer.assign([TopicPartition("latency", p, 1) for p in range(partitions)])
    latencies: list[float] = []
    done = threading.Event()

    def consume() -> None:
        while len(latencies) < records and not done.is_set():
            # poll, not consume(n, timeout), which waits out its timeout to fill n
            message = consumer.poll(0.1)
            if message is not None and message.error() is None:
                (sent,) = struct.unpack(">q", message.value())
                latencies.append((time.perf_counter_ns() - sent) / 1e6)

    reader = threading.Thread(target=consume)
    reader.start()
    time.sleep(3)  # the consumer has its fetch sessions and waits on every partition
    start = time.perf_counter()
    for i in range(records):
        pause = start + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        producer.produce("latency", struct.pack(">q", time.perf_counter_ns()),
                         partition=i % partitions)
        producer.poll(0)
    assert producer.flush(60) == 0
    reader.join(60)
    done.set()
    reader.join()
    consumer.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="1,3")
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--fsync", action="store_true")
    args = parser.parse_args()
    print(f"{args.records} records at {args.rate:g}/s over {args.partitions} partitions, "
          f"acks=all, PostgreSQL fsync {'on' if args.fsync else 'off'}")
    print("| cluster | records | p50 ms | p90 ms | p99 ms | max ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in (int(b) for b in args.brokers.split(",")):
        pg = PostgresServer.start(fsync=args.fsync)
        cluster = AkfakCluster.start(pg.new_database(),
                                     Path(tempfile.mkdtemp(prefix="akfak-lat-")), n)
        try:
            got = measure(cluster.bootstrap, n, args.records, args.rate, args.partitions)
        finally:
            cluster.stop()
            pg.stop()
        q = statistics.quantiles(got, n=100)
        print(f"| akfak x{n} | {len(got)} | {q[49]:.1f} | {q[89]:.1f} | {q[98]:.1f} | "
              f"{max(got):.1f} |", flush=True)

if __name__ == "__main__":
    main()
