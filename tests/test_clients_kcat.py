"""Debian's kcat produces and consumes through akfak (issue 4).

kcat reads `key:value` lines and prints JSON, so these records are printable text; kcat
sets the same headers on every record it produces, and its own timestamps.  Skipped when
kcat is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import BrokerProcess
from tests.clients import (
    CODECS,
    LIBRARIES,
    Record,
    assert_consumed,
    consume,
    create_topic,
    high_watermark,
    kcat_consume,
    kcat_produce,
    make_records,
    produce,
    requires_kcat,
    running_broker,
    stored_codecs,
)

pytestmark = requires_kcat

N = 1000
RECORDS = make_records(N, seed=9, ascii_only=True)
HEADERS = (("origin", "kcat"), ("run", "1"), ("origin", "again"), ("empty", ""))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(Path(tmp_path_factory.mktemp("kcat")) / "data") as b:
        yield b


@pytest.fixture(scope="module", params=CODECS, ids=[f"kcat-{c}" for c in CODECS])
def kcat_topic(request: pytest.FixtureRequest, broker: BrokerProcess) -> tuple[str, int, int]:
    """A topic kcat wrote RECORDS to with `codec`; and the time span it did so in (ms)."""
    codec = request.param
    topic = f"kcat.{codec}"
    create_topic(broker.port, topic)
    before = int(time.time() * 1000)
    kcat_produce(broker.bootstrap, topic, RECORDS, compression=codec, headers=HEADERS)
    after = int(time.time() * 1000)
    assert high_watermark(broker.port, topic) == N
    codecs = stored_codecs(broker.port, topic)
    assert codec in codecs and set(codecs) <= {codec, "none"}, f"stored batches by codec: {codecs}"
    return topic, before, after


@pytest.mark.parametrize("consumer", LIBRARIES, ids=[f"read-by-{c}" for c in LIBRARIES])
def test_kcat_produces(broker: BrokerProcess, kcat_topic: tuple[str, int, int], consumer: str) -> None:
    topic, before, after = kcat_topic
    got = consume(consumer, broker.bootstrap, topic, N)
    headers = tuple((name, value.encode()) for name, value in HEADERS)
    expected = [Record(r.key, r.value, headers) for r in RECORDS]
    assert_consumed(expected, got, check_timestamps=False, what=f"{consumer} reading {topic}")
    stamps = [c.timestamp for c in got]
    assert before - 1000 <= min(stamps) and max(stamps) <= after + 1000, (
        f"kcat's CreateTime timestamps {min(stamps)}..{max(stamps)} are outside the time it ran "
        f"({before}..{after})")


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("producer", LIBRARIES)
def test_kcat_consumes(broker: BrokerProcess, producer: str, codec: str) -> None:
    topic = f"kcat.from.{producer}.{codec}"
    create_topic(broker.port, topic)
    offsets = produce(producer, broker.bootstrap, topic, RECORDS, compression=codec, acks="1")
    assert offsets == list(range(N))
    assert_consumed(RECORDS, kcat_consume(broker.bootstrap, topic, N), what=f"kcat reading {topic}")
