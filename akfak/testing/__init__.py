"""Kafka in a test suite: a real akfak broker on a free loopback port, in this process.

    from akfak.testing import running_broker

    with running_broker() as broker:          # in-memory; running_broker(storage="disk") for files
        broker.create_topic("events", partitions=3)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})

The blocking API (`running_broker`, `EmbeddedBroker.start/stop/create_topic`) runs each broker
in a private Twisted reactor on a daemon thread of its own, so it works from any code: plain
blocking clients, asyncio, unittest, or pytest-twisted tests.  Twisted programs can instead
start a broker inside their running reactor with `start_broker()` (a Deferred).  The pytest
plugin (`akfak.testing.pytest_plugin`, loaded automatically) provides the `akfak_broker`
fixtures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from akfak.testing.embedded import TEST_DEFAULTS, EmbeddedBroker, running_broker, start_broker, stop_all
    from akfak.testing.security import Security

__all__ = ["TEST_DEFAULTS", "EmbeddedBroker", "Security", "running_broker", "start_broker", "stop_all"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the pytest plugin lives in this package and is imported by every
    # pytest run, which must not pay for (or be affected by) importing Twisted and the broker.
    if name in __all__:
        from akfak.testing import embedded

        return getattr(embedded, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
