"""A bounded Jepsen-style run against a cluster of akfak brokers over one PostgreSQL.

    .venv/bin/python benchmarks/jepsen.py --cycles 12            # the long run (README)
    .venv/bin/python benchmarks/jepsen.py --cycles 3 --rate 500 --max-wait 1   # CI

A throwaway PostgreSQL (tests/postgres.py) and `--brokers` akfak brokers over it
(tests/cluster.py: 3 s leases), a topic with replication factor = brokers, then, all
running through every fault:
- `--producers` idempotent acks=all producers (confluent-kafka), each writing
  "<producer>-<sequence>" round-robin over the partitions and noting what is acknowledged;
- a consumer reading every partition from the start as the records come (read_uncommitted),
  noting what it read.

Each cycle waits a random 1-3 s (`--min-wait`, `--max-wait`), then injects one fault, in turn from `--faults`:
- `kill`: kill -9 of a random broker, restarted after the lease ran out;
- `stop`: SIGSTOP of a random broker for longer than the lease (it is deposed, and its
  late appends are refused by the leader epoch), then SIGCONT;
- `pg`: a PostgreSQL restart (fast shutdown: connections cut, commits in flight lost).

At the end the producers drain, the whole topic is read back, and it prints
acknowledged, lost (acknowledged, not in the log), duplicated (in the log twice),
reordered (a producer's records out of sequence in a partition), and phantom (read by the
live consumer but not in the final log: a read of something not committed).  Exit status 1
if any of lost, duplicated, reordered or phantom is not zero.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cluster import SESSION_MS, AkfakCluster
from tests.postgres import PostgresServer

TOPIC = "jepsen"


class Run:
    def __init__(self, cluster: AkfakCluster, partitions: int, producers: int,
                 rate: float = 0) -> None:
        self.cluster = cluster
        #: records per second per producer (0: as fast as it goes)
        self.rate = rate
        self.partitions = partitions
        self.producers = producers
        self.stop = threading.Event()
        self.lock = threading.Lock()
        #: partition -> acknowledged values
        self.acked: dict[int, set[bytes]] = defaultdict(set)
        self.failed: Counter[str] = Counter()
        #: (partition, value) read live
        self.read_live: set[tuple[int, bytes]] = set()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for n in range(self.producers):
            self.threads.append(threading.Thread(target=self._produce, args=(f"p{n}",)))
        self.threads.append(threading.Thread(target=self._consume))
        for t in self.threads:
            t.start()

    def _produce(self, name: str) -> None:
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": self.cluster.bootstrap, "enable.idempotence": True,
                      "acks": "all", "linger.ms": 5, "message.timeout.ms": 120000})

        def report(err: Any, msg: Any) -> None:
            with self.lock:
                if err is None:
                    self.acked[msg.partition()].add(msg.value())
                else:
                    self.failed[str(err)] += 1

        i = 0
        started = time.monotonic()
        while not self.stop.is_set():
            if self.rate and i > (time.monotonic() - started) * self.rate:
                p.poll(0.005)
                continue
            try:
                p.produce(TOPIC, f"{name}-{i:08d}".encode(), partition=i % self.partitions,
                          on_delivery=report)
                i += 1
            except BufferError:
                p.poll(0.05)
                continue
            p.poll(0.001 if i % 10 == 0 else 0)
        p.flush(180)

    def _consume(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.cluster.bootstrap, "group.id": "jepsen-live",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.assign([TopicPartition(TOPIC, p, 0) for p in range(self.partitions)])
        while not self.stop.is_set():
            for m in c.consume(200, 0.2):
                if m.error() is None:
                    self.read_live.add((m.partition(), m.value()))
        c.close()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(240)

    def check(self) -> dict[str, int]:
        from confluent_kafka import Consumer, TopicPartition

        total = sum(map(len, self.acked.values()))
        c = Consumer({"bootstrap.servers": self.cluster.bootstrap, "group.id": "jepsen-check",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest"})
        c.assign([TopicPartition(TOPIC, p, 0) for p in range(self.partitions)])
        final: dict[int, list[bytes]] = defaultdict(list)
        deadline = time.monotonic() + 120
        idle = 0
        while time.monotonic() < deadline and idle < 4:
            got = [m for m in c.consume(500, 0.5) if m.error() is None]
            idle = 0 if got else idle + 1
            for m in got:
                final[m.partition()].append(m.value())
            if sum(map(len, final.values())) < total:
                idle = min(idle, 2)  # keep reading while records are missing
        c.close()
        stored = {(p, v) for p, vs in final.items() for v in vs}
        lost = sum(1 for p, vs in self.acked.items() for v in vs if (p, v) not in stored)
        duplicated = sum(len(vs) - len(set(vs)) for vs in final.values())
        reordered = 0
        for vs in final.values():
            last: dict[str, int] = {}
            for v in vs:
                name, _, seq = v.decode().partition("-")
                if int(seq) <= last.get(name, -1):
                    reordered += 1
                last[name] = max(int(seq), last.get(name, -1))
        phantom = len(self.read_live - stored)
        return {"acknowledged": total, "lost": lost, "duplicated": duplicated,
                "reordered": reordered, "phantom": phantom,
                "delivery_errors": sum(self.failed.values())}


def inject(fault: str, cluster: AkfakCluster, pg: PostgresServer, rng: random.Random) -> str:
    lease = SESSION_MS / 1000
    if fault == "pg":
        pg.restart()
        return "PostgreSQL restarted"
    node = rng.choice(sorted(cluster.ports))
    if fault == "kill":
        cluster.kill(node)
        time.sleep(lease + 0.5)
        cluster.restart(node)
        return f"kill -9 of broker {node}, restarted"
    cluster.kill(node, signal.SIGSTOP)
    time.sleep(lease + 1.5)
    cluster.kill(node, signal.SIGCONT)
    return f"SIGSTOP of broker {node} for {lease + 1.5:.1f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--brokers", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--faults", default="kill,stop,pg")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--min-wait", type=float, default=1.0, help="seconds between faults")
    parser.add_argument("--max-wait", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=0,
                        help="records/s per producer (default: as fast as they go)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    faults = [f for f in args.faults.split(",") if f]
    pg = PostgresServer.start()
    base = Path(tempfile.mkdtemp(prefix="akfak-jepsen-"))
    cluster = AkfakCluster.start(pg.new_database(), base, args.brokers)
    print(f"seed {seed}; {args.brokers} brokers, {args.partitions} partitions; logs in {base}",
          flush=True)
    try:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        admin.create_topics([NewTopic(TOPIC, args.partitions, args.brokers)])[TOPIC].result(30)
        run = Run(cluster, args.partitions, args.producers, args.rate)
        run.start()
        started = time.monotonic()
        for cycle in range(args.cycles):
            time.sleep(rng.uniform(args.min_wait, args.max_wait))
            what = inject(faults[cycle % len(faults)], cluster, pg, rng)
            print(f"cycle {cycle + 1}: {what}", flush=True)
        time.sleep(1)
        run.finish()
        elapsed = time.monotonic() - started
        result = run.check()
    finally:
        for broker in cluster.brokers.values():
            if broker.proc.poll() is None:
                broker.proc.send_signal(signal.SIGCONT)
        cluster.stop()
        pg.stop()
    print(f"{elapsed:.0f} s: " + ", ".join(f"{k} {v}" for k, v in result.items()))
    bad = any(result[k] for k in ("lost", "duplicated", "reordered", "phantom"))
    print("FAILED" if bad else "OK")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
