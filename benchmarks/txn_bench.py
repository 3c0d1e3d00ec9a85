"""Transactions: confluent-kafka against akfak and a real Apache Kafka 4.1.1 broker, in one run.

    .venv/bin/python benchmarks/txn_bench.py [--records 100000] [--only akfak|kafka] [--quick]

Each broker runs alone (akfak as a subprocess on on-disk storage in a temporary directory, then
Kafka from tests/kafka_peer.py, which needs java and mvn) and gets the same workload:

- produce, 1 KiB and 100 B values over 3 partitions: idempotent without transactions, then
  transactional with 100 and with 1,000 records per transaction, then 100 per transaction with
  every 10th transaction aborted (flushed before the abort, so the aborted records are in the log);
- fetch from the beginning of those topics, read_uncommitted and read_committed (which skips the
  aborted tenth);
- small transactions, one record each: commits/s and the mean begin-to-commit time.

Prints one table: msg/s and MiB/s (of values) for each broker and the ratio akfak/Kafka. Each
produce figure counts from the first record to the last delivery (connecting and
init_transactions not counted); a fetch figure is the mean of three passes over the topic by one
consumer, re-assigned to offset 0 after each (one pass with --quick), after an untimed first pass.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.brokers import start_process  # noqa: E402

MIB = 1 << 20
PARTITIONS = 3
SIZES = (1024, 100)
ABORT_EVERY = 10
PRODUCER = {"acks": "all", "linger.ms": 5, "enable.idempotence": True,
            "queue.buffering.max.kbytes": 1 << 20}
# fetch.wait.max.ms: a pass ends with a long poll at the end of the log, which the next pass
# (re-assigned to offset 0) would wait out (500 ms by default) before its first fetch
CONSUMER = {"group.id": "txn-bench", "enable.auto.commit": False, "fetch.max.bytes": 50 * MIB,
            "max.partition.fetch.bytes": 10 * MIB, "fetch.wait.max.ms": 10}


@dataclass
class Figure:
    name: str
    messages: int
    value_bytes: int
    seconds: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def mib_rate(self) -> float:
        return self.value_bytes / MIB / self.seconds


@contextmanager
def akfak_broker(tmp: Path) -> Iterator[str]:
    # internal topics sized as tests/kafka_peer.py sizes Kafka's
    broker = start_process(tmp / "akfak-data", "--storage", "disk",
                           "-o", "offsets.topic.num.partitions=3",
                           "-o", "transaction.state.log.num.partitions=3")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@contextmanager
def kafka_broker(tmp: Path) -> Iterator[str]:
    import pytest

    from tests.kafka_peer import start_kafka
    try:
        peer = start_kafka(tmp / "kafka")
    except (pytest.skip.Exception, pytest.fail.Exception) as e:
        raise SystemExit(f"cannot start Kafka 4.1.1 (use --only akfak): {e}") from None
    try:
        yield peer.bootstrap
    finally:
        peer.stop()


BROKERS: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "akfak": akfak_broker, "kafka": kafka_broker}


def create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
    for future in futures.values():
        future.result(30)
    # wait until every partition has a leader, so the first produce does not time the election
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=10).topics
        if all(name in topics and len(topics[name].partitions) == PARTITIONS
               and all(p.leader >= 0 for p in topics[name].partitions.values()) for name in names):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topics {names} have no leaders after 30 s")


def send(producer: Producer, topic: str, value: bytes, i: int) -> None:
    while True:
        try:
            producer.produce(topic, value, partition=i % PARTITIONS)
            return
        except BufferError:
            producer.poll(0.01)


def flush(producer: Producer) -> None:
    if producer.flush(300) != 0:
        raise RuntimeError("not every record was delivered")


class Failures:
    """Delivery callback that remembers the first delivery error."""

    def __init__(self) -> None:
        self.error: object = None

    def __call__(self, err: object, _msg: object) -> None:
        if err is not None and self.error is None:
            self.error = err

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"delivery failed: {self.error}")


def produce_idempotent(bootstrap: str, topic: str, records: int, value: bytes) -> float:
    failures = Failures()
    producer = Producer({**PRODUCER, "bootstrap.servers": bootstrap, "on_delivery": failures})
    # connected, with a producer id, before the clock starts (as init_transactions does for the others)
    producer.produce("prime", b"")
    producer.flush(60)
    start = time.perf_counter()
    for i in range(records):
        send(producer, topic, value, i)
    flush(producer)
    elapsed = time.perf_counter() - start
    failures.check()
    return elapsed


def produce_transactional(bootstrap: str, topic: str, records: int, value: bytes, per_txn: int,
                          abort_every: int = 0) -> tuple[float, int]:
    """Returns the time taken and the number of records committed."""
    failures = Failures()
    producer = Producer({**PRODUCER, "bootstrap.servers": bootstrap, "on_delivery": failures,
                         "transactional.id": f"bench-{topic}-{per_txn}-{time.monotonic_ns()}"})
    producer.init_transactions(60)
    committed = 0
    start = time.perf_counter()
    for n, first in enumerate(range(0, records, per_txn), start=1):
        producer.begin_transaction()
        last = min(first + per_txn, records)
        for i in range(first, last):
            send(producer, topic, value, i)
        if abort_every and n % abort_every == 0:
            # deliver first: abort_transaction purges what is still queued, and the point is to
            # have aborted records in the log for read_committed to skip
            flush(producer)
            producer.abort_transaction(60)
        else:
            producer.commit_transaction(60)
            committed += last - first
    elapsed = time.perf_counter() - start
    failures.check()
    return elapsed, committed


def read_pass(consumer: Consumer, topic: str, expected: int) -> None:
    """Reads the topic from offset 0 of every partition until `expected` records have come."""
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    seen = 0
    last_progress = time.monotonic()
    while seen < expected:
        # never ask for more than is left: consume() waits for the count or the timeout
        messages = consumer.consume(min(10_000, expected - seen), timeout=1)
        for message in messages:
            if message.error() is not None:
                raise KafkaException(message.error())
        seen += len(messages)
        if messages:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > 30:
            raise RuntimeError(f"{topic}: {seen} records, expected {expected}")


def consume(bootstrap: str, topic: str, expected: int, isolation: str, passes: int) -> float:
    """Seconds per pass over the topic, the mean of `passes` passes on one consumer after a first,
    untimed one that also checks that no more than `expected` records come."""
    consumer = Consumer({**CONSUMER, "bootstrap.servers": bootstrap, "isolation.level": isolation})
    try:
        read_pass(consumer, topic, expected)
        extra = [m for m in consumer.consume(10_000, timeout=0.3) if m.error() is None]
        if extra:
            raise RuntimeError(f"{topic} {isolation}: {len(extra)} records more than {expected}")
        start = time.perf_counter()
        for _ in range(passes):
            read_pass(consumer, topic, expected)
        return (time.perf_counter() - start) / passes
    finally:
        consumer.close()


def run(bootstrap: str, records: int, small: int, fetch_passes: int,
        log: Callable[[str], None]) -> list[Figure]:
    topics = [f"{kind}-{size}" for size in SIZES for kind in ("idem", "txn100", "txn1000", "aborted")]
    create_topics(bootstrap, [*topics, "prime", "warmup", "small"])
    figures: list[Figure] = []

    def add(figure: Figure) -> None:
        figures.append(figure)
        log(f"  {figure.name:52} {figure.rate:10.0f} msg/s {figure.mib_rate:8.1f} MiB/s {figure.note}")

    # the same warm-up on both brokers (the JVM's JIT, Python's caches, the page cache)
    warm = max(records // 10, 500)
    produce_idempotent(bootstrap, "warmup", warm, b"w" * 512)
    produce_transactional(bootstrap, "warmup", warm, b"w" * 512, 100)
    consume(bootstrap, "warmup", 2 * warm, "read_committed", 1)

    for size in SIZES:
        value = b"x" * size
        total = records * size
        add(Figure(f"produce {size} B idempotent, no txn", records, total,
                   produce_idempotent(bootstrap, f"idem-{size}", records, value)))
        for per_txn in (100, 1000):
            elapsed, _ = produce_transactional(bootstrap, f"txn{per_txn}-{size}", records, value, per_txn)
            add(Figure(f"produce {size} B txn, {per_txn}/txn", records, total, elapsed))
        elapsed, committed_aborted = produce_transactional(bootstrap, f"aborted-{size}", records, value, 100,
                                                           abort_every=ABORT_EVERY)
        add(Figure(f"produce {size} B txn, 100/txn, 1 in {ABORT_EVERY} aborted", records, total, elapsed))
        for topic, committed in ((f"txn100-{size}", records), (f"aborted-{size}", committed_aborted)):
            label = "committed txns" if topic.startswith("txn") else f"1 in {ABORT_EVERY} txns aborted"
            for isolation in ("read_uncommitted", "read_committed"):
                expected = committed if isolation == "read_committed" else records
                add(Figure(f"fetch {size} B {label}, {isolation}", expected, expected * size,
                           consume(bootstrap, topic, expected, isolation, fetch_passes)))
    elapsed, _ = produce_transactional(bootstrap, "small", small, b"x" * 100, 1)
    add(Figure("commits/s, 1 x 100 B record/txn", small, small * 100, elapsed,
               f"({1000 * elapsed / small:.2f} ms per txn)"))
    return figures


def table(results: dict[str, list[Figure]]) -> str:
    names = [f.name for f in next(iter(results.values()))]
    by = {broker: {f.name: f for f in figures} for broker, figures in results.items()}
    head = ["benchmark"]
    for broker in results:
        head += [f"{broker} msg/s", f"{broker} MiB/s"]
    both = "akfak" in by and "kafka" in by
    if both:
        head.append("akfak/kafka")
    rows = [head, ["---"] * len(head)]
    for name in names:
        row = [name]
        for broker in results:
            f = by[broker][name]
            row += [f"{f.rate:,.0f}", f"{f.mib_rate:.1f}"]
        if both:
            row.append(f"{by['akfak'][name].rate / by['kafka'][name].rate:.2f}")
        rows.append(row)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, help="records per produce run (default 100000; --quick 1000)")
    parser.add_argument("--only", choices=sorted(BROKERS), help="run against one broker only")
    parser.add_argument("--quick", action="store_true", help="a few seconds: a smoke test, not a measurement")
    args = parser.parse_args()
    records = args.records or (1000 if args.quick else 100_000)
    small = 20 if args.quick else 2000
    brokers = [args.only] if args.only else list(BROKERS)
    results: dict[str, list[Figure]] = {}
    with tempfile.TemporaryDirectory(prefix="txn-bench-") as tmp:
        for name in brokers:
            print(f"{name}: {records} records per produce run, {small} small transactions", flush=True)
            started = time.perf_counter()
            with BROKERS[name](Path(tmp)) as bootstrap:
                results[name] = run(bootstrap, records, small, 1 if args.quick else 3,
                                    lambda line: print(line, flush=True))
            print(f"{name}: {time.perf_counter() - started:.1f} s", flush=True)
    print()
    print(table(results))


if __name__ == "__main__":
    main()
