"""The contracts between akfak's layers (zope.interface).

A connection finds an `IRequestHandler` for each request's API key; handlers
reach storage only through the storage interfaces below, which have an on-disk
and an in-memory provider passing the same tests.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IRequestHandler(Interface):
    """Answers one Kafka API (one API key) over a range of versions.

    The handler registry is the single source of truth for what the broker
    supports: ApiVersions answers from it.
    """

    api_key = Attribute("The Kafka API key handled (int).")
    min_version = Attribute("Lowest version advertised and accepted (int).")
    max_version = Attribute("Highest version advertised and accepted (int).")

    def is_flexible(version: int) -> bool:  # type: ignore[misc]
        """Whether `version` uses flexible encoding (request header v2, response header v1)."""

    def decode(version: int, body: bytes, offset: int) -> object:  # type: ignore[misc]
        """Decode the request body at `offset` of `body`; raise ValueError if it is malformed."""

    def handle(request: object, context: object) -> object:  # type: ignore[misc]
        """Answer `request` (with a `RequestContext`).

        Returns the response entity, a Deferred firing with it, or None when
        Kafka sends no response at all (Produce with acks=0).
        """

    def encode(version: int, response: object) -> bytes:  # type: ignore[misc]
        """Encode a response body (without the response header)."""


# -- storage ---------------------------------------------------------------------------------
# Implemented by akfak.log (disk: Kafka's log directory format; memory: for embedded use).
# Everything runs on the reactor thread; only fsync runs on a thread, so the methods that
# wait for the disk return Deferreds and the rest answer at once.


class IPartitionLog(Interface):
    """One topic partition's log: batches of records at consecutive offsets.

    Single replica, so the high watermark is the log end offset.  Offsets are
    assigned by patching batch headers; reads return whole stored batches.
    Errors are `akfak.errors.KafkaError` subclasses carrying Kafka's error code.
    """

    topic = Attribute("Topic name (str).")
    partition = Attribute("Partition index (int).")
    topic_id = Attribute("The topic's id (uuid.UUID), None until known.")
    config = Attribute("The log's `akfak.log.config.LogConfig`; assign to reconfigure.")
    log_start_offset = Attribute("First offset a read may ask for (int).")
    log_end_offset = Attribute("The offset the next appended record gets (int).")
    high_watermark = Attribute("Last committed offset + 1: the log end offset here (int).")
    last_stable_offset = Attribute("Read-committed limit (the high watermark until transactions).")
    leader_epoch = Attribute("Latest leader epoch stamped on appended batches (-1 if none).")
    size_in_bytes = Attribute("Bytes in all segments (int).")
    producer_state = Attribute(
        "The idempotent-producer state (akfak.log.producer_state.ProducerStateManager), "
        "consulted around every append: before_append(log, headers, origin=...) -> "
        "AppendInfo | None (a duplicate's original result, or raise a KafkaError) and "
        "after_append(log, info).")

    def append(records: bytes, *, leader_epoch: int, now_ms: int,  # type: ignore[misc]
               origin: str = "client") -> object:
        """Validate every batch in `records` and append them; return an `AppendInfo`.

        Checks magic 2 (UNSUPPORTED_FOR_MESSAGE_FORMAT below, CORRUPT_MESSAGE
        above), batch length and CRC-32C (CORRUPT_MESSAGE), lastOffsetDelta
        against recordCount and, for origin "client", baseOffset 0, no control
        batches and a sequence with every producer id (INVALID_RECORD), batch
        size against max.message.bytes (MESSAGE_TOO_LARGE), the whole against
        segment.bytes (RECORD_LIST_TOO_LARGE), CreateTime timestamps against
        message.timestamp.after/before.max.ms (INVALID_TIMESTAMP).  Stamps
        `leader_epoch` into every batch; LogAppendTime topics get `now_ms`.
        """

    def read(offset: int, max_bytes: int, *, min_one: bool = True,  # type: ignore[misc]
             max_offset: int | None = None, ranges: bool = False) -> object:
        """Whole batches from the one containing `offset`, as a `ReadResult` (parts, size).
        With `ranges`, stored batches may come as FileRanges, to be sent from their file.

        At most `max_bytes`, except that with `min_one` the first batch comes
        whole whatever its size (KIP-74).  Stops at the high watermark (or
        `max_offset`).  OFFSET_OUT_OF_RANGE outside [log_start_offset, high_watermark].
        """

    def prepare_read(offset: int, max_bytes: int) -> object:  # type: ignore[misc]
        """A Deferred to wait for before a `read` from `offset` whose data is not in memory
        (postgres: below the cached tail; read on a thread), else None (disk, memory; or
        postgres read it back already).  What it read is kept for that read."""

    def prepare_timestamp(timestamp: int) -> object:  # type: ignore[misc]
        """As prepare_read, before `offset_for_timestamp` (or `max_timestamp` for -3)."""

    def read_back_bytes(offset: int, max_bytes: int) -> int:  # type: ignore[misc]
        """About how many bytes prepare_read(offset, max_bytes) would read (0: none needs
        reading, all in memory or prepared already): a Fetch prepares up to its max_bytes."""

    def offset_for_timestamp(timestamp: int) -> object:  # type: ignore[misc]
        """`TimestampAndOffset(offset, timestamp, leader_epoch)` of the first record whose
        timestamp is >= `timestamp`, or None (ListOffsets by time)."""

    def max_timestamp() -> object:  # type: ignore[misc]
        """`TimestampAndOffset` of the record with the largest timestamp, or None (ListOffsets -3)."""

    def advance_log_start_offset(offset: int) -> int:  # type: ignore[misc]
        """DeleteRecords: raise the log start offset to `offset` (<= high watermark, else
        OFFSET_OUT_OF_RANGE); return the new log start offset."""

    def end_offset_for_epoch(epoch: int) -> tuple[int, int]:  # type: ignore[misc]
        """OffsetForLeaderEpoch: (epoch, end offset) as Kafka answers, (-1, -1) if unknown."""

    def flush() -> object:  # type: ignore[misc]
        """fsync everything appended so far (on a thread); a Deferred firing when done."""

    def close() -> object:  # type: ignore[misc]
        """Flush and close; a Deferred."""


class IMetadataLog(Interface):
    """The KRaft metadata log (`__cluster_metadata-0`): metadata records in batches."""

    end_offset = Attribute("The offset the next record gets (int).")

    def append(records: object, now_ms: int,  # type: ignore[misc]
               metadata_version: object = None) -> int:
        """Append a sequence of metadata records as one batch, each in the version Kafka
        writes at `metadata_version` (when given); return the batch's first offset."""

    def replay() -> object:  # type: ignore[misc]
        """Iterate (offset, record) over every metadata record, skipping control batches;
        unknown record types come as `UnknownRecord`."""

    def flush() -> object:  # type: ignore[misc]
        """fsync the metadata log (on a thread); a Deferred."""


