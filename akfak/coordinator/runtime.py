"""Loading and creating a coordinator's topic: the part both coordinators run alike.

`PartitionLoader` replays partitions of an `ICoordinatorTopic`, one after another, a
step of about `LOAD_STEP_BYTES` per reactor turn (its data read on a thread first where
the storage does not hold it in memory: postgres), handing each whole batch to the
coordinator; until a partition is loaded its coordinator answers
COORDINATOR_LOAD_IN_PROGRESS for the keys it holds.  `TopicCreator` creates the
topic on first use, once, however many requests wait for it.

One broker coordinates every partition (`LoadingCoordinator.start` loads them all).  In a
cluster (akfak/cluster.py) a coordinator owns the partitions of its topic this broker leads:
`on_election(p)` loads one when the broker becomes its leader, `on_resignation(p)` drops its
keys when it stops (Kafka's onElection / onResignation); keys of partitions it does not
own are answered NOT_COORDINATOR.
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
    """Replays partitions of a topic, one at a time in the order asked, a step per turn."""

    def __init__(self, clock: Any, store: ICoordinatorTopic, on_batch: OnBatch,
                 on_loaded: Callable[[int], None], is_active: Callable[[], bool]) -> None:
        self.clock = clock
        self.store = store
        self.on_batch = on_batch
        self.on_loaded = on_loaded
        self.is_active = is_active
        #: partitions asked for and not loaded yet (the first is loading)
        self.loading: set[int] = set()
        self._queue: list[int] = []
        self._current: int | None = None
        #: bumped by every load/unload, so a step of an abandoned load stops
        self._generation = 0
        self.num_partitions = 0

    def start(self, num_partitions: int) -> None:
        self.num_partitions = num_partitions
        for partition in range(num_partitions):
            self.load(partition)

    def load(self, partition: int) -> None:
        """Replay `partition` from its start (again, if it was loaded or loading)."""
        self.unload(partition)
        self.loading.add(partition)
        self._queue.append(partition)
        if self._current is None:
            self._next()

    def unload(self, partition: int) -> None:
        """Stop loading `partition` (nothing if it is not loading)."""
        if partition not in self.loading:
            return
        self.loading.discard(partition)
        if partition in self._queue:
            self._queue.remove(partition)
        if self._current == partition:
            self._generation += 1
            self._current = None
            self._next()

    def _next(self) -> None:
        if self._queue and self._current is None:
            self._current = self._queue.pop(0)
            self._schedule(self._current, 0)

    def _schedule(self, partition: int, offset: int) -> None:
        self.clock.callLater(0, self._step, partition, offset, self._generation)

    def _current_load(self, partition: int, generation: int) -> bool:
        return self.is_active() and generation == self._generation and self._current == partition

    def _step(self, partition: int, offset: int, generation: int) -> None:
        if not self._current_load(partition, generation):
            return
        try:
            waiting = self.store.prepare_read(partition, offset, LOAD_STEP_BYTES)
        except Exception:
            waiting = None  # the read says why
        if waiting is not None:
            # Its data is not in memory (postgres: below the cached tail): read on a thread
            # first; a failure there leaves the read to find it again.
            waiting.addErrback(lambda _: None).addCallback(
                lambda _: self._read_step(partition, offset, generation))
            return
        self._read_step(partition, offset, generation)

    def _read_step(self, partition: int, offset: int, generation: int) -> None:
        if not self._current_load(partition, generation):
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
        self._current = None
        self.on_loaded(partition)
        self._next()


class LoadingCoordinator:
    """What the group and the transaction coordinator share to start: take the topic's
    partition count, then replay every partition (`loader`), firing `loaded` when done;
    in a cluster, load and unload the partitions this broker comes to lead and stops
    leading.  Subclasses set `store`, `clock`, `loader`, `loaded`, `num_partitions`,
    `active` and `LOADING`, a description of what they load, and implement `_unload`."""

    LOADING = "state"
    store: ICoordinatorTopic
    clock: Any
    loader: PartitionLoader
    loaded: Deferred[None]
    num_partitions: int
    active: bool
    #: the partitions this coordinator serves, None for all (one broker)
    owned: set[int] | None = None

    def now_ms(self) -> int:
        return int(self.clock.seconds() * 1000)

    def start(self, *, clustered: bool = False) -> Deferred[None]:
        """Start serving: replay every existing partition, a step per reactor turn; in a
        cluster none yet (`on_election` loads each as this broker comes to lead it)."""
        existing = self.store.num_partitions()
        if existing is not None:
            self.num_partitions = existing
        self.active = True
        if clustered:
            self.owned = set()
        if clustered or not existing:
            self.loaded.callback(None)
            return self.loaded
        log.info("Loading {what} from {n} partitions of {topic}", what=self.LOADING, n=existing,
                 topic=self.store.name)
        self.loader.start(existing)
        return self.loaded

    def key_status(self, partition: int) -> ErrorCode | None:
        """NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS for the
        keys of `partition`, or None when they are served."""
        if not self.active:
            return ErrorCode.coordinator_not_available
        if self.owned is not None and partition not in self.owned:
            return ErrorCode.not_coordinator
        if self.loader.loading and partition in self.loader.loading:
            return ErrorCode.coordinator_load_in_progress
        return None

    def on_election(self, partition: int) -> None:
        """This broker leads `partition` now: load its keys (again, if it had them)."""
        if self.owned is None:
            return
        if partition in self.owned:
            self._unload(partition)
        existing = self.store.num_partitions()
        if existing is not None:
            self.num_partitions = existing
        self.owned.add(partition)
        log.info("Loading {what} of {topic}-{p}", what=self.LOADING, topic=self.store.name,
                 p=partition)
        self.loader.load(partition)

    def on_resignation(self, partition: int) -> None:
        """This broker leads `partition` no more: forget its keys (their requests now get
        NOT_COORDINATOR)."""
        if self.owned is None or partition not in self.owned:
            return
        self.owned.discard(partition)
        self.loader.unload(partition)
        self._unload(partition)
        log.info("Unloaded {what} of {topic}-{p}", what=self.LOADING, topic=self.store.name,
                 p=partition)

    def _unload(self, partition: int) -> None:
        raise NotImplementedError


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
