"""The common shape of a request handler: kio decodes requests and encodes responses."""

from __future__ import annotations

import dataclasses
import io
import sys
import uuid
from collections.abc import Hashable, Iterable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from kio.index import load_request_schema, load_response_schema
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i32Timedelta
from zope.interface import implementer

from akfak.interfaces import IRequestHandler
from akfak.request_check import checked_body

if TYPE_CHECKING:
    from akfak.broker import Broker
    from akfak.protocol import RequestContext

K = TypeVar("K", bound=Hashable)

#: akfak never throttles; every response's throttle_time is zero.
NO_THROTTLE = i32Timedelta.parse(timedelta(0))


def throttle_time(ms: int) -> Any:
    """A response's throttle_time field for `ms` milliseconds (akfak.quota_manager)."""
    return NO_THROTTLE if ms <= 0 else i32Timedelta.parse(timedelta(milliseconds=ms))


#: The zero topic id: "no topic id" in requests and responses.
NO_TOPIC_ID = uuid.UUID(int=0)
#: authorized_operations when the request did not ask for them (Kafka's INT32_MIN).
OPERATIONS_NOT_REQUESTED = -(2**31)


@cache
def request_schema(api_key: int, version: int) -> Any:
    return load_request_schema(api_key, version)


@cache
def response_schema(api_key: int, version: int) -> Any:
    return load_response_schema(api_key, version)


@cache
def _reader(schema: type) -> Any:
    return entity_reader(schema)


def timestamp(ms: int) -> datetime | None:
    """A Kafka millisecond timestamp as kio's datetime fields take it (-1: None)."""
    # kio's TZAware refuses sub-second values, but its writer encodes any datetime to the
    # millisecond, so a plain aware datetime is used.
    return None if ms < 0 else datetime.fromtimestamp(ms / 1000, UTC)


def prepare_reads(wanted: Iterable[tuple[K, Any, int, int]], max_bytes: int
                  ) -> tuple[list[Any], set[K]]:
    """For (key, log, offset, partition max bytes) in answer order: prepare the reads of
    data the logs do not hold in memory (postgres: below the cached tail, read on threads)
    up to max_bytes in all.  The Deferreds to wait for, and the keys past that budget: the
    caller reads nothing from those this time (as once max_bytes is reached), so no read
    of such data runs on the reactor."""
    waits: list[Any] = []
    later: set[K] = set()
    left = max_bytes
    for key, log, offset, partition_max in wanted:
        needed = log.read_back_bytes(offset, partition_max)
        if needed and left <= 0:
            later.add(key)
            continue
        ask = min(partition_max, left) if needed else partition_max
        # (also where nothing is needed: what was read back already is kept for the read)
        if (waiting := log.prepare_read(offset, ask)) is not None:
            waits.append(waiting)
        left -= min(needed, ask)
    return waits, later


def make(cls: type, **values: Any) -> Any:
    """A kio entity from the values its version has (the others are dropped)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})


def encode_entity(entity: Any) -> bytes:
    buffer = io.BytesIO()
    entity_writer(type(entity))(buffer, entity)
    return buffer.getvalue()


@implementer(IRequestHandler)
class Handler:
    """Base for handlers of one API key over `min_version..max_version`.

    Subclasses set the class attributes and implement `handle`; versions below
    `kio_min_version` (for which kio has no schema) must override `decode`/`encode`.
    """

    api_key: ClassVar[int]
    min_version: ClassVar[int]
    max_version: ClassVar[int]
    #: Whether ApiVersions lists it (Kafka answers some APIs it does not list).
    advertised: ClassVar[bool] = True

    def __init__(self, broker: Broker):
        self.broker = broker

    def is_flexible(self, version: int) -> bool:
        # Flexible versions are always "N+": past our maximum, the maximum decides.
        try:
            return bool(request_schema(self.api_key, min(version, self.max_version)).__flexible__)
        except Exception:
            return False

    def request_type(self, version: int) -> Any:
        return request_schema(self.api_key, version)

    def response_type(self, version: int) -> Any:
        return response_schema(self.api_key, version)

    def response_module(self, version: int) -> Any:
        """The kio module of a response version, for its nested entity types."""
        return sys.modules[response_schema(self.api_key, version).__module__]

    def decode(self, version: int, body: bytes, offset: int) -> Any:
        # Checked first: the native decoder trusts the lengths it reads (akfak.request_check).
        schema = self.request_type(version)
        request, _size = _reader(schema)(checked_body(schema, body, offset), offset)
        return request

    def encode(self, version: int, response: Any) -> bytes | list[bytes]:
        return encode_entity(response)

    def handle(self, request: Any, context: RequestContext) -> Any:
        raise NotImplementedError
