"""End-to-end throughput: confluent-kafka produces to and consumes from akfak (and Kafka).

    .venv/bin/python benchmarks/client_bench.py [--records 500000] [--size 1000]
        [--compression none] [--storage disk|memory|postgres|postgres-nofsync|URL]
        [--security plaintext|ssl|sasl_ssl]
        [--kafka | --only kafka]

`--size` and `--compression` take comma-separated lists (e.g. `--size 100,1024
--compression none,gzip,snappy,lz4,zstd`); every combination is a workload on a
topic of its own (one partition), after an untimed warm-up (a tenth of the
records in each codec).  Prints records/s and MiB/s (of values) for
producing (acks=all, linger.ms=5, 1 MiB batches, timed from the first record to
the last delivery) and for consuming the same records from the beginning (one
consumer, timed from assign to the last record), and the broker process's CPU
time (user + system, from /proc) per record in each phase: on a shared machine
the rates follow the load and the client's own costs, the broker's CPU per
record much less.

`--security ssl|sasl_ssl` puts the clients on an SSL or SASL_SSL (SCRAM-SHA-512) listener
instead of PLAINTEXT, on both brokers (certificates and settings from akfak.testing.security;
a PLAINTEXT listener beside it serves the admin calls that set the benchmark up).

`--kafka` (or `--compare`) runs the same workloads against a real Apache Kafka
4.1.1 broker (tests/kafka_peer.py, needs java and mvn) after akfak, in the same
run, and prints a table with the ratio akfak/Kafka for every figure.  Each broker
runs alone, on its own temporary directory; both get message.max.bytes=10 MiB.

`--storage postgres` runs akfak on a throwaway PostgreSQL server (tests/postgres.py,
with fsync on: each acknowledged produce waits for a durable commit), `postgres-nofsync`
on one without fsync; a postgresql:// URL uses that database.  The CPU figures are the
broker's only: the PostgreSQL server's own CPU comes on top.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from akfak.testing.security import Certificates, Security  # noqa: E402
from tests.brokers import free_port, start_process  # noqa: E402

MIB = 1 << 20
MAX_MESSAGE = 10 * MIB
USER, PASSWORD, MECHANISM = "bench", "bench-secret", "SCRAM-SHA-512"


@dataclass
class Target:
    """A running broker: where clients connect (with what settings), where admin calls go."""

    bootstrap: str
    pid: int
    client: dict[str, str]
    admin_bootstrap: str


def secured(tmp: Path, protocol: str) -> tuple[Security, Certificates] | None:
    if protocol == "PLAINTEXT":
        return None
    certificates = Certificates(tmp / "tls")
    return Security(listeners=[protocol], users={USER: PASSWORD}, mechanisms=[MECHANISM],
                    certificates=certificates), certificates


def add_scram_user(admin_bootstrap: str) -> None:
    from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion
    admin = AdminClient({"bootstrap.servers": admin_bootstrap})
    upsertion = UserScramCredentialUpsertion(
        USER, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), PASSWORD.encode())
    for future in admin.alter_user_scram_credentials([upsertion]).values():
        future.result(30)


def client_settings(protocol: str, setup: tuple[Security, Certificates] | None) -> dict[str, str]:
    if setup is None:
        return {}
    security, certificates = setup
    return security.client_properties(protocol, certificates, user=USER)


@contextmanager
def akfak_broker(tmp: Path, storage: str, protocol: str) -> Iterator[Target]:
    if storage in ("postgres", "postgres-nofsync"):
        from tests.postgres import PostgresServer

        server = PostgresServer.start(fsync=storage == "postgres")
        try:
            with akfak_broker(tmp, server.new_database(), protocol) as broker:
                yield broker
        finally:
            server.stop()
        return
    tmp.mkdir(parents=True, exist_ok=True)
    setup = secured(tmp, protocol)
    extra = ["--storage", storage, "-o", f"message.max.bytes={MAX_MESSAGE}"]
    port = free_port()
    command = None
    admin_port = port
    if setup is not None:
        security, certificates = setup
        admin_port = free_port()
        properties = security.broker_properties("127.0.0.1", certificates)
        properties["listeners"] = f"{protocol}://127.0.0.1:{port},PLAINTEXT://127.0.0.1:{admin_port}"
        properties["listener.security.protocol.map"] = f"{protocol}:{protocol},PLAINTEXT:PLAINTEXT"
        for key, value in properties.items():
            extra += ["-o", f"{key}={value}"]
        data = tmp / "akfak-data"
        data.mkdir(exist_ok=True)
        command = [sys.executable, "-m", "akfak", "--data-dir", str(data), *extra]
    broker = start_process(tmp / "akfak-data", *extra, port=port, command=command)
    try:
        admin = f"127.0.0.1:{admin_port}"
        if setup is not None:
            wait_listening(admin)
            if protocol.startswith("SASL"):
                add_scram_user(admin)
        yield Target(f"127.0.0.1:{port}", broker.proc.pid, client_settings(protocol, setup), admin)
    finally:
        broker.stop()


@contextmanager
def kafka_broker(tmp: Path, _storage: str, protocol: str) -> Iterator[Target]:
    import pytest

    from tests.kafka_peer import start_kafka
    setup = secured(tmp, protocol)
    properties = {"message.max.bytes": str(MAX_MESSAGE)}
    listeners = None
    if setup is not None:
        security, certificates = setup
        listeners = {protocol: protocol}
        secure = security.broker_properties("127.0.0.1", certificates)
        del secure["listeners"], secure["listener.security.protocol.map"]
        secure.pop(f"listener.name.{protocol.lower()}.plain.sasl.jaas.config", None)
        if protocol.startswith("SASL"):
            secure[f"listener.name.{protocol.lower()}.{MECHANISM.lower()}.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;")
        properties.update(secure)
    try:
        # the full JIT: the test suite's JVMs stop at C1 to start fast, which slows TLS most
        peer = start_kafka(tmp / "kafka", properties=properties, listeners=listeners,
                           jvm_flags=["-XX:TieredStopAtLevel=4"])
    except (pytest.skip.Exception, pytest.fail.Exception) as e:
        raise SystemExit(f"cannot start Kafka 4.1.1: {e}") from None
    try:
        if protocol.startswith("SASL"):
            add_scram_user(peer.bootstrap)
        bootstrap = peer.bootstrap_for(protocol) if setup is not None else peer.bootstrap
        yield Target(bootstrap, peer.proc.pid, client_settings(protocol, setup), peer.bootstrap)
    finally:
        peer.stop()


def wait_listening(bootstrap: str) -> None:
    host, port = bootstrap.rsplit(":", 1)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


BROKERS: dict[str, Callable[[Path, str, str], AbstractContextManager[Target]]] = {
    "akfak": akfak_broker, "kafka": kafka_broker}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # the PLAINTEXT listener
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topic = admin.list_topics(name, timeout=10).topics.get(name)
        if topic is not None and topic.error is None and all(
                p.leader >= 0 for p in topic.partitions.values()) and topic.partitions:
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {name} has no leader after 30 s")


def produce(target: Target, topic: str, records: int, value: bytes, compression: str) -> float:
    producer = Producer({
        **target.client, "bootstrap.servers": target.bootstrap, "acks": "all", "linger.ms": 5,
        "batch.size": 1 << 20, "compression.type": compression,
        "queue.buffering.max.kbytes": 1 << 20,
    })
    producer.produce(topic, b"")  # connected before the clock starts
    producer.flush(60)
    start = time.perf_counter()
    for _ in range(records):
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.01)
    if producer.flush(300) != 0:
        raise RuntimeError("not every record was delivered")
    return time.perf_counter() - start


def consume(target: Target, topic: str, records: int) -> float:
    consumer = Consumer({
        **target.client, "bootstrap.servers": target.bootstrap, "group.id": "bench",
        "enable.auto.commit": False,
        "fetch.max.bytes": 50 * MIB, "max.partition.fetch.bytes": 10 * MIB,
        # librdkafka stops fetching for fetch.queue.backoff.ms (1 s) once it holds
        # queued.min.messages (100,000) or queued.max.messages.kbytes (64 MiB): that would
        # time the client's pauses, not the broker
        "queued.min.messages": 10_000_000, "queued.max.messages.kbytes": 1 << 20,
        "fetch.queue.backoff.ms": 10,
    })
    try:
        consumer.assign([TopicPartition(topic, 0, 1)])  # past the priming record
        seen = 0
        last = time.monotonic()
        start = time.perf_counter()
        while seen < records:
            messages = consumer.consume(min(10_000, records - seen), timeout=1)
            seen += sum(1 for m in messages if m.error() is None)
            if messages:
                last = time.monotonic()
            elif time.monotonic() - last > 30:
                raise RuntimeError(f"{topic}: {seen} records of {records}")
        return time.perf_counter() - start
    finally:
        consumer.close()


def run(target: Target, args: argparse.Namespace
        ) -> dict[tuple[str, str], tuple[float, float, float]]:
    """{(workload, "produce" | "consume"): (records/s, MiB/s, broker CPU µs per record)}"""
    figures: dict[tuple[str, str], tuple[float, float, float]] = {}
    # the same untimed warm-up on both brokers (the JVM's JIT, the codecs, the page cache)
    warm = max(args.records // 10, 1000)
    for compression in args.compression:
        create_topic(target.admin_bootstrap, f"warmup-{compression}")
        produce(target, f"warmup-{compression}", warm, b"w" * args.size[0], compression)
        consume(target, f"warmup-{compression}", warm)
    for size in args.size:
        for compression in args.compression:
            name = f"{size} B {compression}"
            topic = f"bench-{size}-{compression}"
            create_topic(target.admin_bootstrap, topic)
            value = b"x" * size
            mib = args.records * size / MIB
            for phase in ("produce", "consume"):
                cpu = cpu_seconds(target.pid)
                seconds = (produce(target, topic, args.records, value, compression)
                           if phase == "produce" else consume(target, topic, args.records))
                cpu_us = (cpu_seconds(target.pid) - cpu) / args.records * 1e6
                figures[name, phase] = (args.records / seconds, mib / seconds, cpu_us)
                print(f"  {phase}: {args.records / seconds:10.0f} records/s {mib / seconds:8.1f} MiB/s "
                      f"broker CPU {cpu_us:6.2f} µs/record ({args.records} x {name}, {args.storage}, "
                      f"{args.security})",
                      flush=True)
    return figures


def table(results: dict[str, dict[tuple[str, str], tuple[float, float, float]]]) -> str:
    keys = list(next(iter(results.values())))
    head = ["workload"]
    for broker in results:
        head += [f"{broker} rec/s", f"{broker} MiB/s", f"{broker} CPU µs/rec"]
    both = len(results) == 2
    if both:
        head += ["akfak/kafka rec/s", "akfak/kafka CPU"]
    rows = [head, ["---"] * len(head)]
    for key in keys:
        row = [f"{key[1]} {key[0]}"]
        for figures in results.values():
            rate, mib, cpu = figures[key]
            row += [f"{rate:,.0f}", f"{mib:.1f}", f"{cpu:.2f}"]
        if both:
            akfak, kafka = results["akfak"][key], results["kafka"][key]
            row += [f"{akfak[0] / kafka[0]:.2f}", f"{akfak[2] / kafka[2]:.2f}" if kafka[2] else "-"]
        rows.append(row)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--size", default="1000", help="value sizes in bytes, comma-separated")
    parser.add_argument("--compression", default="none", help="codecs, comma-separated")
    parser.add_argument("--storage", default="disk",
                        help="akfak's: disk, memory, postgres, postgres-nofsync or a URL")
    parser.add_argument("--kafka", "--compare", action="store_true",
                        help="also run against Kafka 4.1.1, print ratios")
    parser.add_argument("--only", choices=sorted(BROKERS), help="one broker only")
    parser.add_argument("--security", default="plaintext", choices=["plaintext", "ssl", "sasl_ssl"],
                        help="the clients' listener (sasl_ssl: SCRAM-SHA-512)")
    args = parser.parse_args()
    args.size = [int(s) for s in args.size.split(",")]
    args.compression = args.compression.split(",")
    brokers = [args.only] if args.only else ["akfak", "kafka"] if args.kafka else ["akfak"]
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs")
    results = {}
    with tempfile.TemporaryDirectory(prefix="client-bench-") as tmp:
        for name in brokers:
            print(f"{name}:", flush=True)
            with BROKERS[name](Path(tmp) / name, args.storage, args.security.upper()) as target:
                results[name] = run(target, args)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print()
    print(table(results))


if __name__ == "__main__":
    main()
