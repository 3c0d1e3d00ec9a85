"""akfak.testing: the embedded broker's blocking and Deferred APIs, and the pytest fixtures.

These run under our own pytest-twisted session, where each test body runs inside the global
reactor's greenlet: the blocking API works here only because every embedded broker has a
reactor thread of its own (a broker in the global reactor could not answer a blocking client
called from the test body).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from kio.schema.api_versions.v0.request import ApiVersionsRequest
from kio.schema.errors import ErrorCode
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from akfak.errors import TopicAlreadyExists
from akfak.testing import TEST_DEFAULTS, EmbeddedBroker, running_broker, start_broker
from tests.wire import WireClient, encode_body, encode_request

API_VERSIONS_V0 = encode_request(18, 0, 1, encode_body(ApiVersionsRequest()))


def answers(port: int) -> bool:
    with WireClient(port) as client:
        return client.request(ApiVersionsRequest()).error_code == ErrorCode.none


def port_is_free(port: int) -> bool:
    """Nothing listens on `port` and a new server may bind it (without SO_REUSEADDR, so a
    lingering socket on the port would count too)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            probe.listen()
        except OSError:
            return False
    return True


def broker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "akfak-embedded-broker"}


def test_running_broker_serves_then_stops_fully() -> None:
    with running_broker() as broker:
        assert broker.running
        assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
        assert broker.storage == "memory"
        assert broker.data_dir is not None and broker.data_dir.is_dir()
        assert answers(broker.port)
        client = WireClient(broker.port)  # still connected when the broker stops
        assert broker._thread is not None and broker._thread.alive
    try:
        assert not broker.running
        assert client.is_closed_by_peer()
        assert port_is_free(broker.port)
        assert not broker.data_dir.exists()
        assert broker._thread is not None and not broker._thread.alive
    finally:
        client.close()


def test_stop_is_idempotent_and_a_broker_starts_once() -> None:
    broker = EmbeddedBroker().start()
    broker.stop()
    broker.stop()
    with pytest.raises(RuntimeError, match="starts once"):
        broker.start()
    with pytest.raises(RuntimeError, match="not running"):
        broker.create_topic("t")


def test_given_data_dir_is_used_and_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "logs"
    with running_broker(storage="disk", data_dir=data_dir) as broker:
        config = broker.call(lambda: broker.broker.config)
        assert (config.storage, config.data_dir) == ("disk", data_dir)
    assert broker.data_dir == data_dir and data_dir.is_dir()


def test_overrides_are_applied_over_test_defaults() -> None:
    overrides = {"log.segment.bytes": 4096, "auto.create.topics.enable": False}
    with running_broker(overrides=overrides) as broker:
        config = broker.call(lambda: broker.broker.config)
        assert config.segment_bytes == 4096
        assert config.auto_create_topics is False
        for key, value in TEST_DEFAULTS.items():
            assert config.get(key) == value
    with running_broker(overrides=["group.initial.rebalance.delay.ms=250"]) as broker:
        assert broker.call(lambda: broker.broker.config.get("group.initial.rebalance.delay.ms")) == "250"


def test_a_failed_start_leaves_nothing_behind(tmp_path: Path) -> None:
    threads_before = broker_threads()
    broker = EmbeddedBroker(config_file=tmp_path / "missing.properties")
    with pytest.raises(OSError):
        broker.start()
    assert broker_threads() == threads_before
    assert broker.data_dir is not None and not broker.data_dir.exists()
    assert not broker.running


@pytest.mark.akfak(storage="disk")
def test_create_topic_goes_through_the_controller(akfak_broker: Any) -> None:
    akfak_broker.create_topic("events", partitions=3, config={"retention.ms": 60000})

    def look() -> tuple[int, dict[str, str]]:
        image = akfak_broker.broker.image
        return image.topic("events").num_partitions, dict(image.configs_of_topic("events"))

    assert akfak_broker.call(look) == (3, {"retention.ms": "60000"})
    assert all((akfak_broker.data_dir / f"events-{p}").is_dir() for p in range(3))
    with pytest.raises(TopicAlreadyExists):
        akfak_broker.create_topic("events")


