"""The hand-written Fetch response encoder gives exactly kio's bytes, for every version."""

from __future__ import annotations

import dataclasses
import sys
import uuid
from typing import Any

import pytest
from kio.index import load_response_schema
from kio.schema.errors import ErrorCode

from akfak.handlers.base import NO_THROTTLE, encode_entity
from akfak.handlers.fetch_response import PartitionResult, TopicResult, encode_fetch_response

TOPIC_ID = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")


def kio_entity(version: int, topics: list[TopicResult], error: int, session_id: int,
               endpoints: tuple[tuple[int, str, int, str | None], ...] = ()) -> Any:
    schema = load_response_schema(1, version)
    module = sys.modules[schema.__module__]
    names = {f.name for f in dataclasses.fields(schema)}
    topic_type = module.FetchableTopicResponse
    topic_fields = {f.name for f in dataclasses.fields(topic_type)}
    partition_type = module.PartitionData
    partition_fields = {f.name for f in dataclasses.fields(partition_type)}

    def partition(p: PartitionResult) -> Any:
        values: dict[str, Any] = {
            "partition_index": p.index,
            "error_code": ErrorCode(p.error),
            "high_watermark": p.high_watermark,
            "last_stable_offset": p.last_stable_offset,
            "log_start_offset": p.log_start_offset,
            "aborted_transactions": None if p.aborted is None else tuple(
                module.AbortedTransaction(producer_id=a, first_offset=b) for a, b in p.aborted),
            "preferred_read_replica": -1,
            "records": b"".join(p.records),
        }
        if p.current_leader is not None:
            values["current_leader"] = module.LeaderIdAndEpoch(leader_id=p.current_leader[0],
                                                               leader_epoch=p.current_leader[1])
        return partition_type(**{k: v for k, v in values.items() if k in partition_fields})

    def topic(t: TopicResult) -> Any:
        values = {"topic": t.name, "topic_id": t.topic_id, "partitions": tuple(map(partition, t.partitions))}
        return topic_type(**{k: v for k, v in values.items() if k in topic_fields})

    values = {"throttle_time": NO_THROTTLE, "error_code": ErrorCode(error), "session_id": session_id,
              "responses": tuple(map(topic, topics))}
    if endpoints:
        values["node_endpoints"] = tuple(module.NodeEndpoint(node_id=n, host=h, port=p, rack=r)
                                         for n, h, p, r in endpoints)
    return schema(**{k: v for k, v in values.items() if k in names})


@pytest.mark.parametrize("version", range(4, 19))
def test_matches_kio(version: int) -> None:
    topics = [
        TopicResult("orders", TOPIC_ID, [
            PartitionResult(0, 0, 10, 10, 0, [b"batch-one", b"batch-two!"], 19),
            PartitionResult(1, 1, 5, 5, 2),
            PartitionResult(2, 0, 7, 7, 0, [b"x" * 300], 300, aborted=[(9, 3), (11, 4)]),
        ]),
        TopicResult("empty", uuid.UUID(int=7), []),
        TopicResult("t" * 200, uuid.UUID(int=8), [PartitionResult(3, 0, 0, 0, 0, aborted=[])]),
    ]
    ours = b"".join(encode_fetch_response(version, 0, 1234, topics))
    assert ours == encode_entity(kio_entity(version, topics, 0, 1234))


@pytest.mark.parametrize("version", [4, 7, 12, 13, 18])
def test_session_error_response(version: int) -> None:
    ours = b"".join(encode_fetch_response(version, 70, 0, []))
    assert ours == encode_entity(kio_entity(version, [], 70, 0))


@pytest.mark.parametrize("version", [12, 15, 16, 18])
def test_kip951_current_leader_and_node_endpoints(version: int) -> None:
    topics = [TopicResult("orders", TOPIC_ID, [
        PartitionResult(0, 6, current_leader=(2, 7)),
        PartitionResult(1, 0, 5, 5, 0, [b"batch"], 5),
    ])]
    endpoints = [(2, "127.0.0.1", 9093, None), (3, "broker-3", 9094, "rack-a")]
    ours = b"".join(encode_fetch_response(version, 0, 0, topics, node_endpoints=endpoints))
    assert ours == encode_entity(kio_entity(version, topics, 0, 0,
                                            tuple(endpoints) if version >= 16 else ()))


def test_records_are_passed_through_not_copied() -> None:
    big = b"r" * 1_000_000
    parts = encode_fetch_response(12, 0, 0, [TopicResult("t", TOPIC_ID, [PartitionResult(0, records=[big],
                                                                                     records_size=len(big))])])
    assert any(part is big for part in parts)
