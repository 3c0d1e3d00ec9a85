"""The console's write actions (POST), refused with 403 unless akfak.http.allow.writes=true.

Each builds the Kafka request a client would send and hands it to the broker's own
handler for that API, so it is checked, logged and applied exactly as from a client
(the controller for topics, the partition log for records, the group coordinator for
offsets), as principal User:ANONYMOUS from the HTTP peer:

- POST /api/topics {name, partitions=1, configs={}}: CreateTopics v7 (replication 1);
- POST /api/topics/NAME/delete: DeleteTopics v6;
- POST /api/topics/NAME/partitions/P/produce {key, value, headers={}}: Produce v9 acks=-1
  of one uncompressed record (strings as UTF-8; null key or value allowed);
- POST /api/topics/NAME/partitions/P/delete-records {offset}: DeleteRecords v2 (-1: the
  end offset);
- POST /api/groups/ID/reset-offsets {topic, partition?, to: "earliest"|"latest"|offset}:
  OffsetCommit v8 as a standalone commit (generation -1), as kafka-consumer-groups
  --reset-offsets does; the coordinator refuses it while the group has members.

The answer is the handler's response as JSON; a Kafka error in it makes a 400 whose
message names the error codes and messages.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any

from kio.static.primitive import i16, i32, i32Timedelta, i64
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from akfak.handlers.base import request_schema
from akfak.log.records import encode_batch
from akfak.protocol import RequestContext, RequestHeader
from akfak.security.acls import ANONYMOUS
from akfak.web.api import ApiError, Params, Query, Routes, int_param
from akfak.web.api.entities import to_json

log = Logger()

CREATE_TOPICS, DELETE_TOPICS, PRODUCE, DELETE_RECORDS, OFFSET_COMMIT = 19, 20, 0, 21, 8
VERSIONS = {CREATE_TOPICS: 7, DELETE_TOPICS: 6, PRODUCE: 9, DELETE_RECORDS: 2, OFFSET_COMMIT: 8}
TIMEOUT = i32Timedelta.parse(datetime.timedelta(seconds=30))


class ConsoleConnection:
    """What a handler may ask of the connection a request came on: here, none."""

    principal = ANONYMOUS
    peer = "console"

    def pause(self, reason: str) -> None:
        """Throttling (client quotas) has no connection to mute here."""

    def unpause(self, reason: str) -> None:
        pass

    def drop(self, reason: str) -> None:
        log.info("console write: {reason}", reason=reason)


def _module(api_key: int) -> Any:
    return sys.modules[request_schema(api_key, VERSIONS[api_key]).__module__]


def _errors(value: Any) -> list[str]:
    """"CODE: message" for every error in a JSON-rendered response."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            code = item.get("error_code")
            if isinstance(code, str) and code != "none":
                message = item.get("error_message")
                found.append(f"{code.upper()}: {message}" if message else code.upper())
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(item)
    return found


def call_handler(state: Any, api_key: int, request: Any) -> Deferred[Any]:
    """Run `request` through the broker's handler for `api_key`; fires with the response
    as JSON (ApiError 400 when it carries an error)."""
    if not state.writes_allowed:
        raise ApiError(403, "the console is read-only (set akfak.http.allow.writes=true)")
    broker = state.broker
    handler = broker.registry.get(api_key)
    version = VERSIONS[api_key]
    header = RequestHeader(api_key, version, 0, "akfak-console", True, 0)
    listener = broker.config.listeners()[0].name
    context = RequestContext(header, "console", broker, ConsoleConnection(), listener)  # type: ignore[arg-type]
    api = type(request).__name__.removesuffix("Request")

    def answered(response: Any) -> dict[str, Any]:
        rendered = to_json(response)
        errors = _errors(rendered)
        log.info("console write {api}: {outcome}", api=api, outcome=", ".join(errors) or "done")
        if errors:
            raise ApiError(400, f"{api}: {'; '.join(errors)}")
        return {"api": api, "response": rendered}

    return maybeDeferred(handler.handle, request, context).addCallback(answered)


def _text(value: Any) -> bytes | None:
    return None if value is None else str(value).encode("utf-8")


