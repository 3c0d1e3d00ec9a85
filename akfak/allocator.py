"""glibc's allocator in a broker's own process (`twistd akfak`, `python -m akfak`, akfak.tac):
freed memory is kept for the next request instead of going back to the system.

By default glibc gives a freed heap top back to the system once it is over M_TRIM_THRESHOLD,
and serves blocks over M_MMAP_THRESHOLD with mmap (both start at 128 KiB and move as it
goes).  A broker allocates and frees a batch-sized buffer for every request (each Produce's
records, each read-back's rows, each response), so the pages came back fresh and
zero-filled from the kernel again and again: on this project's machine that was 15-20% of
the disk provider's CPU per record produced (the postgres provider's did not change).
Kept, the process's memory stays near its high-water mark (up to TRIM_THRESHOLD more), as a
JVM keeps its heap.

Not applied to an embedded broker (its process is the host program's), nor where the
environment sets either threshold (MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_), nor
without glibc's mallopt (macOS; musl's does nothing).
"""

from __future__ import annotations

import ctypes
import os

from twisted.logger import Logger

log = Logger()

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 256 << 20
#: Above a batch's usual size.  Not higher: a block that grows past it (libpq's buffers) is
#: moved by mremap without a copy; with 32 MiB the postgres provider spent 15-25% more.
MMAP_THRESHOLD = 1 << 20
_ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Set the two thresholds (see the module doc); whether they were set."""
    if any(name in os.environ for name in _ENVIRONMENT):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not (mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        return False
    log.info("Memory allocator: freed memory kept for reuse (glibc M_TRIM_THRESHOLD {trim} MiB, "
             "M_MMAP_THRESHOLD {mmap} MiB)", trim=TRIM_THRESHOLD >> 20, mmap=MMAP_THRESHOLD >> 20)
    return True
