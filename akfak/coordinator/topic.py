"""Where a coordinator's records live: the partitions of its internal topic.

A coordinator talks to one small interface, `ICoordinatorTopic`: whole record
batches in, whole record batches out, per partition.  The broker's partition logs
(either storage provider) hold them through `log_topic.py`;
`MemoryCoordinatorTopic` keeps them in a list, for a coordinator without a broker
(tests).
"""

from __future__ import annotations

import struct
from typing import Any

from zope.interface import Attribute, Interface, implementer

from akfak.log.batch import parse_header

_BASE_OFFSET = struct.Struct(">q")


class ICoordinatorTopic(Interface):
    """A coordinator's internal topic (`__consumer_offsets`, `__transaction_state`)."""

    name = Attribute("The topic's name (str).")

    def num_partitions() -> int | None:  # type: ignore[misc]
        """The topic's partition count, or None while it does not exist."""

    def create(num_partitions: int) -> Any:  # type: ignore[misc]
        """Create the topic (idempotent); may return a Deferred."""

    def read(partition: int, offset: int, max_bytes: int) -> bytes:  # type: ignore[misc]
        """Whole batches from the one holding `offset` on, about `max_bytes` of them
        (always at least one batch when any remains); b"" at the end of the log."""

    def prepare_read(partition: int, offset: int, max_bytes: int) -> Any:  # type: ignore[misc]
        """A Deferred to wait for before that `read`, when its data is not in memory (the
        postgres provider reads it on a thread), else None."""

    def leader_epoch(partition: int) -> int:  # type: ignore[misc]
        """The partition's leader epoch (the coordinator epoch of its records)."""

    def end_offset(partition: int) -> int:  # type: ignore[misc]
        """The offset the next appended record gets."""

    def append(partition: int, batch: bytes, now_ms: int) -> Any:  # type: ignore[misc]
        """Append one batch (the log assigns its offsets); returns, or fires a
        Deferred with, the batch's base offset once it is in the log."""


@implementer(ICoordinatorTopic)
class MemoryCoordinatorTopic:
    """A coordinator topic in memory, for a coordinator without a broker's storage (tests).

    Nothing compacts it: compaction belongs to the storage's log cleaner, which
    compacts the topic when it lives in partition logs (`log_topic.py`).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        #: partition -> (base offset, next offset, batch)
        self._partitions: list[list[tuple[int, int, bytes]]] | None = None
        self._end: list[int] = []

    def num_partitions(self) -> int | None:
        return None if self._partitions is None else len(self._partitions)

    def create(self, num_partitions: int) -> None:
        if self._partitions is None:
            self._partitions = [[] for _ in range(num_partitions)]
            self._end = [0] * num_partitions

    def _batches(self, partition: int) -> list[tuple[int, int, bytes]]:
        if self._partitions is None:
            raise KeyError(f"{self.name} does not exist")
        return self._partitions[partition]

    def leader_epoch(self, partition: int) -> int:
        return 0

    def end_offset(self, partition: int) -> int:
        self._batches(partition)
        return self._end[partition]

    def append(self, partition: int, batch: bytes, now_ms: int) -> int:
        batches = self._batches(partition)
        base = self._end[partition]
        patched = _BASE_OFFSET.pack(base) + batch[8:]
        next_offset = parse_header(patched).next_offset
        batches.append((base, next_offset, patched))
        self._end[partition] = next_offset
        return base

    def prepare_read(self, partition: int, offset: int, max_bytes: int) -> None:
        return None  # all in memory

    def read(self, partition: int, offset: int, max_bytes: int) -> bytes:
        out: list[bytes] = []
        size = 0
        for _base, next_offset, batch in self._batches(partition):
            if next_offset <= offset:
                continue
            if out and size + len(batch) > max_bytes:
                break
            out.append(batch)
            size += len(batch)
        return b"".join(out)
