"""Throughput of a cluster of akfak brokers over one PostgreSQL against one broker.

    .venv/bin/python benchmarks/cluster_bench.py [--brokers 1,3] [--records 200000]
        [--size 1000] [--partitions 6] [--fsync] [--kafka]

For each broker count: a throwaway PostgreSQL (tests/postgres.py; fsync off unless
`--fsync`), that many brokers over it (tests/cluster.py), a topic of `--partitions`
partitions with replication factor = brokers (leaders spread), then one confluent-kafka
producer (acks=all, linger.ms=5, 1 MiB batches) writing `--records` values of `--size`
bytes round-robin over the partitions, timed from the first record to the last delivery,
and one consumer reading them all back.  Prints records/s, MiB/s and the brokers' CPU
(user + system, every broker summed, from /proc) per record for both phases; the
PostgreSQL server's own CPU comes on top.  `--kafka` runs the same workload on Apache Kafka
4.1.1 with as many combined broker+controller KRaft nodes (JVMs of tests/kafka_peer.py's
classpath; Kafka acknowledges acks=all once the in-sync replicas have the records in their
page cache, without fsync).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import AkfakCluster
from tests.postgres import PostgresServer

MIB = 1 << 20


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def bench(brokers: int, records: int, size: int, partitions: int, fsync: bool) -> dict[str, float]:
    pg = PostgresServer.start(fsync=fsync)
    cluster = AkfakCluster.start(pg.new_database(), Path(tempfile.mkdtemp(prefix="akfak-cb-")),
                                 brokers)
    try:
        return workload(cluster.bootstrap, [b.proc.pid for b in cluster.brokers.values()],
                        brokers, records, size, partitions)
    finally:
        cluster.stop()
        pg.stop()


def bench_kafka(brokers: int, records: int, size: int, partitions: int) -> dict[str, float]:
    """The same workload on Apache Kafka 4.1.1, `brokers` combined broker+controller nodes
    (KRaft, a static quorum), each a JVM with -Xmx768m (tests/kafka_peer.py's classpath)."""
    from tests.kafka_peer import start_kafka_cluster

    cluster = start_kafka_cluster(Path(tempfile.mkdtemp(prefix="kafka-cb-")), brokers,
                                  {"message.max.bytes": "10485760"})
    try:
        return workload(cluster.bootstrap, [p.pid for p in cluster.procs], brokers, records,
                        size, partitions)
    finally:
        cluster.stop()


def workload(bootstrap: str, pids: list[int], rf: int, records: int, size: int,
             partitions: int) -> dict[str, float]:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("bench", partitions, rf)])["bench"].result(60)
    time.sleep(2)  # leaders loaded everywhere
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "linger.ms": 5, "batch.size": MIB, "enable.idempotence": True,
                         "queue.buffering.max.kbytes": 256 * 1024})
    value = b"x" * size
    warm = min(records // 10, 20000)
    for i in range(warm):  # warm-up: metadata, connections
        producer.produce("bench", value, partition=i % partitions)
    producer.flush(60)
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    for i in range(records):
        while True:
            try:
                producer.produce("bench", value, partition=i % partitions)
                break
            except BufferError:
                producer.poll(0.01)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(300) == 0
    produce_s, produce_cpu = time.monotonic() - t0, cpu_seconds(pids) - cpu0
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench",
                         "enable.auto.commit": False, "fetch.max.bytes": 64 * MIB})
    consumer.assign([TopicPartition("bench", p, 0) for p in range(partitions)])
    want = records + warm
    got = 0
    cpu0, t0 = cpu_seconds(pids), time.monotonic()
    while got < want and time.monotonic() - t0 < 300:
        got += sum(1 for m in consumer.consume(10000, 1.0) if m.error() is None)
    consume_s, consume_cpu = time.monotonic() - t0, cpu_seconds(pids) - cpu0
    consumer.close()
    return {"produce_rps": records / produce_s,
            "produce_mibs": records * size / MIB / produce_s,
            "produce_us": produce_cpu / records * 1e6,
            "consume_rps": got / consume_s, "consume_us": consume_cpu / got * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="1,3")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--kafka", action="store_true",
                        help="also Apache Kafka 4.1.1 (KRaft) with as many brokers")
    args = parser.parse_args()
    print(f"{args.records} records of {args.size} B over {args.partitions} partitions, "
          f"acks=all, PostgreSQL fsync {'on' if args.fsync else 'off'}")
    print("| broker | produce rec/s | produce MiB/s | broker CPU µs/rec (produce) "
          "| consume rec/s | broker CPU µs/rec (consume) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in (int(b) for b in args.brokers.split(",")):
        runs = [(f"akfak x{n}", lambda n=n: bench(n, args.records, args.size, args.partitions,
                                                   args.fsync))]
        if args.kafka:
            runs.append((f"Kafka x{n}",
                         lambda n=n: bench_kafka(n, args.records, args.size, args.partitions)))
        for name, run in runs:
            r = run()
            print(f"| {name} | {r['produce_rps']:,.0f} | {r['produce_mibs']:.1f} | "
                  f"{r['produce_us']:.1f} | {r['consume_rps']:,.0f} | {r['consume_us']:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
