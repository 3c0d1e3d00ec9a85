"""Where the coordinator's records live: the `__consumer_offsets` partitions.

The coordinator talks to one small interface, `IOffsetsTopic`: whole record
batches in, whole record batches out, per partition.  `MemoryOffsetsTopic`
keeps them in memory (the `--storage memory` broker and tests); the storage
engineer's logs provide the on-disk one (see `log_store.py`).
"""

from __future__ import annotations

import struct
from typing import Any

from zope.interface import Interface, implementer

from akfak.groups.compaction import ICompactableOffsetsTopic
from akfak.groups.records import iter_batches

OFFSETS_TOPIC = "__consumer_offsets"

_BASE_OFFSET = struct.Struct(">q")


class IOffsetsTopic(Interface):
    """The `__consumer_offsets` topic as the group coordinator uses it."""

    def num_partitions() -> int | None:  # type: ignore[misc]
        """The topic's partition count, or None while it does not exist."""

    def create(num_partitions: int) -> Any:  # type: ignore[misc]
        """Create the topic (idempotent); may return a Deferred."""

    def read(partition: int, offset: int, max_bytes: int) -> bytes:  # type: ignore[misc]
        """Whole batches from the one holding `offset` on, about `max_bytes` of them
        (always at least one batch when any remains); b"" at the end of the log."""

    def end_offset(partition: int) -> int:  # type: ignore[misc]
        """The offset the next appended record gets."""

    def append(partition: int, batch: bytes, now_ms: int) -> Any:  # type: ignore[misc]
        """Append one batch (the log assigns its offsets); returns, or fires a
        Deferred with, the batch's base offset once it is in the log."""


@implementer(IOffsetsTopic, ICompactableOffsetsTopic)
class MemoryOffsetsTopic:
    """The offsets topic in memory: per partition, segments of batches rolled at
    `segment_bytes` (so that compaction has inactive segments to clean)."""

    def __init__(self, segment_bytes: int = 100 * 1024 * 1024) -> None:
        self.segment_bytes = segment_bytes
        #: partition -> segments -> (base offset, next offset, batch)
        self._partitions: list[list[list[tuple[int, int, bytes]]]] | None = None
        self._end: list[int] = []

    def num_partitions(self) -> int | None:
        return None if self._partitions is None else len(self._partitions)

    def create(self, num_partitions: int) -> None:
        if self._partitions is None:
            self._partitions = [[[]] for _ in range(num_partitions)]
            self._end = [0] * num_partitions

    def _segments(self, partition: int) -> list[list[tuple[int, int, bytes]]]:
        if self._partitions is None:
            raise KeyError(f"{OFFSETS_TOPIC} does not exist")
        return self._partitions[partition]

    def end_offset(self, partition: int) -> int:
        self._segments(partition)
        return self._end[partition]

    def append(self, partition: int, batch: bytes, now_ms: int) -> int:
        segments = self._segments(partition)
        base = self._end[partition]
        patched = _BASE_OFFSET.pack(base) + batch[8:]
        (info, _view), = iter_batches(patched)
        active = segments[-1]
        if active and sum(len(b) for _, _, b in active) + len(patched) > self.segment_bytes:
            segments.append(active := [])
        active.append((base, info.last_offset + 1, patched))
        self._end[partition] = info.last_offset + 1
        return base

    def read(self, partition: int, offset: int, max_bytes: int) -> bytes:
        out: list[bytes] = []
        size = 0
        for segment in self._segments(partition):
            for _base, next_offset, batch in segment:
                if next_offset <= offset:
                    continue
                if out and size + len(batch) > max_bytes:
                    return b"".join(out)
                out.append(batch)
                size += len(batch)
        return b"".join(out)

    def can_swap(self) -> bool:
        return True

    def cleanable(self, partition: int) -> tuple[list[bytes], int] | None:
        segments = self._segments(partition)
        if len(segments) < 2:
            return None
        inactive = [batch for segment in segments[:-1] for _, _, batch in segment]
        return inactive, segments[-1][0][0] if segments[-1] else self._end[partition]

    def replace_cleaned(self, partition: int, end_offset: int, batches: list[bytes]) -> None:
        segments = self._segments(partition)
        keep = [seg for seg in segments if seg and seg[0][0] >= end_offset] or [segments[-1]]
        cleaned = [(info.base_offset, info.last_offset + 1, bytes(view))
                   for batch in batches for info, view in iter_batches(batch)]
        segments[:] = ([cleaned] if cleaned else []) + keep
