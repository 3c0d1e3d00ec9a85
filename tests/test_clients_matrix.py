"""Every producer library x codec x acks, read back by every consumer library (issue 4).

One broker for the module; one topic per (producer, codec, acks), produced once by a
module-scoped fixture; each consumer library reads it back from the beginning (assign +
seek, no group) and must see the 10,000 records (3,000 under CI=true) byte-identical at
offsets 0..N-1.
A failing combination is named by the test id:

    test_read_back[aiokafka-zstd-acks-all-read-by-kafka-python]

(producer, codec, acks, then the consumer: `-k "kafka-python-gzip-acks-all"` selects a row).

Producers run with their library's default settings but for codec, acks and timeouts.
kafka-python enables idempotence by default with acks=all, so its acks=all rows need
InitProducerId (issue 7).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import BrokerProcess
from tests.clients import (
    ACKS,
    CODECS,
    LIBRARIES,
    assert_consumed,
    consume,
    create_topic,
    high_watermark,
    make_records,
    poll_until,
    produce,
    running_broker,
    stored_codecs,
)

#: CI (CI=true) reads back fewer records per combination, for the suite's 15-minute budget.
N = 3_000 if os.environ.get("CI") == "true" else 10_000
RECORDS = make_records(N, seed=4)
COMBINATIONS = [(p, c, a) for p in LIBRARIES for c in CODECS for a in ACKS]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    with running_broker(Path(tmp_path_factory.mktemp("matrix")) / "data") as b:
        yield b


@pytest.fixture(scope="module", params=COMBINATIONS,
                ids=[f"{p}-{c}-acks-{a}" for p, c, a in COMBINATIONS])
def topic(request: pytest.FixtureRequest, broker: BrokerProcess) -> str:
    """The topic `producer` wrote the records to, with `codec` and `acks`."""
    library, codec, acks = request.param
    name = f"matrix.{library}.{codec}.acks-{acks}"
    create_topic(broker.port, name)
    offsets = produce(library, broker.bootstrap, name, RECORDS, compression=codec, acks=acks)
    if acks == "0":
        # No answers, so the offsets the producer reports mean nothing (kafka-python makes
        # some up).  On loopback nothing may be lost, but the last requests may still be on
        # their way when the producer returns.
        poll_until(lambda: high_watermark(broker.port, name) >= N, 30,
                   what=f"{N} records in {name}")
    else:
        assert offsets == list(range(N)), "the producer was told other offsets than 0..N-1"
    assert high_watermark(broker.port, name) == N
    codecs = stored_codecs(broker.port, name)
    # librdkafka sends a batch uncompressed when compressing would not make it smaller.
    assert codec in codecs and set(codecs) <= {codec, "none"}, f"stored batches by codec: {codecs}"
    return name


@pytest.mark.parametrize("consumer", LIBRARIES, ids=[f"read-by-{c}" for c in LIBRARIES])
def test_read_back(broker: BrokerProcess, topic: str, consumer: str) -> None:
    got = consume(consumer, broker.bootstrap, topic, N)
    assert_consumed(RECORDS, got, what=f"{consumer} reading {topic}")
