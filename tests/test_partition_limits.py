"""Partition limits of CreateTopics / CreatePartitions, and large creations that never
stall the reactor (akfak/partition_limits.py, SlicedWork in akfak/log/threads.py).

Oversized counts go over raw sockets (no client sends 2^31 partitions); the stall probe
runs against a broker subprocess, so the probe's own timing is not the test's reactor.
"""

from __future__ import annotations

import gc
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from kio.schema.errors import ErrorCode
from twisted.internet.task import Clock

from akfak import collector
from akfak.log.records import encode_batch
from akfak.log.threads import SlicedWork
from tests.brokers import InProcessBroker, start_in_process
from tests.requests import fetch, metadata, produce
from tests.test_admin_protocol import (
    append,
    ask,
    broker_with,  # noqa: F401 (a fixture)
    creatable,
    create_partitions,
    create_topics,
    make_topic,
)
from tests.test_framing import api_versions_frame, read_api_versions
from tests.wire import WireClient, encode_body, encode_request

INT32_MAX = 2**31 - 1


def answers(response: Any) -> list[tuple[str, int, str | None]]:
    entries = getattr(response, "topics", None) or response.results
    return [(r.name, r.error_code, r.error_message) for r in entries]


@pytest_twisted.inlineCallbacks
def test_a_request_creating_too_many_partitions_is_refused_whole(inproc: InProcessBroker) -> Any:
    make_topic(inproc, "existing", 1)
    make_topic(inproc, "second", 1)
    before = inproc.broker.image
    huge, split, grow, grow_split = yield ask(
        inproc.port,
        create_topics(7, creatable(7, "small", 1), creatable(7, "huge", INT32_MAX)),
        create_topics(7, creatable(7, "half-a", 6000), creatable(7, "half-b", 6000)),
        create_partitions(3, ("existing", INT32_MAX, None)),
        create_partitions(3, ("existing", 6001, None), ("second", 4003, None)))
    # Kafka answers an operation past its controller's bound POLICY_VIOLATION for every topic.
    refused = ErrorCode.policy_violation
    assert [(n, e) for n, e, _ in answers(huge)] == [("small", refused), ("huge", refused)]
    assert "2147483648 new partitions in one request" in answers(huge)[0][2]
    assert "akfak.max.partitions.per.request=10000" in answers(huge)[0][2]
    assert [(n, e) for n, e, _ in answers(split)] == [("half-a", refused), ("half-b", refused)]
    assert [(n, e) for n, e, _ in answers(grow)] == [("existing", refused)]
    assert "2147483646 new partitions" in answers(grow)[0][2]
    assert [(n, e) for n, e, _ in answers(grow_split)] == [("existing", refused),
                                                          ("second", refused)]
    # Nothing was written.
    assert inproc.broker.image.offset == before.offset
    assert inproc.broker.image.topic("existing").num_partitions == 1


@pytest_twisted.inlineCallbacks
def test_the_broker_wide_partition_limit(broker_with: Any) -> Any:  # noqa: F811
    broker = broker_with("akfak.max.partitions=10", "akfak.max.partitions.per.request=12",
                         "num.partitions=3")
    existing = sum(t.num_partitions for t in broker.broker.image.topics_by_name.values())
    assert existing == 0
    created, grown, dry, per_request = yield ask(
        broker.port,
        create_topics(7, creatable(7, "a", 4), creatable(7, "b", -1), creatable(7, "c", 4)),
        create_partitions(3, ("a", 5, None), ("b", 6, None)),
        create_topics(7, creatable(7, "d", 4), validate_only=True),
        create_topics(7, creatable(7, "e", 13)))
    over = ErrorCode.invalid_partitions
    assert answers(created)[:2] == [("a", ErrorCode.none, None), ("b", ErrorCode.none, None)]
    assert answers(created)[2] == (
        "c", over, "Adding 4 partitions to the 7 this broker holds would exceed "
        "akfak.max.partitions=10.")
    # Counted one topic at a time: a grows to 5 (8 in all), then b to 6 would make 11.
    assert [(n, e) for n, e, _ in answers(grown)] == [("a", ErrorCode.none), ("b", over)]
    assert [(n, e) for n, e, _ in answers(dry)] == [("d", over)]
    assert answers(per_request)[0][1] == ErrorCode.policy_violation
    image = broker.broker.image
    assert {n: t.num_partitions for n, t in image.topics_by_name.items()} == {"a": 5, "b": 3}
    assert broker.broker.get_log("a", 4) is not None


@pytest.mark.parametrize("partitions", [
    1500, pytest.param(5000, marks=pytest.mark.slow)])
