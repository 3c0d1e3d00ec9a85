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

By default each broker has one PLAINTEXT listener (`--listen`). With `listeners` (e.g.
`("CLIENT:SASL_SSL", "BROKER:SASL_SSL")`) each gets those, each on a port of its own
(`listener_ports[name][node]`; the first listener's are `ports`, what `bootstrap` names), and
`properties` (every broker) and `node_properties` (one broker's, applied after) are passed as
`--override`s: security, `inter.broker.listener.name` and the like.

    cluster = AkfakCluster.start(url, tmp_path, 3, listeners=("CLIENT:SASL_SSL", "BROKER:SSL"),
                                 properties=security.broker_properties("127.0.0.1", certificates),
                                 node_properties={3: {"inter.broker.listener.name": "BROKER"}})
"""

from __future__ import annotations

import signal
import sys
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
    #: "NAME:PROTOCOL" of each broker's listeners; empty: one PLAINTEXT listener (--listen)
    listeners: tuple[str, ...] = ()
    #: listener name -> node -> port
    listener_ports: dict[str, dict[int, int]] = field(default_factory=dict)
    #: broker properties of every broker, and of one (applied after), as --overrides
    properties: dict[str, str] = field(default_factory=dict)
    node_properties: dict[int, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def start(cls, url: str, base: Path, n: int = 3, *, listeners: tuple[str, ...] = (),
              properties: dict[str, str] | None = None,
              node_properties: dict[int, dict[str, str]] | None = None) -> AkfakCluster:
        nodes = range(1, n + 1)
        names = [entry.partition(":")[0].upper() for entry in listeners]
        listener_ports = {name: {node: free_port() for node in nodes} for name in names}
        ports = listener_ports[names[0]] if names else {node: free_port() for node in nodes}
        cluster = cls(url, base, ports, listeners=tuple(listeners), listener_ports=listener_ports,
                      properties=dict(properties or {}),
                      node_properties={k: dict(v) for k, v in (node_properties or {}).items()})
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
        """(Re)start broker `node`, with its `node_properties` as they are now."""
        data_dir = self.base / f"unused-{node}"
        properties = {
            "broker.session.timeout.ms": str(SESSION_MS),
            "broker.heartbeat.interval.ms": str(HEARTBEAT_MS),
            "offsets.topic.num.partitions": "6",
            "transaction.state.log.num.partitions": "3",
            **self.properties, **self.node_properties.get(node, {}),
        }
        command = None
        if self.listeners:  # instead of --listen, and of any `listeners` in the properties
            properties["listeners"] = ",".join(
                f"{name}://127.0.0.1:{ports[node]}" for name, ports in self.listener_ports.items())
            properties["listener.security.protocol.map"] = ",".join(
                entry.upper() for entry in self.listeners)
            command = [sys.executable, "-m", "akfak", "--data-dir", str(data_dir), "--http", "none"]
        args = ["--storage", self.url, "--node-id", str(node),
                *(arg for key, value in properties.items() for arg in ("--override", f"{key}={value}"))]
        broker = start_process(data_dir, *args, port=self.ports[node],
                               log_path=self.base / f"broker-{node}.log",
                               command=None if command is None else [*command, *args])
        self.brokers[node] = broker
        if wait_live:
            self.wait_live({node})
        return broker

    def log_lines(self, *needles: str, last: int = 40) -> str:
        """The last `last` lines of every broker's log naming any of `needles` (for a
        failure's description)."""
        found = []
        for node in sorted(self.ports):
            log = self.base / f"broker-{node}.log"
            text = log.read_text(errors="replace") if log.exists() else ""
            found += [f"[{node}] {line}" for line in text.splitlines() if any(n in line for n in needles)]
        return "\n".join(found[-last:])

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
