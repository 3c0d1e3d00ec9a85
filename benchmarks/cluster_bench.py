"""Throughput of a cluster of akfak brokers over one PostgreSQL against one broker.

    .venv/bin/python benchmarks/cluster_bench.py [--brokers 1,3] [--records 200000]
        [--size 1000] [--partitions 6[,60,600]] [--fsync] [--kafka] [--disk] [--rate N]
        [--warm RECORDS] [--py-spy DIR]

For each broker count and each partition count: a throwaway PostgreSQL (tests/postgres.py;
fsync off unless `--fsync`), that many brokers over it (tests/cluster.py), a topic of that
many partitions with replication factor = brokers (leaders spread), then one confluent-kafka
producer (acks=all, linger.ms=5, 1 MiB batches) writing `--records` values of `--size`
bytes round-robin over the partitions, timed from the first record to the last delivery,
and one consumer reading them all back.  Prints records/s, MiB/s and the brokers' CPU
(user + system, every broker summed, from /proc) per record for both phases, each
broker's own share of the produce CPU (how the work divides), the part of it on the
brokers' main threads (the reactors; the rest is on threads: the postgres writer's, the
disk provider's fsyncs) with the kernel's share of that in parentheses, and how many records the
producer put in each Produce request (librdkafka's statistics); the PostgreSQL server's own
CPU comes on top.  `--kafka` runs the same workload on Apache Kafka
4.1.1 with as many combined broker+controller KRaft nodes (JVMs of tests/kafka_peer.py's
classpath; Kafka acknowledges acks=all once the in-sync replicas have the records in their
page cache, without fsync); `--disk` runs it on one akfak broker of the disk provider too.
`--rate N` offers N records/s instead of as many as the broker takes: a faster broker gets
fuller batches from the producer (linger), so only at one offered rate do two brokers get
the same requests.  `--warm N` writes N records before the measured phase (default: a tenth
of `--records`, at most 20000): more than the postgres provider's tail cache holds
(`akfak.postgres.cache.bytes`, 1 GiB: 1,200,000 records of 1000 bytes) measures a broker
whose cache is full, as one that ran a while has it, rather than one still filling it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import AkfakCluster
from tests.postgres import PostgresServer

MIB = 1 << 20


def _times(stat: str) -> tuple[float, float]:
    """User and system CPU seconds from a /proc .../stat file."""
    fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_each(pids: list[int]) -> list[float]:
    """Each process's CPU seconds so far (user + system)."""
    return [sum(_times(f"/proc/{pid}/stat")) for pid in pids]


def cpu_reactor(pids: list[int]) -> tuple[float, float]:
    """The main threads' CPU seconds so far (the reactors; the rest is other threads): user,
    system (the kernel's share: sockets, wake-ups)."""
    times = [_times(f"/proc/{pid}/task/{pid}/stat") for pid in pids]
    return sum(u for u, _ in times), sum(s for _, s in times)


def cpu_seconds(pids: list[int]) -> float:
    return sum(cpu_each(pids))


def bench(brokers: int, records: int, size: int, partitions: int, fsync: bool) -> dict[str, Any]:
    pg = PostgresServer.start(fsync=fsync)
    cluster = AkfakCluster.start(pg.new_database(), Path(tempfile.mkdtemp(prefix="akfak-cb-")),
                                 brokers, properties=dict(PROPERTIES))
    try:
        return workload(cluster.bootstrap, [b.proc.pid for b in cluster.brokers.values()],
                        brokers, records, size, partitions)
    finally:
        cluster.stop()
        pg.stop()


def bench_disk(records: int, size: int, partitions: int) -> dict[str, Any]:
    """The same workload on one broker of the disk provider (the reference for the cost of
    the postgres provider's appends)."""
    from tests.brokers import start_process

    data = Path(tempfile.mkdtemp(prefix="akfak-cb-disk-")) / "data"
    broker = start_process(data, "-o", "message.max.bytes=10485760")
    try:
        return workload(f"127.0.0.1:{broker.port}", [broker.proc.pid], 1, records, size,
                        partitions)
    finally:
        broker.stop()


def bench_kafka(brokers: int, records: int, size: int, partitions: int) -> dict[str, Any]:
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


#: `--property KEY=VALUE`: broker properties for the akfak brokers
PROPERTIES: dict[str, str] = {}
#: `--rate N`: records per second offered (0: as fast as the broker takes them)
RATE = 0
#: `--warm N`: records written before the measured phase (None: a tenth of --records,
#: at most 20000)
WARM: int | None = None
#: `--py-spy DIR`: where each broker's profile of the produce phase goes (None: none)
PROFILE: Path | None = None


