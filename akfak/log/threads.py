"""Blocking file work off the reactor: on a thread (fsync, checkpoint writes, removing
directories), or on the reactor in bounded slices (creating many partition logs)."""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from akfak import collector

log = Logger()

T = TypeVar("T")


def defer_to_thread(reactor: Any, f: Callable[..., T], *args: Any) -> Deferred[T]:
    """Run `f(*args)` in `reactor`'s thread pool; the result comes back in that reactor.

    `reactor` is the one the storage runs in (an embedded broker's private reactor, or
    the global one).  Something without threads (a test's `Clock`) means the global reactor.
    """
    if not IReactorThreads.providedBy(reactor):
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)


class JobThread:
    """One thread of its own running jobs in order, each job's result back in the reactor
    as a Deferred: what a writer that hands over a job per commit round uses.  The reactor's
    pool runs several layers of Python per job on the reactor (its Team, its workers'
    queue.Queue and Condition); this is a SimpleQueue.put.  Started by the first job;
    `stop()` ends it after the jobs already given."""

    def __init__(self, reactor: Any, name: str) -> None:
        if not IReactorThreads.providedBy(reactor):  # a test's Clock: the global reactor
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        self._reactor = reactor
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Deferred[Any], Callable[..., Any], tuple[Any, ...]]
                                      | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        done: Deferred[T] = Deferred()
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, args=(self._jobs,),
                                            name=self._name, daemon=True)
            self._thread.start()
        self._jobs.put((done, f, args))
        return done

    def stop(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None
            self._jobs = queue.SimpleQueue()

    def _main(self, jobs: queue.SimpleQueue[Any]) -> None:
        call = self._reactor.callFromThread
        while (job := jobs.get()) is not None:
            done, f, args = job
            try:
                result = f(*args)
            except BaseException:
                call(done.errback, Failure())
            else:
                call(done.callback, result)


class SlicedWork:
    """Small jobs run in order on the reactor thread, at most `budget` seconds of them per
    reactor turn, so that a large batch (thousands of partition logs to create) never holds
    the reactor longer than that: between slices every other connection is served.

    A job added while the current turn's budget lasts runs at once, so a small batch is
    done when `add` returns.  A job that raises is logged and the rest go on.  What a large
    batch made lives long (partition logs): every `collector.SETTLE_AFTER_JOBS` jobs, and
    when a batch of a fifth of that drains, it is kept out of the garbage collector's sight.
    """

    def __init__(self, clock: Any, budget: float = 0.002) -> None:
        self._clock = clock
        self.budget = budget
        self._jobs: deque[Callable[[], None]] = deque()
        self._call: Any = None
        self._turn_started = 0.0
        self._added = 0
        self._done = 0
        self._unsettled = 0
        self._waiters: list[tuple[int, Deferred[None]]] = []

    @property
    def pending(self) -> int:
        return len(self._jobs)

    def add(self, job: Callable[[], None]) -> None:
        self._jobs.append(job)
        self._added += 1
        if self._call is None:
            # The first job of this turn: the next turn continues whatever is left.
            self._turn_started = time.monotonic()
            self._call = self._clock.callLater(0, self._next_turn)
        if len(self._jobs) == 1:
            self._run_slice()

    def drained(self) -> Deferred[None]:
        """Fires once every job added so far has run."""
        if self._done >= self._added:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append((self._added, waiter))
        return waiter

    def _next_turn(self) -> None:
        self._call = None
        if self._jobs:
            self._turn_started = time.monotonic()
            self._call = self._clock.callLater(0, self._next_turn)
            self._run_slice()

    def _run_slice(self) -> None:
        jobs = self._jobs
        while jobs and time.monotonic() - self._turn_started < self.budget:
            job = jobs.popleft()
            try:
                job()
            except Exception:
                log.failure("A sliced storage job failed")
            self._done += 1
            self._unsettled += 1
        if self._unsettled >= collector.SETTLE_AFTER_JOBS or (
                not jobs and self._unsettled >= collector.SETTLE_AFTER_JOBS // 5):
            self._unsettled = 0
            collector.settle()
        if self._waiters:
            ready = [w for target, w in self._waiters if target <= self._done]
            self._waiters = [(t, w) for t, w in self._waiters if t > self._done]
            for waiter in ready:
                waiter.callback(None)
