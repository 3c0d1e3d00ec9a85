"""What the admin handlers (topics, configs, records, ...) share: Kafka's ApiError rules.

No handlers here; the registry imports the module and finds none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from akfak.errors import BY_CODE, KafkaError

log = Logger()

T = TypeVar("T")

#: The zero topic id: "no topic id" in responses.
ZERO_UUID_INT = 0
#: Topics whose data belongs to the broker itself.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})
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
    only committed changes; at once when nothing changed."""
    if not changed:
        return response
    return broker.controller.wait_durable().addCallback(lambda _: response)
