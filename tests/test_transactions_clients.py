"""Transactions (KIP-98, KIP-447) with real clients against broker subprocesses (disk storage).

- Transactional producers of confluent-kafka, aiokafka and kafka-python each run three
  transactions over 3 partitions (commit, abort, commit); read_committed consumers of all
  three libraries see exactly the committed records, read_uncommitted ones see the aborted
  records too, no client ever hands the application a control record, and every partition's
  end offset counts the data records and the COMMIT/ABORT markers.  kcat agrees.
- Fencing: a second producer with the same transactional id fences the first, whose commit
  fails fatally; the fenced records never become visible to read_committed.
- Consume-transform-produce exactly once: a worker subprocess (tests/txn_worker.py) killed
  with SIGKILL at random points and restarted with the same transactional id.
- A broker killed with SIGKILL with a transaction open: after the restart the coordinator
  aborts it on its timeout, the last stable offset reaches the end, and a transaction
  committed before the kill is fully visible.
- Offsets sent with a transaction: visible once committed, unchanged by an abort, and
  UNSTABLE_OFFSET_COMMIT for an OffsetFetch with require_stable while pending.

The layout of a partition after transactions of n records each: the records of
transaction t at offsets t*(n+1) .. t*(n+1)+n-1, its marker at t*(n+1)+n.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kio.schema.errors import ErrorCode
from kio.static.primitive import i32

from tests.brokers import BrokerProcess
from tests.clients import KCAT, LIBRARIES, _Loop, create_topic, poll_until, requires_kcat, running_broker
from tests.recordbatch import ParsedBatch, parse_batch_list
from tests.requests import _module, build, fetch, list_offsets
from tests.wire import WireClient

T = TypeVar("T")

PARTITIONS = 3
#: Records per partition in each transaction of the commit/abort/commit plan.
PER_TXN = 20
#: The plan of the first tests: three transactions, the second aborted.
PLAN = (True, False, True)
TIMEOUT_S = 30.0
BROKER_OVERRIDES = (
    f"num.partitions={PARTITIONS}",
    "group.initial.rebalance.delay.ms=0",
    "group.min.session.timeout.ms=1000",
    "offsets.topic.num.partitions=5",
    "transaction.state.log.num.partitions=5",
)
READ_COMMITTED = "read_committed"
READ_UNCOMMITTED = "read_uncommitted"
ISOLATIONS = (READ_COMMITTED, READ_UNCOMMITTED)
#: Control record types (the second int16 of a control record's key).
ABORT, COMMIT = 0, 1
#: How confluent-kafka reports a fenced producer: librdkafka's own code, or the broker's.
FENCED_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}

#: (partition, offset, key, value)
Row = tuple[int, int, bytes | None, bytes | None]
#: partition -> [(offset, key, value)]
View = dict[int, list[tuple[int, bytes | None, bytes | None]]]


def broker_args(*extra: str) -> list[str]:
    args: list[str] = []
    for override in (*BROKER_OVERRIDES, *extra):
        args += ["-o", override]
    return args


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """One broker (disk storage) for the tests that do not restart it; each has its own ids."""
    with running_broker(Path(tmp_path_factory.mktemp("txn")) / "data", *broker_args()) as broker:
        yield broker


def bounded(fn: Callable[[], T], timeout: float = TIMEOUT_S, what: str = "call") -> T:
    """`fn()` in a thread, failing after `timeout` (kafka-python's transactional calls have none)."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # re-raised in the caller
            error.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"{what} did not return within {timeout}s")
    if error:
        raise error[0]
    return result[0]


# --------------------------------------------------------------------------------------------
# Transactional producers of the three libraries, behind one blocking interface


