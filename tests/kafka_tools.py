"""Kafka's own command-line tools (org.apache.kafka:kafka-tools 4.1.1) for tests that run them
against akfak and against the real Kafka broker of tests/kafka_peer.py and compare what they print.

The tools come with the peer's classpath (tests/java/kafka-peer/pom.xml, resolved by Maven and
cached in ~/.m2); `run_tool("LogDirsCommand", "--bootstrap-server", ..., ...)` runs
`org.apache.kafka.tools.LogDirsCommand` as the `kafka-log-dirs` script does, with the tools'
logging sent to stderr at WARN so that stdout holds only what the tool prints.
"""

from __future__ import annotations

import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import NamedTuple

import pytest

from tests import jvm
from tests.kafka_peer import kafka_classpath

LOG4J2 = """\
rootLogger.level=WARN
rootLogger.appenderRef.err.ref=err
appender.err.type=Console
appender.err.name=err
appender.err.target=SYSTEM_ERR
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


def run_tool(main_class: str, *args: str, timeout: float = 90.0) -> ToolRun:
    """Runs org.apache.kafka.tools.<main_class> (or a fully qualified class) with `args`."""
    name = main_class if "." in main_class else f"org.apache.kafka.tools.{main_class}"
    command = jvm.java_command(kafka_classpath(), name, *args,
                               flags=[f"-Dlog4j2.configurationFile={_log4j_config()}"])
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{main_class} {' '.join(args)} ran over {timeout}s", pytrace=False)
    return ToolRun(done.returncode, done.stdout, done.stderr)