def test_blocking_call_from_the_brokers_own_thread_is_refused(akfak_broker: Any) -> None:
    with pytest.raises(RuntimeError, match="from inside it"):
        akfak_broker.call(lambda: akfak_broker.call(lambda: None))


def test_two_brokers_at_once_are_separate(akfak_broker: Any, akfak_broker_factory: Any) -> None:
    other = akfak_broker_factory(storage="disk")
    assert other.port != akfak_broker.port
    assert other.data_dir != akfak_broker.data_dir
    assert answers(akfak_broker.port) and answers(other.port)
    other.stop()
    assert port_is_free(other.port)
    assert answers(akfak_broker.port)


@pytest.mark.akfak(storage="disk", overrides={"log.segment.bytes": 8192})
def test_marker_configures_the_fixture(akfak_broker: Any) -> None:
    assert akfak_broker.storage == "disk"
    assert akfak_broker.call(lambda: akfak_broker.broker.config.segment_bytes) == 8192


@pytest.mark.parametrize("akfak_broker", ["memory", "disk"], indirect=True)
def test_indirect_parameter_picks_the_storage(akfak_broker: Any, request: pytest.FixtureRequest) -> None:
    assert akfak_broker.storage == request.node.callspec.params["akfak_broker"]
    assert akfak_broker.call(lambda: akfak_broker.broker.config.storage) == akfak_broker.storage


def test_session_broker_is_another_running_broker(akfak_broker_session: Any, akfak_broker: Any) -> None:
    assert akfak_broker_session.running
    assert akfak_broker_session.port != akfak_broker.port
    assert answers(akfak_broker_session.port)


# -- the Deferred API, inside the reactor pytest-twisted runs ------------------------------------


class _ApiVersionsClient(Int32StringReceiver):
    def __init__(self) -> None:
        self.answered: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(API_VERSIONS_V0)

    def stringReceived(self, frame: bytes) -> None:
        self.answered.callback(frame)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lost.callback(None)


@pytest_twisted.inlineCallbacks
def test_start_broker_in_the_running_reactor() -> Any:
    from twisted.internet import reactor

    threads_before = set(threading.enumerate())
    broker = yield start_broker()
    assert broker.reactor is reactor and broker.running
    assert set(threading.enumerate()) == threads_before  # no thread: it lives in the test's reactor
    client = yield TCP4ClientEndpoint(reactor, "127.0.0.1", broker.port).connect(
        Factory.forProtocol(_ApiVersionsClient))
    frame = yield client.answered
    assert frame[:4] == b"\x00\x00\x00\x01"  # our correlation id
    with pytest.raises(RuntimeError, match="stop_deferred"):
        broker.stop()

    yield broker.stop_deferred()
    yield client.lost  # the broker dropped its client (no reactor stop here to do it instead)
    assert not broker.running
    assert port_is_free(broker.port)
    assert not broker.data_dir.exists()
    yield broker.stop_deferred()  # idempotent


@pytest_twisted.inlineCallbacks
def test_start_broker_on_disk_with_a_given_directory(tmp_path: Path) -> Any:
    broker = yield start_broker(storage="disk", data_dir=tmp_path / "d", overrides={"node.id": 7})
    assert broker.broker.config.storage == "disk" and broker.broker.node_id == 7
    yield broker.stop_deferred()
    assert (tmp_path / "d").is_dir()


@pytest_twisted.async_yield_fixture
async def broker_in_reactor() -> Any:
    """The fixture the README shows pytest-twisted users."""
    broker = await start_broker()
    yield broker
    await broker.stop_deferred()


@pytest_twisted.ensureDeferred
async def test_async_fixture_in_the_reactor(broker_in_reactor: Any) -> None:
    await broker_in_reactor.create_topic_deferred("in-reactor", partitions=2)
    assert broker_in_reactor.broker.image.topic("in-reactor").num_partitions == 2
    with pytest.raises(RuntimeError, match="create_topic_deferred"):
        broker_in_reactor.create_topic("other")
