"""Compaction of `__consumer_offsets`, as Kafka's log cleaner compacts a topic with
`cleanup.policy=compact`.

Kafka's rules, applied here:
- only the inactive segments are cleaned (never the active one), and only once
  the dirty part (written since the last cleaning) is at least
  `log.cleaner.min.cleanable.ratio` (0.5) of them;
- of every key only the record at its latest offset stays; records keep their
  offsets (a cleaned batch keeps its base offset and offset span);
- a tombstone stays `delete.retention.ms` (`log.cleaner.delete.retention.ms`,
  one day) after the cleaning that first saw it: that cleaning stamps the batch
  with a delete horizon (KIP-534), a later one past the horizon drops it; a
  tombstone superseded by a later value goes at once;
- batches left empty disappear; control batches are kept as they are.

`clean()` is the pure part; it runs on a thread (Kafka cleans on cleaner threads).
Where the records live decides how a cleaned run of segments is swapped in:
`ICompactableOffsetsTopic`, implemented by the in-memory store here and, for the
broker's partition logs, through a storage hook (`log_store.SWAP_HOOK`): the
crash-safe on-disk swap (Kafka's `.cleaned`/`.swap` files) belongs to storage, and
until storage offers it `__consumer_offsets` is not compacted on disk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from zope.interface import Interface

from akfak.groups.records import encode_records, iter_batch_records, iter_batches

if TYPE_CHECKING:
    from akfak.broker import Broker
    from akfak.groups.coordinator import GroupCoordinator

log = Logger()

DEFAULT_DELETE_RETENTION_MS = 86_400_000
DEFAULT_MIN_CLEANABLE_RATIO = 0.5
DEFAULT_BACKOFF_MS = 15_000


class ICompactableOffsetsTopic(Interface):
    """An offsets topic whose inactive segments can be swapped for cleaned ones."""

    def can_swap() -> bool:  # type: ignore[misc]
        """Whether the storage underneath can swap cleaned segments in at all."""

    def cleanable(partition: int) -> object:  # type: ignore[misc]
        """(batches of the inactive segments, offset where the active segment starts),
        or None when there is nothing but the active segment."""

    def replace_cleaned(partition: int, end_offset: int, batches: object) -> None:  # type: ignore[misc]
        """Replace everything below `end_offset` with `batches` (their offsets kept)."""


@dataclass(frozen=True)
class CleanStats:
    batches_in: int
    batches_out: int
    records_in: int
    records_out: int


def clean(batches: Sequence[bytes], *, now_ms: int, delete_retention_ms: int
          ) -> tuple[list[bytes], CleanStats]:
    """The batches of a compacted log's inactive part after one cleaning."""
    latest: dict[bytes, int] = {}
    parsed = []
    for data in batches:
        for info, view in iter_batches(data):
            records = [] if info.control else list(iter_batch_records(view))
            parsed.append((info, bytes(view), records))
            for r in records:
                if r.key is not None:
                    latest[r.key] = r.offset
    out: list[bytes] = []
    records_in = records_out = 0
    for info, raw, records in parsed:
        if info.control:
            out.append(raw)
            continue
        records_in += len(records)
        horizon = info.delete_horizon_ms
        horizon_passed = horizon is not None and horizon <= now_ms
        retained = [r for r in records
                    if r.key is not None and latest[r.key] == r.offset
                    and not (r.value is None and horizon_passed)]
        records_out += len(retained)
        if not retained:
            continue
        has_tombstones = any(r.value is None for r in retained)
        new_horizon = horizon
        if has_tombstones and horizon is None:
            new_horizon = now_ms + delete_retention_ms
        if len(retained) == len(records) and new_horizon == horizon:
            out.append(raw)
            continue
        out.append(encode_records(info.base_offset, info.last_offset - info.base_offset, retained,
                                  delete_horizon_ms=new_horizon if has_tombstones else None))
    return out, CleanStats(len(parsed), len(out), records_in, records_out)