class TxnProducer(Protocol):
    def begin(self) -> None: ...

    def send(self, topic: str, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        """Send (partition, key, value) rows in the open transaction; wait until all are acked."""

    def commit(self) -> None: ...

    def abort(self) -> None: ...

    def close(self) -> None: ...


class ConfluentTxnProducer:
    def __init__(self, bootstrap: str, transactional_id: str, **config: Any):
        self.client = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id,
                                "socket.timeout.ms": 10_000, "linger.ms": 5, **config})
        self.client.init_transactions(TIMEOUT_S)

    def begin(self) -> None:
        self.client.begin_transaction()

    def send(self, topic: str, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        errors: list[Any] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                errors.append(error)

        for partition, key, value in rows:
            self.client.produce(topic, key=key, value=value, partition=partition, on_delivery=delivered)
        # Flushed before an abort too: abort_transaction() would purge unsent records.
        assert self.client.flush(TIMEOUT_S) == 0, "confluent-kafka: records left undelivered"
        assert errors == [], f"confluent-kafka: delivery failed: {errors[:3]}"

    def commit(self) -> None:
        self.client.commit_transaction(TIMEOUT_S)

    def abort(self) -> None:
        self.client.abort_transaction(TIMEOUT_S)

    def close(self) -> None:
        self.client.purge()
        with contextlib.suppress(KafkaException):  # a fenced producer raises its fatal error again
            self.client.flush(1)


class KafkaPythonTxnProducer:
    def __init__(self, bootstrap: str, transactional_id: str):
        import kafka

        self.client = kafka.KafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id,
                                          request_timeout_ms=10_000, max_block_ms=int(TIMEOUT_S * 1000))
        bounded(self.client.init_transactions, what="kafka-python init_transactions")

    def begin(self) -> None:
        self.client.begin_transaction()

    def send(self, topic: str, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        futures = [self.client.send(topic, key=key, value=value, partition=partition)
                   for partition, key, value in rows]
        self.client.flush(TIMEOUT_S)
        for future in futures:
            future.get(TIMEOUT_S)

    def commit(self) -> None:
        bounded(self.client.commit_transaction, what="kafka-python commit_transaction")

    def abort(self) -> None:
        bounded(self.client.abort_transaction, what="kafka-python abort_transaction")

    def close(self) -> None:
        self.client.close(timeout=5)


class AiokafkaTxnProducer:
    def __init__(self, bootstrap: str, transactional_id: str):
        import aiokafka

        self.loop = _Loop()

        async def start() -> Any:
            client = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id,
                                               request_timeout_ms=10_000)
            try:
                await client.start()  # InitProducerId for the transactional id
            except BaseException:
                await client.stop()
                raise
            return client

        try:
            self.client = self.loop.run(start(), TIMEOUT_S)
        except BaseException:
            self.loop.close()
            raise

    def begin(self) -> None:
        self.loop.run(self.client.begin_transaction(), TIMEOUT_S)

    def send(self, topic: str, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        import asyncio

        async def send_all() -> None:
            futures = [await self.client.send(topic, key=key, value=value, partition=partition)
                       for partition, key, value in rows]
            await asyncio.gather(*futures)

        self.loop.run(send_all(), TIMEOUT_S)

    def commit(self) -> None:
        self.loop.run(self.client.commit_transaction(), TIMEOUT_S)

    def abort(self) -> None:
        self.loop.run(self.client.abort_transaction(), TIMEOUT_S)

    def close(self) -> None:
        try:
            self.loop.run(self.client.stop(), 10)
        finally:
            self.loop.close()


TXN_PRODUCERS: dict[str, Callable[[str, str], TxnProducer]] = {
    "confluent-kafka": ConfluentTxnProducer,
    "kafka-python": KafkaPythonTxnProducer,
    "aiokafka": AiokafkaTxnProducer,
}


@contextmanager
def txn_producer(library: str, bootstrap: str, transactional_id: str) -> Iterator[TxnProducer]:
    producer = TXN_PRODUCERS[library](bootstrap, transactional_id)
    try:
        yield producer
    finally:
        producer.close()


def txn_rows(tag: str, txn: int, n: int = PER_TXN) -> list[tuple[int, bytes, bytes]]:
    """n records for each partition, interleaved over the partitions as a client would send them."""
    return [(p, f"k-{p}-{txn}-{i}".encode(), f"{tag}|txn{txn}|p{p}|{i}".encode())
            for i in range(n) for p in range(PARTITIONS)]


def run_plan(producer: TxnProducer, topic: str, tag: str, plan: Sequence[bool] = PLAN) -> None:
    for txn, commit in enumerate(plan):
        producer.begin()
        producer.send(topic, txn_rows(tag, txn))
        if commit:
            producer.commit()
        else:
            producer.abort()


def txn_view(tag: str, txn: int, n: int = PER_TXN) -> View:
    """Transaction number `txn` of a partition's sequence: its records at their offsets."""
    view: View = {p: [] for p in range(PARTITIONS)}
    for p, key, value in txn_rows(tag, txn, n):
        view[p].append((txn * (n + 1) + int(key.rsplit(b"-", 1)[1]), key, value))
    return view


def joined(*views: View) -> View:
    return {p: [row for view in views for row in view[p]] for p in range(PARTITIONS)}


def expected_view(tag: str, plan: Sequence[bool], *, committed_only: bool, n: int = PER_TXN) -> View:
    """What a consumer reads of each partition after `plan` (see the module's docstring)."""
    return joined(*(txn_view(tag, txn, n) for txn, commit in enumerate(plan) if commit or not committed_only))


# --------------------------------------------------------------------------------------------
# Consumers of all three partitions, each library, either isolation level


class TopicReader(Protocol):
    def poll(self, timeout: float) -> list[Row]: ...

    def end_offsets(self) -> list[int]:
        """ListOffsets latest at the consumer's isolation level: the HW, or the LSO."""

    def close(self) -> None: ...


class ConfluentReader:
    def __init__(self, bootstrap: str, topic: str, isolation: str):
        self.topic = topic
        self.client = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"),
                                "enable.auto.commit": False, "isolation.level": isolation,
                                "socket.timeout.ms": 10_000})
        self.client.list_topics(topic, timeout=10)
        self.client.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])

    def poll(self, timeout: float) -> list[Row]:
        rows = []
        for m in self.client.consume(10_000, timeout):
            if m.error() is not None:
                raise KafkaException(m.error())
            rows.append((m.partition(), m.offset(), m.key(), m.value()))
        return rows

    def end_offsets(self) -> list[int]:
        return [self.client.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10, cached=False)[1]
                for p in range(PARTITIONS)]

    def close(self) -> None:
        self.client.close()


