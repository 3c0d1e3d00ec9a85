"""A bounded, process-wide pool of open file descriptors for segment and index files.

Kafka keeps every segment's `.log` and indexes open (and mmapped), which is why
its operators raise `ulimit -n`.  akfak instead opens a segment's files on
demand: each `PooledFile` knows its path and open flags, and every operation
(pread, writev, ftruncate, fsync) takes a descriptor from the pool, opening the
file if it was closed.  When more than `capacity` descriptors are open, one that
no operation holds and that was not used lately is closed (the clock
approximation of LRU: a use sets a bit, eviction clears it and spares the file
once).  So 20,000 partitions open and serve under RLIMIT_NOFILE=1024; a busy
partition keeps its descriptors because it is always recently used.

The pool is shared by every storage of the process (the limit is the
process's) and is thread-safe: fsyncs and the log cleaner use it from threads.
A short system call (pread, writev, ftruncate) runs under the pool's lock, one
lock round trip per call; a long one (fsync) or a descriptor kept across reactor
turns (a FileRange being sent) holds ("pins") it instead, so eviction never
closes one in use; a file closed by its owner while pinned closes when
released.  Closing a descriptor does not lose written data (the kernel has
it), and an fsync through a reopened descriptor covers the file's dirty pages.
"""

from __future__ import annotations

import errno
import os
import resource
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from twisted.logger import Logger

from akfak.errors import KafkaStorageError

log = Logger()
T = TypeVar("T")

_IOV_MAX = 1024
#: The pool's size when nothing sets it: half the soft limit, leaving the other half to
#: sockets, checkpoint writes and fsyncs of directories.
_LIMIT_SHARE = 2
_MIN_CAPACITY = 16


def default_capacity() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(_MIN_CAPACITY, soft // _LIMIT_SHARE)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (as Kafka's docs tell operators to
    do with `ulimit -n`); return (old soft, new soft)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            # e.g. macOS refuses RLIM_INFINITY (OPEN_MAX); keep what we have.
            return soft, soft
        return soft, target
    return soft, soft


class Syncable(Protocol):
    """Something a flush fsyncs on a thread."""

    def fsync(self) -> None: ...