class ILogStorage(Interface):
    """Where partition logs live: a log directory (disk) or memory."""

    meta_properties = Attribute("`MetaProperties` (cluster.id, node.id, directory.id).")
    metadata_log = Attribute("The `IMetadataLog`.")

    def open() -> None:  # type: ignore[misc]
        """Load (and recover) everything; create meta.properties and the metadata log on
        first start."""

    def close() -> object:  # type: ignore[misc]
        """Flush everything, write Kafka's checkpoint files, close; a Deferred."""

    def get_log(topic: str, partition: int) -> object:  # type: ignore[misc]
        """The `IPartitionLog` of a partition, or None."""

    def create_log(topic: str, partition: int, topic_id: object,  # type: ignore[misc]
                   config: object) -> object:
        """Create (or return the existing) log of a partition, writing partition.metadata."""

    def delete_logs(topic: str) -> None:  # type: ignore[misc]
        """Close and delete every partition log of `topic`."""

    def logs() -> object:  # type: ignore[misc]
        """Iterate over every partition log (not the metadata log)."""

    def run_retention(now_ms: int) -> int:  # type: ignore[misc]
        """Apply retention to every log; return how many segments were deleted.  Call every
        log.retention.check.interval.ms."""

    def flush_due(now_ms: int) -> object:  # type: ignore[misc]
        """Flush logs whose flush.ms has passed and write offset checkpoints when due; a
        Deferred.  Call about every second."""

    def run_cleaner(now_ms: int) -> object:  # type: ignore[misc]
        """Compact the logs with cleanup.policy=compact that are dirty enough (the work on a
        thread, the segment swap on the reactor); a Deferred of how many were cleaned.  Call
        every log.cleaner.backoff.ms."""