class KafkaPythonReader:
    def __init__(self, bootstrap: str, topic: str, isolation: str):
        import kafka

        self.tps = [kafka.TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.client = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                          enable_auto_commit=False, isolation_level=isolation,
                                          request_timeout_ms=10_000)
        self.client.assign(self.tps)
        self.client.seek_to_beginning(*self.tps)

    def poll(self, timeout: float) -> list[Row]:
        batches = self.client.poll(timeout_ms=int(timeout * 1000))
        return [(tp.partition, m.offset, m.key, m.value) for tp, ms in batches.items() for m in ms]

    def end_offsets(self) -> list[int]:
        ends = self.client.end_offsets(self.tps, timeout_ms=10_000)
        return [ends[tp] for tp in self.tps]

    def close(self) -> None:
        self.client.close(autocommit=False, timeout_ms=5000)


class AiokafkaReader:
    def __init__(self, bootstrap: str, topic: str, isolation: str):
        import aiokafka

        self.tps = [aiokafka.TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.loop = _Loop()

        async def start() -> Any:
            client = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                               enable_auto_commit=False, isolation_level=isolation,
                                               request_timeout_ms=10_000)
            try:
                await client.start()
                client.assign(self.tps)
                await client.seek_to_beginning(*self.tps)
            except BaseException:
                await client.stop()
                raise
            return client

        try:
            self.client = self.loop.run(start(), TIMEOUT_S)
        except BaseException:
            self.loop.close()
            raise

    def poll(self, timeout: float) -> list[Row]:
        batches = self.loop.run(self.client.getmany(timeout_ms=int(timeout * 1000)))
        return [(tp.partition, m.offset, m.key, m.value) for tp, ms in batches.items() for m in ms]

    def end_offsets(self) -> list[int]:
        ends = self.loop.run(self.client.end_offsets(self.tps), TIMEOUT_S)
        return [ends[tp] for tp in self.tps]

    def close(self) -> None:
        try:
            self.loop.run(self.client.stop(), 10)
        finally:
            self.loop.close()


READERS: dict[str, Callable[[str, str, str], TopicReader]] = {
    "confluent-kafka": ConfluentReader,
    "kafka-python": KafkaPythonReader,
    "aiokafka": AiokafkaReader,
}


@contextmanager
def open_reader(library: str, bootstrap: str, topic: str, isolation: str) -> Iterator[TopicReader]:
    reader = READERS[library](bootstrap, topic, isolation)
    try:
        yield reader
    finally:
        reader.close()


