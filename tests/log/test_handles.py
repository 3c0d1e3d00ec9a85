"""The descriptor pool (akfak/log/handles.py): bounded, LRU, and invisible to its users."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest

from akfak.errors import KafkaStorageError
from akfak.log.handles import HandlePool, PooledFile


def open_fds(under: Path) -> int:
    """Descriptors of this process open on files under `under` (other tests' threads may
    open and close their own meanwhile)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(under))
    return count


def test_many_files_share_a_bounded_number_of_descriptors(tmp_path: Path) -> None:
    pool = HandlePool(16)
    before = open_fds(tmp_path)
    files = [PooledFile(tmp_path / f"{i}.log", os.O_RDWR | os.O_APPEND, create=True, pool=pool)
             for i in range(200)]
    for rounds in range(3):
        for i, file in enumerate(files):
            file.writev([b"%d:%d;" % (i, rounds)])
            assert pool.open_count <= 16
    assert open_fds(tmp_path) - before <= 16
    for i, file in enumerate(files):
        assert file.pread(0, 100) == b"%d:0;%d:1;%d:2;" % (i, i, i)
        file.fsync()  # through a reopened descriptor
    # A renamed file follows, open or not; a deleted one is not recreated by a reopen.
    files[0].rename(tmp_path / "moved.log")
    assert files[0].pread(0, 4) == b"0:0;"
    (tmp_path / "1.log").unlink()
    files[1].close()  # (closed: a later use is an error, not a new empty file)
    with pytest.raises(KafkaStorageError):
        files[1].pread(0, 1)
    assert not (tmp_path / "1.log").exists()
    for file in files:
        file.close()
    assert pool.open_count == 0 and open_fds(tmp_path) == before


def test_a_descriptor_held_by_an_operation_is_never_closed_under_it(tmp_path: Path) -> None:
    pool = HandlePool(16)
    held = PooledFile(tmp_path / "held", os.O_RDWR, create=True, pool=pool)
    others = [PooledFile(tmp_path / f"o{i}", os.O_RDWR, create=True, pool=pool)
              for i in range(40)]
    started, release = threading.Event(), threading.Event()

    def slow(fd: int) -> int:
        started.set()
        release.wait(5)
        return os.write(fd, b"still mine")  # EBADF if the pool had closed it

    worker = threading.Thread(target=lambda: held._run(slow))
    worker.start()
    started.wait(5)
    for other in others:
        other.touch()  # evicts everything it can; not `held`
    held.close()       # its owner closes it meanwhile: closed once the write is done
    release.set()
    worker.join(5)
    assert (tmp_path / "held").read_bytes() == b"still mine"
    assert pool.open_count <= 16 and held not in pool._open
    for other in others:
        other.close()
