"""A private Twisted reactor running in a daemon thread, for brokers used from blocking code.

Why a private reactor rather than Twisted's global one: the global reactor can run only once
per process and only in one place.  pytest-twisted runs it in a greenlet of the main thread
and calls every test function from inside it, so a broker living in that reactor could not
answer a blocking client (confluent-kafka, kafka-python) called from the test body: the test
would wait for a reactor that waits for the test.  A reactor instance of our own, never
installed as `twisted.internet.reactor`, runs wherever we put it, starts and stops with its
broker, and leaves the global reactor to the program (which may install asyncioreactor or
run its own reactor later).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

T = TypeVar("T")


def new_reactor() -> Any:
    """A reactor instance that is not installed as the global `twisted.internet.reactor`."""
    cls: Any
    try:
        from twisted.internet.epollreactor import EPollReactor as cls
    except ImportError:  # not Linux
        try:
            from twisted.internet.pollreactor import PollReactor as cls
        except ImportError:  # Windows
            from twisted.internet.selectreactor import SelectReactor as cls
    reactor = cls()
    # Twisted records one "I/O thread" per process (threadable.isInIOThread); that belongs to
    # the global reactor, so ours must not claim it when it starts.
    reactor._registerAsIOThread = False
    return reactor


class ReactorThread:
    """One private reactor and the daemon thread running it; `call` marshals work into it."""

    def __init__(self, name: str = "akfak-reactor") -> None:
        self.reactor = new_reactor()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        # Signal handlers can only be installed from the main thread, and belong to the program.
        self.reactor.run(installSignalHandlers=False)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def in_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def start(self) -> None:
        self._thread.start()

    def call(self, timeout: float | None, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `f(*args, **kwargs)` in the reactor thread and wait for its (Deferred) result.

        As `twisted.internet.threads.blockingCallFromThread`, with a timeout so a broker that
        never answers fails the caller instead of hanging it."""
        if self.in_thread():
            raise RuntimeError("this would wait for the reactor thread from inside it")
        if not self.alive:
            raise RuntimeError("the broker's reactor thread is not running")
        results: queue.SimpleQueue[Any] = queue.SimpleQueue()

        def in_reactor() -> None:
            maybeDeferred(f, *args, **kwargs).addBoth(results.put)

        self.reactor.callFromThread(in_reactor)
        try:
            result = results.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{getattr(f, '__name__', f)} did not finish within {timeout}s") from None
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def stop(self, timeout: float | None = None) -> None:
        """Stop the reactor (closing whatever connections remain, stopping its thread pool)
        and wait for the thread to end."""
        if self.in_thread():
            raise RuntimeError("a reactor thread cannot wait for itself to stop")
        if self._thread.ident is None:  # never started
            return
        if self._thread.is_alive():
            self.reactor.callFromThread(self._stop)
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"reactor thread {self._thread.name} did not stop within {timeout}s")

    def _stop(self) -> None:
        if self.reactor.running:
            self.reactor.stop()
