"""SIGKILL soak: a broker on disk killed at random moments under load, restarted each time.

    .venv/bin/python benchmarks/soak.py --cycles 100          # the long run (README figures)
    .venv/bin/python benchmarks/soak.py --cycles 4 --min-seconds 1 --max-seconds 2   # CI

What runs, all with confluent-kafka and acks=all, across every kill and restart (the broker
comes back on the same port; clients reconnect by themselves):
- `soak-idem` (3 partitions): an idempotent producer; zero duplicates expected.
- `soak-plain` (3 partitions): a producer without idempotence (its retries may duplicate).
- `soak-compact` (2 partitions): an idempotent producer over 200 keys, on a compacted topic
  cleaned all the time (16 KiB segments, min.cleanable.dirty.ratio 0.01, 0.5 s cleaner
  backoff): the latest acknowledged value of every key must be the one the log ends with.
- `soak-retention` (2 partitions): retention.bytes 64 KiB on 16 KiB segments, checked every
  second: every acknowledged record at or past the log start offset must be there.
- a consumer group reading soak-idem and committing its offsets (synchronously, every 200
  records); after each restart the committed offsets are read back: never beyond the log
  end, never behind what a commit had acknowledged before.

Each cycle lets the load run for a random time, then SIGKILLs the broker and starts it again.
At the end the producers drain, the broker is killed once more and restarted, and every
topic is read back.  Prints per topic: acknowledged, lost, duplicated; and the offsets
checks.  Exit status 1 if anything acknowledged was lost, an idempotent producer
duplicated, or a committed offset went wrong.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.brokers import BrokerProcess, free_port, start_process  # noqa: E402

SMALL_SEGMENTS = {"segment.bytes": str(16 * 1024)}
TOPICS: dict[str, tuple[int, dict[str, str]]] = {
    "soak-idem": (3, {}),
    "soak-plain": (3, {}),
    "soak-compact": (2, {**SMALL_SEGMENTS, "cleanup.policy": "compact",
                         "min.cleanable.dirty.ratio": "0.01", "delete.retention.ms": "0",
                         "min.compaction.lag.ms": "0"}),
    "soak-retention": (2, {**SMALL_SEGMENTS, "retention.bytes": str(64 * 1024)}),
}
GROUP = "soak-group"
BROKER_OVERRIDES = ["log.cleaner.backoff.ms=500", "log.retention.check.interval.ms=1000",
                    "offsets.topic.num.partitions=3", "group.initial.rebalance.delay.ms=0"]
#: The ack a producer waits for may span a restart: long enough never to time out.
PRODUCER = {"acks": "all", "linger.ms": 5, "message.timeout.ms": 120000,
            "retry.backoff.ms": 100, "reconnect.backoff.max.ms": 500}

Acked = dict[bytes, tuple[int, int]]  # value -> (partition, offset)


@dataclass
class Load:
    """One producer thread: `topic`, values unique, acknowledged ones recorded."""

    name: str
    topic: str
    idempotent: bool
    keys: int | None = None
    #: Producer settings on top of PRODUCER.
    config: dict[str, Any] = field(default_factory=dict)
    acked: Acked = field(default_factory=dict)
    #: key -> (offset, value) of the latest acknowledged record, per partition and key.
    latest: dict[tuple[int, bytes], tuple[int, bytes]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    sent = 0

    def run(self, bootstrap: str, stop: threading.Event, rng: random.Random) -> None:
        producer = Producer({"bootstrap.servers": bootstrap, **PRODUCER, **self.config,
                             "enable.idempotence": self.idempotent})
        lock = threading.Lock()

        def report(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors[str(err.name())] += 1
                return
            with lock:
                self.acked[msg.value()] = (msg.partition(), msg.offset())
                if self.keys is not None:
                    key = (msg.partition(), msg.key())
                    if key not in self.latest or self.latest[key][0] < msg.offset():
                        self.latest[key] = (msg.offset(), msg.value())

        seq = 0
        while not stop.is_set():
            value = f"{self.name}:{seq}:".encode() + rng.randbytes(rng.randrange(50, 400))
            key = (b"k%d" % rng.randrange(self.keys)) if self.keys else None
            try:
                producer.produce(self.topic, value=value, key=key, on_delivery=report)
                seq += 1
            except BufferError:
                producer.poll(0.1)
                continue
            producer.poll(0)
            if seq % 50 == 0:
                time.sleep(0.01)
        self.sent = seq
        producer.flush(180)


@dataclass
class GroupMember:
    """A consumer in GROUP on soak-idem, committing synchronously every 200 records."""

    topic: str
    #: partition -> the highest offset a commit was acknowledged for.
    committed: dict[int, int] = field(default_factory=dict)
    commit_errors: int = 0
    consumed = 0

    def run(self, bootstrap: str, stop: threading.Event) -> None:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP,
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             "session.timeout.ms": 30000, "reconnect.backoff.max.ms": 500})
        consumer.subscribe([self.topic])
        since = 0
        while not stop.is_set():
            msgs = consumer.consume(200, 0.2)
            for msg in msgs:
                if msg.error() is None:
                    self.consumed += 1
                    since += 1
            if since >= 200:
                since = 0
                try:
                    for tp in consumer.commit(asynchronous=False) or []:
                        if tp.error is None and tp.offset >= 0:
                            self.committed[tp.partition] = max(
                                self.committed.get(tp.partition, -1), tp.offset)
                except KafkaException:
                    self.commit_errors += 1  # the broker was down: the next one goes
        consumer.close()


def start_broker(data_dir: Path, port: int, log_path: Path) -> BrokerProcess:
    # Each start recovers every segment written since the last recovery-point checkpoint
    # (written each minute): late in a long run on a loaded machine that took over 60 s.
    return start_process(data_dir, *(a for o in BROKER_OVERRIDES for a in ("--override", o)),
                         port=port, log_path=log_path, start_timeout=600)


def committed_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)],
                                 timeout=30)
        return {tp.partition: tp.offset for tp in got}
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "soak-reader"})
    try:
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                for p in range(partitions)}
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, partitions: int
             ) -> tuple[dict[int, list[tuple[int, bytes | None, bytes]]], dict[int, int]]:
    """Every record of `topic` by partition as (offset, key, value), and the log starts."""
    marks = end_offsets(bootstrap, topic, partitions)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "soak-reader",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, marks[p][0]) for p in range(partitions)])
    records: dict[int, list[tuple[int, bytes | None, bytes]]] = {p: [] for p in range(partitions)}
    position = {p: marks[p][0] for p in range(partitions)}
    deadline = time.monotonic() + 120
    while any(position[p] < marks[p][1] for p in position) and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.5):
            if msg.error() is not None:
                continue
            records[msg.partition()].append((msg.offset(), msg.key(), msg.value()))
            position[msg.partition()] = msg.offset() + 1
    consumer.close()
    return records, {p: marks[p][0] for p in range(partitions)}


@dataclass
class TopicResult:
    topic: str
    acknowledged: int
    lost: int
    duplicated: int
    note: str = ""


def check_topic(load: Load, records: dict[int, list[tuple[int, bytes | None, bytes]]],
                starts: dict[int, int]) -> TopicResult:
    counts = Counter(v for recs in records.values() for _, _, v in recs)
    at = {(p, o): v for p, recs in records.items() for o, _, v in recs}
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    if load.keys is not None:
        # Compacted: the latest acknowledged value of each key is the key's last in the log.
        last: dict[tuple[int, bytes | None], bytes] = {}
        for p, recs in records.items():
            for _, key, value in recs:
                last[(p, key)] = value
        lost = sum(1 for key, (_, value) in load.latest.items() if last.get(key) != value)
        return TopicResult(load.topic, len(load.acked), lost, duplicated,
                           f"{len(load.latest)} keys, {sum(map(len, records.values()))} "
                           "records left after cleaning")
    kept = {v: po for v, po in load.acked.items() if po[1] >= starts[po[0]]}
    lost = sum(1 for v, po in kept.items() if at.get(po) != v)
    note = (f"{len(load.acked) - len(kept)} deleted by retention"
            if len(kept) < len(load.acked) else "")
    return TopicResult(load.topic, len(load.acked), lost, duplicated, note)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="shortest run of the load between kills")
    parser.add_argument("--max-seconds", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="akfak-soak-"))
    data_dir, log_path, port = workdir / "data", workdir / "broker.log", free_port()
    print(f"soak: {args.cycles} cycles, seed {seed}, data in {workdir}", flush=True)
    broker = start_broker(data_dir, port, log_path)
    bootstrap = broker.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, n, 1, config=config)
                                       for name, (n, config) in TOPICS.items()]).values():
        future.result(30)
    small_batches = {"batch.size": 8192}  # a batch must fit a 16 KiB segment
    loads = [Load("idem", "soak-idem", True), Load("plain", "soak-plain", False),
             Load("compact", "soak-compact", True, keys=200, config=small_batches),
             Load("retention", "soak-retention", True, config=small_batches)]
    member = GroupMember("soak-idem")
    stop = threading.Event()
    threads = [threading.Thread(target=load.run, args=(bootstrap, stop, random.Random(rng.random())),
                                daemon=True) for load in loads]
    threads.append(threading.Thread(target=member.run, args=(bootstrap, stop), daemon=True))
    for thread in threads:
        thread.start()

    offset_problems: list[str] = []
    last_seen: dict[int, int] = {}
    started = time.monotonic()
    try:
        for cycle in range(1, args.cycles + 1):
            time.sleep(rng.uniform(args.min_seconds, args.max_seconds))
            before = dict(member.committed)
            broker.stop(signal.SIGKILL)
            broker = start_broker(data_dir, port, log_path)
            offset_problems += check_offsets(bootstrap, before, last_seen)
            acked = sum(len(load.acked) for load in loads)
            print(f"cycle {cycle}/{args.cycles}: killed and restarted, {acked} records "
                  f"acknowledged so far", flush=True)
        stop.set()
        for thread in threads:
            thread.join(240)
        broker.stop(signal.SIGKILL)
        broker = start_broker(data_dir, port, log_path)
        offset_problems += check_offsets(bootstrap, dict(member.committed), last_seen)
        results = []
        for load in loads:
            records, starts = read_all(bootstrap, load.topic, TOPICS[load.topic][0])
            results.append(check_topic(load, records, starts))
        ends = end_offsets(bootstrap, "soak-idem", 3)
        final = committed_offsets(bootstrap, "soak-idem", 3)
        for p, offset in final.items():
            if offset > ends[p][1]:
                offset_problems.append(f"partition {p}: committed {offset} beyond the log end "
                                       f"{ends[p][1]}")
    finally:
        stop.set()
        broker.stop()
    elapsed = time.monotonic() - started

    print(f"\n{args.cycles} SIGKILL cycles in {elapsed:.0f} s (seed {seed})\n")
    print("| topic | acknowledged | lost | duplicated | notes |")
    print("| --- | ---: | ---: | ---: | --- |")
    for r in results:
        print(f"| {r.topic} | {r.acknowledged} | {r.lost} | {r.duplicated} | {r.note} |")
    print(f"\ngroup {GROUP}: {member.consumed} records consumed, committed offsets "
          f"{dict(sorted(final.items()))}, {member.commit_errors} commits failed while the "
          f"broker was down; offsets checks: {offset_problems or 'ok'}")
    unacked = {load.name: dict(load.errors) for load in loads if load.errors}
    if unacked:
        print(f"records not acknowledged (client errors): {unacked}")
    failed = (any(r.lost for r in results) or offset_problems
              or any(r.duplicated for r, load in zip(results, loads, strict=True)
                     if load.idempotent))
    if "Traceback" in log_path.read_text(errors="replace"):
        print(f"the broker logged a traceback: see {log_path}")
        failed = True
    print("FAILED" if failed else "OK")
    if not failed and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def check_offsets(bootstrap: str, acknowledged: dict[int, int],
                  last_seen: dict[int, int]) -> list[str]:
    """After a restart: each committed offset is within the log, not behind an acknowledged
    commit, and not behind what the previous check saw."""
    problems = []
    committed = committed_offsets(bootstrap, "soak-idem", 3)
    ends = end_offsets(bootstrap, "soak-idem", 3)
    for p, offset in committed.items():
        if offset > ends[p][1]:
            problems.append(f"partition {p}: committed {offset} beyond the log end {ends[p][1]}")
        # A partition with no commit reads back as OFFSET_INVALID (-1001): a loss only when a
        # commit to it was acknowledged or seen before.
        if p in acknowledged and offset < acknowledged[p]:
            problems.append(f"partition {p}: committed {offset} behind the acknowledged commit "
                            f"of {acknowledged[p]}")
        if p in last_seen and offset < last_seen[p]:
            problems.append(f"partition {p}: committed {offset} went back from {last_seen[p]}")
        if offset >= 0:
            last_seen[p] = max(last_seen.get(p, offset), offset)
    return problems


if __name__ == "__main__":
    sys.exit(main())
