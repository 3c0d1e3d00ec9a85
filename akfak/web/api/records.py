"""/api/topics/NAME/partitions/P/records: the message browser.

A page of records from `offset` (default: the log start), or from the first record at or
after `timestamp` (ms; ListOffsets' look-up), at most `limit` (default 50, at most 500).
The log is read in slices of at most SLICE_BYTES, each decoded on the reactor and followed
by a turn of the reactor, and at most MAX_SLICES of them per page: a page never reads more
than a few MiB nor holds the reactor for long.  Data a log does not hold in memory (postgres:
below the cached tail) is read on a thread first (`prepare_read`, `prepare_timestamp`).
Only the batches of the page are decoded (akfak.log.records).

Each record: offset, timestamp (and whether it is the broker's LogAppendTime), key, value
and headers each as {size, text (UTF-8, else null), json (whether the text is JSON), hex
(the first HEX_BYTES), truncated}; `control` ("COMMIT"/"ABORT") for a transaction marker;
`aborted` for a record of an aborted transaction (from the partition's aborted-transaction
index, as a read_committed Fetch learns it); `uncommitted` at or past the last stable
offset of a transactional batch.  `next_offset` continues the page; `prev_offset` is where
a page of the same size before it starts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from akfak.log.batch import scan
from akfak.log.records import CONTROL_ABORT, CONTROL_COMMIT, iter_records, read_marker
from akfak.web.api import Params, Query, Routes, int_param, partition_log

SLICE_BYTES = 256 * 1024
MAX_SLICES = 16
MAX_LIMIT = 500
TEXT_BYTES = 16 * 1024
HEX_BYTES = 1024
_JSON_STARTS = frozenset('{["-0123456789tfn')


def render_bytes(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    shown = data[:TEXT_BYTES]
    try:
        text: str | None = shown.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    is_json = False
    if text is not None and len(data) <= TEXT_BYTES and text.strip()[:1] in _JSON_STARTS:
        try:
            json.loads(text)
            is_json = True
        except ValueError:
            pass
    return {"size": len(data), "text": text, "json": is_json, "hex": data[:HEX_BYTES].hex(),
            "truncated": len(data) > TEXT_BYTES}


def _batches(data: bytes) -> Iterator[tuple[Any, bytes]]:
    for pos, header in scan(data):
        yield header, data[pos : pos + header.size]


@inlineCallbacks
def browse(state: Any, params: Params, query: Query) -> Any:
    broker = state.broker
    log = partition_log(broker, params)
    limit = int_param(query, "limit", 50, minimum=1, maximum=MAX_LIMIT)
    low, high = log.log_start_offset, log.high_watermark
    if query.get("timestamp"):
        timestamp = int_param(query, "timestamp")
        if (waiting := log.prepare_timestamp(timestamp)) is not None:
            yield waiting  # (postgres: a search below the cached tail runs on a thread)
        found = log.offset_for_timestamp(timestamp)
        start = high if found is None else found.offset
    else:
        start = int_param(query, "offset", low)
    start = min(max(start, low), high)
    records: list[dict[str, Any]] = []
    position, slices, next_offset = start, 0, start
    while position < log.high_watermark and len(records) < limit and slices < MAX_SLICES:
        if slices:
            # a turn of the reactor between slices: Kafka clients are served meanwhile
            yield deferLater(broker.clock, 0, lambda: None)
            if log.closed:
                break
            position = max(position, log.log_start_offset)
        slices += 1
        if (waiting := log.prepare_read(position, SLICE_BYTES)) is not None:
            yield waiting  # old data (postgres: below the cached tail) is read on a thread
            if log.closed:
                break
        result = log.read(position, SLICE_BYTES)
        if not result.parts or result.next_offset is None:
            break
        data = b"".join(bytes(p) for p in result.parts)
        upper = result.next_offset
        aborted = log.collect_aborted(position, upper)
        lso = log.last_stable_offset
        for header, batch in _batches(data):
            if len(records) >= limit:
                break
            if header.last_offset < start:
                continue
            next_offset = header.next_offset
            if header.is_control:
                marker = read_marker(batch)
                kind = None if marker is None else marker[0]
                records.append({
                    "offset": header.base_offset, "timestamp": header.max_timestamp,
                    "control": {CONTROL_COMMIT: "COMMIT", CONTROL_ABORT: "ABORT"}.get(
                        kind, f"type {kind}"),
                    "producer_id": header.producer_id, "key": None, "value": None,
                    "headers": []})
                continue
            in_aborted = header.is_transactional and any(
                a.producer_id == header.producer_id and a.first_offset <= header.base_offset
                <= a.last_offset for a in aborted)
            for record in iter_records(batch):
                if record.offset < start:
                    continue
                if len(records) >= limit:
                    next_offset = record.offset
                    break
                entry: dict[str, Any] = {
                    "offset": record.offset, "timestamp": record.timestamp,
                    "log_append_time": header.is_log_append_time,
                    "key": render_bytes(record.key), "value": render_bytes(record.value),
                    "headers": [{"key": k, "value": render_bytes(v)} for k, v in record.headers],
                }
                if header.is_transactional:
                    entry["producer_id"] = header.producer_id
                    entry["transactional"] = True
                    if in_aborted:
                        entry["aborted"] = True
                    elif record.offset >= lso:
                        entry["uncommitted"] = True
                records.append(entry)
        position = upper
    return {
        "topic": log.topic, "partition": log.partition,
        "log_start_offset": log.log_start_offset, "end_offset": log.high_watermark,
        "last_stable_offset": log.last_stable_offset,
        "start": start, "limit": limit,
        "next_offset": min(next_offset, log.high_watermark) if records else start,
        "prev_offset": max(low, start - limit),
        "records": records,
    }


def add_routes(routes: Routes) -> None:
    routes.add("GET", "topics/{name}/partitions/{partition}/records", browse)

