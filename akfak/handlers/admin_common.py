"""What the admin handlers (topics, configs, records, ...) share: Kafka's ApiError rules.

No handlers here; the registry imports the module and finds none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from typing import Any, TypeVar

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.errors import BY_CODE, InvalidReplicaAssignment, KafkaError, KafkaStorageError

log = Logger()

T = TypeVar("T")

#: Topics whose data belongs to the broker itself.
CLUSTER_METADATA_TOPIC = "__cluster_metadata"


def default_message(code: int) -> str | None:
    """Kafka's default message for an error code (Errors.message()), where akfak knows it."""
    cls = BY_CODE.get(code)
    return None if cls is None else cls.default_message()


def api_error(exc: Exception) -> tuple[ErrorCode, str | None]:
    """Kafka's ApiError.fromThrowable: the code, and the message unless it is the code's
    default one or the error is UNKNOWN_SERVER_ERROR (never leak internals)."""
    if not isinstance(exc, KafkaError):
        return ErrorCode.unknown_server_error, None
    code = ErrorCode(exc.error_code)
    message = str(exc)
    if code == ErrorCode.unknown_server_error or message == default_message(exc.error_code):
        return code, None
    return code, message


def run_or_error(action: Callable[[], T], what: str) -> tuple[T | None, ErrorCode, str | None]:
    """Run one controller or storage action: (result, NONE, None), or (None, code, message)
    from its KafkaError; anything else is logged and answered UNKNOWN_SERVER_ERROR."""
    try:
        return action(), ErrorCode.none, None
    except KafkaError as e:
        code, message = api_error(e)
        return None, code, message
    except Exception:
        log.failure("Unexpected error in {what}", what=what)
        return None, ErrorCode.unknown_server_error, None


def duplicates(names: Iterable[T]) -> set[T]:
    """The items that occur more than once."""
    seen: set[T] = set()
    repeated: set[T] = set()
    for name in names:
        if name in seen:
            repeated.add(name)
        seen.add(name)
    return repeated


def after_durable(broker: Any, response: T, changed: bool) -> T | Deferred[T]:
    """Answer once the metadata log holds the change on disk, as Kafka's controller answers
    only committed changes, and the partition logs it makes exist; at once when nothing
    changed."""
    if not changed:
        return response
    durable = broker.controller.wait_durable()
    return durable.addCallbacks(
        lambda _: broker.storage.slices.drained().addCallback(lambda _: response),
        lambda failure: _not_durable(failure, response))


def _not_durable(failure: Failure, response: T) -> T:
    """The change was applied but its fsync failed: each result that said NONE says
    KAFKA_STORAGE_ERROR instead (as for any storage failure, the change may or may not
    survive a crash, so a client retrying may find it done)."""
    failure.trap(KafkaStorageError)
    message = failure.getErrorMessage()
    changes: dict[str, Any] = {}
    for item in fields(response):  # type: ignore[arg-type]
        value = getattr(response, item.name)
        if isinstance(value, tuple) and value and hasattr(value[0], "error_code"):
            changes[item.name] = tuple(_storage_error(e, message) for e in value)
    return replace(response, **changes)  # type: ignore[type-var]


def _storage_error(entity: Any, message: str) -> Any:
    if entity.error_code != ErrorCode.none:
        return entity
    changes: dict[str, Any] = {"error_code": ErrorCode.kafka_storage_error}
    if hasattr(entity, "error_message"):
        changes["error_message"] = message
    return replace(entity, **changes)


def check_manual_assignment(replicas: list[int], replication_factor: int | None,
                            brokers: set[int]) -> None:
    """Kafka's ReplicationControlManager.validateManualPartitionAssignment for one partition's
    replica list (`replication_factor`: that of the partitions before it, if any)."""
    if not replicas:
        raise InvalidReplicaAssignment(
            "The manual partition assignment includes an empty replica list.")
    previous = None
    for broker_id in sorted(replicas):
        if broker_id not in brokers:
            raise InvalidReplicaAssignment(
                f"The manual partition assignment includes broker {broker_id}, but no such "
                f"broker is registered.")
        if broker_id == previous:
            raise InvalidReplicaAssignment(
                f"The manual partition assignment includes the broker {previous} more than once.")
        previous = broker_id
    if replication_factor is not None and len(replicas) != replication_factor:
        raise InvalidReplicaAssignment(
            f"The manual partition assignment includes a partition with {len(replicas)} "
            f"replica(s), but this is not consistent with previous partitions, which have "
            f"{replication_factor} replica(s).")


def registered_brokers(broker: Any) -> set[int]:
    """The node ids a manual assignment may name: this node and any registered broker (in a
    cluster over PostgreSQL, every broker in akfak_broker, live or not, as Kafka counts its
    fenced brokers' registrations)."""
    cluster = broker.cluster
    return ({broker.node_id} | set(broker.image.brokers)
            | (set(cluster.registered) if cluster is not None else set()))
