"""A cluster of akfak brokers over one PostgreSQL database (akfak/cluster.py), for tests.

    cluster = AkfakCluster.start(postgres.new_database(), tmp_path, n=3)
    cluster.bootstrap          # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
    cluster.kill(node)         # kill -9
    cluster.restart(node)      # a new broker with the same node id and port
    cluster.stop()

    load = Load(cluster.bootstrap, "topic", partitions=4).start()   # idempotent producers
    ...; load.finish(); load.acked / load.errors

Each broker is a `python -m akfak --storage URL --node-id N` subprocess with short leases
(`broker.session.timeout.ms`, `broker.heartbeat.interval.ms`) so failover tests are quick.
The `akfak_cluster` fixture (tests/conftest.py) starts one per test module.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.brokers import BrokerProcess, free_port, start_process

SESSION_MS = 3000
HEARTBEAT_MS = 300


@dataclass
class AkfakCluster:
    url: str
    base: Path
    ports: dict[int, int]
    brokers: dict[int, BrokerProcess] = field(default_factory=dict)
    #: more broker properties, every broker's (key -> value, as --override)
    overrides: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, url: str, base: Path, n: int = 3,
              overrides: dict[str, str] | None = None) -> AkfakCluster:
        cluster = cls(url, base, {node: free_port() for node in range(1, n + 1)},
                      overrides=dict(overrides or {}))
        for node in cluster.ports:
            cluster.restart(node, wait_live=False)
        cluster.wait_live(set(cluster.ports))
        return cluster

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports.values())

    def address(self, node: int) -> str:
        return f"127.0.0.1:{self.ports[node]}"

    def restart(self, node: int, *, wait_live: bool = True) -> BrokerProcess:
        broker = start_process(
            self.base / f"unused-{node}", "--storage", self.url, "--node-id", str(node),
            "--override", f"broker.session.timeout.ms={SESSION_MS}",
            "--override", f"broker.heartbeat.interval.ms={HEARTBEAT_MS}",
            "--override", "offsets.topic.num.partitions=6",
            "--override", "transaction.state.log.num.partitions=3",
            *(a for k, v in self.overrides.items() for a in ("--override", f"{k}={v}")),
            port=self.ports[node], log_path=self.base / f"broker-{node}.log")
        self.brokers[node] = broker
        if wait_live:
            self.wait_live({node})
        return broker

    def kill(self, node: int, sig: int = signal.SIGKILL) -> None:
        self.brokers[node].proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.brokers[node].proc.wait(10)

    def live(self) -> set[int]:
        return set(self.query("SELECT node_id FROM akfak_broker WHERE lease_until > now() "
                              "AND endpoints <> '[]'"))

    def wait_live(self, nodes: set[int], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not nodes <= self.live():
            if time.monotonic() > deadline:
                raise AssertionError(f"brokers {nodes} not live: {self.live()}")
            time.sleep(0.1)

    def controller(self) -> int:
        return int(self.query("SELECT leader FROM akfak_partition WHERE topic = "
                              "'__cluster_metadata'")[0])

    def leaders(self, topic: str) -> dict[int, int]:
        """partition -> leader, as the partition rows say (what appends are fenced by)."""
        rows = self.query_rows("SELECT partition, leader FROM akfak_partition WHERE topic = %s",
                               topic)
        return {p: leader for p, leader in rows}

    def query(self, sql: str, *params: Any) -> list[Any]:
        return [row[0] for row in self.query_rows(sql, *params)]

    def query_rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url) as conn:
            return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def stop(self) -> None:
        for broker in self.brokers.values():
            if broker.proc.poll() is None:
                broker.stop()


class Load:
    """Idempotent acks=all confluent-kafka producers writing "<name>-<sequence>" round-robin
    over a topic's partitions, on threads, until `finish()`; `acked` holds what was
    acknowledged per partition, `errors` the delivery errors."""

    def __init__(self, bootstrap: str, topic: str, partitions: int,
                 names: tuple[str, ...] = ("a", "b")) -> None:
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.acked: dict[int, list[bytes]] = defaultdict(list)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in names]

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def _run(self, name: str) -> None:
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": True,
                      "acks": "all", "linger.ms": 2, "message.timeout.ms": 90000})

        def report(err: Any, msg: Any) -> None:
            with self._lock:
                if err is None:
                    self.acked[msg.partition()].append(msg.value())
                else:
                    self.errors.append(str(err))

        i = 0
        while not self._stop.is_set():
            try:
                p.produce(self.topic, f"{name}-{i:06d}".encode(), partition=i % self.partitions,
                          on_delivery=report)
            except BufferError:
                p.poll(0.05)
                continue
            i += 1
            p.poll(0.002 if i % 20 == 0 else 0)
        p.flush(120)

    def finish(self) -> int:
        """Stop producing, wait for every delivery; the number acknowledged."""
        self._stop.set()
        for t in self._threads:
            t.join(150)
        return sum(map(len, self.acked.values()))

    def check(self, got: dict[int, list[bytes]]) -> None:
        """What was read back (partition -> values): every acknowledged record once, each
        producer's records in order."""
        for partition in range(self.partitions):
            values = got.get(partition, [])
            assert len(values) == len(set(values)), f"duplicates in {partition}"
            assert set(self.acked[partition]) <= set(values), f"lost in {partition}"
            for name in {v.split(b"-")[0] for v in values}:
                mine = [v for v in values if v.startswith(name + b"-")]
                assert mine == sorted(mine), f"out of order in {partition}"
