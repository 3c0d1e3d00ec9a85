"""What consumer groups need of the cluster metadata: the subscribed topics (by name and by
regular expression), their ids and partition counts, and the hash of them all that the group
epoch follows (KIP-1101's `MetadataHash`).

Kafka hashes with XXH3 over the topic id, name, partition count and racks; akfak hashes the
same fields with BLAKE2b, so a log written by one and read by the other bumps each group's
epoch once (a rebalance with the same assignment), nothing worse.

Regular expressions have RE2's syntax, as in Kafka, and are matched in full against every
topic name, in linear time (akfak.groups.topic_regex).
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from akfak.groups.topic_regex import Re2Error, TopicPattern, compile_re2

_Q = struct.Struct(">q")


class Topics:
    """A view of one metadata image (None: no metadata, no topics)."""

    def __init__(self, image: Any) -> None:
        self.image = image
        self.by_name: Mapping[str, Any] = {} if image is None else image.topics_by_name
        self.by_id: Mapping[uuid.UUID, Any] = {} if image is None else image.topics_by_id
        self.version: int = -1 if image is None else image.offset

    def id_of(self, name: str) -> uuid.UUID | None:
        topic = self.by_name.get(name)
        return None if topic is None else topic.topic_id

    def name_of(self, topic_id: uuid.UUID) -> str | None:
        topic = self.by_id.get(topic_id)
        return None if topic is None else topic.name

    def num_partitions(self, topic_id: uuid.UUID) -> int:
        topic = self.by_id.get(topic_id)
        return -1 if topic is None else topic.num_partitions

    def named(self, partitions: Mapping[uuid.UUID, Iterable[int]]) -> list[tuple[str, Iterable[int]]]:
        """(topic name, partitions) by topic id order, leaving out topics no longer there."""
        return [(name, parts) for name, parts in
                ((self.name_of(t), ps) for t, ps in sorted(partitions.items())) if name is not None]

    def ids(self, names: Iterable[str]) -> frozenset[uuid.UUID]:
        return frozenset(i for i in (self.id_of(n) for n in names) if i is not None)

    def matching(self, pattern: TopicPattern) -> frozenset[str]:
        return frozenset(name for name in self.by_name if pattern.fullmatch(name))

    def topic_hash(self, name: str) -> int:
        topic = self.by_name.get(name)
        if topic is None:
            return 0
        h = hashlib.blake2b(digest_size=8)
        h.update(b"\x00" + topic.topic_id.bytes + name.encode("utf-8"))
        h.update(struct.pack(">i", topic.num_partitions))
        return int(_Q.unpack(h.digest())[0])

    def group_hash(self, names: Iterable[str]) -> int:
        hashes = [self.topic_hash(n) for n in sorted(set(names)) if n in self.by_name]
        if not hashes:
            return 0
        h = hashlib.blake2b(digest_size=8)
        for value in hashes:
            h.update(_Q.pack(value))
        return int(_Q.unpack(h.digest())[0])


def compile_regex(regex: str) -> TopicPattern | None:
    """`regex` as Kafka's RE2/J reads it; None where RE2/J refuses it."""
    try:
        return compile_re2(regex)
    except Re2Error:
        return None
