"""`kafka-share-groups` (ShareGroupCommand of kafka-tools 4.1.1) against akfak and Kafka 4.1.1:
the same share groups made on both by the Java share consumer (tests/java ShareConsumers), then
list, describe (offsets, members, state), delete-offsets and delete print the same."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.brokers import start_process
from tests.jvm import build, java_command, run_java
from tests.kafka_peer import KafkaPeer
from tests.kafka_tools import assert_same, on_both

# ~80 s, most of it Kafka's share consumers waiting a heartbeat interval for their first
# assignment; test_share_protocol covers the same admin APIs on akfak in the default run.
pytestmark = [pytest.mark.jvm, pytest.mark.slow, pytest.mark.timeout(600)]

SHARE_GROUPS = "org.apache.kafka.tools.consumer.group.ShareGroupCommand"


@pytest.fixture(scope="module")
def brokers(kafka_peer: KafkaPeer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    akfak = start_process(tmp_path_factory.mktemp("akfak") / "data")
    yield {"akfak": akfak.bootstrap, "kafka": kafka_peer.bootstrap}
    akfak.stop()


def masked(brokers: dict[str, str]) -> Callable[[str], str]:
    """Addresses and member ids (base64 UUIDs) masked; runs of blanks made one."""
    def normalize(line: str) -> str:
        for bootstrap in brokers.values():
            line = line.replace(bootstrap, "<host:port>")
        line = re.sub(r"^(\S+\s+)[A-Za-z0-9_-]{22}\b", r"\1<member>", line)
        return " ".join(line.split())
    return normalize


def share_consumers(bootstrap: str, *args: str) -> None:
    run_java("ShareConsumers", bootstrap, "consumers=1", "idle-ms=1500", *args).check()


def test_share_groups_tool(brokers: dict[str, str]) -> None:
    classpath = build()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda bootstrap: (
            share_consumers(bootstrap, "topic=cli-share", "group=cli-accepted", "setup=true",
                            "records=20", "batch=10", "mode=accept", "expect=20"),
            share_consumers(bootstrap, "topic=cli-released", "group=cli-released", "setup=true",
                            "records=10", "batch=10", "mode=release", "expect=50")),
            brokers.values()))
    live = {name: subprocess.Popen(
        java_command(classpath, "akfak.tests.ShareConsumers", bootstrap, "topic=cli-share",
                     "group=cli-live", "consumers=1", "mode=accept", "expect=1", "hold=true",
                     "timeout-ms=60000", "setup=true", "records=1"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for name, bootstrap in brokers.items()}
    try:
        for proc in live.values():
            assert proc.stdout is not None
            for line in proc.stdout:
                if json.loads(line)["kind"] in ("done", "error", "timeout"):
                    assert json.loads(line)["kind"] == "done", line
                    break
        norm = masked(brokers)

        def same(*args: str, ordered: bool = False) -> list[str]:
            return assert_same(on_both(brokers, *args, tool=SHARE_GROUPS), norm, ordered=ordered)

        assert {"cli-accepted Empty", "cli-released Empty", "cli-live Stable"} <= set(
            same("--list", "--state"))
        groups = ["--group", "cli-accepted", "--group", "cli-released"]
        offsets = same("--describe", *groups, "--offsets", "--verbose")
        assert "cli-released cli-released 0 0 0" in offsets  # trailing the last write, as Kafka
        members = same("--describe", "--group", "cli-live", "--members", "--verbose")
        assert "cli-live <member> /127.0.0.1 share-0 1 2 cli-share:0" in members
        state = same("--describe", "--group", "cli-live", "--group", "cli-accepted", "--state",
                     "--verbose")
        assert "cli-live <host:port> (1) Stable 2 2 1" in state
        missing = same("--describe", "--group", "cli-none", ordered=True)
        assert missing[0] == ("Error: Executing share group command failed due to org.apache."
                              "kafka.common.errors.GroupIdNotFoundException: Group cli-none not "
                              "found.")
        assert same("--delete-offsets", "--group", "cli-accepted", "--topic", "cli-share",
                    "--topic", "cli-nothing", ordered=True)
        busy = same("--delete", "--group", "cli-live")
        assert any("GroupNotEmptyException" in line for line in busy), busy
        assert same("--delete", "--group", "cli-released", "--group", "cli-none")
        assert "cli-released" not in same("--list")
    finally:
        for proc in live.values():
            proc.kill()
            proc.wait()
