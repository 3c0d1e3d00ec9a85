"""The Broker: the shared state every connection's handlers may touch."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from akfak.config import BrokerConfig
from akfak.handlers.registry import HandlerRegistry

log = Logger()


class Broker:
    """Configuration, the handler registry, storage and coordinators of one node.

    `open()` loads storage before any listener accepts a connection; `close()`
    flushes it after the listeners have stopped (the service orders both).
    """

    def __init__(self, config: BrokerConfig, *, clock: IReactorTime | None = None):
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        self.config = config
        self.clock: Any = clock
        self.node_id = config.node_id
        self.registry = HandlerRegistry.discover(self)
        #: listener name -> (host, port) clients are told to connect to
        self.advertised: dict[str, tuple[str, int]] = {}
        self._periodic: list[tuple[float, Callable[[], Any]]] = []
        self._loops: list[LoopingCall] = []
        if unknown := config.unknown_keys():
            log.info("Keeping but not using these properties: {keys}", keys=", ".join(unknown))

    def open(self) -> None:
        """Load storage (recovering it if needed), then start the periodic tasks."""
        for interval, task in self._periodic:
            loop = LoopingCall(_logging_failures, task)
            loop.clock = self.clock
            loop.start(interval, now=False)
            self._loops.append(loop)

    def close(self) -> Any:
        """Stop the periodic tasks, then flush and close storage; may return a Deferred."""
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        return None

    def every(self, seconds: float, task: Callable[[], Any]) -> None:
        """Run `task` every `seconds` while the broker is open (retention, flushes, expiry).

        Register before `open()`; a task returning a Deferred delays its next run."""
        self._periodic.append((seconds, task))

    def advertise(self, listener: str, host: str, port: int) -> None:
        if host in ("0.0.0.0", "::", ""):
            host = socket.getfqdn()
        self.advertised.setdefault(listener, (host, port))

    def advertised_address(self, listener: str) -> tuple[str, int]:
        """The address for clients that reached us through `listener`."""
        if listener in self.advertised:
            return self.advertised[listener]
        return next(iter(self.advertised.values()))


def _logging_failures(task: Callable[[], Any]) -> Deferred[Any]:
    """Run a periodic task; a failure is logged and the next run still happens."""
    return maybeDeferred(task).addErrback(
        lambda failure: log.failure("Periodic task {task} failed", failure, task=task)
    )
