"""Share groups: 4 Java KafkaShareConsumers on one partition, against akfak and a real Apache Kafka
4.1.1 broker, in one run.

    .venv/bin/python benchmarks/share_bench.py [--records 200000] [--only akfak|kafka] [--quick]

Each broker runs alone (akfak as a subprocess on on-disk storage in a temporary directory, then
Kafka from tests/kafka_peer.py; both need java and mvn for the consumers, tests/java
ShareConsumers) and gets the same workload: `share.version=1` finalized, a one-partition topic
filled by confluent-kafka with 100-byte records, then 4 share consumers of one group
(`share.auto.offset.reset=earliest`, explicit acknowledgement, every record accepted, committed
after each poll) until every record was delivered.  The figure is records/s from the first
delivery to the last (joining the group and the first assignment not counted, shown apart).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import jvm  # noqa: E402
from tests.brokers import start_process  # noqa: E402

CONSUMERS = 4
VALUE = b"v" * 100


@contextmanager
def akfak_broker(tmp: Path) -> Iterator[str]:
    broker = start_process(tmp / "akfak-data", "--storage", "disk",
                           "-o", "offsets.topic.num.partitions=3",
                           "-o", "share.coordinator.state.topic.num.partitions=3")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@contextmanager
def kafka_broker(tmp: Path) -> Iterator[str]:
    import pytest

    from tests.kafka_peer import start_kafka
    try:
        peer = start_kafka(tmp / "kafka",
                           properties={"share.coordinator.state.topic.num.partitions": "3"})
    except (pytest.skip.Exception, pytest.fail.Exception) as e:
        raise SystemExit(f"cannot start Kafka 4.1.1 (use --only akfak): {e}") from None
    try:
        yield peer.bootstrap
    finally:
        peer.stop()


BROKERS: dict[str, Callable[[Path], AbstractContextManager[str]]] = {
    "akfak": akfak_broker, "kafka": kafka_broker}


def share_consumers(classpath: str, bootstrap: str, *args: str) -> dict[str, object]:
    command = jvm.java_command(classpath, "akfak.tests.ShareConsumers", bootstrap, "topic=bench",
                               "group=bench", *args)
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=600)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines or lines[-1]["kind"] != "done":
        raise SystemExit(f"ShareConsumers failed ({done.returncode}): {done.stdout[-2000:]}"
                         f"{done.stderr[-4000:]}")
    return lines[-1]


def run(classpath: str, bootstrap: str, records: int) -> tuple[float, float]:
    """(records/s, seconds to the first delivery)."""
    share_consumers(classpath, bootstrap, "setup=true", "records=0", "consumers=1", "expect=0")
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all",
                         "queue.buffering.max.kbytes": 1 << 20})
    for i in range(records):
        while True:
            try:
                producer.produce("bench", value=VALUE, key=b"%d" % i)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0
    done = share_consumers(classpath, bootstrap, f"consumers={CONSUMERS}", "mode=accept",
                           f"expect={records}", "quiet=true", "idle-ms=10000",
                           "timeout-ms=600000")
    assert done["deliveries"] == records, done
    span = max(int(done["spanMs"]), 1) / 1000  # type: ignore[call-overload]
    return records / span, int(done["firstMs"]) / 1000  # type: ignore[call-overload]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, help="records (default 200000; --quick 2000)")
    parser.add_argument("--only", choices=sorted(BROKERS), help="run against one broker only")
    parser.add_argument("--quick", action="store_true", help="a smoke test, not a measurement")
    args = parser.parse_args()
    records = args.records or (2000 if args.quick else 200_000)
    classpath = jvm.build()
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="share-bench-") as tmp:
        for name in [args.only] if args.only else list(BROKERS):
            started = time.perf_counter()
            with BROKERS[name](Path(tmp)) as bootstrap:
                results[name] = run(classpath, bootstrap, records)
            print(f"{name}: {time.perf_counter() - started:.1f} s", flush=True)
    print()
    print(f"| {CONSUMERS} share consumers, 1 partition, {records} x 100 B | records/s "
          "| first delivery after |")
    print("| --- | ---: | ---: |")
    for name, (rate, first) in results.items():
        print(f"| {name} | {rate:,.0f} | {first:.1f} s |")
    if len(results) == 2:
        print(f"| akfak / Kafka | {results['akfak'][0] / results['kafka'][0]:.2f} | |")


if __name__ == "__main__":
    main()