def read_view(reader: TopicReader, count: int, *, timeout: float = TIMEOUT_S, settle: float = 0.5) -> View:
    """Poll until `count` records arrived (or `timeout`), then `settle` seconds more for any extra."""
    rows: list[Row] = []
    deadline = time.monotonic() + timeout
    while len(rows) < count and time.monotonic() < deadline:
        rows.extend(reader.poll(0.2))
    quiet = time.monotonic() + settle
    while time.monotonic() < quiet:
        rows.extend(reader.poll(0.1))
    view: View = {p: [] for p in range(PARTITIONS)}
    for p, offset, key, value in rows:
        view[p].append((offset, key, value))
    return view


def view_size(view: View) -> int:
    return sum(map(len, view.values()))


def assert_view(got: View, expected: View, what: str) -> None:
    for p in range(PARTITIONS):
        g, e = got.get(p, []), expected[p]
        if g != e:
            first = next((i for i, (a, b) in enumerate(zip(g, e, strict=False)) if a != b),
                         min(len(g), len(e)))
            raise AssertionError(
                f"{what}: partition {p}: got {len(g)} records, expected {len(e)}; first difference at "
                f"index {first}: got {g[first:first + 2]}, expected {e[first:first + 2]}")


# --------------------------------------------------------------------------------------------
# Raw protocol: the batches as stored, aborted transactions, LSO, OffsetFetch


def raw_batches(port: int, topic: str, partition: int) -> list[ParsedBatch]:
    """Every batch of a partition (read_uncommitted), control batches included."""
    batches: list[ParsedBatch] = []
    offset = 0
    with WireClient(port) as client:
        while True:
            part = client.request(fetch({topic: {partition: offset}}, max_bytes=1 << 24,
                                        partition_max_bytes=1 << 24)).responses[0].partitions[0]
            assert part.error_code == ErrorCode.none, f"Fetch {topic}/{partition}: {part.error_code!r}"
            got = [b for b in parse_batch_list(part.records or b"")
                   if b.base_offset + b.last_offset_delta >= offset]
            if not got:
                return batches
            batches.extend(got)
            offset = got[-1].base_offset + got[-1].last_offset_delta + 1


def markers(batches: Sequence[ParsedBatch]) -> list[tuple[int, int]]:
    """(offset, ABORT or COMMIT) of each control batch."""
    out = []
    for batch in batches:
        if batch.attributes & 0x20:
            (record,) = batch.records
            assert record.key is not None and len(record.key) == 4, f"control key {record.key!r}"
            out.append((batch.base_offset, int.from_bytes(record.key[2:4], "big")))
    return out


def expected_markers(plan: Sequence[bool], n: int = PER_TXN) -> list[tuple[int, int]]:
    return [(t * (n + 1) + n, COMMIT if commit else ABORT) for t, commit in enumerate(plan)]


def raw_end_offsets(port: int, topic: str, isolation: int) -> list[int]:
    with WireClient(port) as client:
        response = client.request(list_offsets(topic, {p: -1 for p in range(PARTITIONS)},
                                               isolation_level=isolation))
    parts = sorted(response.topics[0].partitions, key=lambda p: int(p.partition_index))
    assert all(p.error_code == ErrorCode.none for p in parts), [p.error_code for p in parts]
    return [int(p.offset) for p in parts]


def raw_aborted(port: int, topic: str, partition: int) -> list[tuple[int, int]]:
    """(producer id, first offset) of the aborted transactions a read_committed Fetch from 0 lists."""
    with WireClient(port) as client:
        part = client.request(fetch({topic: {partition: 0}}, isolation_level=1, max_bytes=1 << 24,
                                    partition_max_bytes=1 << 24)).responses[0].partitions[0]
    assert part.error_code == ErrorCode.none, part.error_code
    return sorted((int(a.producer_id), int(a.first_offset)) for a in part.aborted_transactions or ())


def raw_offset_fetch(port: int, group: str, topic: str, *,
                     require_stable: bool) -> list[tuple[int, ErrorCode]]:
    """OffsetFetch v7: (committed offset, error) per partition of `topic`."""
    m = _module(9, 7)
    request = build(m.OffsetFetchRequest, group_id=group, require_stable=require_stable, topics=(
        m.OffsetFetchRequestTopic(name=topic, partition_indexes=tuple(i32(p) for p in range(PARTITIONS))),))
    with WireClient(port) as client:
        response = client.request(request)
    assert response.error_code == ErrorCode.none, response.error_code
    parts = sorted(response.topics[0].partitions, key=lambda p: int(p.partition_index))
    return [(int(p.committed_offset), p.error_code) for p in parts]


