"""What the log cleaner knows of transactions (Kafka's CleanedTransactionMetadata).

- The records of aborted transactions (listed by the segments' `.txnindex`) go.
- A transaction marker stays while its transaction still has batches in the log. A
  marker whose transaction is empty (no batch of it met before the marker in this
  cleaning pass: an aborted one's data went, a committed one's records were all
  compacted away) is stamped with a delete horizon, now + `delete.retention.ms`, as
  a tombstone is (KIP-534), and goes with the first cleaning past it, unless it is
  its producer's last batch (kept empty then, for the producer state).
- An aborted transaction whose marker was found empty leaves the cleaned segment's
  `.txnindex`: no fetch has records of it to skip any more.

One `CleanedTransactions` follows one cleaning pass over the log's segments in
order, on the cleaner's thread.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from akfak.log.batch import BatchHeader
from akfak.log.records import CONTROL_ABORT, CONTROL_COMMIT
from akfak.log.segment import LogSegment
from akfak.log.txn_index import AbortedTxn


class AbortedTransactions:
    """The aborted transactions of a log, to tell the batches whose records go."""

    def __init__(self, entries: Iterable[AbortedTxn] = ()) -> None:
        self.entries = list(entries)
        self._by_producer: dict[int, list[tuple[int, int]]] = {}
        for e in self.entries:
            self._by_producer.setdefault(e.producer_id, []).append((e.first_offset, e.last_offset))

    @classmethod
    def of(cls, segments: Iterable[LogSegment]) -> AbortedTransactions:
        return cls(e for segment in segments for e in segment.txn_index.entries)

    def holds(self, header: BatchHeader) -> bool:
        """Whether `header` is a data batch of an aborted transaction."""
        if not header.is_transactional or header.is_control:
            return False
        spans = self._by_producer.get(header.producer_id)
        return spans is not None and any(first <= header.base_offset <= last
                                         for first, last in spans)


@dataclass
class _Aborting:
    entry: AbortedTxn
    seen: bool = False  # whether a batch of it was met in this pass


class CleanedTransactions:
    """The transactions met so far in one cleaning pass, batch by batch."""

    def __init__(self, aborted: AbortedTransactions) -> None:
        self._to_start = sorted(aborted.entries, key=lambda e: e.first_offset)
        self._started = 0
        #: producer id -> its aborted transaction under way
        self._aborting: dict[int, _Aborting] = {}
        self._committing: set[int] = set()
        #: (producer id, first offset) of the aborted transactions found empty
        self.empty_aborts: set[tuple[int, int]] = set()

    def _start_up_to(self, offset: int) -> None:
        while self._started < len(self._to_start) and \
                self._to_start[self._started].first_offset <= offset:
            entry = self._to_start[self._started]
            self._aborting[entry.producer_id] = _Aborting(entry)
            self._started += 1

    def on_data_batch(self, header: BatchHeader) -> bool:
        """A data batch was read; True when it belongs to an aborted transaction."""
        self._start_up_to(header.last_offset)
        if not header.is_transactional:
            return False
        aborting = self._aborting.get(header.producer_id)
        if aborting is not None:
            aborting.seen = True
            return True
        self._committing.add(header.producer_id)
        return False

    def on_marker(self, header: BatchHeader, kind: int | None) -> bool:
        """A control batch was read (`kind`: its control record type, None when it holds
        no record any more); True when its transaction is empty, so it may go."""
        self._start_up_to(header.last_offset)
        producer_id = header.producer_id
        if kind is None:
            return True  # an emptied control batch: cleaned before
        if kind == CONTROL_ABORT:
            aborting = self._aborting.pop(producer_id, None)
            if aborting is None:
                return True
            if aborting.seen:
                return False
            self.empty_aborts.add((producer_id, aborting.entry.first_offset))
            return True
        if kind == CONTROL_COMMIT:
            if producer_id in self._committing:
                self._committing.discard(producer_id)
                return False
            return True
        return False

    def kept_aborts(self, entries: Iterable[AbortedTxn]) -> list[AbortedTxn]:
        """Of a cleaned group's `.txnindex` entries, those whose transaction still has data."""
        return [e for e in entries if (e.producer_id, e.first_offset) not in self.empty_aborts]
