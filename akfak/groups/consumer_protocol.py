"""What the coordinator reads of the embedded consumer protocol ("consumer" groups).

The classic coordinator treats member metadata as opaque, except that for groups
of protocol type "consumer" Kafka parses the subscription's topics (with the v0
prefix every version shares) to know which topics a group is subscribed to: that
decides OffsetDelete's GROUP_SUBSCRIBED_TO_TOPIC and which offsets may expire.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

CONSUMER_PROTOCOL_TYPE = "consumer"

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


class MalformedSubscription(ValueError):
    """Member metadata that does not follow the consumer protocol."""


def subscribed_topics(metadata: bytes) -> list[str]:
    """The topics of a ConsumerProtocolSubscription (version, then topics as v0)."""
    try:
        (version,) = _I16.unpack_from(metadata, 0)
        if version < 0:
            raise MalformedSubscription(f"consumer protocol version {version}")
        (count,) = _I32.unpack_from(metadata, 2)
        pos = 6
        topics = []
        for _ in range(max(count, 0)):
            (length,) = _I16.unpack_from(metadata, pos)
            pos += 2
            if length < 0 or pos + length > len(metadata):
                raise MalformedSubscription("topic name runs past the metadata")
            topics.append(metadata[pos : pos + length].decode("utf-8"))
            pos += length
        return topics
    except (struct.error, UnicodeDecodeError) as e:
        raise MalformedSubscription(str(e)) from None


def union_of_subscriptions(metadatas: Iterable[bytes]) -> set[str] | None:
    """All topics the members subscribe to, or None when one cannot be parsed."""
    topics: set[str] = set()
    try:
        for metadata in metadatas:
            topics.update(subscribed_topics(metadata))
    except MalformedSubscription:
        return None
    return topics


# -- the whole subscription and assignment, for classic members of consumer groups ----------

#: the highest ConsumerProtocolSubscription / Assignment version Kafka 4.1 knows; a higher
#: one is read as this one (Kafka's checkSubscriptionVersion)
HIGHEST_VERSION = 3


@dataclass(frozen=True, slots=True)
class Subscription:
    version: int
    topics: tuple[str, ...]
    #: (topic name, partitions), from v1
    owned: tuple[tuple[str, tuple[int, ...]], ...] = ()
    rack_id: str | None = None


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: struct.Struct) -> int:
        try:
            (value,) = fmt.unpack_from(self.data, self.pos)
        except struct.error as e:
            raise MalformedSubscription(str(e)) from None
        self.pos += fmt.size
        return int(value)

    def string(self, nullable: bool = False) -> str | None:
        length = self.take(_I16)
        if length < 0:
            if nullable:
                return None
            raise MalformedSubscription("null string")
        if self.pos + length > len(self.data):
            raise MalformedSubscription("string runs past the metadata")
        try:
            value = self.data[self.pos : self.pos + length].decode("utf-8")
        except UnicodeDecodeError as e:
            raise MalformedSubscription(str(e)) from None
        self.pos += length
        return value

    def bytes_(self) -> bytes | None:
        length = self.take(_I32)
        if length < 0:
            return None
        if self.pos + length > len(self.data):
            raise MalformedSubscription("bytes run past the metadata")
        self.pos += length
        return self.data[self.pos - length : self.pos]

    def partitions(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        out = []
        for _ in range(max(self.take(_I32), 0)):
            topic = self.string() or ""
            out.append((topic, tuple(self.take(_I32) for _ in range(max(self.take(_I32), 0)))))
        return tuple(out)


def version_of(metadata: bytes) -> int:
    """Kafka's ConsumerProtocol.deserializeVersion, capped as it reads."""
    version = _Cursor(metadata).take(_I16)
    if version < 0:
        raise MalformedSubscription(f"consumer protocol version {version}")
    return min(version, HIGHEST_VERSION)


def parse_subscription(metadata: bytes) -> Subscription:
    """A ConsumerProtocolSubscription, every version."""
    c = _Cursor(metadata)
    version = version_of(metadata)
    c.pos = 2
    topics = tuple(c.string() or "" for _ in range(max(c.take(_I32), 0)))
    c.bytes_()  # user data
    owned: tuple[tuple[str, tuple[int, ...]], ...] = ()
    rack_id = None
    if version >= 1:
        owned = c.partitions()
    if version >= 2:
        c.take(_I32)  # generation id
    if version >= 3:
        rack_id = c.string(nullable=True)
    return Subscription(version, topics, owned, rack_id)


def parse_assignment(data: bytes) -> tuple[tuple[tuple[str, tuple[int, ...]], ...], bytes | None]:
    """A ConsumerProtocolAssignment: (topic, partitions) and its user data."""
    c = _Cursor(data)
    version_of(data)
    c.pos = 2
    partitions = c.partitions()
    return partitions, c.bytes_()


def encode_assignment(partitions: Iterable[tuple[str, Iterable[int]]], version: int) -> bytes:
    """A ConsumerProtocolAssignment (every version shares the layout), null user data."""
    items = list(partitions)
    out = [_I16.pack(version), _I32.pack(len(items))]
    for topic, parts in items:
        name = topic.encode("utf-8")
        ps = sorted(parts)
        out += [_I16.pack(len(name)), name, _I32.pack(len(ps)), *(_I32.pack(p) for p in ps)]
    out.append(_I32.pack(-1))
    return b"".join(out)