def check_stored_layout(port: int, topic: str, plan: Sequence[bool], n: int = PER_TXN) -> None:
    """Each partition holds the plan's records and markers at their offsets; the aborted
    transactions are listed to read_committed fetches; HW == LSO == records + markers."""
    total = len(plan) * (n + 1)
    for p in range(PARTITIONS):
        batches = raw_batches(port, topic, p)
        assert markers(batches) == expected_markers(plan, n), f"partition {p}: control batches"
        data = [b for b in batches if not b.attributes & 0x20]
        assert all(b.attributes & 0x10 for b in data), f"partition {p}: a data batch is not transactional"
        producer_ids = {b.producer_id for b in data}
        assert len(producer_ids) == 1, producer_ids
        aborted = [(producer_ids.pop(), t * (n + 1)) for t, commit in enumerate(plan) if not commit]
        assert raw_aborted(port, topic, p) == aborted, f"partition {p}: Fetch aborted_transactions"
    assert raw_end_offsets(port, topic, 0) == [total] * PARTITIONS, "high watermarks"
    assert raw_end_offsets(port, topic, 1) == [total] * PARTITIONS, "last stable offsets"


def check_every_reader(bootstrap: str, topic: str, tag: str, plan: Sequence[bool],
                       libraries: Sequence[str] = LIBRARIES) -> None:
    """read_committed readers of each library see the committed records, read_uncommitted
    ones all of them: never a control record, never an offset twice."""
    total = len(plan) * (PER_TXN + 1)
    for library in libraries:
        for isolation in ISOLATIONS:
            expected = expected_view(tag, plan, committed_only=isolation == READ_COMMITTED)
            with open_reader(library, bootstrap, topic, isolation) as reader:
                got = read_view(reader, view_size(expected))
                ends = reader.end_offsets()
            assert_view(got, expected, f"{library} {isolation}")
            assert ends == [total] * PARTITIONS, f"{library} {isolation}: end offsets {ends} != {total}"


# --------------------------------------------------------------------------------------------
# 1. commit / abort / commit, read by every library


@pytest.mark.parametrize("producer_library", LIBRARIES)
def test_transactions_read_by_every_library(shared_broker: BrokerProcess, producer_library: str) -> None:
    topic = unique(f"txn-{producer_library}")
    create_topic(shared_broker.port, topic)
    with txn_producer(producer_library, shared_broker.bootstrap, unique("tid")) as producer:
        run_plan(producer, topic, producer_library)
    check_stored_layout(shared_broker.port, topic, PLAN)
    check_every_reader(shared_broker.bootstrap, topic, producer_library, PLAN)


# --------------------------------------------------------------------------------------------
# 2. kcat


def kcat_read(bootstrap: str, topic: str, isolation: str) -> View:
    assert KCAT is not None
    command = [KCAT, "-C", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e", "-J", "-q",
               "-X", f"isolation.level={isolation}"]
    done = subprocess.run(command, capture_output=True, timeout=60)
    assert done.returncode == 0, f"kcat -C failed ({done.returncode}): {done.stderr.decode()}"
    view: View = {p: [] for p in range(PARTITIONS)}
    for line in done.stdout.decode().splitlines():
        if line.strip():
            msg = json.loads(line)
            view[msg["partition"]].append((msg["offset"], msg["key"].encode(), msg["payload"].encode()))
    return view


@requires_kcat
def test_kcat_isolation_levels(shared_broker: BrokerProcess) -> None:
    topic = unique("txn-kcat")
    create_topic(shared_broker.port, topic)
    with txn_producer("confluent-kafka", shared_broker.bootstrap, unique("tid")) as producer:
        run_plan(producer, topic, "kcat")
    for isolation in ISOLATIONS:
        expected = expected_view("kcat", PLAN, committed_only=isolation == READ_COMMITTED)
        assert_view(kcat_read(shared_broker.bootstrap, topic, isolation), expected, f"kcat {isolation}")


# --------------------------------------------------------------------------------------------
# 3. Fencing


