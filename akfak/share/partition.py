"""One share-partition: which records of a topic partition a share group has in flight.

As Kafka's SharePartition: records from the start offset (SPSO) on are tracked in runs of one
state, AVAILABLE, ACQUIRED (by one member, under an acquisition lock), ACKNOWLEDGED or
ARCHIVED; offsets past the last run are not fetched yet.  A fetch acquires the available runs
and new records from the next fetch offset on (delivery count + 1), at most `max_records`
(aligned to the record batches read) and only while fewer than
`group.share.partition.max.record.locks` records are in flight.  An acknowledgement moves
acquired records of its member to ACKNOWLEDGED (accept), ARCHIVED (reject, gap) or back to
AVAILABLE (release; ARCHIVED once the delivery count reached
`group.share.delivery.count.limit`); a lock expiring or the member leaving releases them the
same way.  The start offset then moves past every terminal record at the front.

Every change but an acquisition is written to the share coordinator (WriteShareGroupState:
the changed runs and the start offset), so after a crash what was acquired and not
acknowledged is fetched again: it is either a gap in the persisted state or past its end.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from akfak.share.records import ACKNOWLEDGED, ACQUIRED, ARCHIVED, AVAILABLE, ShareState, StateBatch

GAP, ACCEPT, RELEASE, REJECT = 0, 1, 2, 3
_TERMINAL = (ACKNOWLEDGED, ARCHIVED)


class Lock:
    """An acquisition lock: the runs it covers return to AVAILABLE when it expires."""

    __slots__ = ("call", "member", "runs")

    def __init__(self, member: str) -> None:
        self.member = member
        self.runs = 0
        self.call: Any = None

    def drop(self) -> None:
        self.runs -= 1
        if self.runs <= 0 and self.call is not None and self.call.active():
            self.call.cancel()


class Run:
    __slots__ = ("count", "first", "last", "lock", "state")

    def __init__(self, first: int, last: int, state: int, count: int, lock: Lock | None = None):
        self.first, self.last, self.state, self.count = first, last, state, count
        self.lock = lock
        if lock is not None:
            lock.runs += 1

    def set(self, state: int, lock: Lock | None = None) -> None:
        if self.lock is not None:
            self.lock.drop()
        self.state, self.lock = state, lock
        if lock is not None:
            lock.runs += 1

    @property
    def member(self) -> str | None:
        return self.lock.member if self.lock is not None else None


@dataclass(frozen=True, slots=True)
class Acquired:
    first_offset: int
    last_offset: int
    delivery_count: int


class AcknowledgeError(Exception):
    def __init__(self, error: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error = error


#: (first offset, last offset) of each record batch read, in order
BatchRanges = list[tuple[int, int]]


class SharePartition:
    """The in-flight records of one (group, topic partition)."""

    def __init__(self, group_id: str, topic_id: Any, topic: str, partition: int, state: ShareState,
                 start_offset: int, clock: Any, max_delivery: int, max_locks: int,
                 lock_duration_ms: Callable[[], int],
                 persist: Callable[[SharePartition, int, list[StateBatch]], Any],
                 on_available: Callable[[], None]) -> None:
        self.group_id, self.topic_id, self.topic, self.partition = group_id, topic_id, topic, partition
        self.clock = clock
        self.max_delivery = max_delivery
        self.max_locks = max_locks
        self.lock_duration_ms = lock_duration_ms
        self.persist = persist
        self.on_available = on_available
        self.state_epoch = state.state_epoch
        self.start_offset = start_offset
        self.runs: list[Run] = [Run(b.first_offset, b.last_offset, b.delivery_state, b.delivery_count)
                                for b in state.batches if b.last_offset >= start_offset]
        self._advance()

    # -- where things are ----------------------------------------------------------------

    def next_fetch_offset(self) -> int:
        """The first offset from the start offset on that is available or not fetched yet."""
        pos = self.start_offset
        for run in self.runs:
            if run.last < pos:
                continue
            if run.first > pos or run.state == AVAILABLE:
                return pos if run.first > pos else max(pos, run.first)
            pos = run.last + 1
        return pos

    @property
    def end_offset(self) -> int:
        """One past the last offset tracked (the start offset when nothing is)."""
        return self.runs[-1].last + 1 if self.runs else self.start_offset

    def in_flight(self) -> int:
        return self.end_offset - self.start_offset

    def can_acquire(self, fetch_offset: int) -> bool:
        """Kafka's canAcquireRecords: records to redeliver, or fewer in flight than
        `group.share.partition.max.record.locks`."""
        return fetch_offset < self.end_offset or self.in_flight() < self.max_locks

    def _index(self, offset: int) -> int:
        """Index of the run holding `offset`, or -1."""
        i = bisect_right(self.runs, offset, key=lambda r: r.first) - 1
        return i if i >= 0 and self.runs[i].last >= offset else -1

    def _split(self, offset: int) -> None:
        """Make `offset` the first offset of a run if a run holds it."""
        i = self._index(offset)
        if i < 0 or self.runs[i].first == offset:
            return
        run = self.runs[i]
        tail = Run(offset, run.last, run.state, run.count, run.lock)
        run.last = offset - 1
        self.runs.insert(i + 1, tail)

    def _runs_in(self, first: int, last: int) -> list[Run]:
        """The runs within [first, last], split at its ends."""
        self._split(first)
        self._split(last + 1)
        lo = bisect_right(self.runs, first - 1, key=lambda r: r.first)
        hi = bisect_right(self.runs, last, key=lambda r: r.first)
        return self.runs[lo:hi]

    # -- acquiring -------------------------------------------------------------------------

    def acquire(self, member: str, batches: BatchRanges, max_records: int) -> list[Acquired]:
        """Acquire for `member` what it may have of the record batches read (`batches`, from
        the one holding the next fetch offset)."""
        if not batches or max_records <= 0:
            return []
        fetch_offset = self.next_fetch_offset()
        if not self.can_acquire(fetch_offset):
            return []
        lo = max(batches[0][0], fetch_offset, self.start_offset)
        # The soft max_records limit stops at the end of the batch that reaches it.
        hi = batches[-1][1]
        for _first, last in batches:
            if last >= lo and last - lo + 1 >= max_records:
                hi = last
                break
        if hi < lo:
            return []
        lock = Lock(member)
        acquired: list[Acquired] = []
        pos = lo
        new_runs: list[Run] = []
        for run in self._runs_in(lo, hi) if self.runs else []:
            if run.first > pos:  # a gap: records nobody holds (after a restart)
                new_runs.append(Run(pos, run.first - 1, ACQUIRED, 1, lock))
            if run.state == AVAILABLE:
                run.count += 1
                run.set(ACQUIRED, lock)
                acquired.append(Acquired(run.first, run.last, run.count))
            pos = run.last + 1
        if pos <= hi:
            new_runs.append(Run(pos, hi, ACQUIRED, 1, lock))
        for run in new_runs:
            self.runs.insert(bisect_right(self.runs, run.first, key=lambda r: r.first), run)
            acquired.append(Acquired(run.first, run.last, 1))
        if not acquired:
            return []
        acquired.sort(key=lambda a: a.first_offset)
        lock.call = self.clock.callLater(self.lock_duration_ms() / 1000, self._expire, lock)
        return self._coalesce(acquired)

    def archive_acquired(self, ranges: list[tuple[int, int]], acquired: list[Acquired]
                         ) -> list[Acquired]:
        """Archive what was just acquired within `ranges` (batches of aborted transactions);
        returns the acquired ranges without them."""
        for first, last in ranges:
            for run in self._runs_in(first, last):
                if run.state == ACQUIRED:
                    run.set(ARCHIVED)
        self._advance()
        out: list[Acquired] = []
        for a in acquired:
            pieces = [(a.first_offset, a.last_offset)]
            for first, last in ranges:
                pieces = [piece for lo, hi in pieces for piece in _without(lo, hi, first, last)]
            out.extend(Acquired(lo, hi, a.delivery_count) for lo, hi in pieces)
        return out

    @staticmethod
    def _coalesce(acquired: list[Acquired]) -> list[Acquired]:
        out: list[Acquired] = []
        for a in acquired:
            if out and out[-1].last_offset + 1 == a.first_offset \
                    and out[-1].delivery_count == a.delivery_count:
                out[-1] = Acquired(out[-1].first_offset, a.last_offset, a.delivery_count)
            else:
                out.append(a)
        return out

    # -- acknowledging and releasing -------------------------------------------------------

    def _released_state(self, run: Run) -> int:
        return ARCHIVED if run.count >= self.max_delivery else AVAILABLE

    def acknowledge(self, member: str,
                    batches: Iterable[tuple[int, int, list[int]]]) -> Any:
        """Apply acknowledgement batches (first, last, types) of `member`, all or none:
        raises AcknowledgeError (INVALID_RECORD_STATE, INVALID_REQUEST) and changes nothing
        when one cannot be applied; else returns what persisting the change returns."""
        plan: list[tuple[int, int, int]] = []
        for first, last, types in batches:
            if last < self.start_offset:
                continue  # archived already
            if bisect_right(self.runs, first, key=lambda r: r.first) == 0 and (
                    not (first < self.start_offset <= last) or not self.runs):
                raise AcknowledgeError(ErrorCode.invalid_record_state,
                                       "Batch record not found. The request batch offsets "
                                       "are not found in the cache.")
            if not self.runs or self.runs[-1].last < first:
                raise AcknowledgeError(ErrorCode.invalid_request, "Batch record not found. The "
                                       "first offset in request is past acquired records.")
            if last > self.runs[-1].last:
                raise AcknowledgeError(ErrorCode.invalid_request, "Batch record not found. The "
                                       "last offset in request is past acquired records.")
            lo = max(first, self.start_offset)
            if len(types) == 1:
                plan.append((lo, last, types[0]))
            else:
                plan.extend((o, o, types[o - first]) for o in range(lo, last + 1))
        # Validate everything before changing anything.
        for first, last, _type in plan:
            pos = first
            i = self._index(first)
            if i < 0:
                raise AcknowledgeError(ErrorCode.invalid_record_state,
                                       "The batch cannot be acknowledged. The batch is not "
                                       "in the acquired state.")
            while pos <= last:
                run = self.runs[i] if i < len(self.runs) else None
                if run is None or run.first > pos or run.state != ACQUIRED:
                    raise AcknowledgeError(ErrorCode.invalid_record_state,
                                           "The batch cannot be acknowledged. The batch is not "
                                           "in the acquired state.")
                if run.member != member:
                    raise AcknowledgeError(ErrorCode.invalid_record_state,
                                           "Member is not the owner of batch record")
                pos = run.last + 1
                i += 1
        changed: list[Run] = []
        released = False
        for first, last, ack in _merge_plan(plan):
            for run in self._runs_in(first, last):
                if ack == RELEASE:
                    run.set(self._released_state(run))
                    released = released or run.state == AVAILABLE
                else:
                    run.set(ACKNOWLEDGED if ack == ACCEPT else ARCHIVED)
                changed.append(run)
        return self._changed(changed, released)

    def release_member(self, member: str) -> Any:
        """The member left (or its share session closed): its records become available."""
        changed = [run for run in self.runs if run.state == ACQUIRED and run.member == member]
        for run in changed:
            run.set(self._released_state(run))
        return self._changed(changed, any(r.state == AVAILABLE for r in changed))

    def _expire(self, lock: Lock) -> None:
        lock.call = None
        changed = [run for run in self.runs if run.lock is lock]
        for run in changed:
            run.set(self._released_state(run))
        self._changed(changed, any(r.state == AVAILABLE for r in changed))

    def _changed(self, changed: list[Run], released: bool) -> Any:
        if not changed:
            return None
        batches = [StateBatch(r.first, r.last, r.state, r.count) for r in changed]
        # As Kafka's SharePartition: the state is written with the start offset it had, and the
        # start offset moves after (so the persisted one trails by the last change).
        start = self.start_offset
        result = self.persist(self, start, batches)
        self._advance()
        if released or self.start_offset != start:
            self.on_available()
        return result

    def _advance(self) -> None:
        """Move the start offset past the terminal records at the front, forget them, and
        merge neighbouring terminal runs."""
        runs = self.runs
        drop = 0
        for run in runs:
            if run.first > self.start_offset or run.state not in _TERMINAL:
                break
            self.start_offset = run.last + 1
            drop += 1
        if drop:
            del runs[:drop]
        merged: list[Run] = []
        for run in runs:
            prev = merged[-1] if merged else None
            if (prev is not None and prev.state == run.state and run.state in _TERMINAL
                    and prev.last + 1 == run.first):
                prev.last = run.last
            else:
                merged.append(run)
        self.runs = merged

    def move_start(self, log_start_offset: int) -> None:
        """Records below the log start offset are gone (retention, DeleteRecords)."""
        if log_start_offset <= self.start_offset:
            return
        for run in self._runs_in(self.start_offset, log_start_offset - 1) if self.runs else []:
            run.set(ARCHIVED)
        self.runs = [r for r in self.runs if r.last >= log_start_offset]
        self.start_offset = log_start_offset
        self._advance()

    def close(self) -> None:
        for run in self.runs:
            if run.lock is not None:
                run.set(run.state)

    def summary(self) -> tuple[int, int]:
        """(start offset, records in flight that are not terminal) for offsets describes."""
        return self.start_offset, sum(r.last - r.first + 1 for r in self.runs
                                      if r.state not in _TERMINAL)


def _merge_plan(plan: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Neighbouring offsets of one acknowledge type as one range (per-offset types)."""
    out: list[tuple[int, int, int]] = []
    for first, last, ack in plan:
        if out and out[-1][1] + 1 == first and out[-1][2] == ack:
            out[-1] = (out[-1][0], last, ack)
        else:
            out.append((first, last, ack))
    return out


def _without(lo: int, hi: int, first: int, last: int) -> list[tuple[int, int]]:
    """[lo, hi] less [first, last]."""
    if hi < first or lo > last:
        return [(lo, hi)]
    return ([(lo, first - 1)] if lo < first else []) + ([(last + 1, hi)] if hi > last else [])
