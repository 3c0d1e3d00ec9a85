"""Loading and creating a coordinator's topic: the part both coordinators run alike.

`PartitionLoader` replays every partition of an `ICoordinatorTopic`, a step of
about `LOAD_STEP_BYTES` per reactor turn, handing each whole batch to the
coordinator; until a partition is loaded its coordinator answers
COORDINATOR_LOAD_IN_PROGRESS for the keys it holds.  `TopicCreator` creates the
topic on first use, once, however many requests wait for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak.coordinator.topic import ICoordinatorTopic
from akfak.log.batch import BatchHeader, scan

log = Logger()

#: How much of a partition one loading step reads before yielding the reactor.
LOAD_STEP_BYTES = 1 << 20

#: on_batch(partition, header, batch bytes): one stored batch, in offset order.
OnBatch = Callable[[int, BatchHeader, memoryview], None]


class PartitionLoader:
    """Replays partitions 0..n-1 of a topic in order, one step per reactor turn."""

    def __init__(self, clock: Any, store: ICoordinatorTopic, on_batch: OnBatch,
                 on_loaded: Callable[[int], None], is_active: Callable[[], bool]) -> None:
        self.clock = clock
        self.store = store
        self.on_batch = on_batch
        self.on_loaded = on_loaded
        self.is_active = is_active
        self.loading: set[int] = set()
        self.num_partitions = 0

    def start(self, num_partitions: int) -> None:
        self.num_partitions = num_partitions
        self.loading = set(range(num_partitions))
        if num_partitions:
            self._schedule(0, 0)

    def _schedule(self, partition: int, offset: int) -> None:
        self.clock.callLater(0, self._step, partition, offset)

    def _step(self, partition: int, offset: int) -> None:
        if not self.is_active():
            return
        try:
            data = self.store.read(partition, offset, LOAD_STEP_BYTES)
            view = memoryview(data)
            next_offset = offset
            for pos, header in scan(data):
                if header.last_offset < offset:
                    continue
                next_offset = header.last_offset + 1
                self.on_batch(partition, header, view[pos : pos + header.size])
        except Exception:
            log.failure("Loading {topic}-{partition} failed at offset {offset}",
                        topic=self.store.name, partition=partition, offset=offset)
            next_offset = offset
            data = b""
        if data and next_offset > offset:
            self._schedule(partition, next_offset)
            return
        self.loading.discard(partition)
        self.on_loaded(partition)
        if partition + 1 < self.num_partitions:
            self._schedule(partition + 1, 0)


class LoadingCoordinator:
    """What the group and the transaction coordinator share to start: take the topic's
    partition count, then replay every partition (`loader`), firing `loaded` when done.
    Subclasses set `store`, `clock`, `loader`, `loaded`, `num_partitions`, `active` and
    `LOADING`, a description of what they load."""

    LOADING = "state"
    store: ICoordinatorTopic
    clock: Any
    loader: PartitionLoader
    loaded: Deferred[None]
    num_partitions: int
    active: bool

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def start(self) -> Deferred[None]:
        """Start serving: replay every existing partition, a step per reactor turn."""
        existing = self.store.num_partitions()
        if existing is not None:
            self.num_partitions = existing
        self.active = True
        if not existing:
            self.loaded.callback(None)
            return self.loaded
        log.info("Loading {what} from {n} partitions of {topic}", what=self.LOADING, n=existing,
                 topic=self.store.name)
        self.loader.start(existing)
        return self.loaded


class TopicCreator:
    """Creates a coordinator's topic on first use (as Kafka does), once."""

    def __init__(self, store: ICoordinatorTopic, num_partitions: Callable[[], int]) -> None:
        self.store = store
        self.num_partitions = num_partitions
        self._waiters: list[Deferred[None]] | None = None

    def ensure(self) -> Deferred[None]:
        """Fires once the topic exists."""
        if self.store.num_partitions() is not None:
            return succeed(None)
        if self._waiters is not None:
            waiter: Deferred[None] = Deferred()
            self._waiters.append(waiter)
            return waiter
        self._waiters = []
        count = self.num_partitions()
        log.info("Creating {topic} with {n} partitions", topic=self.store.name, n=count)
        created = maybeDeferred(self.store.create, count)

        def done(result: Any) -> Any:
            waiters, self._waiters = self._waiters or [], None
            for waiter in waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(None)
            return result

        created.addBoth(done)
        return created.addCallback(lambda _: None)


def append_error(failure: Failure) -> ErrorCode:
    """The error a client gets when a coordinator write fails (Kafka's mapping)."""
    code = getattr(failure.value, "error_code", ErrorCode.unknown_server_error.value)
    try:
        error = ErrorCode(code)
    except ValueError:
        return ErrorCode.unknown_server_error
    if error in (ErrorCode.unknown_topic_or_partition, ErrorCode.not_enough_replicas,
                 ErrorCode.request_timed_out):
        return ErrorCode.coordinator_not_available
    if error in (ErrorCode.not_leader_or_follower, ErrorCode.kafka_storage_error):
        return ErrorCode.not_coordinator
    if error in (ErrorCode.message_too_large, ErrorCode.record_list_too_large,
                 ErrorCode.invalid_fetch_size):
        return ErrorCode.unknown_server_error
    return error
