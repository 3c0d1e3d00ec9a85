"""Producer-state snapshot files: Kafka's `<20-digit offset>.snapshot` format.

A snapshot holds each producer's last batch as of its offset (version 1, CRC-32C; per
producer: id, epoch, last sequence, last offset, offset delta, timestamp, coordinator
epoch, open transaction's first offset), so that a restart replays only the batch
headers after it.  Which snapshots are written, kept and loaded is the producer state's
(producer_state.py).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable
from pathlib import Path

import crc32c

from akfak.log.producer_entries import BatchMetadata, ProducerStateEntry

SNAPSHOT_SUFFIX = ".snapshot"
SNAPSHOT_VERSION = 1
#: version int16, crc uint32 (CRC-32C of everything after it), entry count int32.
_SNAPSHOT_HEADER = struct.Struct(">hIi")
_CRC_START = 6
#: producer id, epoch, last sequence, last offset, offset delta, timestamp,
#: coordinator epoch, current transaction's first offset.
_SNAPSHOT_ENTRY = struct.Struct(">qhiqiqiq")


class CorruptSnapshot(Exception):
    """A producer-state snapshot that cannot be read (Kafka's CorruptSnapshotException)."""


def snapshot_name(offset: int) -> str:
    return f"{offset:020d}{SNAPSHOT_SUFFIX}"


def snapshot_offset(path: Path) -> int | None:
    """The offset a `<20 digits>.snapshot` file is named by, None for other names."""
    stem = path.name[: -len(SNAPSHOT_SUFFIX)]
    if not path.name.endswith(SNAPSHOT_SUFFIX) or not stem.isdigit():
        return None
    return int(stem)


def encode_snapshot(entries: Iterable[ProducerStateEntry]) -> bytes:
    """Kafka's producer snapshot (version 1) of `entries`."""
    items = list(entries)
    body = bytearray(_SNAPSHOT_HEADER.size + _SNAPSHOT_ENTRY.size * len(items))
    _SNAPSHOT_HEADER.pack_into(body, 0, SNAPSHOT_VERSION, 0, len(items))
    pos = _SNAPSHOT_HEADER.size
    for e in items:
        _SNAPSHOT_ENTRY.pack_into(
            body, pos, e.producer_id, e.producer_epoch, e.last_seq, e.last_data_offset,
            e.last_offset_delta, e.last_timestamp, e.coordinator_epoch,
            -1 if e.current_txn_first_offset is None else e.current_txn_first_offset)
        pos += _SNAPSHOT_ENTRY.size
    struct.pack_into(">I", body, 2, crc32c.crc32c(memoryview(body)[_CRC_START:]))
    return bytes(body)


def decode_snapshot(data: bytes) -> list[ProducerStateEntry]:
    """The entries of a producer snapshot; CorruptSnapshot if it is not a valid one."""
    if len(data) < _SNAPSHOT_HEADER.size:
        raise CorruptSnapshot(f"Snapshot is {len(data)} bytes, shorter than its header")
    version, crc, count = _SNAPSHOT_HEADER.unpack_from(data)
    if version != SNAPSHOT_VERSION:
        raise CorruptSnapshot(f"Snapshot contained an unknown file version {version}")
    computed = crc32c.crc32c(memoryview(data)[_CRC_START:])
    if crc != computed:
        raise CorruptSnapshot(f"Snapshot is corrupt (CRC is no longer valid). Stored crc: {crc}. "
                              f"Computed crc: {computed}")
    if count < 0 or len(data) != _SNAPSHOT_HEADER.size + count * _SNAPSHOT_ENTRY.size:
        raise CorruptSnapshot(f"Snapshot of {len(data)} bytes cannot hold {count} entries")
    entries = []
    for i in range(count):
        (pid, epoch, seq, offset, delta, timestamp, coordinator_epoch,
         txn_first) = _SNAPSHOT_ENTRY.unpack_from(data, _SNAPSHOT_HEADER.size + i * _SNAPSHOT_ENTRY.size)
        batches = [BatchMetadata(seq, offset, delta, timestamp)] if offset >= 0 else []
        entries.append(ProducerStateEntry(
            pid, epoch, coordinator_epoch=coordinator_epoch, last_timestamp=timestamp,
            current_txn_first_offset=txn_first if txn_first >= 0 else None, batches=batches))
    return entries


def write_snapshot(path: Path, entries: Iterable[ProducerStateEntry]) -> None:
    """Write a snapshot (no fsync: the log's next flush syncs it, on a thread)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(encode_snapshot(entries))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk: leave nothing half-written
            tmp.unlink(missing_ok=True)
        raise


def read_snapshot(path: Path) -> list[ProducerStateEntry]:
    return decode_snapshot(path.read_bytes())
