"""Kafka errors as Python exceptions, each carrying the Kafka protocol error code.

Storage and the controller raise these; a request handler catches `KafkaError`
and answers with `exc.error_code` (and `str(exc)` where the response has an
error message field).
"""

from __future__ import annotations

from typing import ClassVar


class KafkaError(Exception):
    """Base of the errors a Kafka response can carry."""

    #: The Kafka protocol error code (UNKNOWN_SERVER_ERROR unless a subclass says otherwise).
    error_code: ClassVar[int] = -1
    #: Whether a client may retry the request (Kafka's RetriableException).
    retriable: ClassVar[bool] = False

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message())

    @classmethod
    def default_message(cls) -> str:
        return cls.__doc__.strip().splitlines()[0] if cls.__doc__ else cls.__name__

    @property
    def message(self) -> str:
        return str(self)


class UnknownServerError(KafkaError):
    """The server experienced an unexpected error when processing the request."""

    error_code = -1


class OffsetOutOfRange(KafkaError):
    """The requested offset is not within the range of offsets maintained by the server."""

    error_code = 1


class CorruptMessage(KafkaError):
    """This message has failed its CRC checksum, exceeds the valid size, or is otherwise corrupt."""

    error_code = 2
    retriable = True


class UnknownTopicOrPartition(KafkaError):
    """This server does not host this topic-partition."""

    error_code = 3
    retriable = True


class InvalidFetchSize(KafkaError):
    """The requested fetch size is invalid."""

    error_code = 4


class NotController(KafkaError):
    """This is not the correct controller for this cluster."""

    error_code = 41
    retriable = True


class CoordinatorNotAvailable(KafkaError):
    """The coordinator is not available."""

    error_code = 15
    retriable = True


class NotLeaderOrFollower(KafkaError):
    """This server is not the leader or follower for this partition."""

    error_code = 6
    retriable = True


class MessageTooLarge(KafkaError):
    """The request included a message larger than the max message size the server will accept."""

    error_code = 10


class InvalidTopic(KafkaError):
    """The request attempted to perform an operation on an invalid topic."""

    error_code = 17


class RecordListTooLarge(KafkaError):
    """The request included message batch larger than the configured segment size on the server."""

    error_code = 18


class InvalidTimestamp(KafkaError):
    """The timestamp of the message is out of acceptable range."""

    error_code = 32


class TopicAlreadyExists(KafkaError):
    """Topic with this name already exists."""

    error_code = 36


class InvalidPartitions(KafkaError):
    """Number of partitions is below 1."""

    error_code = 37


class InvalidReplicationFactor(KafkaError):
    """Replication factor is below 1 or larger than the number of available brokers."""

    error_code = 38


class InvalidReplicaAssignment(KafkaError):
    """Replica assignment is invalid."""

    error_code = 39


class InvalidConfig(KafkaError):
    """Configuration is invalid."""

    error_code = 40


class InvalidRequest(KafkaError):
    """This most likely occurs because of a request being malformed by the client library."""

    error_code = 42


class UnsupportedForMessageFormat(KafkaError):
    """The message format version on the broker does not support the request."""

    error_code = 43


class PolicyViolation(KafkaError):
    """Request parameters do not satisfy the configured policy."""

    error_code = 44


class OutOfOrderSequenceNumber(KafkaError):
    """The broker received an out of order sequence number."""

    error_code = 45


class DuplicateSequenceNumber(KafkaError):
    """The broker received a duplicate sequence number."""

    error_code = 46


class InvalidProducerEpoch(KafkaError):
    """Producer attempted to produce with an old epoch."""

    error_code = 47


class KafkaStorageError(KafkaError):
    """Disk error when trying to access log file on the disk."""

    error_code = 56
    retriable = True


class TopicDeletionDisabled(KafkaError):
    """Topic deletion is disabled."""

    error_code = 73


class FetchSessionIdNotFound(KafkaError):
    """The fetch session ID was not found."""

    error_code = 70
    retriable = True


class InvalidFetchSessionEpoch(KafkaError):
    """The fetch session epoch is invalid."""

    error_code = 71
    retriable = True


class FencedLeaderEpoch(KafkaError):
    """The leader epoch in the request is older than the epoch on the broker."""

    error_code = 74
    retriable = True


class UnknownLeaderEpoch(KafkaError):
    """The leader epoch in the request is newer than the epoch on the broker."""

    error_code = 75
    retriable = True


class UnsupportedCompressionType(KafkaError):
    """The requesting client does not support the compression type of given partition."""

    error_code = 76


class InvalidRecord(KafkaError):
    """This record has failed the validation on broker and hence will be rejected."""

    error_code = 87


class InvalidUpdateVersion(KafkaError):
    """The given version update is not valid."""

    error_code = 95


class ThrottlingQuotaExceeded(KafkaError):
    """The throttling quota has been exceeded."""

    error_code = 89
    retriable = True


class UnknownTopicId(KafkaError):
    """This server does not host this topic ID."""

    error_code = 100
    retriable = True


class TopicAuthorizationFailed(KafkaError):
    """Topic authorization failed."""

    error_code = 29


class GroupAuthorizationFailed(KafkaError):
    """Group authorization failed."""

    error_code = 30


class ClusterAuthorizationFailed(KafkaError):
    """Cluster authorization failed."""

    error_code = 31


class TransactionalIdAuthorizationFailed(KafkaError):
    """Transactional Id authorization failed."""

    error_code = 53


def _collect() -> dict[int, type[KafkaError]]:
    found: dict[int, type[KafkaError]] = {}
    pending: list[type[KafkaError]] = [KafkaError]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls is not KafkaError:
            found.setdefault(cls.error_code, cls)
    return found


#: The exception class for each error code defined here.
BY_CODE: dict[int, type[KafkaError]] = _collect()


def error_for_code(code: int, message: str | None = None) -> KafkaError:
    """An exception for a Kafka error code (UnknownServerError for codes not defined here)."""
    cls = BY_CODE.get(code, UnknownServerError)
    return cls(message)
