"""Long polls answer on time (issue 4): behaviours, not benchmarks.

- A consumer of each library, caught up and waiting on its partition, receives a record
  within 100 ms of its production (median of several tries at random moments of the
  consumer's 500 ms long poll: a broker that only answered when the wait expired would
  score ~250 ms).
- A raw Fetch with max_wait_ms=500 on an idle partition answers after about 500 ms (no
  earlier than 450 ms, no later than 2 s); an append during the wait answers it at once.
"""

from __future__ import annotations

import queue
import random
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.brokers import BrokerProcess
from tests.clients import LIBRARIES, Consumed, create_topic, open_consumer, running_broker
from tests.recordbatch import make_batch, parse_batches
from tests.requests import fetch, produce
from tests.wire import WireClient, decode_response, encode_body, encode_request

TRIES = 9
LATENCY_LIMIT = 0.100


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(Path(tmp_path_factory.mktemp("latency")) / "data") as b:
        yield b


class WaitingConsumer(threading.Thread):
    """A consumer polling one partition from offset 0 in its own thread (aiokafka's loop
    lives there too), noting the monotonic time each record arrives."""

    def __init__(self, library: str, bootstrap: str, topic: str):
        super().__init__(daemon=True, name=f"waiting-{library}")
        self.library, self.bootstrap, self.topic = library, bootstrap, topic
        self.arrivals: queue.Queue[tuple[float, Consumed]] = queue.Queue()
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with open_consumer(self.library, self.bootstrap) as consumer:
                consumer.assign(self.topic, 0, 0)
                while not self.halt.is_set():
                    for record in consumer.poll(0.2):
                        self.arrivals.put((time.monotonic(), record))
        except BaseException as e:
            self.error = e

    def next_arrival(self, timeout: float) -> tuple[float, Consumed]:
        try:
            return self.arrivals.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.library} received nothing in {timeout}s "
                                 f"(consumer error: {self.error!r})") from None

    def stop(self) -> None:
        self.halt.set()
        self.join(15)
        assert not self.is_alive(), f"the {self.library} consumer did not stop"


def produce_one(client: WireClient, topic: str, value: bytes) -> float:
    """Produce one record (acks=1) on a raw connection; the monotonic time it was sent."""
    request = produce(topic, {0: make_batch([(b"k", value)])})
    sent = time.monotonic()
    answer = client.request(request).responses[0].partition_responses[0]
    assert answer.error_code == 0, answer
    return sent


@pytest.mark.parametrize("library", LIBRARIES)
def test_waiting_consumer_gets_a_record_within_100ms(broker: BrokerProcess, library: str) -> None:
    topic = f"latency.{library}"
    create_topic(broker.port, topic)
    consumer = WaitingConsumer(library, broker.bootstrap, topic)
    consumer.start()
    rng = random.Random(library)
    latencies = []
    try:
        with WireClient(broker.port) as producer:
            # The first record reaches a consumer still starting (metadata, ListOffsets ...).
            produce_one(producer, topic, b"warm-up")
            assert consumer.next_arrival(20)[1].value == b"warm-up"
            for i in range(TRIES):
                time.sleep(rng.uniform(0.05, 0.45))  # anywhere in the consumer's long poll
                sent = produce_one(producer, topic, f"try {i}".encode())
                arrived, record = consumer.next_arrival(5)
                assert (record.offset, record.value) == (i + 1, f"try {i}".encode())
                latencies.append(arrived - sent)
    finally:
        consumer.stop()
    assert consumer.error is None, repr(consumer.error)
    shown = ", ".join(f"{x * 1000:.0f}" for x in latencies)
    assert statistics.median(latencies) < LATENCY_LIMIT, f"{library} latencies (ms): {shown}"


def topic_ref(port: int, topic: str, version: int) -> Any:
    """The name, or from Fetch v13 the topic id, of a topic (created if need be)."""
    answer = create_topic(port, topic)
    return answer.topic_id if version >= 13 else topic


@pytest.mark.parametrize("version", [4, 11, 12, 18])
def test_fetch_waits_max_wait_on_an_idle_partition(broker: BrokerProcess, version: int) -> None:
    ref = topic_ref(broker.port, "latency.idle", version)
    with WireClient(broker.port) as client:
        start = time.monotonic()
        response = client.request(fetch({ref: {0: 0}}, version=version, max_wait_ms=500, min_bytes=1),
                                  version=version)
        elapsed = time.monotonic() - start
        (topic,) = response.responses
        (partition,) = topic.partitions
        assert partition.error_code == 0
        assert (partition.high_watermark, partition.records or b"") == (0, b"")
        assert 0.450 <= elapsed <= 2.0, f"Fetch v{version} with max_wait_ms=500 answered in {elapsed:.3f}s"
        # The connection goes on: a Fetch without waiting answers at once.
        start = time.monotonic()
        client.request(fetch({ref: {0: 0}}, version=version, max_wait_ms=0), version=version)
        assert time.monotonic() - start < 0.2


@pytest.mark.parametrize("version", [4, 12, 18])
def test_append_answers_a_waiting_fetch_at_once(broker: BrokerProcess, version: int) -> None:
    topic = f"latency.wake.v{version}"
    ref = topic_ref(broker.port, topic, version)
    request = fetch({ref: {0: 0}}, version=version, max_wait_ms=5000, min_bytes=1)
    with WireClient(broker.port) as waiting, WireClient(broker.port) as producer:
        start = time.monotonic()
        waiting.send(encode_request(1, version, 1, encode_body(request)))
        time.sleep(0.2)
        sent = produce_one(producer, topic, b"wake up")
        correlation_id, response = decode_response(1, version, waiting.recv_frame())
        answered = time.monotonic()
    assert correlation_id == 1
    (partition,) = response.responses[0].partitions
    assert [r.value for r in parse_batches(partition.records or b"")] == [b"wake up"]
    assert answered - sent < 0.5, f"answered {answered - sent:.3f}s after the append"
    assert answered - start < 2.0