class HandlePool:
    """At most `capacity` open descriptors (more only while operations hold them)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity if capacity is not None else default_capacity()
        self._lock = threading.Lock()
        #: Open files, least recently used first.
        self._open: OrderedDict[PooledFile, int] = OrderedDict()

    @property
    def open_count(self) -> int:
        return len(self._open)

    def resize(self, capacity: int) -> None:
        with self._lock:
            self.capacity = max(_MIN_CAPACITY, capacity)
            self._evict_locked()

    def _acquire(self, file: PooledFile) -> int:
        with self._lock:
            if file._closed:
                raise KafkaStorageError(f"{file.path} is closed")
            fd = file._fd
            if fd is None:
                fd = self._open_locked(file)
            else:
                file._used = True
            file._pins += 1
            return fd

    def _call(self, file: PooledFile, op: Callable[..., T], *args: Any) -> T:
        """`op(fd, *args)` under the lock, for a short system call (pread, writev): one lock
        round trip instead of pinning and unpinning; eviction waits for it."""
        with self._lock:
            fd = file._fd
            if fd is None or file._closed:
                fd = self._reopen_locked(file)
            else:
                file._used = True
            return op(fd, *args)

    def _reopen_locked(self, file: PooledFile) -> int:
        if file._closed:
            raise KafkaStorageError(f"{file.path} is closed")
        return self._open_locked(file)

    def _release(self, file: PooledFile) -> None:
        with self._lock:
            file._pins -= 1
            if file._pins == 0 and file._closed:
                self._close_locked(file)
            elif len(self._open) > self.capacity:
                self._evict_locked()

    def _open_locked(self, file: PooledFile) -> int:
        if len(self._open) >= self.capacity:
            self._evict_locked(self.capacity - 1)
        try:
            fd = os.open(file.path, file._flags, 0o644)
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE):
                raise KafkaStorageError(f"Cannot open {file.path}: {e}") from e
            # Out of descriptors (sockets took them): give back half of ours and retry.
            log.warn("Out of file descriptors with {n} segment files open; closing half",
                     n=len(self._open))
            self._evict_locked(len(self._open) // 2)
            try:
                fd = os.open(file.path, file._flags, 0o644)
            except OSError as again:
                raise KafkaStorageError(f"Cannot open {file.path}: {again}") from again
        if file._create_once:
            file._flags &= ~os.O_CREAT
        file._fd = fd
        self._open[file] = fd
        return fd

    def _evict_locked(self, target: int | None = None) -> None:
        """Close unpinned descriptors, least recently opened first, but one used since the
        last eviction gets a second chance (moved to the back, its bit cleared): the
        "clock" approximation of LRU, which costs a use no reordering."""
        excess = len(self._open) - (self.capacity if target is None else target)
        if excess <= 0:
            return
        victims: list[PooledFile] = []
        spared: list[PooledFile] = []
        for candidate in self._open:  # oldest first; pinned ones are skipped
            if candidate._pins:
                continue
            if candidate._used:
                candidate._used = False
                spared.append(candidate)
                continue
            victims.append(candidate)
            if len(victims) == excess:
                break
        for file in spared:
            self._open.move_to_end(file)
        for file in spared[:excess - len(victims)]:  # everything was in use: oldest first
            victims.append(file)
        for victim in victims:
            self._close_locked(victim)

    def _close_locked(self, file: PooledFile) -> None:
        fd = file._fd
        if fd is not None:
            file._fd = None
            del self._open[file]
            os.close(fd)


#: The process's pool (RLIMIT_NOFILE is per process); the broker sizes it at start.
POOL = HandlePool()
_prepared = False


def prepare(max_open_files: int = -1) -> None:
    """At broker start: raise the soft RLIMIT_NOFILE to the hard limit and size `POOL`
    (`max_open_files`, akfak.log.max.open.files; -1: half the soft limit).  Logged once
    per process; a later broker in the same process only resizes."""
    global _prepared
    old, new = raise_open_files_limit()
    capacity = max_open_files if max_open_files > 0 else default_capacity()
    if capacity != POOL.capacity:
        POOL.resize(capacity)
    if not _prepared:
        _prepared = True
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.info("Open files limit (RLIMIT_NOFILE): soft {old} -> {new}, hard {hard}; segment "
                 "and index files share a pool of {capacity} descriptors", old=old, new=new,
                 hard="unlimited" if hard == resource.RLIM_INFINITY else hard,
                 capacity=POOL.capacity)


class PooledFile:
    """A file whose descriptor comes from a `HandlePool` for each operation.

    `create=True` makes the first open create the file (O_CREAT); a reopen then
    fails if the file is gone rather than silently making an empty one, unless
    `keep_creating` (index files are only ever hints).
    """

    __slots__ = ("_closed", "_create_once", "_fd", "_flags", "_pins", "_pool", "_used", "path")

    def __init__(self, path: Path, flags: int, *, create: bool = False,
                 keep_creating: bool = False, pool: HandlePool | None = None) -> None:
        self.path = path
        self._flags = flags | (os.O_CREAT if create or keep_creating else 0)
        self._create_once = not keep_creating
        self._pool = pool if pool is not None else POOL
        self._fd: int | None = None
        self._pins = 0
        self._used = False  # used since the last eviction looked (the clock bit)
        self._closed = False

    def __repr__(self) -> str:
        return f"<PooledFile {self.path} {'open' if self._fd is not None else 'closed'}>"

    @property
    def closed(self) -> bool:
        return self._closed

    def touch(self) -> None:
        """Open it now (creating it if `create`)."""
        self._pool._call(self, _nothing)

    def _run(self, op: Callable[..., T], *args: Any) -> T:
        """`op(fd, *args)` with a descriptor held for the call."""
        pool = self._pool
        fd = pool._acquire(self)
        try:
            return op(fd, *args)
        finally:
            pool._release(self)

    def pread(self, position: int, length: int) -> bytes:
        """`length` bytes at `position` (fewer only at the end of the file)."""
        pool = self._pool
        with pool._lock:  # _call, inlined: the hottest use
            fd = self._fd
            if fd is None or self._closed:
                fd = pool._reopen_locked(self)
            else:
                self._used = True
            data = os.pread(fd, length, position)
            return data if len(data) == length else data + pread_all(
                fd, position + len(data), length - len(data))

    def write(self, data: bytes) -> None:
        self._pool._call(self, os.write, data)

    def writev(self, parts: Sequence[bytes | bytearray | memoryview]) -> None:
        """Write every part, continuing after short writes."""
        self._pool._call(self, _writev_all, parts)

    def ftruncate(self, size: int) -> None:
        self._pool._call(self, os.ftruncate, size)

    def dup(self) -> int:
        """A descriptor of its own (the caller closes it), valid after this file closes."""
        return self._pool._call(self, os.dup)

    def fsync(self) -> None:
        """fsync (on any thread); nothing once the owner closed it."""
        try:
            self._run(os.fsync)
        except KafkaStorageError:
            if not self._closed:
                raise

    def rename(self, path: Path) -> None:
        """Move the file; an open descriptor stays valid."""
        with self._pool._lock:
            os.rename(self.path, path)
            self.path = path

    def set_path(self, path: Path) -> None:
        """Follow a rename done by someone else."""
        with self._pool._lock:
            self.path = path

    def close(self) -> None:
        """Close for good (now, or when the last operation holding it ends)."""
        pool = self._pool
        with pool._lock:
            self._closed = True
            if self._pins == 0:
                pool._close_locked(self)


class FileRange:
    """`size` bytes at `position` of a pooled file, to be sent from the file itself
    (sendfile) rather than read into memory: stored batches in a Fetch response.

    `hold` pins the file's descriptor (it stays open, even if the file is closed or
    deleted meanwhile, until `release`); `read` and `sendfile` need it held."""

    __slots__ = ("_fd", "file", "position", "size")

    def __init__(self, file: PooledFile, position: int, size: int) -> None:
        self.file = file
        self.position = position
        self.size = size
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"<FileRange {self.file.path} [{self.position}, {self.position + self.size})>"

    def hold(self) -> None:
        if self._fd is None:
            self._fd = self.file._pool._acquire(self.file)

    def release(self) -> None:
        if self._fd is not None:
            self._fd = None
            self.file._pool._release(self.file)

    def _held(self) -> int:
        if self._fd is None:
            raise KafkaStorageError(f"{self!r} is not held")
        return self._fd

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` within the range."""
        return pread_all(self._held(), self.position + offset, min(length, self.size - offset))

    def sendfile(self, out_fd: int, offset: int, length: int) -> int:
        """os.sendfile of `length` bytes from `offset` within the range to `out_fd`."""
        return os.sendfile(out_fd, self._held(), self.position + offset,
                           min(length, self.size - offset))


