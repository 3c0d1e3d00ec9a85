"""Incremental fetch sessions (KIP-227), as Kafka's FetchSessionCache keeps them.

A client opens a session with a full fetch (session id 0, epoch 0); later fetches
(same id, next epoch) name only the partitions that changed, and the response
carries only partitions with news: records, an error, or a moved high
watermark / last stable offset / log start offset.  Sessions live in a cache of
`max.incremental.fetch.session.cache.slots`; when it is full, a session idle for
longer than `min.incremental.fetch.session.eviction.ms` makes room.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from akfak.errors import FetchSessionIdNotFound, InvalidFetchSessionEpoch

INVALID_SESSION_ID = 0
INITIAL_EPOCH = 0
FINAL_EPOCH = -1
EVICTION_MS = 120_000  # Kafka's min.incremental.fetch.session.eviction.ms

#: A partition as the request named it: (topic name or topic id, partition index).
PartitionKey = tuple[Hashable, int]


@dataclass(slots=True)
class CachedPartition:
    """What the client asked for last, and what it was last told."""

    fetch_offset: int
    max_bytes: int
    high_watermark: int = -1
    last_stable_offset: int = -1
    log_start_offset: int = -1

    def needs_response(self, high_watermark: int, last_stable_offset: int, log_start_offset: int,
                       has_records: bool, error: int) -> bool:
        """Whether an incremental response must carry this partition; remembers what it tells."""
        changed = (
            has_records
            or error != 0
            or high_watermark != self.high_watermark
            or last_stable_offset != self.last_stable_offset
            or log_start_offset != self.log_start_offset
        )
        if changed:
            self.high_watermark = high_watermark
            self.last_stable_offset = last_stable_offset
            self.log_start_offset = log_start_offset
        return changed


@dataclass(slots=True)
class FetchSession:
    session_id: int
    epoch: int  # the epoch the next request must carry
    last_used_ms: int
    partitions: OrderedDict[PartitionKey, CachedPartition] = field(default_factory=OrderedDict)

    def next_epoch(self) -> None:
        self.epoch = 1 if self.epoch >= 2**31 - 1 else self.epoch + 1


@dataclass(slots=True)
class FetchContext:
    """How to answer one Fetch request: which partitions, and whether to filter."""

    #: the session the response reports (0: none, send full fetches)
    session_id: int
    #: the partitions to read, in response order, with their fetch offset and byte limit
    partitions: list[tuple[PartitionKey, int, int]]
    session: FetchSession | None = None
    incremental: bool = False

    def include(self, key: PartitionKey, high_watermark: int, last_stable_offset: int,
                log_start_offset: int, has_records: bool, error: int) -> bool:
        """Whether the response carries this partition (always, unless incremental)."""
        if self.session is None:
            return True
        cached = self.session.partitions.get(key)
        if cached is None:
            return True
        needed = cached.needs_response(high_watermark, last_stable_offset, log_start_offset,
                                       has_records, error)
        return needed or not self.incremental


class FetchSessionCache:
    def __init__(self, max_sessions: int, *, eviction_ms: int = EVICTION_MS) -> None:
        self.max_sessions = max_sessions
        self.eviction_ms = eviction_ms
        self._sessions: OrderedDict[int, FetchSession] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: int) -> bool:
        return session_id in self._sessions

    def new_context(
        self,
        session_id: int,
        epoch: int,
        fetch: Iterable[tuple[PartitionKey, int, int]],
        forgotten: Iterable[PartitionKey],
        now_ms: int,
    ) -> FetchContext:
        """The context for a request, creating, updating or closing its session.

        `fetch` lists (key, fetch offset, partition max bytes) in request order.
        Raises FetchSessionIdNotFound / InvalidFetchSessionEpoch as Kafka answers.
        """
        if epoch in (INITIAL_EPOCH, FINAL_EPOCH):
            if session_id != INVALID_SESSION_ID:
                self._sessions.pop(session_id, None)
            wanted = list(fetch)
            if epoch == FINAL_EPOCH:
                return FetchContext(INVALID_SESSION_ID, wanted)
            session = self._create(wanted, now_ms)
            if session is None:
                return FetchContext(INVALID_SESSION_ID, wanted)
            return FetchContext(session.session_id, wanted, session)
        session = self._sessions.get(session_id)
        if session is None:
            raise FetchSessionIdNotFound(f"fetch session {session_id} not found")
        if session.epoch != epoch:
            raise InvalidFetchSessionEpoch(
                f"fetch session {session_id} expected epoch {session.epoch}, got {epoch}")
        for key, offset, max_bytes in fetch:
            cached = session.partitions.get(key)
            if cached is None:
                session.partitions[key] = CachedPartition(offset, max_bytes)
            else:
                cached.fetch_offset, cached.max_bytes = offset, max_bytes
        for key in forgotten:
            session.partitions.pop(key, None)
        session.next_epoch()
        session.last_used_ms = now_ms
        self._sessions.move_to_end(session_id)
        wanted = [(key, p.fetch_offset, p.max_bytes) for key, p in session.partitions.items()]
        return FetchContext(session_id, wanted, session, incremental=True)

    def _create(self, wanted: list[tuple[PartitionKey, int, int]], now_ms: int) -> FetchSession | None:
        if len(self._sessions) >= self.max_sessions and not self._evict_one(now_ms):
            return None
        session_id = INVALID_SESSION_ID
        while session_id == INVALID_SESSION_ID or session_id in self._sessions:
            session_id = random.randint(1, 2**31 - 1)
        session = FetchSession(session_id, epoch=1, last_used_ms=now_ms)
        for key, offset, max_bytes in wanted:
            session.partitions[key] = CachedPartition(offset, max_bytes)
        self._sessions[session_id] = session
        return session

    def _evict_one(self, now_ms: int) -> bool:
        if not self._sessions:
            return False
        oldest_id, oldest = next(iter(self._sessions.items()))
        if now_ms - oldest.last_used_ms < self.eviction_ms:
            return False
        del self._sessions[oldest_id]
        return True
