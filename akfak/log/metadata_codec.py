"""The generic codec of KRaft metadata records: field types, structs and their encoding.

A record class (metadata_records.py) only lists its fields, each with its type and the
versions it exists in; `encode_struct` and `decode_struct` write and read any of them in
Kafka's flexible encoding (compact strings and arrays, tagged fields at the end of every
struct), so that adding a record or a version is a matter of declaring fields.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from kio.serial.readers import (
    read_boolean,
    read_compact_string_nullable,
    read_float64,
    read_int8,
    read_int16,
    read_int32,
    read_int64,
    read_uint16,
    read_unsigned_varint,
)
from kio.serial.writers import (
    write_boolean,
    write_float64,
    write_int8,
    write_int16,
    write_int32,
    write_int64,
    write_nullable_compact_string,
    write_uint16,
    write_unsigned_varint,
)


class MetadataRecordError(ValueError):
    """A metadata record value that cannot be decoded."""


# -- primitive codecs ----------------------------------------------------------------------
# A reader takes (buffer, position) and returns (value, new position); a writer
# appends the encoding of a value to a BytesIO.

Reader = Callable[[bytes, int], tuple[Any, int]]
Writer = Callable[[io.BytesIO, Any], None]


def _sized(read: Callable[[bytes, int], tuple[Any, int]]) -> Reader:
    # kio's native readers return (value, bytes consumed).
    def reader(buf: bytes, pos: int) -> tuple[Any, int]:
        value, size = read(buf, pos)
        return value, pos + size

    return reader


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    value, size = read_unsigned_varint(buf, pos)
    return int(value), pos + size


def _read_uuid(buf: bytes, pos: int) -> tuple[uuid.UUID, int]:
    # kio maps the zero uuid to None; metadata records want the value itself.
    if pos + 16 > len(buf):
        raise MetadataRecordError("uuid past the end of the record")
    return uuid.UUID(bytes=bytes(buf[pos : pos + 16])), pos + 16


def _write_uuid(out: io.BytesIO, value: uuid.UUID) -> None:
    out.write(value.bytes)


def _read_string(buf: bytes, pos: int) -> tuple[str | None, int]:
    value, size = read_compact_string_nullable(buf, pos)
    return value, pos + size


def _read_bytes(buf: bytes, pos: int) -> tuple[bytes, int]:
    length, pos = _uvarint(buf, pos)
    end = pos + length - 1
    if length == 0 or end > len(buf):
        raise MetadataRecordError("bytes field null or past the end of the record")
    return bytes(buf[pos:end]), end


def _write_bytes(out: io.BytesIO, value: bytes) -> None:
    write_unsigned_varint(out, len(value) + 1)
    out.write(value)


def _array_reader(item: Reader) -> Reader:
    def reader(buf: bytes, pos: int) -> tuple[list[Any] | None, int]:
        length, pos = _uvarint(buf, pos)
        if length == 0:
            return None, pos
        items = []
        for _ in range(length - 1):
            value, pos = item(buf, pos)
            items.append(value)
        return items, pos

    return reader


def _array_writer(item: Writer) -> Writer:
    def writer(out: io.BytesIO, values: Sequence[Any] | None) -> None:
        if values is None:
            write_unsigned_varint(out, 0)
            return
        write_unsigned_varint(out, len(values) + 1)
        for value in values:
            item(out, value)

    return writer


@dataclass(frozen=True)
class FieldType:
    read: Reader
    write: Writer


INT8 = FieldType(_sized(read_int8), write_int8)
INT16 = FieldType(_sized(read_int16), write_int16)
INT32 = FieldType(_sized(read_int32), write_int32)
INT64 = FieldType(_sized(read_int64), write_int64)
UINT16 = FieldType(_sized(read_uint16), write_uint16)
BOOL = FieldType(_sized(read_boolean), write_boolean)
FLOAT64 = FieldType(_sized(read_float64), write_float64)
UUID = FieldType(_read_uuid, _write_uuid)
STRING = FieldType(_read_string, write_nullable_compact_string)
BYTES = FieldType(_read_bytes, _write_bytes)
INT32_ARRAY = FieldType(_array_reader(INT32.read), _array_writer(INT32.write))
UUID_ARRAY = FieldType(_array_reader(UUID.read), _array_writer(UUID.write))


@dataclass(frozen=True)
class Field:
    """One schema field: the attribute it maps to, its type and the versions it exists in."""

    name: str
    type: FieldType
    min_version: int = 0
    #: The tag for tagged fields (written only when different from the default).
    tag: int | None = None


def _struct_type(cls: type[Struct]) -> FieldType:
    def read(buf: bytes, pos: int, version: int = 0) -> tuple[Any, int]:
        return decode_struct(cls, buf, pos, version)

    def write(out: io.BytesIO, value: Any, version: int = 0) -> None:
        encode_struct(value, out, version)

    return FieldType(read, write)


def _struct_array(cls: type[Struct]) -> FieldType:
    inner = _struct_type(cls)
    return FieldType(_array_reader(inner.read), _array_writer(inner.write))


class Struct:
    """A flexible-version struct: fields, then a tagged-field section."""

    FIELDS: ClassVar[tuple[Field, ...]] = ()


def encode_struct(value: Struct, out: io.BytesIO, version: int) -> None:
    tagged: list[tuple[int, bytes]] = []
    defaults = _defaults(type(value))
    for f in type(value).FIELDS:
        if version < f.min_version:
            continue
        attr = getattr(value, f.name)
        if f.tag is not None:
            if attr != defaults.get(f.name):
                buf = io.BytesIO()
                f.type.write(buf, attr)
                tagged.append((f.tag, buf.getvalue()))
            continue
        f.type.write(out, attr)
    write_unsigned_varint(out, len(tagged))
    for tag, data in sorted(tagged):
        write_unsigned_varint(out, tag)
        write_unsigned_varint(out, len(data))
        out.write(data)


def decode_struct(cls: type[Any], buf: bytes, pos: int, version: int) -> tuple[Any, int]:
    values: dict[str, Any] = {}
    by_tag: dict[int, Field] = {}
    for f in cls.FIELDS:
        if version < f.min_version:
            continue
        if f.tag is not None:
            by_tag[f.tag] = f
            continue
        values[f.name], pos = f.type.read(buf, pos)
    count, pos = _uvarint(buf, pos)
    for _ in range(count):
        tag, pos = _uvarint(buf, pos)
        size, pos = _uvarint(buf, pos)
        end = pos + size
        f = by_tag.get(tag)
        if f is not None:  # unknown tags are skipped, never an error
            values[f.name], _ = f.type.read(buf[:end], pos)
        pos = end
    if pos > len(buf):
        raise MetadataRecordError(f"{cls.__name__} extends past the end of the record")
    return cls(**values), pos


_DEFAULTS_CACHE: dict[type, dict[str, Any]] = {}


def _defaults(cls: type) -> dict[str, Any]:
    cached = _DEFAULTS_CACHE.get(cls)
    if cached is None:
        import dataclasses

        cached = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                cached[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                cached[f.name] = f.default_factory()
        _DEFAULTS_CACHE[cls] = cached
    return cached


class MetadataRecord(Struct):
    """A top-level metadata record type."""

    API_KEY: ClassVar[int]
    #: The version akfak writes when no metadata.version is given.
    WRITE_VERSION: ClassVar[int] = 0
    MAX_VERSION: ClassVar[int] = 0

    @classmethod
    def version_at(cls, metadata_version: int) -> int:
        """The version Kafka writes this record in at `metadata_version`."""
        return cls.WRITE_VERSION
