"""Small filesystems a test makes and removes itself, to run a broker on a disk that fills
up or fails (tests/test_disk_faults.py, benchmarks/soak.py).

- `tmpfs(path, size)`: a tmpfs with a size limit: writes past it fail with ENOSPC.
- `failing_disk(path)`: an ext2 image on a loop device, mounted `sync`, whose image file
  lives on a small tmpfs.  The image is sparse; `fail()` fills the tmpfs under it, so the
  loop device can no longer allocate the image's blocks and every write to a new block
  fails in the kernel (a real error through the block layer: EIO, or for some data
  writes the backing store's ENOSPC, which the loop driver passes through); `heal()`
  removes the filler.  ext2 (no journal) with errors=continue keeps the filesystem
  mounted read-write through the errors, as a disk with bad sectors would; `sync` makes
  each write(2) wait for the device, so the error reaches the write that caused it.
  (This machine's kernel has no device-mapper, whose `error`/`flakey` targets would be
  the usual way.)

Both need root and mount(2); where that is refused the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def _skip_unless(ok: bool, why: str) -> None:
    if not ok:
        pytest.skip(why)


def _umount(path: Path) -> None:
    if _run("umount", str(path)).returncode != 0:
        _run("umount", "-l", str(path))


def fill(path: Path, chunk: int = 1 << 20) -> int:
    """Write zeros to `path` until the filesystem is full; return how many bytes fit."""
    written = 0
    block = b"\0" * chunk
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                n = f.write(block)
            except OSError:
                if chunk <= 4096:
                    break
                chunk //= 16
                block = block[:chunk]
                continue
            written += n or 0
    return written


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "8m") mounted at `path` for the block's duration."""
    _skip_unless(shutil.which("mount") is not None, "no mount command")
    _skip_unless(os.geteuid() == 0, "mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = _run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    _skip_unless(done.returncode == 0, f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        _umount(path)


@dataclass
class FailingDisk:
    """An ext2 filesystem at `mount` whose writes fail with EIO between fail() and heal()."""

    mount: Path
    backing: Path

    @property
    def filler(self) -> Path:
        return self.backing / "filler"

    def fail(self) -> None:
        fill(self.filler)

    def heal(self) -> None:
        self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def failing_disk(path: Path, size: str = "64m", backing_size: str = "48m") -> Iterator[FailingDisk]:
    for tool in ("losetup", "mkfs.ext2"):
        _skip_unless(shutil.which(tool) is not None, f"no {tool} here")
    backing = path / "backing"
    mount = path / "disk"
    with tmpfs(backing, backing_size):
        image = backing / "disk.img"
        with open(image, "wb") as f:
            f.truncate(_bytes(size))  # sparse: blocks are allocated as ext2 writes them
        done = _run("mkfs.ext2", "-q", "-F", "-b", "1024", str(image))
        _skip_unless(done.returncode == 0, f"mkfs.ext2 failed: {done.stderr.strip()}")
        done = _run("losetup", "--find", "--show", str(image))
        _skip_unless(done.returncode == 0, f"no loop device here: {done.stderr.strip()}")
        device = done.stdout.strip()
        try:
            mount.mkdir(parents=True, exist_ok=True)
            done = _run("mount", "-t", "ext2", "-o", "sync,errors=continue", device, str(mount))
            _skip_unless(done.returncode == 0, f"cannot mount {device}: {done.stderr.strip()}")
            try:
                yield FailingDisk(mount, backing)
            finally:
                (backing / "filler").unlink(missing_ok=True)
                _umount(mount)
        finally:
            _run("losetup", "-d", device)


def _bytes(size: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    return int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)
