"""pytest plugin (entry point pytest11, loaded by every pytest run once akfak is installed).

Fixtures:

- `akfak_broker`: a fresh, empty broker for one test, stopped after it (port closed, client
  connections dropped, temporary data directory removed), whether the test passed or failed.
- `akfak_broker_session`: one broker shared by the whole session (per xdist worker); faster,
  but topics and records persist from test to test, so use unique topic names.
- `akfak_broker_factory`: a callable taking EmbeddedBroker's keyword arguments, for tests
  that need several brokers or different settings; all are stopped after the test.

Options for `akfak_broker`, either as a marker or as an indirect parameter:

    @pytest.mark.akfak(storage="disk", overrides={"log.segment.bytes": 1024})
    def test_segments(akfak_broker): ...

    @pytest.mark.parametrize("akfak_broker", ["memory", "disk"], indirect=True)
    def test_both(akfak_broker): ...

    @pytest.mark.akfak(security=Security(listeners=["SSL"], client_auth="required"))
    def test_mtls(akfak_broker):
        producer = Producer(akfak_broker.client_config())   # akfak.testing.security.Security

Importing this module must stay cheap and side-effect free: it is imported by every pytest
run in an environment with akfak installed, including Twisted suites that pick their own
reactor, so akfak and Twisted are imported only when a fixture is first used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from akfak.testing.embedded import EmbeddedBroker

MARKER = (
    "akfak(storage='memory', overrides=None, data_dir=None, config_file=None, security=None, http=False): "
    "settings of the akfak_broker fixture for this test (storage 'memory' or 'disk'; overrides are "
    "broker properties; security an akfak.testing.security.Security; http serves /metrics and the "
    "console at broker.http_url)"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


def _options(request: pytest.FixtureRequest) -> dict[str, Any]:
    options: dict[str, Any] = {}
    marker = request.node.get_closest_marker("akfak")
    if marker is not None:
        if marker.args:
            raise pytest.UsageError("@pytest.mark.akfak takes keyword arguments only, e.g. storage='disk'")
        options.update(marker.kwargs)
    param = getattr(request, "param", None)
    if isinstance(param, str):
        options["storage"] = param
    elif isinstance(param, dict):
        options.update(param)
    elif param is not None:
        raise pytest.UsageError(f"akfak_broker parameter must be a storage name or a dict, not {param!r}")
    return options


@pytest.fixture
def akfak_broker(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker]:
    """A fresh akfak broker for this test (in-memory unless @pytest.mark.akfak(storage="disk"))."""
    from akfak.testing.embedded import EmbeddedBroker

    with EmbeddedBroker(**_options(request)) as broker:
        yield broker


@pytest.fixture(scope="session")
def akfak_broker_session() -> Iterator[EmbeddedBroker]:
    """One in-memory akfak broker for the whole session (per xdist worker)."""
    from akfak.testing.embedded import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture
def akfak_broker_factory() -> Iterator[Callable[..., EmbeddedBroker]]:
    """`start(**kwargs)` returns a started EmbeddedBroker; all are stopped after the test."""
    from akfak.testing.embedded import EmbeddedBroker

    started: list[EmbeddedBroker] = []

    def start(**kwargs: Any) -> EmbeddedBroker:
        broker = EmbeddedBroker(**kwargs)
        broker.start()
        started.append(broker)
        return broker

    yield start
    errors: list[BaseException] = []
    for broker in reversed(started):
        try:
            broker.stop()
        except Exception as e:  # stop the others all the same
            errors.append(e)
    if errors:
        raise errors[0]