def test_creating_thousands_of_partitions_keeps_other_connections_answered(
        broker_process: Any, partitions: int) -> None:
    """A CreateTopics of thousands of partitions does seconds of disk work (directories,
    segment and index files); meanwhile another connection's ApiVersions is answered."""
    broker = broker_process()
    request = create_topics(7, creatable(7, "wide", partitions))
    latencies: list[float] = []
    with WireClient(broker.port, timeout=120) as creator, WireClient(broker.port) as probe:
        creator.send(encode_request(19, 7, 1, encode_body(request)))
        creator.sock.setblocking(False)
        started = time.monotonic()
        answered: bytes | None = None
        correlation = 0
        while answered is None:
            correlation += 1
            sent = time.monotonic()
            probe.send(api_versions_frame(correlation))
            got, response = read_api_versions(probe)
            latencies.append(time.monotonic() - sent)
            assert got == correlation and response.error_code == ErrorCode.none
            try:
                answered = creator.sock.recv(1 << 20)
            except BlockingIOError:
                time.sleep(0.005)
        creating = time.monotonic() - started
        creator.sock.setblocking(True)
    # The creation took long enough to be probed many times; without slicing the reactor
    # would answer none of them until it ended (seconds on this machine).  Slices are 2 ms;
    # the longest hold is the one metadata batch of 5,000 PartitionRecords (~0.1-0.3 s).
    # The bound is generous for a machine shared with other work.
    latencies.sort()
    # the broker's own process: what lived at start is out of the collector's sight
    assert "objects alive at start are kept out of its full collections" in broker.log()
    assert len(latencies) >= 20, (creating, latencies)
    assert latencies[len(latencies) // 2] < 0.1, (creating, latencies)
    assert latencies[-1] < 1.0, (creating, latencies[-5:])
    with WireClient(broker.port) as client:
        (topic,) = client.request(metadata(["wide"], allow_auto_topic_creation=False)).topics
        assert topic.error_code == ErrorCode.none and len(topic.partitions) == partitions
        batch = encode_batch([(None, b"last")], timestamp=int(time.time() * 1000))
        (produced,) = client.request(produce("wide", {partitions - 1: batch})).responses
        assert produced.partition_responses[0].error_code == ErrorCode.none
        (fetched,) = client.request(fetch({"wide": {partitions - 1: 0}})).responses
        assert fetched.partitions[0].error_code == ErrorCode.none
        assert b"last" in fetched.partitions[0].records
    print(f"created {partitions} partitions in {creating:.2f} s; ApiVersions median "
          f"{latencies[len(latencies) // 2] * 1000:.1f} ms, p99 "
          f"{latencies[len(latencies) * 99 // 100] * 1000:.1f} ms, max "
          f"{latencies[-1] * 1000:.1f} ms over {len(latencies)} probes")


def test_the_metadata_batch_of_a_large_creation_is_encoded_from_templates() -> None:
    """The PartitionRecords of a CreateTopics differ in little but their id: they are
    encoded once per distinct rest and the id spliced in (encode_records), byte for byte
    what encoding each gives, so the reactor holds for milliseconds, not ~0.1-0.5 s."""
    import uuid

    from akfak.log.metadata_records import (
        PartitionRecord,
        TopicRecord,
        encode_record,
        encode_records,
    )
    topic_id, directory = uuid.uuid4(), uuid.uuid4()
    records = [TopicRecord("wide", topic_id)] + [PartitionRecord(
        partition_id=i, topic_id=topic_id, replicas=[1 + i % 3, 1 + (i + 1) % 3], isr=[1 + i % 3],
        leader=1 + i % 3, leader_epoch=0, partition_epoch=0, directories=[directory] * 2,
        eligible_leader_replicas=[4] if i % 7 == 0 else None) for i in range(5000)]
    for metadata_version in (None, 7, 21, 27):  # PartitionRecord v0, v1 and v2
        plain = [encode_record(r, None if metadata_version is None
                               else type(r).version_at(metadata_version)) for r in records]
        assert encode_records(records, metadata_version) == plain
    single = [records[0]] + [PartitionRecord(
        partition_id=i, topic_id=topic_id, replicas=[1], isr=[1], leader=1, leader_epoch=0,
        partition_epoch=0, directories=[directory]) for i in range(5000)]
    cpu = []
    for _ in range(3):
        start = time.process_time()
        encode_batch([(None, v) for v in encode_records(single)], timestamp=0)
        cpu.append(time.process_time() - start)
    # ~15 ms of CPU here (encoding each record: ~55 ms); CPU time, so other work on the
    # machine does not count
    assert min(cpu) < 0.035, cpu


@pytest.mark.parametrize("storage", ["disk", "memory"])
@pytest_twisted.inlineCallbacks
def test_a_deleted_topics_logs_are_freed_by_reference_counting(
        tmp_path: Path, storage: str) -> Any:
    """The broker's own process keeps long-lived logs out of the garbage collector's sight
    (akfak/collector.py), so a log must not need it: nothing of a deleted topic's logs may
    be held in a reference cycle (a segment once was, through its indexes' callback)."""
    broker = start_in_process(tmp_path / "data", storage=storage)
    try:
        make_topic(broker, "doomed", 3)
        append(broker, "doomed", 0, 5)
        held = []
        for partition in range(3):
            partition_log = broker.broker.get_log("doomed", partition)
            held += [weakref.ref(partition_log), *map(weakref.ref, partition_log.segments)]
        del partition_log
        gc.disable()
        try:
            broker.broker.controller.delete_topic("doomed")
            alive = [type(ref()).__name__ for ref in held if ref() is not None]
        finally:
            gc.enable()
        assert alive == []
    finally:
        yield broker.service.stopService()


def test_a_large_creation_keeps_its_logs_out_of_the_collectors_sight() -> None:
    """In the broker's own process the logs a large creation makes (SlicedWork's jobs) are
    frozen (gc.freeze) as they accumulate, so full collections stop traversing them."""
    clock = Clock()
    work = SlicedWork(clock)
    made: list[dict[str, list[int]]] = []
    collector.keep_long_lived_out_of_sight()
    try:
        before = gc.get_freeze_count()
        for _ in range(collector.SETTLE_AFTER_JOBS):
            work.add(lambda: made.append({"segments": [1, 2]}))
        while work.pending:
            clock.advance(0)
        # each job made two tracked objects (a dict and a list), all still alive
        assert len(made) == collector.SETTLE_AFTER_JOBS
        assert gc.get_freeze_count() >= before + 2 * len(made)
    finally:
        collector._active = False
        gc.unfreeze()


def test_an_embedded_broker_leaves_the_collector_alone(inproc: InProcessBroker) -> None:
    """Freezing is for the broker's own process, not a host program's heap."""
    assert not collector._active and gc.get_freeze_count() == 0
