"""A cluster of akfak brokers over one PostgreSQL database (akfak/cluster.py), for tests.

    cluster = AkfakCluster.start(postgres.new_database(), tmp_path, n=3)
    cluster.bootstrap          # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
    cluster.kill(node)         # kill -9
    cluster.restart(node)      # a new broker with the same node id and port
    cluster.stop()

Each broker is a `python -m akfak --storage URL --node-id N` subprocess with short leases
(`broker.session.timeout.ms`, `broker.heartbeat.interval.ms`) so failover tests are quick.
The `akfak_cluster` fixture (tests/conftest.py) starts one per test module.
"""

from __future__ import annotations

import signal
import time
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

    @classmethod
    def start(cls, url: str, base: Path, n: int = 3) -> AkfakCluster:
        cluster = cls(url, base, {node: free_port() for node in range(1, n + 1)})
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