class OffsetsCompactor:
    """Cleans the partitions of `__consumer_offsets` when they are dirty enough.

    `offload(fn, *args)` runs the pure cleaning (a Deferred of its result): the
    broker passes `deferToThread`, as Kafka cleans on its own threads, so that a
    large partition never stalls the reactor; by default it runs in place.
    """

    def __init__(self, coordinator: GroupCoordinator, *, delete_retention_ms: int,
                 min_cleanable_ratio: float, offload: Callable[..., Deferred[Any]] = maybeDeferred):
        self.coordinator = coordinator
        self.delete_retention_ms = delete_retention_ms
        self.min_cleanable_ratio = min_cleanable_ratio
        self.offload = offload
        #: partition -> first offset not yet cleaned (Kafka's cleaner-offset-checkpoint)
        self.first_dirty: dict[int, int] = {}
        self._warned = False

    def run(self) -> Deferred[int]:
        """One pass over every partition; fires with how many partitions were cleaned."""
        store: Any = self.coordinator.store
        if store.num_partitions() is None:
            return succeed(0)
        if not ICompactableOffsetsTopic.providedBy(store) or not store.can_swap():
            if not self._warned:
                self._warned = True
                log.info("__consumer_offsets is not compacted: its storage cannot swap cleaned segments")
            return succeed(0)
        cleaned: list[int] = []
        d: Deferred[Any] = succeed(None)
        for partition in range(store.num_partitions() or 0):
            d.addCallback(lambda _, p=partition: self._clean_partition(store, p, cleaned))
        return d.addCallback(lambda _: len(cleaned))

    def _clean_partition(self, store: Any, partition: int, cleaned: list[int]) -> Deferred[None] | None:
        if partition in self.coordinator.loading:
            return None
        found = store.cleanable(partition)
        if found is None:
            return None
        batches, end_offset = found
        if not self._dirty_enough(partition, batches):
            return None
        now = self.coordinator.now_ms()

        def swap(result: tuple[list[bytes], CleanStats]) -> None:
            new_batches, stats = result
            store.replace_cleaned(partition, end_offset, new_batches)
            self.first_dirty[partition] = end_offset
            cleaned.append(partition)
            log.info("Cleaned __consumer_offsets-{p} below offset {end}: {rin} records in {bin} batches "
                     "-> {rout} records in {bout} batches", p=partition, end=end_offset,
                     rin=stats.records_in, bin=stats.batches_in, rout=stats.records_out,
                     bout=stats.batches_out)

        return self.offload(clean, batches, now_ms=now,
                            delete_retention_ms=self.delete_retention_ms).addCallback(swap)

    def _dirty_enough(self, partition: int, batches: Sequence[bytes]) -> bool:
        first_dirty = self.first_dirty.get(partition, 0)
        total = dirty = 0
        for data in batches:
            for info, view in iter_batches(data):
                total += len(view)
                if info.last_offset >= first_dirty:
                    dirty += len(view)
        return total > 0 and dirty > 0 and dirty / total >= self.min_cleanable_ratio


def register_compaction(broker: Broker, coordinator: GroupCoordinator) -> OffsetsCompactor:
    config = broker.config
    ratio_text = config.get("log.cleaner.min.cleanable.ratio")
    compactor = OffsetsCompactor(
        coordinator,
        delete_retention_ms=config.get_int("log.cleaner.delete.retention.ms", DEFAULT_DELETE_RETENTION_MS),
        min_cleanable_ratio=float(ratio_text) if ratio_text else DEFAULT_MIN_CLEANABLE_RATIO,
        offload=deferToThread)
    backoff_ms = config.get_int("log.cleaner.backoff.ms", DEFAULT_BACKOFF_MS)
    broker.every(backoff_ms / 1000.0, compactor.run)
    coordinator.compactor = compactor  # type: ignore[attr-defined]
    return compactor
