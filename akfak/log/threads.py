"""Running blocking file work (fsync, checkpoint writes, removing directories) off the reactor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool

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
