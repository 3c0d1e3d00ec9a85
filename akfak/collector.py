"""Python's cyclic garbage collector in a broker's own process (`twistd akfak`,
`python -m akfak`, akfak.tac): what lives as long as the broker is kept out of its sight.

A full collection traverses every tracked object at once, on the reactor.  A partition log
is about 40 of them, so on a broker that had just created 5,000 partitions each full
collection held the reactor for 60-150 ms, and the collector runs one each time the
long-lived heap has grown by a quarter: several during one large CreateTopics, and one of
0.5 s or more on a broker holding 20,000.  What lives as long as the broker (modules, the logs
opened at start, the logs a large creation makes) is moved to the collector's permanent
generation with `gc.freeze()`, after a young collection, so that only objects still alive
are frozen; later full collections traverse only what came after.

Partition logs hold reference cycles, which only the collector frees: deleting logs gives
every frozen object back to it (`gc.unfreeze()`), so a deleted topic's logs are freed as
before.  What else was alive at a freeze and dies later in a cycle stays until then; each
object is frozen at most once, so that is bounded by what was alive at the freezes.

Not applied to an embedded broker: its process and heap are the host program's.
"""

from __future__ import annotations

import gc

from twisted.logger import Logger

log = Logger()

#: Freezing pays off only once enough new objects would otherwise be traversed.
SETTLE_AFTER_JOBS = 500

_active = False


def keep_long_lived_out_of_sight() -> None:
    """Apply this module's policy for the rest of the process (the broker's own)."""
    global _active
    _active = True


def settle(*, full: bool = False) -> None:
    """Freeze every object still alive after a young collection (long-lived by now), or
    after a full one (`full`: at start, before any client is served)."""
    if not _active or not gc.isenabled():
        return
    gc.collect() if full else gc.collect(1)
    gc.freeze()
    if full:
        log.info("Garbage collector: the {n} objects alive at start are kept out of its "
                 "full collections", n=gc.get_freeze_count())
