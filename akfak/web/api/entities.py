"""Decoded Kafka requests and responses as JSON: what the request inspector shows.

Any dataclass (kio's entities, akfak's own result types) becomes an object of its fields;
enums their name, timedeltas milliseconds, datetimes epoch milliseconds, UUIDs their text,
bytes `{"bytes": n, "hex": the first 64}`.  Record data is summarised batch by batch from
the headers (offsets, counts, producer, flags), never decompressed.  Responses some
handlers hand over already encoded (Fetch, as parts of bytes and file ranges) are decoded
with kio's schema of their version, with the file ranges read as zeros: their batches show
as sent from a file.  Output is capped (lists, strings, depth) so one huge Metadata answer
cannot make a huge page.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import types
import typing
import uuid
from typing import Any

from kio.schema.errors import ErrorCode
from kio.serial import entity_reader

from akfak.handlers.base import response_schema
from akfak.log.batch import HEADER_SIZE, parse_header

MAX_ITEMS = 200
MAX_DEPTH = 12
MAX_BATCHES = 20
HEX_BYTES = 64

#: Fields of a type, looked up once per type (asdict would deep-copy everything).
_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def to_json(value: Any, depth: int = 0, name: str = "") -> Any:
    """A JSON-able rendering of `value` (see the module notes)."""
    if value is None or isinstance(value, bool | str):
        return value if not isinstance(value, str) or len(value) <= 1000 else value[:1000] + "…"
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, int | float):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return records_summary(value) if name == "records" else bytes_summary(value)
    if isinstance(value, datetime.timedelta):
        return int(value.total_seconds() * 1000)
    if isinstance(value, datetime.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, uuid.UUID):
        return str(value)
    if depth >= MAX_DEPTH:
        return "…"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {n: to_json(getattr(value, n), depth + 1, n) for n in _field_names(type(value))}
    if isinstance(value, tuple | list | set | frozenset):
        items = list(value)
        shown = [to_json(v, depth + 1, name) for v in items[:MAX_ITEMS]]
        if len(items) > MAX_ITEMS:
            shown.append(f"… {len(items) - MAX_ITEMS} more")
        return shown
    if isinstance(value, dict):
        return {str(k): to_json(v, depth + 1) for k, v in list(value.items())[:MAX_ITEMS]}
    return repr(value)[:200]


def bytes_summary(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    return {"bytes": len(data), "hex": bytes(data[:HEX_BYTES]).hex()}


def records_summary(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """A records field: its size and the headers of its first batches."""
    batches = []
    pos, size = 0, len(data)
    while pos + HEADER_SIZE <= size and len(batches) < MAX_BATCHES:
        header = parse_header(data, pos)
        if header.magic != 2 or header.batch_length <= 0:
            batches.append({"position": pos, "not_decoded": "sent from a file" if header.magic == 0
                            else f"magic {header.magic}"})
            break
        batches.append({
            "base_offset": header.base_offset, "last_offset": header.last_offset,
            "records": header.record_count, "size": header.size,
            "compression": header.compression, "base_timestamp": header.base_timestamp,
            "max_timestamp": header.max_timestamp, "producer_id": header.producer_id,
            "producer_epoch": header.producer_epoch, "base_sequence": header.base_sequence,
            "transactional": header.is_transactional, "control": header.is_control,
            "leader_epoch": header.partition_leader_epoch,
        })
        pos += header.size
    return {"bytes": size, "batches": batches}


def decoded(api_key: int, api_version: int, entity: Any) -> Any:
    """`entity` as JSON, decoding it first if a handler handed it over encoded."""
    if isinstance(entity, bytes | list):
        try:
            entity = _decode_response(api_key, api_version, entity)
        except Exception as e:  # an undecodable answer is shown as such, not a broken page
            return {"not_decoded": f"{type(e).__name__}: {e}"}
    return to_json(entity)


def _decode_response(api_key: int, api_version: int, encoded: bytes | list[Any]) -> Any:
    if isinstance(encoded, list):
        # file ranges (stored batches sent with sendfile) as zeros of their length
        encoded = b"".join(p if isinstance(p, bytes | bytearray | memoryview) else bytes(len(p))
                           for p in encoded)
    data = bytes(encoded)
    entity, _ = entity_reader(response_schema(api_key, api_version))(data, 0)
    return entity


# The error-code walk runs for every answered request, so each response type gets a plan
# once: which fields are error codes, entities or tuples of entities (the rest is skipped).
_ERROR, _ENTITY, _ENTITIES, _UNKNOWN = range(4)
_PLANS: dict[type, tuple[tuple[str, int], ...]] = {}


def _kind(name: str, annotation: Any) -> int | None:
    if isinstance(annotation, str):
        return _UNKNOWN  # postponed annotations: decided on the value
    if annotation is ErrorCode:
        return _ERROR if name.endswith("error_code") else None
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for candidate in candidates:
        if dataclasses.is_dataclass(candidate):
            return _ENTITY
        if typing.get_origin(candidate) in (tuple, list):
            args = typing.get_args(candidate)
            if args and dataclasses.is_dataclass(args[0]):
                return _ENTITIES
    return None


def _plan(cls: type) -> tuple[tuple[str, int], ...]:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = tuple(
            (f.name, kind) for f in dataclasses.fields(cls)
            if (kind := _kind(f.name, f.type)) is not None)
    return plan


def error_codes(entity: Any, limit: int = 500) -> list[str]:
    """The distinct non-zero error codes anywhere in a decoded response (walking at most
    `limit` entities; encoded answers are not walked)."""
    found: dict[str, None] = {}
    stack = [entity]
    seen = 0
    while stack and seen < limit:
        value = stack.pop()
        seen += 1
        if not dataclasses.is_dataclass(value):
            continue
        for name, kind in _plan(type(value)):
            field_value = getattr(value, name)
            if kind == _ENTITIES:
                stack.extend(field_value)
            elif kind == _ENTITY:
                if field_value is not None:
                    stack.append(field_value)
            elif kind == _ERROR:
                if field_value:
                    found[field_value.name] = None
            elif isinstance(field_value, enum.Enum):
                if name.endswith("error_code") and field_value.value:
                    found[field_value.name] = None
            elif isinstance(field_value, tuple | list):
                stack.extend(field_value)
            elif dataclasses.is_dataclass(field_value):
                stack.append(field_value)
    return list(found)
