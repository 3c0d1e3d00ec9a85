"""A consume-transform-produce worker with exactly-once semantics (confluent-kafka).

Run by tests/test_transactions_clients.py as a subprocess, which kills it with SIGKILL
and starts it again with the same transactional id::

    python tests/txn_worker.py BOOTSTRAP INPUT OUTPUT GROUP TRANSACTIONAL_ID END_OFFSETS

It consumes INPUT in GROUP (isolation.level=read_committed, no auto commit) and, for each
batch, in one transaction: produces b"out:" + value with the same key to the same partition
of OUTPUT, sends the consumer's positions as the group's offsets
(`send_offsets_to_transaction`) and commits.  END_OFFSETS is a comma-separated list of the
input's end offsets, one per partition: once the group's committed offsets reach them the
worker exits 0.  It prints `ready` when it is assigned partitions and `commit N` after each
committed transaction of N records; any error raises (exit 1).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

#: Records per transaction at most, and a pause inside each transaction: together they keep
#: the worker busy long enough for the test's kills to land, mostly inside a transaction.
BATCH = int(os.environ.get("TXN_WORKER_BATCH", "50"))
PAUSE_S = float(os.environ.get("TXN_WORKER_PAUSE_S", "0.03"))
DEADLINE_S = 120.0
TIMEOUT_S = 30.0


def main(bootstrap: str, source: str, sink: str, group: str, transactional_id: str, ends: str) -> int:
    end_offsets = [int(e) for e in ends.split(",")]
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                         "transaction.timeout.ms": 20_000, "linger.ms": 2,
                         "socket.timeout.ms": 10_000})
    # First: fence any earlier incarnation and have its open transaction aborted, so that its
    # pending offsets do not hold up the consumer's (require_stable) committed offset fetch.
    producer.init_transactions(TIMEOUT_S)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 2000,
                         "heartbeat.interval.ms": 200, "socket.timeout.ms": 10_000})

    def assigned(_consumer: Any, partitions: list[TopicPartition]) -> None:
        if partitions:
            print("ready", flush=True)

    consumer.subscribe([source], on_assign=assigned)
    everything = [TopicPartition(source, p) for p in range(len(end_offsets))]
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            messages = consumer.consume(BATCH, 0.2)
            for message in messages:
                if message.error() is not None:
                    raise KafkaException(message.error())
            if not messages:
                if len(consumer.assignment()) == len(end_offsets):
                    committed = consumer.committed(everything, TIMEOUT_S)
                    if [tp.offset for tp in committed] == end_offsets:
                        print("done", flush=True)
                        return 0
                continue
            producer.begin_transaction()
            for message in messages:
                while True:
                    try:
                        producer.produce(sink, key=message.key(), value=b"out:" + message.value(),
                                         partition=message.partition())
                        break
                    except BufferError:
                        producer.poll(0.05)
            time.sleep(PAUSE_S)
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), TIMEOUT_S)
            producer.commit_transaction(TIMEOUT_S)
            print(f"commit {len(messages)}", flush=True)
        print("deadline passed", file=sys.stderr, flush=True)
        return 2
    finally:
        consumer.close()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
