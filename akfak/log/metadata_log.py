"""The KRaft metadata log `__cluster_metadata-0`, over an ordinary partition log.

akfak is its own single-node controller: it appends metadata records (null
key, the record as value) in uncompressed batches stamped with the quorum
epoch, and replays them at start.  Control batches (Kafka's LeaderChange,
snapshot and voter records) and record types akfak does not model are skipped.
A log directory Kafka has run for a while may have cleaned its metadata log
behind a snapshot (`<end offset>-<epoch>.checkpoint`, record batches in the
log format): replay starts from the latest snapshot, then the log after it.
akfak itself never writes snapshots or cleans the metadata log.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from twisted.internet.defer import Deferred
from zope.interface import implementer

from akfak.interfaces import IMetadataLog
from akfak.log.batch import parse_header, scan
from akfak.log.config import LogConfig
from akfak.log.metadata_records import (
    MetadataRecord,
    UnknownRecord,
    decode_record,
    encode_records,
)
from akfak.log.partition import ORIGIN_RAFT, PartitionLog
from akfak.log.records import encode_batch, iter_records

METADATA_TOPIC = "__cluster_metadata"
METADATA_PARTITION = 0

#: The metadata log keeps everything (Kafka cleans it with snapshots, which akfak
#: does not write); one batch may carry a large CreateTopics.
METADATA_LOG_CONFIG = LogConfig(
    cleanup_policy=(), retention_ms=-1, retention_bytes=-1, max_message_bytes=8 * 1024 * 1024,
    segment_bytes=1024**3, message_timestamp_after_max_ms=2**63 - 1)


_SNAPSHOT = re.compile(r"^(\d{20})-(\d{10})\.checkpoint$")


def snapshot_end_offset(path: Path) -> int:
    match = _SNAPSHOT.match(path.name)
    if match is None:
        raise ValueError(f"{path.name} is not a KRaft snapshot name")
    return int(match[1])


def latest_snapshot(directory: Path) -> Path | None:
    """The KRaft snapshot with the highest end offset in a metadata log directory."""
    snapshots = [p for p in directory.iterdir() if _SNAPSHOT.match(p.name)]
    return max(snapshots, key=lambda p: (snapshot_end_offset(p), p.name), default=None)


@implementer(IMetadataLog)
class MetadataLog:
    """Metadata records in batches of a partition log (see IMetadataLog)."""

    def __init__(self, log: PartitionLog, snapshot: Path | None = None) -> None:
        self.log = log
        #: The latest KRaft snapshot (`<end offset>-<epoch>.checkpoint`) Kafka left, if any.
        self.snapshot = snapshot
        # The raft epoch batches are stamped with: the log's, at least 1 (a leader was elected).
        self.epoch = max(1, log.leader_epoch)

    @property
    def end_offset(self) -> int:
        return self.log.log_end_offset

    def append(self, records: Sequence[MetadataRecord], now_ms: int,
               metadata_version: int | None = None) -> int:
        if not records:
            return self.log.log_end_offset
        values = encode_records(records, metadata_version)
        batch = encode_batch([(None, v) for v in values], timestamp=now_ms,
                             leader_epoch=self.epoch)
        info = self.log.append(batch, leader_epoch=self.epoch, now_ms=now_ms, origin=ORIGIN_RAFT)
        return info.base_offset

    def replay(self) -> Iterator[tuple[int, MetadataRecord | UnknownRecord]]:
        start = None
        if self.snapshot is not None:
            # A snapshot holds the state before its end offset; the log continues from there.
            end = snapshot_end_offset(self.snapshot)
            data = self.snapshot.read_bytes()
            for pos, header in scan(data, verify_crc=True):
                yield from self._records(data[pos : pos + header.size], limit=end)
            start = max(end, self.log.log_start_offset)
            if start > self.log.log_end_offset:
                return
        for batch in self.log.iter_batches(start):
            yield from self._records(batch)

    @staticmethod
    def _records(batch: bytes, limit: int | None = None
                 ) -> Iterator[tuple[int, MetadataRecord | UnknownRecord]]:
        if parse_header(batch).is_control:
            return
        for record in iter_records(batch):
            if record.value is None or (limit is not None and record.offset >= limit):
                continue
            yield record.offset, decode_record(record.value)

    def flush(self) -> Deferred[None]:
        return self.log.flush()
