"""A request body checked against its kio schema before the native decoder reads it.

kio's native decoder trusts the lengths and counts it reads: a 40-byte request
claiming a 27 GB array makes it allocate 27 GB, and Rust's allocation failure
aborts the whole process.  It also refuses unknown tagged fields and hands a null
to handlers where the schema forbids one.  Kafka's own parser checks every length
against the bytes left before allocating, rejects nulls in non-nullable fields,
and skips tagged fields it does not know.  So every body first goes through a
checker compiled once per schema, which

- walks the encoding without building anything (runs of fixed-size fields, and
  arrays of fixed-size elements, are one bounds check each), so it does at most a
  bounded amount of work per byte;
- rejects (MalformedRequest) any length or count that runs past the bytes left,
  a null in a non-nullable field, strings longer than Kafka's 32767 bytes and a
  known tag given twice;
- returns the body without its unknown tagged fields (rewritten only when it has
  any), so the native decoder sees only what it knows.

Once checked, the native decoder allocates at most what the frame really holds.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from functools import cache
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

from akfak.coordinator.codec import uvarint

#: checker(data, position, end, edits) -> position after the value.  `edits` collects
#: (start, end, replacement) for tagged-field sections that drop unknown tags.
Checker = Callable[[bytes, int, int, list], int]
Edit = tuple[int, int, bytes]

_INT16 = struct.Struct(">h")
_INT32 = struct.Struct(">i")
_MAX_STRING = 0x7FFF  # Kafka refuses longer strings, in either encoding

_FIXED = {
    "bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "error_code": 2,
    "int32": 4, "uint32": 4, "timedelta_i32": 4, "int64": 8, "uint64": 8,
    "timedelta_i64": 8, "datetime_i64": 8, "float64": 8, "uuid": 16,
}


class MalformedRequest(ValueError):
    """A request that cannot be parsed; Kafka closes the connection."""


def checked_body(schema: type, data: bytes, offset: int) -> bytes:
    """`data` (a body at `offset`) as the native decoder may read it: unchanged, or
    without unknown tagged fields.  Raises MalformedRequest."""
    edits: list[Edit] = []
    compiled(schema)(data, offset, len(data), edits)
    return apply_edits(data, 0, len(data), edits) if edits else data


def apply_edits(data: bytes, start: int, end: int, edits: list[Edit]) -> bytes:
    """data[start:end] with each (cut start, cut end, replacement) applied."""
    parts, pos = [], start
    for cut_start, cut_end, replacement in edits:
        parts += (data[pos:cut_start], replacement)
        pos = cut_end
    parts.append(data[pos:end])
    return b"".join(parts)


def read_uvarint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise MalformedRequest(f"{what}: varint runs past the end")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 28:
            raise MalformedRequest(f"{what}: varint is longer than 5 bytes")


def _past_end(what: str, size: int, pos: int, end: int) -> MalformedRequest:
    return MalformedRequest(f"{what}: {size} bytes but only {max(end - pos, 0)} remain")


# -- the field kinds -------------------------------------------------------------


def _fixed(size: int, what: str) -> Checker:
    def check(data: bytes, pos: int, end: int, edits: list) -> int:
        if pos + size > end:
            raise _past_end(what, size, pos, end)
        return pos + size
    return check


def _length(flexible: bool, wide: bool, what: str) -> Callable[[bytes, int, int], tuple[int, int]]:
    """Reader of a length or count: -1 for null.  Legacy: int16 (`wide`: int32);
    flexible: unsigned varint of length + 1."""
    if flexible:
        def read(data: bytes, pos: int, end: int) -> tuple[int, int]:
            if pos < end and data[pos] < 0x80:  # the one-byte common case
                return data[pos] - 1, pos + 1
            value, pos = read_uvarint(data, pos, end, what)
            return value - 1, pos
        return read
    fmt = _INT32 if wide else _INT16
    size = fmt.size

    def read_legacy(data: bytes, pos: int, end: int) -> tuple[int, int]:
        if pos + size > end:
            raise _past_end(what, size, pos, end)
        return fmt.unpack_from(data, pos)[0], pos + size
    return read_legacy


def _sized(flexible: bool, wide: bool, nullable: bool, what: str) -> Checker:
    """A string (or with `wide`, bytes / records): a length, then that many bytes."""
    read = _length(flexible, wide, what)
    limit = (2**31 - 1) if wide else _MAX_STRING

    def check(data: bytes, pos: int, end: int, edits: list) -> int:
        n, pos = read(data, pos, end)
        if n < 0:
            if n == -1 and nullable:
                return pos
            raise MalformedRequest(f"{what}: non-nullable field was serialized as null"
                                   if n == -1 else f"{what}: length {n}")
        if n > limit:
            raise MalformedRequest(f"{what}: length {n} exceeds {limit}")
        if pos + n > end:
            raise _past_end(what, n, pos, end)
        return pos + n
    return check


def _array(item: Checker, item_size: int | None, flexible: bool, nullable: bool, what: str) -> Checker:
    read = _length(flexible, True, what)

    def check(data: bytes, pos: int, end: int, edits: list) -> int:
        count, pos = read(data, pos, end)
        if count < 0:
            if count == -1 and nullable:
                return pos
            raise MalformedRequest(f"{what}: non-nullable array was serialized as null"
                                   if count == -1 else f"{what}: count {count}")
        # Kafka's own check (count against bytes left) bounds the loop below per byte.
        if count > end - pos:
            raise MalformedRequest(f"{what}: {count} elements but only {end - pos} bytes remain")
        if item_size is not None:
            size = count * item_size
            if pos + size > end:
                raise _past_end(what, size, pos, end)
            return pos + size
        for _ in range(count):
            pos = item(data, pos, end, edits)
        return pos
    return check


def _nullable_struct(inner: Checker, what: str) -> Checker:
    def check(data: bytes, pos: int, end: int, edits: list) -> int:
        if pos >= end:
            raise _past_end(what, 1, pos, end)
        if data[pos] >= 0x80:  # a negative int8 marker: null
            return pos + 1
        return inner(data, pos + 1, end, edits)
    return check


def _struct(steps: list[Checker], tags: dict[int, tuple[str, Checker]] | None) -> Checker:
    if tags is not None:
        steps = [*steps, _tagged_section(tags)]
    if len(steps) == 1:
        return steps[0]
    if len(steps) == 2:
        first, second = steps

        def check2(data: bytes, pos: int, end: int, edits: list) -> int:
            return second(data, first(data, pos, end, edits), end, edits)
        return check2

    def check(data: bytes, pos: int, end: int, edits: list) -> int:
        for step in steps:
            pos = step(data, pos, end, edits)
        return pos
    return check


def _tagged_section(known: dict[int, tuple[str, Checker]]) -> Checker:
    """Tagged fields: a count, then (tag, size, value) each.  Unknown tags are skipped
    (and cut out for the native decoder); known ones are checked within their size."""

    def check(data: bytes, pos: int, end: int, edits: list) -> int:
        if pos < end and data[pos] == 0:
            return pos + 1  # the common case: no tagged fields
        start = pos
        count, pos = read_uvarint(data, pos, end, "tagged fields")
        if count > (end - pos) // 2:  # a tag and a size take a byte each at least
            raise MalformedRequest(f"{count} tagged fields but only {end - pos} bytes remain")
        kept: list[tuple[int, int, int, list]] = []
        seen: set[int] = set()
        changed = False
        for _ in range(count):
            tag, pos = read_uvarint(data, pos, end, "tagged field tag")
            size, pos = read_uvarint(data, pos, end, f"tagged field {tag} size")
            value_end = pos + size
            if value_end > end:
                raise _past_end(f"tagged field {tag}", size, pos, end)
            field = known.get(tag)
            if field is None:
                changed = True
            else:
                name, checker = field
                if tag in seen:
                    raise MalformedRequest(f"{name}: tagged field {tag} given twice")
                seen.add(tag)
                inner: list[Edit] = []
                if checker(data, pos, value_end, inner) != value_end:
                    raise MalformedRequest(f"{name}: tagged field {tag} is not {size} bytes long")
                changed = changed or bool(inner)
                kept.append((tag, pos, value_end, inner))
            pos = value_end
        if changed:
            out = [uvarint(len(kept))]
            for tag, value_start, value_end, inner in kept:
                value = (apply_edits(data, value_start, value_end, inner) if inner
                         else data[value_start:value_end])
                out += (uvarint(tag), uvarint(len(value)), value)
            edits.append((start, pos, b"".join(out)))
        return pos
    return check


# -- compiling a schema ------------------------------------------------------------


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type without `| None`, whether None was allowed)."""
    if get_origin(annotation) in (UnionType, Union):
        args = [a for a in get_args(annotation) if a is not NoneType]
        if len(args) == 1:
            return args[0], True
    return annotation, False