def test_second_producer_fences_the_first(shared_broker: BrokerProcess) -> None:
    topic, tid = unique("txn-fence"), unique("tid-fence")
    bootstrap = shared_broker.bootstrap
    create_topic(shared_broker.port, topic)
    a = ConfluentTxnProducer(bootstrap, tid)
    b: ConfluentTxnProducer | None = None
    try:
        a.begin()
        a.send(topic, txn_rows("A", 0))
        # B takes over the transactional id: the coordinator aborts A's transaction, bumps the epoch.
        b = ConfluentTxnProducer(bootstrap, tid)
        with pytest.raises(KafkaException) as raised:
            a.commit()
        error = raised.value.args[0]
        assert error.fatal(), f"A's commit failed, but not fatally: {error!r}"
        assert error.code() in FENCED_CODES, f"A's commit: {error!r}"

        # B's own transaction (its records are the second "transaction" of the partition).
        b.begin()
        b.send(topic, txn_rows("B", 1))
        b.commit()
    finally:
        a.close()
        if b is not None:
            b.close()
    plan = (False, True)  # A's, aborted when B fenced it; B's, committed
    a_rows, b_rows = txn_view("A", 0), txn_view("B", 1)
    with open_reader("confluent-kafka", bootstrap, topic, READ_COMMITTED) as reader:
        assert_view(read_view(reader, view_size(b_rows)), b_rows, "read_committed after the fencing")
    everything = joined(a_rows, b_rows)
    with open_reader("confluent-kafka", bootstrap, topic, READ_UNCOMMITTED) as reader:
        assert_view(read_view(reader, view_size(everything)), everything, "read_uncommitted")
    for p in range(PARTITIONS):
        assert markers(raw_batches(shared_broker.port, topic, p)) == expected_markers(plan), p
    assert raw_end_offsets(shared_broker.port, topic, 1) == [2 * (PER_TXN + 1)] * PARTITIONS


# --------------------------------------------------------------------------------------------
# 4. Consume-transform-produce, exactly once, with the worker killed again and again

WORKER = Path(__file__).with_name("txn_worker.py")
EOS_INPUT = 10_000
#: SIGKILLs of the worker.  CI machines have 2 cores shared by the broker, the worker and the
#: test: there fewer kills (each costs a session timeout before the new worker is assigned)
#: keep the test within its ~90 s (and the suite within its budget).
EOS_KILLS = 3 if os.environ.get("CI") else 10
EOS_DEADLINE_S = 90.0


#: Records per transaction at most, and a pause inside each transaction: the work takes long
#: enough for every kill to hit a worker with work left, mostly inside a transaction.
WORKER_ENV = {"TXN_WORKER_BATCH": "20", "TXN_WORKER_PAUSE_S": "0.04"}


class Worker:
    """tests/txn_worker.py in a subprocess; its stdout lines collected by a thread."""

    def __init__(self, args: Sequence[str], log_path: Path):
        self.log = open(log_path, "ab")  # noqa: SIM115 - closed by wait()/kill()
        self.proc = subprocess.Popen([sys.executable, str(WORKER), *args], stdout=subprocess.PIPE,
                                     stderr=self.log, cwd=WORKER.parent.parent,
                                     env={**os.environ, **WORKER_ENV})
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode().strip()
            self.lines.append(line)
            if line == "ready":
                self.ready.set()
        self.ready.set()  # exited

    @property
    def commits(self) -> int:
        return sum(1 for line in self.lines if line.startswith("commit "))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.reader.join(5)
        self.log.close()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.kill()
            self.reader.join(5)
            self.log.close()


