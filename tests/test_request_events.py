"""The request events behind metrics and the console's inspector, and the HTTP server."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest
from confluent_kafka import Producer

from akfak.request_events import RequestEvent
from akfak.testing.embedded import EmbeddedBroker

API_VERSIONS, METADATA, PRODUCE = 18, 3, 0


def test_observers_see_each_answered_request_in_order(akfak_broker: Any) -> None:
    events: list[RequestEvent] = []
    akfak_broker.call(lambda: akfak_broker.broker.request_observers.add(events.append))
    akfak_broker.create_topic("observed", partitions=1)
    producer = Producer({"bootstrap.servers": akfak_broker.bootstrap_servers, "client.id": "watched",
                         "linger.ms": 0})
    producer.produce("observed", b"v", key=b"k")
    assert producer.flush(10) == 0
    # read in the reactor thread: a request is observed once its answer's last byte has
    # left, which the client may see before the reactor has finished that send
    seen = akfak_broker.call(lambda: list(events))
    keys = [e.api_key for e in seen]
    assert keys[0] == API_VERSIONS and METADATA in keys and PRODUCE in keys
    produce = next(e for e in seen if e.api_key == PRODUCE)
    assert produce.client_id == "watched" and produce.listener == "PLAINTEXT"
    assert 0 < produce.arrived <= produce.received <= produce.answered <= produce.sent
    assert produce.sent <= produce.flushed
    assert produce.request_size > 0 and produce.response_size and produce.response_size > 0
    assert produce.response is not None and produce.request is not None
    # one connection per broker for librdkafka's produce path; numbered from the broker's counter
    assert produce.connection >= 1


def test_a_failing_observer_is_removed_and_clients_are_unaffected(akfak_broker: Any) -> None:
    def broken(event: RequestEvent) -> None:
        raise RuntimeError("observer bug")

    akfak_broker.call(lambda: akfak_broker.broker.request_observers.add(broken))
    producer = Producer({"bootstrap.servers": akfak_broker.bootstrap_servers})
    producer.produce("auto-created", b"v")
    assert producer.flush(10) == 0
    assert not akfak_broker.call(lambda: bool(akfak_broker.broker.request_observers))


def test_http_is_off_unless_asked(akfak_broker: Any) -> None:
    assert akfak_broker.http_url is None


def test_http_serves_on_a_free_loopback_port() -> None:
    with EmbeddedBroker(http=True) as broker:
        assert broker.http_url is not None and broker.http_url.startswith("http://127.0.0.1:")
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(broker.http_url + "no-such-page", timeout=5)
        assert raised.value.code == 404
