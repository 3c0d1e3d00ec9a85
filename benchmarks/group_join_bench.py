"""How long a new member of a KIP-848 consumer group waits for its first partition,
akfak against Kafka 4.1.1 in one run (confluent-kafka, `group.protocol=consumer`).

    .venv/bin/python benchmarks/group_join_bench.py [--rounds 5] [--partitions 6]
        [--heartbeat-ms 5000] [--only akfak|kafka]

One member owns every partition of a topic; then, each round, a second member subscribes and
the time from its subscribe() to the first partition it is given is measured; it then leaves
and the first member takes everything back before the next round.  The new member waits for
the first one to revoke what moves, which it learns at its next heartbeat: the figure is
dominated by `group.consumer.heartbeat.interval.ms` (Kafka's default 5 s; `--heartbeat-ms`
sets it, and the minimum, on both brokers), the broker's own work being small beside it.
Prints min / median / max per broker, and the ratio akfak/Kafka of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.brokers import start_process  # noqa: E402

DEADLINE_S = 120.0


def settings(heartbeat_ms: int) -> dict[str, str]:
    return {"group.consumer.heartbeat.interval.ms": str(heartbeat_ms),
            "group.consumer.min.heartbeat.interval.ms": str(min(heartbeat_ms, 5000))}


@contextmanager
def akfak_broker(tmp: Path, heartbeat_ms: int) -> Iterator[str]:
    overrides = [arg for key, value in settings(heartbeat_ms).items() for arg in ("-o", f"{key}={value}")]
    broker = start_process(tmp / "akfak", *overrides)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@contextmanager
def kafka_broker(tmp: Path, heartbeat_ms: int) -> Iterator[str]:
    import pytest

    from tests.kafka_peer import start_kafka
    try:
        peer = start_kafka(tmp / "kafka", properties=settings(heartbeat_ms))
    except (pytest.skip.Exception, pytest.fail.Exception) as e:
        raise SystemExit(f"cannot start Kafka 4.1.1: {e}") from None
    try:
        yield peer.bootstrap
    finally:
        peer.stop()


BROKERS: dict[str, Callable[[Path, int], AbstractContextManager[str]]] = {
    "akfak": akfak_broker, "kafka": kafka_broker}


class Member:
    """A consumer polled on a thread of its own; `owned` follows its assignment."""

    def __init__(self, bootstrap: str, topic: str, group: str):
        self.owned: set[int] = set()
        self.first_partition_at: float | None = None
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                  "group.protocol": "consumer", "enable.auto.commit": False})
        self.stopping = threading.Event()
        self.started_at = time.perf_counter()
        self.consumer.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _assigned(self, _consumer: Any, partitions: list[Any]) -> None:
        if partitions and self.first_partition_at is None:
            self.first_partition_at = time.perf_counter()
        self.owned |= {p.partition for p in partitions}

    def _revoked(self, _consumer: Any, partitions: list[Any]) -> None:
        self.owned -= {p.partition for p in partitions}

    def _poll(self) -> None:
        while not self.stopping.is_set():
            self.consumer.poll(0.02)
        self.consumer.close()

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(30)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > end:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


def measure(bootstrap: str, rounds: int, partitions: int) -> list[float]:
    topic, group = "join-bench", "join-bench"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)
    everything = set(range(partitions))
    first = Member(bootstrap, topic, group)
    times = []
    try:
        wait_for(lambda: first.owned == everything, "the first member's assignment")
        for _ in range(rounds):
            second = Member(bootstrap, topic, group)
            try:
                wait_for(lambda member=second: member.first_partition_at is not None,
                         "the new member's first partition")
                assert second.first_partition_at is not None
                times.append(second.first_partition_at - second.started_at)
            finally:
                second.close()
            wait_for(lambda: first.owned == everything, "the first member taking everything back")
    finally:
        first.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--heartbeat-ms", type=int, default=5000)
    parser.add_argument("--only", choices=sorted(BROKERS))
    args = parser.parse_args()
    names = [args.only] if args.only else ["akfak", "kafka"]
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="akfak-join-bench-") as tmp:
        for name in names:
            with BROKERS[name](Path(tmp), args.heartbeat_ms) as bootstrap:
                results[name] = measure(bootstrap, args.rounds, args.partitions)
    print(f"first partition of a new member, {args.partitions} partitions, heartbeat interval "
          f"{args.heartbeat_ms} ms, {args.rounds} rounds (seconds)")
    print("| broker | min | median | max |")
    print("|---|---|---|---|")
    for name, times in results.items():
        print(f"| {name} | {min(times):.3f} | {statistics.median(times):.3f} | {max(times):.3f} |")
    if len(results) == 2:
        ratio = statistics.median(results["akfak"]) / statistics.median(results["kafka"])
        print(f"median akfak/Kafka: {ratio:.2f}")


if __name__ == "__main__":
    main()
