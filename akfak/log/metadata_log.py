"""The KRaft metadata log `__cluster_metadata-0`, over an ordinary partition log.

akfak is its own single-node controller: it appends metadata records (null
key, the record as value) in uncompressed batches stamped with the quorum
epoch, and replays them at start.  Control batches (Kafka's LeaderChange,
snapshot and voter records) and record types akfak does not model are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from twisted.internet.defer import Deferred
from zope.interface import implementer

from akfak.interfaces import IMetadataLog
from akfak.log.batch import parse_header
from akfak.log.config import LogConfig
from akfak.log.metadata_records import (
    MetadataRecord,
    UnknownRecord,
    decode_record,
    encode_record,
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


@implementer(IMetadataLog)
class MetadataLog:
    """Metadata records in batches of a partition log (see IMetadataLog)."""

    def __init__(self, log: PartitionLog) -> None:
        self.log = log
        # The raft epoch batches are stamped with: the log's, at least 1 (a leader was elected).
        self.epoch = max(1, log.leader_epoch)

    @property
    def end_offset(self) -> int:
        return self.log.log_end_offset

    def append(self, records: Sequence[MetadataRecord], now_ms: int) -> int:
        if not records:
            return self.log.log_end_offset
        batch = encode_batch([(None, encode_record(r)) for r in records], timestamp=now_ms,
                             leader_epoch=self.epoch)
        info = self.log.append(batch, leader_epoch=self.epoch, now_ms=now_ms, origin=ORIGIN_RAFT)
        return info.base_offset

    def replay(self) -> Iterator[tuple[int, MetadataRecord | UnknownRecord]]:
        for batch in self.log.iter_batches():
            if parse_header(batch).is_control:
                continue
            for record in iter_records(batch):
                if record.value is None:
                    continue
                yield record.offset, decode_record(record.value)

    def flush(self) -> Deferred[None]:
        return self.log.flush()