@cache
def compiled(schema: type) -> Checker:
    return _compile_entity(schema, bool(schema.__flexible__), schema.__name__)[0]


def _compile_entity(schema: type, flexible: bool, path: str) -> tuple[Checker, int | None]:
    """The checker of an entity and its encoded size when that is fixed."""
    steps: list[Checker] = []
    tags: dict[int, tuple[str, Checker]] = {}
    run: list[str] = []  # consecutive fixed-size fields, checked at once
    run_size = 0
    total: int | None = 0

    def end_run() -> None:
        nonlocal run_size
        if run:
            steps.append(_fixed(run_size, f"{path}.{'/'.join(run)}"))
            run.clear()
            run_size = 0

    for f in dataclasses.fields(schema):
        what = f"{path}.{f.name}"
        checker, size = _compile_field(f, flexible, what)
        if "tag" in f.metadata:
            tags[int(f.metadata["tag"])] = (what, checker)
            continue
        if size is not None:
            run.append(f.name)
            run_size += size
            total = None if total is None else total + size
            continue
        end_run()
        steps.append(checker)
        total = None
    end_run()
    if flexible:
        total = None
    if not steps and not flexible:
        return (lambda data, pos, end, edits: pos), 0
    return _struct(steps, tags if flexible else None), total


def _compile_field(f: dataclasses.Field, flexible: bool, what: str) -> tuple[Checker, int | None]:
    annotation, nullable = _unwrap(f.type)
    kafka_type = f.metadata.get("kafka_type")
    if get_origin(annotation) is tuple:
        element, _nullable_elements = _unwrap(get_args(annotation)[0])
        if kafka_type is None:  # an array of structs
            item, size = _compile_entity(element, flexible, what)
        else:
            item, size = _compile_primitive(kafka_type, flexible, False, what)
        return _array(item, size, flexible, nullable, what), None
    if kafka_type is None:  # a struct
        inner, size = _compile_entity(annotation, flexible, what)
        if nullable:
            return _nullable_struct(inner, what), None
        return inner, size
    return _compile_primitive(kafka_type, flexible, nullable, what)


def _compile_primitive(kafka_type: str, flexible: bool, nullable: bool, what: str
                       ) -> tuple[Checker, int | None]:
    if kafka_type in _FIXED:
        size = _FIXED[kafka_type]
        return _fixed(size, what), size
    if kafka_type == "string":
        return _sized(flexible, False, nullable, what), None
    if kafka_type in ("bytes", "records"):
        return _sized(flexible, True, nullable or kafka_type == "records", what), None
    raise TypeError(f"{what}: no checker for Kafka type {kafka_type!r}")