def _nothing(_fd: int) -> None:
    pass


def pread_all(fd: int, position: int, length: int) -> bytes:
    """`length` bytes at `position` (fewer only at the end of the file)."""
    data = os.pread(fd, length, position)
    while len(data) < length:  # only at EOF races; pread on a file is otherwise whole
        more = os.pread(fd, length - len(data), position + len(data))
        if not more:
            break
        data += more
    return data


def _writev_all(fd: int, parts: Sequence[bytes | bytearray | memoryview]) -> None:
    if len(parts) <= _IOV_MAX:  # the usual case: one call writes it all
        written = os.writev(fd, parts)
        total = sum(len(p) for p in parts)
        if written == total:
            return
        rest = memoryview(b"".join(parts))[written:]  # a short write: rare, at any cost
        while rest:
            rest = rest[os.write(fd, rest):]
        return
    pending = [memoryview(p) for p in parts]
    while pending:
        chunk = pending[:_IOV_MAX]
        written = os.writev(fd, chunk)
        while chunk and written >= len(chunk[0]):  # a short write continues where it stopped
            written -= len(chunk[0])
            chunk.pop(0)
            pending.pop(0)
        if chunk and written:
            pending[0] = pending[0][written:]


class PathSync:
    """fsync of a file or directory by path, on a thread: opened, synced, closed at once.

    `missing_ok`: a file deleted meanwhile needs no fsync (a snapshot retention removed).
    """

    __slots__ = ("missing_ok", "path")

    def __init__(self, path: Path, *, missing_ok: bool = False) -> None:
        self.path = path
        self.missing_ok = missing_ok

    def fsync(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            if self.missing_ok:
                return
            raise
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