def create_topic(state: Any, params: Params, query: Query) -> Any:
    m = _module(CREATE_TOPICS)
    configs = query.get("configs") or {}
    if not isinstance(configs, dict):
        raise ApiError(400, "configs must be an object")
    name = query.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "name is required")
    topic = m.CreatableTopic(
        name=name, num_partitions=i32(int_param(query, "partitions", 1)),
        replication_factor=i16(1), assignments=(),
        configs=tuple(m.CreatableTopicConfig(name=str(k), value=None if v is None else str(v))
                      for k, v in configs.items()))
    return call_handler(state, CREATE_TOPICS, m.CreateTopicsRequest(
        topics=(topic,), timeout=TIMEOUT, validate_only=False))


def delete_topic(state: Any, params: Params, query: Query) -> Any:
    m = _module(DELETE_TOPICS)
    return call_handler(state, DELETE_TOPICS, m.DeleteTopicsRequest(
        topics=(m.DeleteTopicState(name=params["name"], topic_id=None),), timeout=TIMEOUT))


def produce(state: Any, params: Params, query: Query) -> Any:
    m = _module(PRODUCE)
    headers = query.get("headers") or {}
    if not isinstance(headers, dict):
        raise ApiError(400, "headers must be an object")
    batch = encode_batch([(_text(query.get("key")), _text(query.get("value")))],
                         timestamp=state.broker.now_ms(),
                         headers=[(str(k), _text(v)) for k, v in headers.items()])
    partition = m.PartitionProduceData(index=i32(int_param(params, "partition")), records=batch)
    return call_handler(state, PRODUCE, m.ProduceRequest(
        transactional_id=None, acks=i16(-1), timeout=TIMEOUT,
        topic_data=(m.TopicProduceData(name=params["name"], partition_data=(partition,)),)))


def delete_records(state: Any, params: Params, query: Query) -> Any:
    m = _module(DELETE_RECORDS)
    partition = m.DeleteRecordsPartition(partition_index=i32(int_param(params, "partition")),
                                         offset=i64(int_param(query, "offset")))
    return call_handler(state, DELETE_RECORDS, m.DeleteRecordsRequest(
        topics=(m.DeleteRecordsTopic(name=params["name"], partitions=(partition,)),),
        timeout=TIMEOUT))


def reset_offsets(state: Any, params: Params, query: Query) -> Any:
    broker = state.broker
    topic = query.get("topic")
    if not isinstance(topic, str) or broker.image.topic(topic) is None:
        raise ApiError(400, "topic must name an existing topic")
    indexes = sorted(broker.image.topic(topic).partitions)
    if query.get("partition") not in (None, ""):
        indexes = [int_param(query, "partition")]
    to = str(query.get("to", "earliest"))
    m = _module(OFFSET_COMMIT)
    partitions = []
    for index in indexes:
        partition_log = broker.get_log(topic, index)
        if partition_log is None:
            raise ApiError(400, f"no partition {topic}-{index}")
        if to == "earliest":
            offset = partition_log.log_start_offset
        elif to == "latest":
            offset = partition_log.high_watermark
        else:
            offset = int_param({"to": to}, "to")
        partitions.append(m.OffsetCommitRequestPartition(
            partition_index=i32(index), committed_offset=i64(offset),
            committed_leader_epoch=i32(-1), committed_metadata=None))
    return call_handler(state, OFFSET_COMMIT, m.OffsetCommitRequest(
        group_id=params["group"], generation_id_or_member_epoch=i32(-1), member_id="",
        group_instance_id=None,
        topics=(m.OffsetCommitRequestTopic(name=topic, partitions=tuple(partitions)),)))


def add_routes(routes: Routes) -> None:
    routes.add("POST", "topics", create_topic)
    routes.add("POST", "topics/{name}/delete", delete_topic)
    routes.add("POST", "topics/{name}/partitions/{partition}/produce", produce)
    routes.add("POST", "topics/{name}/partitions/{partition}/delete-records", delete_records)
    routes.add("POST", "groups/{group}/reset-offsets", reset_offsets)