def profile(pid: int) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` (where the GIL is held) until SIGINT, into PROFILE as folded
    stacks."""
    assert PROFILE is not None
    out = PROFILE / f"produce-{pid}-{time.strftime('%H%M%S')}.txt"
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--gil", "--rate", "250",
                             "--format", "raw", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def produce_requests(stats: dict[str, Any]) -> int:
    """Produce requests sent so far, from librdkafka's statistics (every broker's)."""
    return sum(b.get("req", {}).get("Produce", 0) for b in stats["brokers"].values())


def send(producer: Any, value: bytes, partition: int) -> None:
    """Produce one record, waiting while the producer's queue is full."""
    while True:
        try:
            producer.produce("bench", value, partition=partition)
            return
        except BufferError:
            producer.poll(0.01)


def workload(bootstrap: str, pids: list[int], rf: int, records: int, size: int,
             partitions: int) -> dict[str, Any]:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("bench", partitions, rf)])["bench"].result(60)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # every partition has a leader (Kafka: elected)
        topic = admin.list_topics("bench", timeout=30).topics["bench"]
        if len(topic.partitions) == partitions and all(
                p.leader >= 0 and not p.error for p in topic.partitions.values()):
            break
        time.sleep(0.5)
    time.sleep(2)  # leaders loaded everywhere
    stats: list[dict[str, Any]] = []  # librdkafka's statistics: requests and batches sent
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                         "linger.ms": 5, "batch.size": MIB, "enable.idempotence": True,
                         "queue.buffering.max.kbytes": 256 * 1024,
                         "statistics.interval.ms": 1000,
                         "stats_cb": lambda raw: stats.append(json.loads(raw))})
    value = b"x" * size
    warm = min(records // 10, 20000) if WARM is None else WARM
    for i in range(warm):  # warm-up: metadata, connections (and with --warm, caches)
        send(producer, value, i % partitions)
    assert producer.flush(300) == 0
    producer.poll(1.5)  # a statistics report after the warm-up
    requests0, reports0 = produce_requests(stats[-1]), len(stats)
    spies = [profile(pid) for pid in pids] if PROFILE else []
    each0, reactor0 = cpu_each(pids), cpu_reactor(pids)
    cpu0, t0 = sum(each0), time.monotonic()
    for i in range(records):
        send(producer, value, i % partitions)
        if i % 1000 == 0:
            producer.poll(0)
        if RATE and i % 100 == 0 and (ahead := t0 + i / RATE - time.monotonic()) > 0:
            time.sleep(ahead)
    assert producer.flush(300) == 0
    for spy in spies:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    each = [after - before for after, before in zip(cpu_each(pids), each0, strict=True)]
    produce_s, produce_cpu = time.monotonic() - t0, sum(each)
    user, system = (after - before for after, before in zip(cpu_reactor(pids), reactor0,
                                                             strict=True))
    producer.poll(1.5)  # a statistics report after the last delivery
    requests = produce_requests(stats[-1]) - requests0
    # each report's histogram covers its own interval: weigh them by their batch counts
    windows = [r["topics"]["bench"]["batchcnt"] for r in stats[reports0:] if "bench" in r["topics"]]
    batches = sum(w["cnt"] for w in windows)
    per_batch = sum(w["avg"] * w["cnt"] for w in windows) / max(batches, 1)
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
            "produce_us_each": [c / records * 1e6 for c in each],
            "produce_us_reactor": (user + system) / records * 1e6,
            "produce_us_reactor_system": system / records * 1e6,
            "records_per_request": records / max(requests, 1),
            "records_per_batch": per_batch,
            "consume_rps": got / consume_s, "consume_us": consume_cpu / got * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default="1,3")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--partitions", default="6", help="partition counts, comma-separated")
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--kafka", action="store_true",
                        help="also Apache Kafka 4.1.1 (KRaft) with as many brokers")
    parser.add_argument("--disk", action="store_true",
                        help="also one akfak broker on the disk provider (with --brokers 1)")
    parser.add_argument("--py-spy", type=Path, metavar="DIR",
                        help="profile every broker's produce phase with py-spy (on PATH), "
                             "folded stacks into DIR")
    parser.add_argument("--rate", type=int, default=0,
                        help="offer this many records per second (default: as many as the "
                             "broker takes): brokers that keep up with one rate get the same batches")
    parser.add_argument("--warm", type=int, metavar="RECORDS",
                        help="write so many records before the measured phase (default: a "
                             "tenth of --records, at most 20000); more than the postgres "
                             "provider's cache (akfak.postgres.cache.bytes, 1 GiB) measures it "
                             "full, as a broker that ran a while has it")
    parser.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                        help="a broker property for the akfak brokers (repeatable)")
    args = parser.parse_args()
    PROPERTIES.update(p.split("=", 1) for p in args.property)
    global PROFILE, RATE, WARM
    RATE, WARM = args.rate, args.warm
    PROFILE = args.py_spy
    if PROFILE is not None:
        PROFILE.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    print(f"{args.records} records of {args.size} B, acks=all, PostgreSQL fsync "
          f"{'on' if args.fsync else 'off'}; load average before {load[0]:.2f} on "
          f"{os.cpu_count()} CPUs")
    print("| broker | partitions | produce rec/s | produce MiB/s | broker CPU µs/rec (produce) "
          "| each broker's µs/rec (produce) | of which on the reactor (kernel) | records per Produce "
          "request | records per batch | consume rec/s "
          "| broker CPU µs/rec (consume) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in (int(b) for b in args.brokers.split(",")):
        for partitions in (int(p) for p in args.partitions.split(",")):
            runs = [(f"akfak x{n}", lambda n=n, p=partitions: bench(n, args.records, args.size, p,
                                                                     args.fsync))]
            if args.disk and n == 1:
                runs.append(("akfak x1 disk", lambda p=partitions: bench_disk(
                    args.records, args.size, p)))
            if args.kafka:
                runs.append((f"Kafka x{n}", lambda n=n, p=partitions: bench_kafka(
                    n, args.records, args.size, p)))
            for name, run in runs:
                r = run()
                each = " / ".join(f"{c:.1f}" for c in r["produce_us_each"])
                print(f"| {name} | {partitions} | {r['produce_rps']:,.0f} | {r['produce_mibs']:.1f} | "
                      f"{r['produce_us']:.1f} | {each} | {r['produce_us_reactor']:.1f} "
                      f"({r['produce_us_reactor_system']:.1f}) | "
                      f"{r['records_per_request']:.1f} | {r['records_per_batch']:.1f} | "
                      f"{r['consume_rps']:,.0f} | "
                      f"{r['consume_us']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
