"""Deferreds waiting for appends to partitions (long-poll Fetch)."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from twisted.internet.defer import Deferred


class _Waiter:
    __slots__ = ("deferred", "keys", "timer")

    def __init__(self, keys: tuple[Hashable, ...]) -> None:
        self.keys = keys
        self.deferred: Deferred[bool] = Deferred(self._cancelled)
        self.timer: Any = None

    def _cancelled(self, _: Deferred[bool]) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()


class AppendWaiters:
    """Who waits for which partition; an append wakes every waiter on it.

    `wait()` returns a Deferred firing True on an append to any of the keys, or
    False when the timeout passes first.  Cancelling it (the connection closed)
    forgets the waiter.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self._by_key: dict[Hashable, set[_Waiter]] = {}

    def wait(self, keys: Iterable[Hashable], timeout_s: float) -> Deferred[bool]:
        waiter = _Waiter(tuple(keys))
        for key in waiter.keys:
            self._by_key.setdefault(key, set()).add(waiter)
        waiter.timer = self.clock.callLater(timeout_s, self._fire, waiter, False)
        waiter.deferred.addBoth(self._forget, waiter)
        return waiter.deferred

    def notify(self, key: Hashable) -> None:
        for waiter in list(self._by_key.get(key, ())):
            self._fire(waiter, True)

    def __len__(self) -> int:
        return len({w for waiters in self._by_key.values() for w in waiters})

    def _fire(self, waiter: _Waiter, appended: bool) -> None:
        if waiter.timer is not None and waiter.timer.active():
            waiter.timer.cancel()
        if not waiter.deferred.called:
            waiter.deferred.callback(appended)

    def _forget(self, result: Any, waiter: _Waiter) -> Any:
        for key in waiter.keys:
            waiters = self._by_key.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._by_key[key]
        return result
