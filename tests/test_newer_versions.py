"""The API versions akfak offers beyond Kafka 4.1.1 (ListOffsets 11, OffsetCommit and
OffsetFetch 10) against the Kafka release that defines them: kafka-clients 4.3 (from Maven, as
tests/java/clients-4.3/pom.xml resolves it), whose message classes are generated from Kafka
4.3's schemas. akfak never offers a version past that client's highest stable one, and the
client talks those versions to akfak (its /metrics counts requests by version) and reads its
answers as a Kafka 4.3 broker's (no Kafka 4.3 broker is run: the -6 answer, -1 without tiered
storage, is as Kafka 4.3's UnifiedLog gives it)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from akfak.testing.embedded import EmbeddedBroker
from tests import jvm
from tests.test_configs_interop import NEWER_THAN_KAFKA_4_1, api_versions
from tests.test_metrics import scrape, value

pytestmark = [pytest.mark.jvm, pytest.mark.timeout(600)]

PROJECT = jvm.JAVA_DIR / "clients-4.3"


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(storage="disk", http=True) as running:
        yield running


def run_newer_client(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    jvm.require_jvm()
    try:
        classpath = os.pathsep.join(jvm.maven_classpath(PROJECT, ["generate-sources"]))
    except jvm.MavenUnreachable as e:
        pytest.skip(f"no kafka-clients 4.3: {e}")
    done = subprocess.run(jvm.java_command(classpath, str(PROJECT / "NewerVersions.java"), bootstrap,
                                           topic), stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return jvm.parse_lines(done.stdout)


def test_newer_versions_are_kafka_4_3s_and_its_client_uses_them(broker: EmbeddedBroker) -> None:
    broker.create_topic("newer", partitions=1)
    before = scrape(broker)
    lines = run_newer_client(broker.bootstrap_servers, "newer")
    after = scrape(broker)

    stable = {line["key"]: line["max"] for line in lines if line["kind"] == "api"}
    offered = api_versions(broker.port)
    past = {key: (high, stable.get(key)) for key, (_, high) in offered.items()
            if key not in stable or high > stable[key]}
    assert not past, f"akfak offers versions no stable Kafka 4.3 schema defines: {past}"
    for key, high in NEWER_THAN_KAFKA_4_1.items():
        assert stable[key] == high == offered[key][1]

    def used(request: str, version: int) -> float:
        return (value(after, "kafka_network_requestmetrics_requests_total", request=request,
                      version=version)
                - value(before, "kafka_network_requestmetrics_requests_total", request=request,
                        version=version))

    # Admin (5 specs) and the consumers (end offsets, by time, a reset) at v11; the classic
    # consumer commits and fetches at v9, the consumer-protocol member at v10 (topic ids)
    assert used("ListOffsets", 11) >= 7
    assert (used("OffsetCommit", 9), used("OffsetCommit", 10)) == (1, 1)
    assert used("OffsetFetch", 10) >= 1
    offsets = {line["spec"]: line["offset"] for line in lines if line["kind"] == "admin-offset"}
    # -6 earliest pending upload: nothing is tiered, so no offset (Kafka 4.3 answers -1 too)
    assert offsets == {"latest": 3, "earliest": 0, "maxTimestamp": 2, "forTimestamp": 1,
                       "earliestPendingUpload": -1}
    (consumer,) = [line for line in lines if line["kind"] == "consumer-offsets"]
    assert (consumer["end"], consumer["at"]) == (3, 2)
    (committed,) = [line for line in lines if line["kind"] == "committed"]
    assert committed == {"kind": "committed", "offset": 2, "metadata": "meta", "next": "v2"}
    (member,) = [line for line in lines if line["kind"] == "member-committed"]
    assert member == {"kind": "member-committed", "seen": 3, "offset": 3, "metadata": "member"}
