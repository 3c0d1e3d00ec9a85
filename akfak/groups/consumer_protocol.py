"""What the coordinator reads of the embedded consumer protocol ("consumer" groups).

The classic coordinator treats member metadata as opaque, except that for groups
of protocol type "consumer" Kafka parses the subscription's topics (with the v0
prefix every version shares) to know which topics a group is subscribed to: that
decides OffsetDelete's GROUP_SUBSCRIBED_TO_TOPIC and which offsets may expire.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

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
