"""File descriptors and partitions that cannot be opened, against broker subprocesses.

- The broker raises its soft RLIMIT_NOFILE to the hard limit and logs it once.
- Thousands of partitions open, serve and restart under a small RLIMIT_NOFILE: segment and
  index files take descriptors from a bounded pool (akfak/log/handles.py).
- A partition directory that cannot be opened at start is reported in one ERROR line and
  answers KAFKA_STORAGE_ERROR; the broker starts and serves the others, and the directory
  is left as it was, so a repaired partition comes back with its data.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

import pytest
from kio.schema.errors import ErrorCode

from akfak.log.checkpoints import CLEAN_SHUTDOWN
from akfak.log.records import encode_batch
from tests.brokers import BrokerProcess
from tests.requests import fetch, list_offsets, produce
from tests.test_admin_protocol import creatable, create_topics
from tests.wire import WireClient


def limit_open_files(soft: int, hard: int) -> Any:
    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return preexec


def open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no Max open files line")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def batch(value: bytes) -> bytes:
    return encode_batch([(None, value)], timestamp=int(time.time() * 1000))


def produce_one(client: WireClient, topic: str, partition: int, value: bytes) -> tuple[int, int]:
    (response,) = client.request(produce(topic, {partition: batch(value)})).responses
    answer = response.partition_responses[0]
    return answer.error_code, answer.base_offset


def fetch_one(client: WireClient, topic: str, partition: int, offset: int = 0) -> tuple[int, bytes]:
    (response,) = client.request(fetch({topic: {partition: offset}})).responses
    answer = response.partitions[0]
    return answer.error_code, bytes(answer.records or b"")


def errors_in(broker: BrokerProcess) -> list[str]:
    return [line for line in broker.log().splitlines()
            if "#error]" in line or "#critical]" in line or "Traceback" in line]


def test_the_soft_open_files_limit_is_raised_to_the_hard_limit(broker_process: Any) -> None:
    broker = broker_process(preexec_fn=limit_open_files(128, 2048))
    assert open_files_limit(broker.proc.pid) == (2048, 2048)
    lines = [line for line in broker.log().splitlines() if "RLIMIT_NOFILE" in line]
    assert len(lines) == 1, lines
    assert "soft 128 -> 2048, hard 2048" in lines[0] and "pool of 1024 descriptors" in lines[0]


@pytest.mark.timeout(1200)
@pytest.mark.parametrize(("partitions", "nofile"), [
    (2000, 256), pytest.param(20000, 1024, marks=pytest.mark.slow)])
def test_many_partitions_serve_and_restart_under_a_small_open_files_limit(
        broker_process: Any, tmp_path: Path, partitions: int, nofile: int) -> None:
    limit = limit_open_files(nofile, nofile)
    # a topic per 500 partitions, four topics per CreateTopics
    per_topic = 500
    topics = [f"t{i:03d}" for i in range(partitions // per_topic)]
    broker = broker_process(preexec_fn=limit, start_timeout=300)
    with WireClient(broker.port, timeout=600) as client:
        for i in range(0, len(topics), 4):
            response = client.request(create_topics(
                7, *(creatable(7, name, per_topic) for name in topics[i : i + 4])))
            assert {t.error_code for t in response.topics} == {ErrorCode.none}
        assert open_fds(broker.proc.pid) < nofile
        sample = sorted({(topics[n % len(topics)], n * 37 % per_topic) for n in range(40)}
                        | {(topics[-1], per_topic - 1)})
        for topic, partition in sample:
            assert produce_one(client, topic, partition, b"%s-%d" % (topic.encode(), partition)) \
                == (ErrorCode.none, 0)
        for topic, partition in sample:
            error, records = fetch_one(client, topic, partition)
            assert error == ErrorCode.none and b"%s-%d" % (topic.encode(), partition) in records
        assert open_fds(broker.proc.pid) < nofile
    broker.stop(timeout=600)
    assert (tmp_path / "data" / CLEAN_SHUTDOWN).exists()  # every log flushed and closed

    restarted = broker_process(preexec_fn=limit, start_timeout=600)
    with WireClient(restarted.port, timeout=600) as client:
        for topic, partition in sample:
            error, records = fetch_one(client, topic, partition)
            assert error == ErrorCode.none and b"%s-%d" % (topic.encode(), partition) in records
            assert produce_one(client, topic, partition, b"again") == (ErrorCode.none, 1)
        assert open_fds(restarted.proc.pid) < nofile
    assert errors_in(broker) == [] and errors_in(restarted) == []
    assert "Too many open files" not in broker.log() + restarted.log()


def test_a_partition_that_cannot_be_opened_is_offline_and_the_rest_serve(
        broker_process: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    broker = broker_process()
    with WireClient(broker.port) as client:
        response = client.request(create_topics(7, creatable(7, "good", 1),
                                                creatable(7, "bad", 2)))
        assert {t.error_code for t in response.topics} == {ErrorCode.none}
        for topic, partition in (("good", 0), ("bad", 0), ("bad", 1)):
            assert produce_one(client, topic, partition, b"kept")[0] == ErrorCode.none
    broker.stop()

    # bad-0: its segment is not a file any more; bad-1: its partition.metadata is unreadable.
    segment = data / "bad-0" / "00000000000000000000.log"
    segment.unlink()
    segment.mkdir()
    metadata = data / "bad-1" / "partition.metadata"
    original = metadata.read_bytes()
    metadata.write_bytes(b"\xff\xfe\x00 not utf-8")
    before = {p: sorted(os.listdir(data / p)) for p in ("bad-0", "bad-1")}

    restarted = broker_process()
    with WireClient(restarted.port) as client:
        storage_error = ErrorCode.kafka_storage_error
        assert produce_one(client, "bad", 0, b"refused")[0] == storage_error
        assert fetch_one(client, "bad", 1)[0] == storage_error
        (offsets,) = client.request(list_offsets("bad", {0: -1})).topics
        assert offsets.partitions[0].error_code == storage_error
        assert fetch_one(client, "good", 0) == (ErrorCode.none, fetch_one(client, "good", 0)[1])
        assert b"kept" in fetch_one(client, "good", 0)[1]
        assert produce_one(client, "good", 0, b"more") == (ErrorCode.none, 1)
    errors = errors_in(restarted)
    assert len(errors) == 2, errors
    assert str(data / "bad-0") in errors[0] and "Is a directory" in errors[0]
    assert str(data / "bad-1") in errors[1] and "UnicodeDecodeError" in errors[1]
    restarted.stop()
    assert (data / CLEAN_SHUTDOWN).exists()
    # Neither set aside nor touched.
    assert {p: sorted(os.listdir(data / p)) for p in ("bad-0", "bad-1")} == before
    assert not [p for p in os.listdir(data) if p.startswith("bad-") and p.endswith("-stray")]

    metadata.write_bytes(original)  # repaired: bad-1 comes back with its record
    repaired = broker_process()
    with WireClient(repaired.port) as client:
        error, records = fetch_one(client, "bad", 1)
        assert error == ErrorCode.none and b"kept" in records
        assert produce_one(client, "bad", 0, b"still")[0] == ErrorCode.kafka_storage_error
    assert len(errors_in(repaired)) == 1
