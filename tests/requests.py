"""kio request entities for raw-protocol tests, built from plain arguments."""

from __future__ import annotations

import datetime
import sys
import uuid
from typing import Any

from kio.index import load_request_schema
from kio.static.primitive import i8, i16, i32, i32Timedelta, i64


def _module(api_key: int, version: int) -> Any:
    return sys.modules[load_request_schema(api_key, version).__module__]


def build(cls: Any, **fields: Any) -> Any:
    """An entity of `cls` from the fields its version has (the others are dropped)."""
    return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


def ms(value: int) -> i32Timedelta:
    return i32Timedelta.parse(datetime.timedelta(milliseconds=value))


def produce(topic: str | uuid.UUID, partitions: dict[int, bytes | None], *, acks: int = 1,
            version: int = 9, transactional_id: str | None = None) -> Any:
    m = _module(0, version)
    data = tuple(m.PartitionProduceData(index=i32(p), records=r) for p, r in partitions.items())
    return build(m.ProduceRequest, transactional_id=transactional_id, acks=i16(acks), timeout=ms(5000),
                 topic_data=(build(m.TopicProduceData, name=topic, topic_id=topic, partition_data=data),))


def fetch(topics: dict[Any, dict[int, int]], *, version: int = 12, max_wait_ms: int = 0,
          min_bytes: int = 1, max_bytes: int = 50 * 1024 * 1024, partition_max_bytes: int = 1 << 20,
          session_id: int = 0, session_epoch: int = -1, forgotten: dict[Any, list[int]] | None = None,
          isolation_level: int = 0, current_leader_epoch: int = -1) -> Any:
    """`topics` maps a name (or topic id from v13) to {partition: fetch offset}."""
    m = _module(1, version)
    key = "topic_id" if version >= 13 else "topic"
    return build(
        m.FetchRequest,
        replica_id=i32(-1), max_wait=ms(max_wait_ms), min_bytes=i32(min_bytes), max_bytes=i32(max_bytes),
        isolation_level=i8(isolation_level), session_id=i32(session_id),
        session_epoch=i32(session_epoch), rack_id="",
        topics=tuple(
            m.FetchTopic(**{key: t}, partitions=tuple(
                build(m.FetchPartition, partition=i32(p), fetch_offset=i64(o), log_start_offset=i64(-1),
                      partition_max_bytes=i32(partition_max_bytes),
                      current_leader_epoch=i32(current_leader_epoch))
                for p, o in parts.items()))
            for t, parts in topics.items()),
        forgotten_topics_data=tuple(
            m.ForgottenTopic(**{key: t}, partitions=tuple(i32(p) for p in ps))
            for t, ps in (forgotten or {}).items()),
    )


def list_offsets(topic: str, partitions: dict[int, int], *, version: int = 7,
                 isolation_level: int = 0) -> Any:
    """`partitions` maps partition -> timestamp (-1 latest, -2 earliest, -3 max timestamp)."""
    m = _module(2, version)
    return build(
        m.ListOffsetsRequest, replica_id=i32(-1), isolation_level=i8(isolation_level), timeout=ms(5000),
        topics=(m.ListOffsetsTopic(name=topic, partitions=tuple(
            build(m.ListOffsetsPartition, partition_index=i32(p), timestamp=i64(ts),
                  current_leader_epoch=i32(-1))
            for p, ts in partitions.items())),))


def metadata(topics: list[str] | None, *, version: int = 12, allow_auto_topic_creation: bool = True,
             topic_ids: list[uuid.UUID] | None = None) -> Any:
    m = _module(3, version)
    entries = None
    if topics is not None or topic_ids is not None:
        entries = tuple(build(m.MetadataRequestTopic, name=t, topic_id=uuid.UUID(int=0))
                        for t in topics or ())
        entries += tuple(build(m.MetadataRequestTopic, name=None, topic_id=t) for t in topic_ids or ())
    return build(m.MetadataRequest, topics=entries, allow_auto_topic_creation=allow_auto_topic_creation,
                 include_topic_authorized_operations=False, include_cluster_authorized_operations=False)
