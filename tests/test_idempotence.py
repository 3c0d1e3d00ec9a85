"""Idempotent producers over raw sockets: InitProducerId, Produce with sequence numbers,
DescribeProducers, and the state surviving broker restarts (SIGTERM and kill -9).

Batches are built and parsed by tests/recordbatch.py, independently of the broker.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from kio.schema.errors import ErrorCode
from kio.schema.types import ProducerId
from kio.static.primitive import i16, i32
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread

from akfak.broker import Broker
from akfak.config import BrokerConfig
from akfak.coordinator.topic import MemoryCoordinatorTopic
from akfak.tap import build_config
from akfak.transactions.coordinator import TransactionCoordinator
from tests.recordbatch import make_batch, parse_batches
from tests.requests import _module, build, fetch, metadata, ms, produce
from tests.wire import WireClient

#: Batch timestamps: now, since producers idle for producer.id.expiration.ms (a day, by the
#: batches' own timestamps) are forgotten, at a restart too.
T0 = int(time.time() * 1000)


def init_producer_id(transactional_id: str | None = None, *, version: int = 4,
                     timeout_ms: int = 60_000, producer_id: int = -1, epoch: int = -1) -> Any:
    m = _module(22, version)
    return build(m.InitProducerIdRequest, transactional_id=transactional_id,
                 transaction_timeout=ms(timeout_ms), producer_id=ProducerId(producer_id),
                 producer_epoch=i16(epoch))


def describe_producers(topics: dict[str, list[int]]) -> Any:
    m = _module(61, 0)
    return m.DescribeProducersRequest(topics=tuple(
        m.TopicRequest(name=t, partition_indexes=tuple(i32(p) for p in ps))
        for t, ps in topics.items()))


def batch(pid: int, epoch: int, seq: int, count: int = 1, *, tag: bytes = b"v",
          **kwargs: Any) -> bytes:
    return make_batch([(None, b"%s%d" % (tag, seq + i), None, T0 + seq) for i in range(count)],
                      producer_id=pid, producer_epoch=epoch, base_sequence=seq, timestamp=T0,
                      **kwargs)


def produce_one(client: WireClient, topic: str, data: bytes, **kwargs: Any) -> Any:
    response = client.request(produce(topic, {0: data}, acks=-1, **kwargs))
    return response.responses[0].partition_responses[0]


def stored(client: WireClient, topic: str) -> list[tuple[int, bytes | None]]:
    part = client.request(fetch({topic: {0: 0}})).responses[0].partitions[0]
    return [(r.offset, r.value) for r in parse_batches(part.records or b"")]


def in_thread(fn: Any, *args: Any) -> Any:
    return deferToThread(fn, *args)


# -- InitProducerId ------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_every_version_hands_out_fresh_ids_at_epoch_zero(inproc: Any) -> Any:
    def check() -> None:
        with WireClient(inproc.port) as c:
            versions = {int(k.api_key): (int(k.min_version), int(k.max_version))
                        for k in c.request(build(_module(18, 3).ApiVersionsRequest,
                                                 client_software_name="t",
                                                 client_software_version="1")).api_keys}
            assert versions[22] == (0, 5) and versions[61] == (0, 0)
            ids = []
            for version in range(6):
                answer = c.request(init_producer_id(version=version), version=version)
                assert answer.error_code == ErrorCode.none, version
                assert answer.producer_epoch == 0
                ids.append(int(answer.producer_id))
            # An idempotent producer asking for a bump (KIP-360) gets a new id, as from Kafka.
            bump = c.request(init_producer_id(producer_id=ids[-1], epoch=0, version=5), version=5)
            assert (bump.error_code, bump.producer_epoch) == (ErrorCode.none, 0)
            ids.append(int(bump.producer_id))
            assert len(set(ids)) == len(ids) and min(ids) >= 0

    yield in_thread(check)
    # The block the ids came from is recorded in the metadata log.
    assert inproc.broker.image.next_producer_id >= 1000


@pytest_twisted.inlineCallbacks
def test_init_producer_id_refusals(inproc: Any) -> Any:
    def code(request: Any, version: int = 4) -> ErrorCode:
        with WireClient(inproc.port) as c:
            return ErrorCode(c.request(request, version=version).error_code)

    def check() -> None:
        assert code(init_producer_id(producer_id=5)) == ErrorCode.invalid_request
        assert code(init_producer_id(epoch=5)) == ErrorCode.invalid_request
        assert code(init_producer_id("")) == ErrorCode.invalid_request
        assert code(init_producer_id("tx", timeout_ms=0)) == ErrorCode.invalid_transaction_timeout
        assert code(init_producer_id("tx", timeout_ms=900_001)) == \
            ErrorCode.invalid_transaction_timeout

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_a_transactional_id_keeps_its_producer_id_and_bumps_the_epoch(inproc: Any) -> Any:
    def check() -> None:
        with WireClient(inproc.port) as c:
            def init(version: int = 4, **kwargs: Any) -> Any:
                return c.request(init_producer_id("app-1", version=version, **kwargs),
                                 version=version)

            first = init()
            pid = int(first.producer_id)
            assert (first.error_code, first.producer_epoch) == (ErrorCode.none, 0)
            restarted, again_restarted = init(), init()  # a producer restarting bumps
            assert (restarted.producer_id, restarted.producer_epoch) == (pid, 1)
            assert (again_restarted.producer_id, again_restarted.producer_epoch) == (pid, 2)
            bumped = init(producer_id=pid, epoch=2)  # KIP-360
            assert (bumped.error_code, bumped.producer_id, bumped.producer_epoch) == (
                ErrorCode.none, pid, 3)
            # The same bump again (its answer was lost): the same answer, no new bump.
            again = init(producer_id=pid, epoch=2)
            assert (again.error_code, again.producer_epoch) == (ErrorCode.none, 3)
            stale = init(producer_id=pid, epoch=1)
            assert (stale.error_code, stale.producer_id, stale.producer_epoch) == (
                ErrorCode.producer_fenced, -1, -1)
            assert init(producer_id=pid + 1, epoch=3).error_code == ErrorCode.producer_fenced
            # Before v4 Kafka answers INVALID_PRODUCER_EPOCH instead.
            assert init(version=3, producer_id=pid, epoch=1).error_code == \
                ErrorCode.invalid_producer_epoch
            other = c.request(init_producer_id("app-2"))
            assert other.producer_id != pid and other.producer_epoch == 0

    yield in_thread(check)


def test_transactional_ids_rotate_an_exhausted_epoch_and_expire() -> None:
    clock = Clock()
    clock.advance(T0 / 1000)
    ids = iter(range(100, 200))
    config = BrokerConfig(properties={"transactional.id.expiration.ms": "1000"})
    txns = TransactionCoordinator(config, clock, MemoryCoordinatorTopic("__transaction_state"),
                                  lambda: next(ids), lambda *args: None)
    txns.start()

    def fired(d: Any) -> Any:
        # The in-memory topic answers at once: every Deferred here has fired.
        results: list[Any] = []
        d.addBoth(results.append)
        return results[0]

    def init(tid: str, expected: tuple[int, int] | None = None) -> tuple[object, int, int]:
        return fired(txns.init_producer_id(tid, 10, expected))  # type: ignore[no-any-return]

    assert init("a") == (ErrorCode.none, 100, 0)
    txns.txns["a"].producer_epoch = 32765
    assert init("a", (100, 32765)) == (ErrorCode.none, 100, 32766)
    # Out of epochs: a new producer id, and the old id may still ask for the same rotation.
    assert init("a", (100, 32766)) == (ErrorCode.none, 101, 0)
    assert init("a", (100, 32766)) == (ErrorCode.none, 101, 0)
    assert init("a", (100, 32765))[0] == ErrorCode.producer_fenced
    # Idle for transactional.id.expiration.ms: forgotten by the expiry task.
    clock.advance(0.5)
    assert init("b") == (ErrorCode.none, 102, 0)
    clock.advance(0.5)
    assert fired(txns.expire_transactional_ids()) == 1
    assert set(txns.txns) == {"b"}
    assert init("a") == (ErrorCode.none, 103, 0)


# -- Produce with sequence numbers ---------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_a_retried_batch_is_answered_with_its_first_offset_and_stored_once(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("t", 1)

    def check() -> None:
        with WireClient(inproc.port) as c:
            init = c.request(init_producer_id())
            pid, epoch = int(init.producer_id), int(init.producer_epoch)
            produce_one(c, "t", make_batch([b"plain"], timestamp=T0))
            sent = batch(pid, epoch, 0, 3)
            first = produce_one(c, "t", sent)
            assert (first.error_code, first.base_offset, first.log_append_time) == (
                ErrorCode.none, 1, None)
            again = produce_one(c, "t", sent)
            assert (again.error_code, again.base_offset) == (ErrorCode.none, 1)
            assert again.log_start_offset == 0
            assert produce_one(c, "t", batch(pid, epoch, 3)).base_offset == 4
            assert produce_one(c, "t", sent).base_offset == 1  # still within the last five
            assert stored(c, "t") == [(0, b"plain"), (1, b"v0"), (2, b"v1"), (3, b"v2"),
                                      (4, b"v3")]

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_gaps_old_epochs_and_transactions_are_refused(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("t", 1)

    def check() -> None:
        with WireClient(inproc.port) as c:
            pid = int(c.request(init_producer_id()).producer_id)
            assert produce_one(c, "t", batch(pid, 1, 0, 2)).error_code == ErrorCode.none
            gap = produce_one(c, "t", batch(pid, 1, 3))
            assert (gap.error_code, gap.base_offset) == (
                ErrorCode.out_of_order_sequence_number, -1)
            assert gap.error_message == (
                f"Out of order sequence number for producer {pid} at offset 2 in partition "
                f"t-0: 3 (incoming seq. number), 1 (current end sequence number)")
            old = produce_one(c, "t", batch(pid, 0, 2))
            assert old.error_code == ErrorCode.invalid_producer_epoch
            new_epoch = produce_one(c, "t", batch(pid, 2, 5))
            assert new_epoch.error_code == ErrorCode.out_of_order_sequence_number
            assert produce_one(c, "t", batch(pid, 2, 0)).base_offset == 2
            # Transactional batches: without a transactional id Kafka refuses the request;
            # with one the coordinator does not know, verification fails as in Kafka.
            txn = batch(pid, 2, 1, transactional=True)
            assert produce_one(c, "t", txn).error_code == \
                ErrorCode.transactional_id_authorization_failed
            assert produce_one(c, "t", txn, transactional_id="tx").error_code == \
                ErrorCode.invalid_producer_id_mapping
            assert [o for o, _ in stored(c, "t")] == [0, 1, 2]

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_describe_producers_reports_each_partitions_state(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("t", 2)

    def check() -> None:
        with WireClient(inproc.port) as c:
            pid = int(c.request(init_producer_id()).producer_id)
            produce_one(c, "t", batch(pid, 0, 0, 4))
            (topic,) = c.request(describe_producers({"t": [0, 1], "nope": [0]})).topics[:1]
            p0, p1 = topic.partitions
            assert p1.error_code == ErrorCode.none and p1.active_producers == ()
            (state,) = p0.active_producers
            assert (state.producer_id, state.producer_epoch, state.last_sequence,
                    state.last_timestamp, state.coordinator_epoch,
                    state.current_txn_start_offset) == (pid, 0, 3, T0, -1, -1)
            unknown = c.request(describe_producers({"nope": [0]})).topics[0].partitions[0]
            assert unknown.error_code == ErrorCode.unknown_topic_or_partition

    yield in_thread(check)


# -- restarts ------------------------------------------------------------------------------


def create_topic(client: WireClient, topic: str) -> None:
    answer = client.request(metadata([topic], allow_auto_topic_creation=True))
    assert answer.topics[0].error_code in (ErrorCode.none, ErrorCode.leader_not_available)


@pytest.mark.parametrize("stop", ["sigterm", "kill"])
def test_a_retry_after_a_restart_is_still_a_duplicate(broker_process: Any, tmp_path: Path,
                                                      stop: str) -> None:
    data = tmp_path / "data"
    broker = broker_process(data_dir=data)
    with WireClient(broker.port) as c:
        create_topic(c, "t")
        ids = {int(c.request(init_producer_id()).producer_id) for _ in range(3)}
        pid = min(ids)
        for seq in range(0, 12, 3):
            assert produce_one(c, "t", batch(pid, 0, seq, 3)).base_offset == seq
        last = batch(pid, 0, 12, 3)
        assert produce_one(c, "t", last).base_offset == 12
    if stop == "kill":
        broker.stop(signal.SIGKILL)  # nothing flushed or snapshotted
    else:
        assert broker.stop() in (0, 143, -signal.SIGTERM)
        assert (data / "t-0" / f"{15:020d}.snapshot").exists()

    broker = broker_process(data_dir=data)
    with WireClient(broker.port) as c:
        retry = produce_one(c, "t", last)
        assert (retry.error_code, retry.base_offset) == (ErrorCode.none, 12)
        gap = produce_one(c, "t", batch(pid, 0, 16))
        assert gap.error_code == ErrorCode.out_of_order_sequence_number
        assert produce_one(c, "t", batch(pid, 0, 15)).base_offset == 15
        assert [o for o, _ in stored(c, "t")] == list(range(16))
        # Producer ids are never handed out twice, also across the restart.
        after = {int(c.request(init_producer_id()).producer_id) for _ in range(3)}
        assert not after & ids


def test_the_broker_expires_idle_producers_periodically(tmp_path: Path) -> None:
    clock = Clock()
    config = build_config(data_dir=str(tmp_path / "data"), listen=["tcp:0:interface=127.0.0.1"],
                          storage="memory",
                          overrides=["producer.id.expiration.ms=60000",
                                     "producer.id.expiration.check.interval.ms=5000"])
    broker = Broker(config, clock=clock)
    broker.open()
    try:
        broker.controller.create_topic("t", 1)
        log = broker.get_log("t", 0)
        log.append(make_batch([b"x"], producer_id=5, producer_epoch=0, base_sequence=0,
                              timestamp=0), leader_epoch=0, now_ms=0)
        clock.advance(55)  # checks at 5 s, 10 s ... 55 s: idle for less than 60 s
        assert [e.producer_id for e in log.producer_state.active_producers()] == [5]
        clock.advance(5)
        assert log.producer_state.active_producers() == []
    finally:
        broker.close()
