"""Produce, Fetch, ListOffsets and Metadata over raw sockets to an in-process broker.

The broker runs in the test's reactor (in-memory storage); blocking clients run in
a thread.  Records are built and parsed by tests/recordbatch.py, independently of
the broker's code.
"""

from __future__ import annotations

import struct
import time
import uuid
from typing import Any

import pytest
import pytest_twisted
from kio.schema.errors import ErrorCode
from twisted.internet.threads import deferToThread

from tests.brokers import start_in_process
from tests.recordbatch import make_batch, parse_batches
from tests.requests import fetch, list_offsets, metadata, produce
from tests.wire import WireClient, decode_response, encode_body, encode_request

T0 = 1_700_000_000_000


def partition_response(response: Any) -> Any:
    return response.responses[0].partition_responses[0]


def fetched(response: Any, topic_index: int = 0, partition_index: int = 0) -> Any:
    return response.responses[topic_index].partitions[partition_index]


def values(partition: Any) -> list[tuple[int, bytes | None]]:
    return [(r.offset, r.value) for r in parse_batches(partition.records or b"")]


def in_thread(fn: Any, *args: Any) -> Any:
    return deferToThread(fn, *args)


@pytest_twisted.inlineCallbacks
def test_produce_assigns_offsets_fetch_returns_whole_batches(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("t", 1)

    def check() -> None:
        with WireClient(inproc.port) as c:
            first = partition_response(c.request(produce("t", {0: make_batch([b"a", b"b"])})))
            assert (first.error_code, first.base_offset) == (ErrorCode.none, 0)
            assert first.log_start_offset == 0
            second = partition_response(c.request(produce("t", {0: make_batch([b"c", b"d", b"e"])})))
            assert (second.error_code, second.base_offset) == (ErrorCode.none, 2)
            whole = fetched(c.request(fetch({"t": {0: 0}})))
            assert whole.error_code == ErrorCode.none
            assert (whole.high_watermark, whole.last_stable_offset, whole.log_start_offset) == (5, 5, 0)
            assert values(whole) == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d"), (4, b"e")]
            # An offset inside a batch returns that whole batch; the client skips records.
            inside = fetched(c.request(fetch({"t": {0: 3}})))
            assert values(inside) == [(2, b"c"), (3, b"d"), (4, b"e")]
            at_end = fetched(c.request(fetch({"t": {0: 5}})))
            assert at_end.error_code == ErrorCode.none and at_end.records == b""

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_every_fetch_version_reads_the_same_records(inproc: Any) -> Any:
    topic = inproc.broker.controller.create_topic("versions", 1)

    def check() -> None:
        with WireClient(inproc.port) as c:
            c.request(produce("versions", {0: make_batch([b"x", b"y"])}))
            for version in range(4, 19):
                ref = topic.topic_id if version >= 13 else "versions"
                part = fetched(c.request(fetch({ref: {0: 0}}, version=version), version=version))
                assert part.error_code == ErrorCode.none, version
                assert values(part) == [(0, b"x"), (1, b"y")], version

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_every_produce_version(inproc: Any) -> Any:
    topic = inproc.broker.controller.create_topic("pv", 1)

    def check() -> None:
        with WireClient(inproc.port) as c:
            for n, version in enumerate(range(3, 14)):
                ref = topic.topic_id if version >= 13 else "pv"
                part = partition_response(c.request(produce(ref, {0: make_batch([b"v"])}, version=version)))
                assert (part.error_code, part.base_offset) == (ErrorCode.none, n), version

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_produce_v0_to_v2_answer_unsupported_version_in_their_format(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("old", 1)
    # v0-v2 bodies are v3 without the transactional id.
    body = encode_body(produce("old", {0: make_batch([b"v"])}, version=3))[2:]

    def check() -> None:
        with WireClient(inproc.port) as c:
            for version in (0, 1, 2):
                c.send(encode_request(0, version, 40 + version, body, flexible=False))
                frame = c.recv_frame()
                assert struct.unpack_from(">i", frame)[0] == 40 + version
                # one topic "old", one partition 0 with UNSUPPORTED_VERSION (35), offset -1
                expected = struct.pack(">ih3sii hq", 1, 3, b"old", 1, 0, 35, -1)
                if version == 2:
                    expected += struct.pack(">q", -1)  # log append time
                if version >= 1:
                    expected += struct.pack(">i", 0)  # throttle time
                assert frame[4:] == expected
        assert inproc.broker.get_log("old", 0).high_watermark == 0

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_acks_zero_sends_no_response(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("quiet", 1)

    def check() -> None:
        with WireClient(inproc.port) as c:
            c.send(encode_request(0, 9, 1, encode_body(produce("quiet", {0: make_batch([b"q"])}, acks=0))))
            # The next answer on the connection is the Metadata one: nothing came for the Produce.
            c.send(encode_request(3, 12, 2, encode_body(metadata(["quiet"]))))
            correlation_id, response = decode_response(3, 12, c.recv_frame())
            assert correlation_id == 2 and response.topics[0].name == "quiet"
        assert inproc.broker.get_log("quiet", 0).high_watermark == 1

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_acks_zero_with_an_error_closes_the_connection(inproc: Any) -> Any:
    def check() -> None:
        with WireClient(inproc.port) as c:
            c.send(encode_request(0, 9, 1, encode_body(produce("missing", {0: make_batch([b"q"])}, acks=0))))
            assert c.is_closed_by_peer()

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_produce_errors(tmp_path: Any) -> Any:
    broker = start_in_process(tmp_path, overrides=["auto.create.topics.enable=false"])
    controller = broker.broker.controller
    controller.create_topic("small", 1, configs={"max.message.bytes": "2000"})

    good = make_batch([b"ok"])
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 0xFF
    cases = [
        (produce("missing", {0: good}), ErrorCode.unknown_topic_or_partition),
        (produce("small", {7: good}), ErrorCode.unknown_topic_or_partition),
        (produce("small", {0: bytes(bad_crc)}), ErrorCode.corrupt_message),
        (produce("small", {0: make_batch([b"x"], pad_records=5000)}), ErrorCode.message_too_large),
        (produce("small", {0: good + good}), ErrorCode.invalid_record),
        (produce("small", {0: make_batch([b"x"], magic=1)}), ErrorCode.invalid_record),
        (produce("small", {0: None}), ErrorCode.invalid_record),
        (produce("small", {0: b""}), ErrorCode.invalid_record),
        (produce("small", {0: make_batch([b"x"], last_offset_delta=5)}), ErrorCode.invalid_record),
        (produce("small", {0: good}, acks=2), ErrorCode.invalid_required_acks),
        (produce("small", {0: make_batch([b"x"], compression="zstd")}, version=6),
         ErrorCode.unsupported_compression_type),
        (produce(uuid.uuid4(), {0: good}, version=13), ErrorCode.unknown_topic_id),
    ]

    def check() -> None:
        with WireClient(broker.port) as c:
            for request, expected in cases:
                part = partition_response(c.request(request))
                assert part.error_code == expected, (request, part)
                assert part.base_offset == -1
            # The connection is still usable and nothing was appended.
            part = partition_response(c.request(produce("small", {0: good})))
            assert (part.error_code, part.base_offset) == (ErrorCode.none, 0)

    try:
        yield in_thread(check)
    finally:
        yield broker.service.stopService()


@pytest_twisted.inlineCallbacks
def test_produce_to_internal_topic_is_refused(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("__consumer_offsets", 1)

    def check() -> None:
        with WireClient(inproc.port) as c:
            part = partition_response(c.request(produce("__consumer_offsets", {0: make_batch([b"x"])})))
            assert part.error_code == ErrorCode.invalid_topic_exception
            assert "internal topic" in part.error_message

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_log_append_time_topic(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("lat", 1, configs={"message.timestamp.type": "LogAppendTime"})

    def check() -> None:
        with WireClient(inproc.port) as c:
            before = int(time.time() * 1000)
            part = partition_response(c.request(produce("lat", {0: make_batch([b"x"], timestamp=T0)})))
            append_ms = round(part.log_append_time.timestamp() * 1000)
            assert before - 1000 <= append_ms <= int(time.time() * 1000) + 1000
            [record] = parse_batches(fetched(c.request(fetch({"lat": {0: 0}}))).records)
            assert record.timestamp == append_ms  # rewritten, and the CRC still checks out

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_fetch_errors(inproc: Any) -> Any:
    topic = inproc.broker.controller.create_topic("f", 2)

    def check() -> None:
        with WireClient(inproc.port) as c:
            c.request(produce("f", {0: make_batch([b"a", b"b"])}))
            beyond = fetched(c.request(fetch({"f": {0: 3}})))
            assert beyond.error_code == ErrorCode.offset_out_of_range
            assert beyond.high_watermark == 2
            negative = fetched(c.request(fetch({"f": {0: -1}})))
            assert negative.error_code == ErrorCode.offset_out_of_range
            unknown = fetched(c.request(fetch({"nope": {0: 0}})))
            assert unknown.error_code == ErrorCode.unknown_topic_or_partition
            no_partition = fetched(c.request(fetch({"f": {9: 0}})))
            assert no_partition.error_code == ErrorCode.unknown_topic_or_partition
            by_id = fetched(c.request(fetch({uuid.uuid4(): {0: 0}}, version=13), version=13))
            assert by_id.error_code == ErrorCode.unknown_topic_id
            fenced = fetched(c.request(fetch({"f": {0: 0}}, current_leader_epoch=5)))
            assert fenced.error_code == ErrorCode.unknown_leader_epoch
            good = fetched(c.request(fetch({topic.topic_id: {0: 0}}, version=13), version=13))
            assert values(good) == [(0, b"a"), (1, b"b")]

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_kip74_first_batch_whole_then_limits(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("big", 2)

    def check() -> None:
        with WireClient(inproc.port) as c:
            for p in (0, 1):
                c.request(produce("big", {p: make_batch([b"x"], pad_records=10_000)}))
                c.request(produce("big", {p: make_batch([b"y"], pad_records=10_000)}))
            # max_bytes far below one batch: the first partition still gets one whole batch,
            # the second gets nothing.
            response = c.request(fetch({"big": {0: 0, 1: 0}}, max_bytes=100, partition_max_bytes=100))
            first, second = response.responses[0].partitions
            assert [r.value[:1] for r in parse_batches(first.records)] == [b"x"]
            assert second.records == b"" and second.error_code == ErrorCode.none
            # Enough room for both batches of partition 0 and one of partition 1.
            response = c.request(fetch({"big": {0: 0, 1: 0}}, max_bytes=3 * 10_100,
                                       partition_max_bytes=1 << 20))
            first, second = response.responses[0].partitions
            assert len(parse_batches(first.records)) == 2
            assert len(parse_batches(second.records)) == 1

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_long_poll_wakes_on_append_and_keeps_response_order(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("lp", 1)

    def check() -> None:
        with WireClient(inproc.port) as waiting, WireClient(inproc.port) as producer:
            # A long poll, then a Metadata request pipelined behind it on the same connection.
            waiting.send(encode_request(1, 12, 1, encode_body(fetch({"lp": {0: 0}}, max_wait_ms=10_000))))
            waiting.send(encode_request(3, 12, 2, encode_body(metadata(["lp"]))))
            time.sleep(0.2)
            start = time.monotonic()
            producer.request(produce("lp", {0: make_batch([b"wake"])}))
            correlation_id, response = decode_response(1, 12, waiting.recv_frame())
            assert time.monotonic() - start < 5  # woken by the append, long before max_wait
            assert correlation_id == 1
            assert values(fetched(response)) == [(0, b"wake")]
            assert decode_response(3, 12, waiting.recv_frame())[0] == 2

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_long_poll_times_out_empty(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("idle", 1)

    def check() -> None:
        with WireClient(inproc.port) as c:
            start = time.monotonic()
            part = fetched(c.request(fetch({"idle": {0: 0}}, max_wait_ms=300)))
            assert time.monotonic() - start >= 0.29
            assert part.error_code == ErrorCode.none and part.records == b""

    yield in_thread(check)
    assert len(inproc.broker.waiters) == 0


@pytest_twisted.inlineCallbacks
def test_long_poll_waits_for_min_bytes(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("mb", 1)

    def check() -> None:
        with WireClient(inproc.port) as waiting, WireClient(inproc.port) as producer:
            waiting.send(encode_request(1, 12, 1, encode_body(
                fetch({"mb": {0: 0}}, max_wait_ms=10_000, min_bytes=5000))))
            producer.request(produce("mb", {0: make_batch([b"small"])}))
            time.sleep(0.3)
            producer.request(produce("mb", {0: make_batch([b"big"], pad_records=6000)}))
            _, response = decode_response(1, 12, waiting.recv_frame())
            assert values(fetched(response))[0][1] == b"small"
            assert len(values(fetched(response))) == 2

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_closing_a_connection_cancels_its_long_poll(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("gone", 1)

    def check() -> None:
        with WireClient(inproc.port) as c:
            c.send(encode_request(1, 12, 1, encode_body(fetch({"gone": {0: 0}}, max_wait_ms=30_000))))
            time.sleep(0.2)
        time.sleep(0.2)

    yield in_thread(check)
    assert len(inproc.broker.waiters) == 0


@pytest_twisted.inlineCallbacks
def test_incremental_fetch_session(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("s", 2)

    def check() -> None:
        with WireClient(inproc.port) as c:
            c.request(produce("s", {0: make_batch([b"a"]), 1: make_batch([b"b"])}))
            full = c.request(fetch({"s": {0: 0, 1: 0}}, session_id=0, session_epoch=0))
            session = full.session_id
            assert session != 0 and len(full.responses[0].partitions) == 2
            # The client moved past both records (it names partitions whose offset changed);
            # nothing else changed: an empty incremental response.
            empty = c.request(fetch({"s": {0: 1, 1: 1}}, session_id=session, session_epoch=1))
            assert empty.error_code == ErrorCode.none and empty.session_id == session
            assert empty.responses == ()
            # Partition 0 moved on; new data arrives on partition 1 only.
            c.request(produce("s", {1: make_batch([b"c"])}))
            update = c.request(fetch({}, session_id=session, session_epoch=2))
            parts = update.responses[0].partitions
            assert [p.partition_index for p in parts] == [1]
            assert values(parts[0]) == [(1, b"c")]
            # Forget partition 1, produce to it: the session no longer reports it.
            c.request(fetch({"s": {1: 2}}, session_id=session, session_epoch=3))
            c.request(fetch({}, session_id=session, session_epoch=4, forgotten={"s": [1]}))
            c.request(produce("s", {1: make_batch([b"d"])}))
            assert c.request(fetch({}, session_id=session, session_epoch=5)).responses == ()
            # Epoch errors, unknown sessions, and closing.
            stale = c.request(fetch({}, session_id=session, session_epoch=2))
            assert stale.error_code == ErrorCode.invalid_fetch_session_epoch
            assert stale.responses == () and stale.session_id == 0
            lost = c.request(fetch({}, session_id=12345, session_epoch=1))
            assert lost.error_code == ErrorCode.fetch_session_id_not_found
            closed = c.request(fetch({"s": {0: 0}}, session_id=session, session_epoch=-1))
            assert closed.session_id == 0 and len(closed.responses[0].partitions) == 1
            again = c.request(fetch({}, session_id=session, session_epoch=6))
            assert again.error_code == ErrorCode.fetch_session_id_not_found

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_fetch_session_cache_evicts_idle_sessions(tmp_path: Any) -> Any:
    broker = start_in_process(tmp_path, overrides=["max.incremental.fetch.session.cache.slots=1"])
    broker.broker.controller.create_topic("e", 1)
    broker.broker.fetch_sessions.eviction_ms = 0  # every session is evictable at once

    def check() -> None:
        with WireClient(broker.port) as c:
            first = c.request(fetch({"e": {0: 0}}, session_epoch=0)).session_id
            second = c.request(fetch({"e": {0: 0}}, session_epoch=0)).session_id
            assert first and second and first != second
            evicted = c.request(fetch({}, session_id=first, session_epoch=1))
            assert evicted.error_code == ErrorCode.fetch_session_id_not_found
            assert c.request(fetch({}, session_id=second, session_epoch=1)).error_code == ErrorCode.none

    try:
        yield in_thread(check)
    finally:
        yield broker.service.stopService()


@pytest_twisted.inlineCallbacks
def test_list_offsets(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("lo", 1)

    def check() -> None:
        with WireClient(inproc.port) as c:
            empty = c.request(list_offsets("lo", {0: -1}, version=7)).topics[0].partitions[0]
            assert (empty.error_code, empty.offset, empty.timestamp) == (ErrorCode.none, 0, -1)
            c.request(produce("lo", {0: make_batch([(None, b"a", [], T0), (None, b"b", [], T0 + 10)])}))
            c.request(produce("lo", {0: make_batch([(None, b"c", [], T0 + 50), (None, b"d", [], T0 + 20)])}))

            def lookup(ts: int, version: int = 7) -> tuple[int, int]:
                response = c.request(list_offsets("lo", {0: ts}, version=version), version=version)
                p = response.topics[0].partitions[0]
                assert p.error_code == ErrorCode.none
                return int(p.offset), int(p.timestamp)

            assert lookup(-1) == (4, -1)
            assert lookup(-2) == (0, -1)
            assert lookup(-3) == (2, T0 + 50)
            assert lookup(T0) == (0, T0)
            assert lookup(T0 + 5) == (1, T0 + 10)
            assert lookup(T0 + 15) == (2, T0 + 50)
            assert lookup(T0 + 51) == (-1, -1)
            for version in range(1, 12):
                assert lookup(-1, version)[0] == 4
            unknown = c.request(list_offsets("nope", {0: -1})).topics[0].partitions[0]
            assert unknown.error_code == ErrorCode.unknown_topic_or_partition

    yield in_thread(check)


@pytest_twisted.inlineCallbacks
def test_metadata(tmp_path: Any) -> Any:
    auto = start_in_process(tmp_path / "auto", overrides=["num.partitions=3"])
    manual = start_in_process(tmp_path / "manual", overrides=["auto.create.topics.enable=false"])

    def check() -> None:
        with WireClient(auto.port) as c:
            response = c.request(metadata(["created"]))
            [topic] = response.topics
            assert topic.error_code == ErrorCode.none and len(topic.partitions) == 3
            assert topic.topic_id != uuid.UUID(int=0)
            assert [p.leader_id for p in topic.partitions] == [1, 1, 1]
            assert response.brokers[0].port == auto.port and response.cluster_id
            not_asked = c.request(metadata(["kept-away"], allow_auto_topic_creation=False)).topics[0]
            assert not_asked.error_code == ErrorCode.unknown_topic_or_partition
            invalid = c.request(metadata(["bad name!"])).topics[0]
            assert invalid.error_code == ErrorCode.invalid_topic_exception
            by_id = c.request(metadata(None, topic_ids=[topic.topic_id]))
            assert by_id.topics[0].name == "created"
            unknown_id = c.request(metadata(None, topic_ids=[uuid.uuid4()])).topics[0]
            assert unknown_id.error_code == ErrorCode.unknown_topic_id
            listed = c.request(metadata(None)).topics
            assert [t.name for t in listed] == ["created"]
            offsets = c.request(metadata(["__consumer_offsets"])).topics[0]
            assert offsets.is_internal and len(offsets.partitions) == 50  # offsets.topic.num.partitions
            for version in range(0, 14):
                old = c.request(metadata(["created"], version=version), version=version)
                assert old.topics[0].name == "created" and len(old.topics[0].partitions) == 3
        with WireClient(manual.port) as c:
            topic = c.request(metadata(["absent"])).topics[0]
            assert topic.error_code == ErrorCode.unknown_topic_or_partition

    try:
        yield in_thread(check)
    finally:
        yield auto.service.stopService()
        yield manual.service.stopService()


@pytest.mark.parametrize("storage", ["memory", "disk"])
@pytest_twisted.inlineCallbacks
def test_large_batches_round_trip(tmp_path: Any, storage: str) -> Any:
    broker = start_in_process(tmp_path, storage=storage, overrides=["message.max.bytes=20000000"])
    broker.broker.controller.create_topic("huge", 1)
    batch = make_batch([b"h"], pad_records=8 * 1024 * 1024)

    def check() -> None:
        with WireClient(broker.port) as c:
            assert partition_response(c.request(produce("huge", {0: batch}))).error_code == ErrorCode.none
            part = fetched(c.request(fetch({"huge": {0: 0}}, max_bytes=100, partition_max_bytes=100)))
            [record] = parse_batches(part.records)
            assert record.value == b"h" + b"\x00" * (8 * 1024 * 1024)

    try:
        yield in_thread(check)
    finally:
        yield broker.service.stopService()


@pytest_twisted.inlineCallbacks
def test_flush_messages_one_answers_after_the_fsync(tmp_path: Any) -> Any:
    broker = start_in_process(tmp_path, storage="disk")
    broker.broker.controller.create_topic("synced", 1, configs={"flush.messages": "1"})
    log = broker.broker.get_log("synced", 0)
    recovery_points = []

    def check() -> None:
        with WireClient(broker.port) as c:
            for n in range(3):
                part = partition_response(c.request(produce("synced", {0: make_batch([b"d"])})))
                assert part.base_offset == n
                # The recovery point moves when an fsync completes, before the answer leaves.
                recovery_points.append(log.recovery_point)

    try:
        yield in_thread(check)
    finally:
        yield broker.service.stopService()
    assert recovery_points == [1, 2, 3]