def test_consume_transform_produce_exactly_once_through_worker_kills(broker_process: Any,
                                                                      tmp_path: Path) -> None:
    broker = broker_process(*broker_args())
    source, sink, group, tid = unique("eos-in"), unique("eos-out"), unique("eos-group"), unique("eos-tid")
    create_topic(broker.port, source)
    create_topic(broker.port, sink)
    inputs = [(f"key-{i}".encode(), f"value-{i}".encode()) for i in range(EOS_INPUT)]
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for i, (key, value) in enumerate(inputs):
        while True:
            try:
                producer.produce(source, key=key, value=value, partition=i % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(TIMEOUT_S) == 0
    ends = raw_end_offsets(broker.port, source, 0)
    assert sum(ends) == EOS_INPUT

    args = [broker.bootstrap, source, sink, group, tid, ",".join(map(str, ends))]
    worker_log = tmp_path / "worker.log"
    rng = random.Random(447)
    deadline = time.monotonic() + EOS_DEADLINE_S
    kills, lives = 0, []
    while True:
        assert time.monotonic() < deadline, f"not done within {EOS_DEADLINE_S}s; commits per life {lives}"
        worker = Worker(args, worker_log)
        if kills == EOS_KILLS:
            code = worker.wait(max(1.0, deadline - time.monotonic()))
            lives.append(worker.commits)
            assert code == 0, f"the last worker exited {code}:\n{worker_log.read_text()[-3000:]}"
            break
        assert worker.ready.wait(30), "the worker was not assigned its partitions within 30s"
        delay = rng.uniform(0.5, 2.0)
        end_of_life = time.monotonic() + delay
        while time.monotonic() < end_of_life and worker.proc.poll() is None:
            time.sleep(0.02)
        if worker.proc.poll() is not None:  # finished (or failed) before its kill
            code = worker.wait(5)
            lives.append(worker.commits)
            assert code == 0, f"the worker exited {code}:\n{worker_log.read_text()[-3000:]}"
            break
        worker.kill()
        kills += 1
        lives.append(worker.commits)
    # Most kills must have hit a worker with work left, else they proved nothing.
    assert kills >= min(5, EOS_KILLS), f"only {kills} kills before the work was done; commits {lives}"
    print(f"worker commits per life {lives}")

    expected = Counter((key, b"out:" + value) for key, value in inputs)
    with open_reader("confluent-kafka", broker.bootstrap, sink, READ_COMMITTED) as reader:
        view = read_view(reader, EOS_INPUT, settle=1.0)
    got = Counter((key, value) for rows in view.values() for _offset, key, value in rows)
    missing, duplicated = expected - got, got - expected
    assert not missing and not duplicated, (
        f"read_committed output: {sum(got.values())} records for {EOS_INPUT} inputs, "
        f"{sum(missing.values())} missing (e.g. {list(missing)[:3]}), {sum(duplicated.values())} "
        f"extra (e.g. {list(duplicated)[:3]}); commits per life {lives}")
    # Each output partition in its input's order (the worker keeps the partition).
    for p, rows in view.items():
        numbers = [int(value.rsplit(b"-", 1)[1]) for _offset, _key, value in rows if value is not None]
        assert numbers == list(range(p, EOS_INPUT, PARTITIONS)), f"output partition {p} out of order"

    checker = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                        "isolation.level": READ_COMMITTED, "enable.auto.commit": False})
    try:
        committed = checker.committed([TopicPartition(source, p) for p in range(PARTITIONS)], timeout=10)
    finally:
        checker.close()
    assert [tp.offset for tp in committed] == ends, "the group's committed offsets"
    # The kills left transactions open (mostly they land in the worker's pause inside one):
    # their records are in the log, aborted when the next worker took over the transactional id.
    with open_reader("confluent-kafka", broker.bootstrap, sink, READ_UNCOMMITTED) as reader:
        everything = view_size(read_view(reader, 2 * EOS_INPUT, timeout=3, settle=0.5))
    assert everything > EOS_INPUT, f"no kill left an aborted transaction behind; commits per life {lives}"


# --------------------------------------------------------------------------------------------
# 5. The broker killed with a transaction open


