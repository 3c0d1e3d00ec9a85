"""Share groups (KIP-932) with the Java client 4.1.1's KafkaShareConsumer (tests/java
ShareConsumers): four consumers sharing one partition, redelivery after release and after lock
expiry up to the delivery limit, and a broker crash (kill -9) with records acquired but not
acknowledged."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import BrokerProcess, start_process
from tests.jvm import build, java_command, run_java

pytestmark = [pytest.mark.jvm, pytest.mark.timeout(600)]

#: locks of the groups that set share.record.lock.duration.ms may be this short
OVERRIDES = ("-o", "group.share.min.record.lock.duration.ms=1000")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    build()
    proc = start_process(tmp_path_factory.mktemp("share") / "data", *OVERRIDES)
    yield proc
    proc.stop()


def deliveries(run: Any) -> list[tuple[int, int, int]]:
    """(consumer, offset, delivery count) of every delivery."""
    return [(r["consumer"], r["offset"], r["deliveryCount"]) for r in run.of_kind("record")]


def test_four_consumers_share_one_partition(broker: BrokerProcess) -> None:
    """200 records accepted by 4 consumers: each record delivered once, to one of them."""
    run = run_java("ShareConsumers", broker.bootstrap, "topic=shared", "group=sharers",
                   "setup=true", "records=200", "batch=10", "mode=accept", "expect=200",
                   "idle-ms=1500", "config.max.poll.records=10").check()
    got = deliveries(run)
    assert sorted(o for _c, o, _n in got) == list(range(200))
    assert {n for _c, _o, n in got} == {1}
    assert len({c for c, _o, _n in got}) >= 2, Counter(c for c, _o, _n in got)


def test_released_records_come_back_until_the_delivery_limit(broker: BrokerProcess) -> None:
    """Every record released on every delivery: delivered group.share.delivery.count.limit (5)
    times, counted 1..5, then archived (no sixth delivery)."""
    run = run_java("ShareConsumers", broker.bootstrap, "topic=released", "group=releasers",
                   "setup=true", "records=30", "batch=10", "mode=release", "idle-ms=1000",
                   "config.max.poll.records=10").check()
    by_offset: dict[int, list[int]] = {}
    for _c, offset, count in deliveries(run):
        by_offset.setdefault(offset, []).append(count)
    assert sorted(by_offset) == list(range(30))
    assert all(sorted(counts) == [1, 2, 3, 4, 5] for counts in by_offset.values()), by_offset


def test_records_of_a_stalled_consumer_come_back_after_the_lock_expires(
        broker: BrokerProcess) -> None:
    """Consumer 0 takes records and never acknowledges them: after the group's 1 s lock they go
    to the others (delivery count 2), and every record ends accepted."""
    run = run_java("ShareConsumers", broker.bootstrap, "topic=stalled", "group=stallers",
                   "setup=true", "records=40", "batch=10", "mode=stall", "lock-ms=1000",
                   "expect=50", "idle-ms=3000", "config.max.poll.records=10").check()
    got = deliveries(run)
    stalled = {o for c, o, _n in got if c == 0}
    assert stalled
    accepted = [(o, n) for c, o, n in got if c != 0]
    assert sorted(o for o, _n in accepted) == list(range(40))
    assert all(n == 2 for o, n in accepted if o in stalled)


def test_rejected_records_are_not_delivered_again(broker: BrokerProcess) -> None:
    """Every record REJECTed: delivered once each, then archived (nothing comes back, also to
    another consumer of the group started afterwards)."""
    run = run_java("ShareConsumers", broker.bootstrap, "topic=rejected", "group=rejecters",
                   "setup=true", "records=20", "batch=10", "mode=reject", "consumers=2",
                   "idle-ms=2000", "config.max.poll.records=10").check()
    assert sorted((o, n) for _c, o, n in deliveries(run)) == [(o, 1) for o in range(20)]
    later = subprocess.run(java_command(build(), "akfak.tests.ShareConsumers", broker.bootstrap,
                                        "topic=rejected", "group=rejecters", "consumers=1",
                                        "mode=accept", "timeout-ms=5000"),
                           capture_output=True, text=True, timeout=60)
    assert later.returncode == 3 and '"kind":"record"' not in later.stdout  # timed out empty


@pytest.fixture(scope="module")
def kafka_share(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Kafka 4.1.1 with the same lower bound on the lock duration."""
    from tests.kafka_peer import start_kafka

    build()
    peer = start_kafka(tmp_path_factory.mktemp("kafka-share"),
                       properties={"group.share.min.record.lock.duration.ms": "1000"})
    yield peer.bootstrap
    peer.stop()


