"""Deleting a topic takes its committed offsets and wakes long polls on it."""

from __future__ import annotations

import time
from typing import Any

import pytest_twisted
from kio.schema.delete_topics.v5.request import DeleteTopicsRequest
from kio.schema.errors import ErrorCode
from kio.schema.offset_commit.v8 import request as commit
from kio.schema.offset_fetch.v7 import request as offset_fetch
from kio.static.primitive import i32, i64
from twisted.internet.threads import deferToThread

from tests.brokers import start_in_process
from tests.recordbatch import make_batch
from tests.requests import fetch, ms, produce
from tests.wire import WireClient, decode_response, encode_body, encode_request


def commit_offset(topic: str, offset: int) -> Any:
    return commit.OffsetCommitRequest(
        group_id="readers", generation_id_or_member_epoch=i32(-1), member_id="", topics=(
            commit.OffsetCommitRequestTopic(name=topic, partitions=(
                commit.OffsetCommitRequestPartition(partition_index=i32(0), committed_offset=i64(offset),
                                                    committed_metadata=""),)),))


def committed(client: WireClient, topic: str) -> int:
    response = client.request(offset_fetch.OffsetFetchRequest(group_id="readers", topics=(
        offset_fetch.OffsetFetchRequestTopic(name=topic, partition_indexes=(i32(0),)),)))
    return int(response.topics[0].partitions[0].committed_offset)


@pytest_twisted.inlineCallbacks
def test_deleting_a_topic_removes_its_committed_offsets(tmp_path: Any) -> Any:
    broker = start_in_process(tmp_path, overrides=["offsets.topic.num.partitions=1"])
    broker.broker.controller.create_topic("doomed", 1)
    broker.broker.controller.create_topic("kept", 1)

    def check() -> None:
        with WireClient(broker.port) as c:
            for topic in ("doomed", "kept"):
                c.request(produce(topic, {0: make_batch([b"a", b"b"])}))
                deadline = time.monotonic() + 10
                while True:  # the coordinator loads __consumer_offsets first
                    response = c.request(commit_offset(topic, 2))
                    error = response.topics[0].partitions[0].error_code
                    if error != ErrorCode.coordinator_load_in_progress or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                assert error == ErrorCode.none
                assert committed(c, topic) == 2
            deleted = c.request(DeleteTopicsRequest(topic_names=("doomed",), timeout=ms(5000)))
            assert deleted.responses[0].error_code == ErrorCode.none
            assert committed(c, "doomed") == -1
            assert committed(c, "kept") == 2

    try:
        yield deferToThread(check)
    finally:
        yield broker.service.stopService()


@pytest_twisted.inlineCallbacks
def test_deleting_a_topic_wakes_its_long_polls(inproc: Any) -> Any:
    inproc.broker.controller.create_topic("short-lived", 1)

    def check() -> None:
        with WireClient(inproc.port) as waiting, WireClient(inproc.port) as admin:
            waiting.send(encode_request(1, 12, 1, encode_body(
                fetch({"short-lived": {0: 0}}, max_wait_ms=30_000))))
            time.sleep(0.2)
            start = time.monotonic()
            admin.request(DeleteTopicsRequest(topic_names=("short-lived",), timeout=ms(5000)))
            _, response = decode_response(1, 12, waiting.recv_frame())
            assert time.monotonic() - start < 10
            assert response.responses[0].partitions[0].error_code == ErrorCode.unknown_topic_or_partition

    yield deferToThread(check)