def test_broker_killed_with_an_open_transaction(broker_process: Any) -> None:
    args = broker_args("transaction.abort.timed.out.transaction.cleanup.interval.ms=1000")
    broker = broker_process(*args)
    topic = unique("txn-kill")
    create_topic(broker.port, topic)
    with txn_producer("confluent-kafka", broker.bootstrap, unique("tid-done")) as done:
        done.begin()
        done.send(topic, txn_rows("done", 0))
        done.commit()
    open_tid = unique("tid-open")
    orphan = ConfluentTxnProducer(broker.bootstrap, open_tid, **{
        "transaction.timeout.ms": 5000, "message.timeout.ms": 5000, "socket.timeout.ms": 5000})
    try:
        orphan.begin()
        orphan.send(topic, txn_rows("open", 1))
        n = PER_TXN
        assert raw_end_offsets(broker.port, topic, 0) == [2 * n + 1] * PARTITIONS, "HW before the kill"
        # The open transaction holds the last stable offset at its first record.
        assert raw_end_offsets(broker.port, topic, 1) == [n + 1] * PARTITIONS, "LSO before the kill"
        broker.kill()
    finally:
        orphan.close()  # its broker is gone: it can neither commit nor abort

    restarted = broker_process(*args, data_dir=broker.data_dir)
    total = 2 * (PER_TXN + 1)

    def lso_at_end() -> list[int] | None:
        try:
            lso = raw_end_offsets(restarted.port, topic, 1)
        except (AssertionError, OSError):  # still loading
            return None
        return lso if lso == [total] * PARTITIONS else None

    poll_until(lso_at_end, 30.0, interval=0.2,
               what=f"the LSO at the end ({total}) after the coordinator aborted the open transaction")
    assert raw_end_offsets(restarted.port, topic, 0) == [total] * PARTITIONS, "HW: records + 2 markers"
    plan = (True, False)
    for p in range(PARTITIONS):
        assert markers(raw_batches(restarted.port, topic, p)) == expected_markers(plan), p
    done_rows, open_rows = txn_view("done", 0), txn_view("open", 1)
    with open_reader("confluent-kafka", restarted.bootstrap, topic, READ_COMMITTED) as reader:
        assert_view(read_view(reader, view_size(done_rows)), done_rows, "read_committed after the restart")
    everything = joined(done_rows, open_rows)
    with open_reader("confluent-kafka", restarted.bootstrap, topic, READ_UNCOMMITTED) as reader:
        assert_view(read_view(reader, view_size(everything)), everything, "read_uncommitted, restarted")

    # The transactional id lives on: a new producer with it commits a transaction.
    with txn_producer("confluent-kafka", restarted.bootstrap, open_tid) as again:
        again.begin()
        again.send(topic, txn_rows("again", 2))
        again.commit()
    assert raw_end_offsets(restarted.port, topic, 1) == [3 * (PER_TXN + 1)] * PARTITIONS


# --------------------------------------------------------------------------------------------
# 6. Offsets sent to a transaction


def test_transactional_offsets_committed_and_aborted(shared_broker: BrokerProcess) -> None:
    source, sink = unique("txn-offsets-in"), unique("txn-offsets-out")
    group, tid = unique("txn-offsets-group"), unique("tid-offsets")
    bootstrap, port = shared_broker.bootstrap, shared_broker.port
    create_topic(port, source)
    create_topic(port, sink)
    tps = [TopicPartition(source, p) for p in range(PARTITIONS)]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "isolation.level": READ_COMMITTED,
                         "enable.auto.commit": False, "socket.timeout.ms": 10_000})
    producer = ConfluentTxnProducer(bootstrap, tid)
    try:
        consumer.assign(tps)

        def committed(timeout: float = 10.0) -> list[int]:
            return [tp.offset for tp in consumer.committed(tps, timeout=timeout)]

        def transaction(offset: int) -> None:
            producer.begin()
            producer.send(sink, [(p, b"k", b"offset %d" % offset) for p in range(PARTITIONS)])
            producer.client.send_offsets_to_transaction(
                [TopicPartition(source, p, offset + p) for p in range(PARTITIONS)],
                consumer.consumer_group_metadata(), TIMEOUT_S)

        assert committed() == [-1001] * PARTITIONS  # OFFSET_INVALID: nothing committed yet

        transaction(5)
        # Pending until the transaction ends: an OffsetFetch with require_stable is told so,
        # one without it sees the last committed offsets (none).
        assert raw_offset_fetch(port, group, source, require_stable=True) == [
            (-1, ErrorCode.unstable_offset_commit)] * PARTITIONS
        assert raw_offset_fetch(port, group, source, require_stable=False) == [
            (-1, ErrorCode.none)] * PARTITIONS
        producer.commit()
        assert committed() == [5, 6, 7]
        assert raw_offset_fetch(port, group, source, require_stable=True) == [
            (5 + p, ErrorCode.none) for p in range(PARTITIONS)]

        transaction(50)
        # librdkafka retries UNSTABLE_OFFSET_COMMIT (read_committed asks require_stable) until
        # its timeout.
        with pytest.raises(KafkaException):
            committed(timeout=2.0)
        producer.abort()
        assert committed() == [5, 6, 7], "an aborted transaction changed the committed offsets"

        transaction(9)
        producer.commit()
        assert committed() == [9, 10, 11]
    finally:
        producer.close()
        consumer.close()
