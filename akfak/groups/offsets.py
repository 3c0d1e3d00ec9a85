"""Committed offsets: what one commit holds, and when it expires (KIP-211)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from akfak.groups.group import ClassicGroup, GroupState
from akfak.groups.records import OffsetCommitValue

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    offset: int
    leader_epoch: int  # -1: none
    metadata: str
    commit_timestamp: int
    #: set only by OffsetCommit v2-v4 with an explicit retention time; -1 otherwise
    expire_timestamp: int = -1

    def to_value(self) -> OffsetCommitValue:
        return OffsetCommitValue(self.offset, self.leader_epoch, self.metadata,
                                 self.commit_timestamp, self.expire_timestamp)

    @classmethod
    def from_value(cls, value: OffsetCommitValue) -> OffsetAndMetadata:
        return cls(value.offset, value.leader_epoch, value.metadata, value.commit_timestamp,
                   value.expire_timestamp)


def expiration_base(group: ClassicGroup) -> Callable[[OffsetAndMetadata], int] | None:
    """Kafka's offset expiration condition for a classic group: the timestamp an
    offset's retention counts from, or None when the group's offsets do not expire.

    - a group with a protocol type that is Empty: since it became empty (or, for
      metadata without that timestamp, since the commit);
    - a Stable "consumer" group that knows its subscriptions: since the commit, for
      the topics it no longer subscribes to;
    - a simple group (offsets only, no protocol type): since the commit.
    """
    if group.protocol_type:
        if group.state is GroupState.EMPTY:
            since = group.state_timestamp
            return lambda o: since if since is not None else o.commit_timestamp
        if (group.uses_consumer_protocol and group.subscribed_topics is not None
                and group.state is GroupState.STABLE):
            return lambda o: o.commit_timestamp
        return None
    return lambda o: o.commit_timestamp


def is_expired(offset: OffsetAndMetadata, base: Callable[[OffsetAndMetadata], int], now_ms: int,
               retention_ms: int) -> bool:
    if offset.expire_timestamp >= 0:
        return now_ms >= offset.expire_timestamp
    return now_ms - base(offset) >= retention_ms
