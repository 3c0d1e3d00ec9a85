"""DescribeTopicPartitions v0 over the raw protocol: sorting, unknown topics, and the
partition limit with the cursor paginating as Kafka 4 does."""

from __future__ import annotations

import uuid
from typing import Any

import pytest_twisted
from kio.schema.describe_topic_partitions.v0.request import (
    Cursor,
    DescribeTopicPartitionsRequest,
    TopicRequest,
)
from kio.schema.errors import ErrorCode
from kio.static.primitive import i32
from twisted.internet.threads import deferToThread

from tests.brokers import InProcessBroker
from tests.wire import WireClient

TOPIC_OPERATIONS = sum(1 << op for op in (3, 4, 5, 6, 7, 8, 10, 11))


def request(topics: list[str], limit: int = 2000, cursor: tuple[str, int] | None = None) -> Any:
    return DescribeTopicPartitionsRequest(
        topics=tuple(TopicRequest(name=t) for t in topics), response_partition_limit=i32(limit),
        cursor=None if cursor is None else Cursor(topic_name=cursor[0],
                                                  partition_index=i32(cursor[1])))


def exchange(port: int, *requests: Any) -> list[Any]:
    with WireClient(port) as client:
        return [client.request(r) for r in requests]


def paginate(port: int, topics: list[str], limit: int) -> list[Any]:
    """Every page, following next_cursor until it is null."""
    pages = []
    cursor = None
    with WireClient(port) as client:
        while True:
            page = client.request(request(topics, limit, cursor))
            pages.append(page)
            if page.next_cursor is None:
                return pages
            cursor = (page.next_cursor.topic_name, page.next_cursor.partition_index)
            assert len(pages) < 20, "the cursor does not advance"


def listed(page: Any) -> list[tuple[str, int]]:
    return [(t.name, p.partition_index) for t in page.topics for p in t.partitions]


def cursor_of(page: Any) -> tuple[str, int] | None:
    c = page.next_cursor
    return None if c is None else (c.topic_name, c.partition_index)


def create(broker: InProcessBroker, *topics: tuple[str, int]) -> None:
    for name, partitions in topics:
        broker.broker.controller.create_topic(name, partitions, 1)


@pytest_twisted.inlineCallbacks
def test_three_topics_five_partitions_limit_four(inproc: InProcessBroker) -> Any:
    create(inproc, ("gamma", 5), ("alpha", 5), ("beta", 5))
    pages = yield deferToThread(paginate, inproc.port, ["gamma", "alpha", "beta"], 4)
    every = [(t, p) for t in ("alpha", "beta", "gamma") for p in range(5)]
    assert [listed(page) for page in pages] == [every[0:4], every[4:8], every[8:12], every[12:15]]
    assert [cursor_of(page) for page in pages] == [
        ("alpha", 4), ("beta", 3), ("gamma", 2), None]
    # A topic split across pages appears on both, with its id each time.
    ids = {name: inproc.broker.image.topic(name).topic_id for name in ("alpha", "beta", "gamma")}
    for page in pages:
        for topic in page.topics:
            assert (topic.error_code, topic.topic_id) == (ErrorCode.none, ids[topic.name])
            assert topic.topic_authorized_operations == TOPIC_OPERATIONS
            assert not topic.is_internal
            for p in topic.partitions:
                assert (p.error_code, p.leader_id, p.leader_epoch, p.replica_nodes,
                        p.isr_nodes) == (ErrorCode.none, 1, 0, (1,), (1,))
                assert p.eligible_leader_replicas == () and p.offline_replicas == ()


@pytest_twisted.inlineCallbacks
def test_all_topics_when_none_named(inproc: InProcessBroker) -> Any:
    create(inproc, ("b", 2), ("a", 3), ("c", 1))
    pages = yield deferToThread(paginate, inproc.port, [], 3)
    assert [listed(page) for page in pages] == [
        [("a", 0), ("a", 1), ("a", 2)], [("b", 0), ("b", 1), ("c", 0)]]
    # The budget ran out exactly at a topic boundary: the cursor names the next topic.
    assert [cursor_of(page) for page in pages] == [("b", 0), None]


@pytest_twisted.inlineCallbacks
def test_unknown_and_invalid_topics(inproc: InProcessBroker) -> Any:
    create(inproc, ("known", 2))
    (response,) = yield deferToThread(exchange, inproc.port,
                                      request(["zz-missing", "known", "bad name", "aa-missing"]))
    assert [(t.name, t.error_code, t.topic_id, t.partitions) for t in response.topics] == [
        ("aa-missing", ErrorCode.unknown_topic_or_partition, None, ()),
        ("bad name", ErrorCode.invalid_topic_exception, None, ()),
        ("known", ErrorCode.none, inproc.broker.image.topic("known").topic_id,
         response.topics[2].partitions),
        ("zz-missing", ErrorCode.unknown_topic_or_partition, None, ()),
    ]
    assert [p.partition_index for p in response.topics[2].partitions] == [0, 1]
    assert response.next_cursor is None


@pytest_twisted.inlineCallbacks
def test_unknown_topics_use_no_budget(inproc: InProcessBroker) -> Any:
    create(inproc, ("b", 2), ("d", 2))
    pages = yield deferToThread(paginate, inproc.port, ["d", "c", "b", "a"], 2)
    assert [[(t.name, t.error_code, [p.partition_index for p in t.partitions])
             for t in page.topics] for page in pages] == [
        [("a", ErrorCode.unknown_topic_or_partition, []), ("b", ErrorCode.none, [0, 1])],
        # The cursor pointed at "c" (partition 0) although "c" does not exist, as in Kafka.
        [("c", ErrorCode.unknown_topic_or_partition, []), ("d", ErrorCode.none, [0, 1])],
    ]
    assert [cursor_of(page) for page in pages] == [("c", 0), None]


@pytest_twisted.inlineCallbacks
def test_cursor_must_name_a_requested_topic(inproc: InProcessBroker) -> Any:
    create(inproc, ("listed", 1))
    bad, good = yield deferToThread(
        exchange, inproc.port, request(["listed"], cursor=("other", 0)),
        request(["listed"], cursor=("listed", 0)))
    assert [(t.name, t.error_code) for t in bad.topics] == [("listed", ErrorCode.invalid_request)]
    assert [(t.name, t.error_code) for t in good.topics] == [("listed", ErrorCode.none)]


@pytest_twisted.inlineCallbacks
def test_cursor_inside_a_topic_and_limits(inproc: InProcessBroker) -> Any:
    create(inproc, ("one", 4), ("two", 2))
    resumed, nothing, all_of_them = yield deferToThread(
        exchange, inproc.port, request(["one", "two"], 3, ("one", 2)),
        request(["one", "two"], 0), request(["one", "two"], 100000))
    assert listed(resumed) == [("one", 2), ("one", 3), ("two", 0)]
    assert cursor_of(resumed) == ("two", 1)
    # A zero budget answers nothing and points at the first topic.
    assert (listed(nothing), cursor_of(nothing)) == ([], ("one", 0))
    assert len(listed(all_of_them)) == 6 and all_of_them.next_cursor is None


def test_zero_uuid_reads_as_none() -> None:
    # What the assertions above rely on: kio decodes the zero topic id as None.
    from kio.serial.readers import read_uuid

    assert read_uuid(uuid.UUID(int=0).bytes, 0) == (None, 16)
