"""Kafka's own command-line tools (org.apache.kafka:kafka-tools 4.1.1) for tests that run them
against akfak and against the real Kafka broker of tests/kafka_peer.py and compare what they print.

The tools come with the peer's classpath (tests/java/kafka-peer/pom.xml, resolved by Maven and
cached in ~/.m2); `run_tool("LogDirsCommand", "--bootstrap-server", ..., ...)` runs
`org.apache.kafka.tools.LogDirsCommand` as the `kafka-log-dirs` script does, with the tools'
logging sent to stderr at WARN so that stdout holds only what the tool prints.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest

from tests import jvm, tool_runner
from tests.kafka_peer import kafka_classpath

LOG4J2 = """\
rootLogger.level=WARN
rootLogger.appenderRef.err.ref=err
appender.err.type=Console
appender.err.name=err
appender.err.target=SYSTEM_ERR
appender.err.follow=true
appender.err.layout.type=PatternLayout
appender.err.layout.pattern=%p %m (%c)%n
"""


class ToolRun(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@cache
def _log4j_config() -> Path:
    path = Path(tempfile.mkdtemp(prefix="akfak-tools-")) / "log4j2.properties"
    path.write_text(LOG4J2)
    return path


def run_tool(main_class: str, *args: str, timeout: float = 90.0, input: str | None = None) -> ToolRun:
    """Runs org.apache.kafka.tools.<main_class> (or a fully qualified class) with `args`, and
    `input` on its stdin."""
    name = main_class if "." in main_class else f"org.apache.kafka.tools.{main_class}"
    classpath = kafka_classpath()
    if tool_runner.enabled(name):
        try:
            ran = tool_runner.run(classpath, [f"-Dlog4j2.configurationFile={_log4j_config()}"],
                                  _log4j_config().with_name("runners.log"), name, args, input,
                                  timeout)
        except tool_runner.RunnerTimeout:
            pytest.fail(f"{main_class} {' '.join(args)} ran over {timeout}s", pytrace=False)
        if ran is not None:
            return ToolRun(*ran)
    try:
        with jvm.class_data_sharing(classpath) as sharing:
            command = jvm.java_command(classpath, name, *args, flags=[
                f"-Dlog4j2.configurationFile={_log4j_config()}", *sharing])
            done = subprocess.run(command, input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{main_class} {' '.join(args)} ran over {timeout}s", pytrace=False)
    return ToolRun(done.returncode, done.stdout, done.stderr)


def on_both(brokers: dict[str, str], *args: str, tool: str, input: str | None = None,
            bootstrap_option: str | None = "--bootstrap-server") -> dict[str, ToolRun]:
    """Runs `tool` against each broker (at once: JVM starts are the cost) with
    `bootstrap_option` and the broker's address, then `args`, where "{bootstrap}" stands for
    the address too."""
    def run(bootstrap: str) -> ToolRun:
        prefix = (bootstrap_option, bootstrap) if bootstrap_option else ()
        return run_tool(tool, *prefix, *(arg.replace("{bootstrap}", bootstrap) for arg in args),
                        input=input)

    with ThreadPoolExecutor(len(brokers)) as pool:
        return dict(zip(brokers, pool.map(run, brokers.values()), strict=True))


def lines(run: ToolRun) -> list[str]:
    """What a tool printed, stack traces' frames left out (their line numbers are the tool's)."""
    return [line for line in (run.stdout + run.stderr).splitlines()
            if line.strip() and not line.lstrip().startswith("at ")
            and not re.match(r"^(WARN|ERROR|INFO) ", line)]


def assert_same(runs: dict[str, ToolRun], normalize: Callable[[str], str] = lambda text: text,
                ordered: bool = True) -> list[str]:
    """Both brokers made the tool print the same (after `normalize`; in any order of lines
    unless `ordered`) and exit alike; returns akfak's lines."""
    akfak, kafka = ([normalize(line) for line in lines(runs[name])] for name in ("akfak", "kafka"))
    if not ordered:
        akfak, kafka = sorted(akfak), sorted(kafka)
    assert (runs["akfak"].returncode, akfak) == (runs["kafka"].returncode, kafka), (
        f"akfak:\n{runs['akfak'].stdout}{runs['akfak'].stderr}\n"
        f"kafka:\n{runs['kafka'].stdout}{runs['kafka'].stderr}")
    return akfak