@pytest.mark.parametrize("target", ["akfak", pytest.param("kafka", marks=pytest.mark.slow)])
def test_records_whose_locks_expire_come_back_until_the_delivery_limit(
        target: str, request: pytest.FixtureRequest) -> None:
    """Two consumers acknowledge every record only after its 1 s lock expired: the broker
    refuses each acknowledgement, and the record comes back, counted 1..5, until
    group.share.delivery.count.limit (5) archives it (no sixth delivery)."""
    bootstrap = (request.getfixturevalue("broker").bootstrap if target == "akfak"
                 else request.getfixturevalue("kafka_share"))
    run = run_java("ShareConsumers", bootstrap, "topic=expiring", "group=expirers",
                   "setup=true", "records=20", "batch=10", "mode=late", "lock-ms=1000",
                   "late-ms=1500", "consumers=2", "idle-ms=4000", "timeout-ms=90000",
                   "config.max.poll.records=10", timeout=150).check()
    by_offset: dict[int, list[int]] = {}
    for _c, offset, count in deliveries(run):
        by_offset.setdefault(offset, []).append(count)
    assert sorted(by_offset) == list(range(20))
    assert all(sorted(counts) == [1, 2, 3, 4, 5] for counts in by_offset.values()), by_offset
    refused = {o for line in run.of_kind("ack-failed") for o in line["offsets"]}
    assert refused == set(range(20)), run.of_kind("ack-failed")


def test_acquired_records_are_redelivered_after_a_crash(tmp_path: Path) -> None:
    """kill -9 with records acquired and not acknowledged: after the restart they are delivered
    again, and no acknowledged record is.  (Consumer 0 stalls on its first records; its client
    may have fetched more behind them, which it holds as well.)"""
    classpath = build()
    data = tmp_path / "data"
    first = start_process(data, *OVERRIDES)
    try:
        holder = subprocess.Popen(
            java_command(classpath, "akfak.tests.ShareConsumers", first.bootstrap, "topic=crash",
                         "group=crashers", "setup=true", "records=60", "batch=10", "mode=stall",
                         "consumers=2", "idle-ms=2000", "hold=true", "timeout-ms=60000",
                         "config.max.poll.records=10"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        lines = []
        assert holder.stdout is not None
        for line in holder.stdout:
            lines.append(json.loads(line))
            if lines[-1]["kind"] in ("done", "error", "timeout"):
                break
        assert lines[-1]["kind"] == "done", lines[-1]
        first.kill()  # while the stalled consumer still holds its records
        holder.kill()
        holder.wait()
    finally:
        first.stop()
    records = [(r["consumer"], r["offset"]) for r in lines if r["kind"] == "record"]
    stalled = {o for c, o in records if c == 0}
    accepted = {o for c, o in records if c == 1}
    assert stalled and not stalled & accepted
    second = start_process(data, *OVERRIDES, port=first.port)
    try:
        again = run_java("ShareConsumers", second.bootstrap, "topic=crash", "group=crashers",
                         "consumers=1", "mode=accept", "idle-ms=1500",
                         "config.max.poll.records=100").check()
    finally:
        second.stop()
    redelivered = sorted(o for _c, o, _n in deliveries(again))
    assert redelivered == sorted(set(range(60)) - accepted)
    assert stalled <= set(redelivered)
